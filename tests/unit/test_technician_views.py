"""The technician's read commands without a daemon process: the tables, the words, the
runtime paths, the journal read, and the fallbacks when the daemon does not answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import readout
from gateway.cli import format_status
from gateway.config import load_config
from gateway.config.models import GatewaySection
from gateway.demo import write_sim_config
from gateway.devices_view import listing as devices_listing
from gateway.incidents_view import for_list, grouped_listing
from gateway.journal import Journal, NewIncident
from gateway.paths import DEFAULTS, PathsError, RuntimePaths, runtime_paths
from gateway.queue_view import listing as queue_listing
from gateway.queue_view import queue_data, read_queue, why
from gateway.signals import Press, Stamp
from gateway.tables import ago, clip, table

NOW = 1_790_000_000.0

# ------------------------------------------------------------------ tables


def test_table_aligns_columns_and_ends_no_line_in_spaces() -> None:
    shown = table(("A", "LONG HEADER", "LAST"), [("xxxx", None, "free text"), ("y", 7, "")])
    assert shown.splitlines() == [
        "A     LONG HEADER  LAST",
        "xxxx  -            free text",
        "y     7",
    ]


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (None, "never"),
        (-3, "0 s ago"),
        (5.4, "5 s ago"),
        (600, "10 min ago"),
        (3 * 3600, "3 h ago"),
    ],
)
def test_ago_says_it_in_the_unit_a_technician_would(seconds: float | None, said: str) -> None:
    assert ago(seconds) == said


def test_clip_keeps_one_short_line() -> None:
    assert clip("a\nb   c", 10) == "a b c"
    assert clip("x" * 50, 10) == "x" * 9 + "…"
    assert clip(None, 10) == "-"


# ------------------------------------------------------------------ runtime paths


def test_runtime_paths_agree_with_the_full_config_check(tmp_path: Path) -> None:
    config_path = write_sim_config(tmp_path, base_url="http://127.0.0.1:1", port_path="/dev/null")
    paths = runtime_paths(config_path)
    config = load_config(config_path)
    assert (paths.journal, paths.status, paths.control) == (
        config.journal_path,
        config.status_path,
        config.control_path,
    )


def test_runtime_path_defaults_are_the_config_models() -> None:
    for key, default in DEFAULTS.items():
        assert Path(default) == GatewaySection.model_fields[key].default, key


def test_runtime_paths_are_relative_to_gateway_toml_and_default_when_unset(
    tmp_path: Path,
) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "gateway.toml"
    path.write_text('[gateway]\nstatus_path = "../run/status.json"\n')
    paths = runtime_paths(path)
    assert paths.status == tmp_path / "run" / "status.json"
    assert paths.control == Path(DEFAULTS["control_path"])


@pytest.mark.parametrize(
    ("text", "said"),
    [("[gateway\n", "not valid TOML"), ("[gateway]\ncontrol_path = 5\n", "gateway.control_path")],
)
def test_runtime_paths_refuse_what_is_not_a_path(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(PathsError, match=said):
        runtime_paths(path)
    with pytest.raises(PathsError, match="cannot read"):
        runtime_paths(tmp_path / "missing.toml")


# ------------------------------------------------------------------ the queue


def _press(n: int) -> Press:
    return Press(
        source="serial:receiver",
        device_id=f"00a1b2c{n}",
        gesture="single",
        dedup_key=f"rf:{n}",
        counter=n,
        stamp=Stamp(mono_ns=n * 10**9, wall=NOW + n, boot_id="boot", wall_trusted=True),
    )


def _incident(n: int) -> NewIncident:
    return NewIncident(
        key=f"customer:{n}",
        device_id=f"00a1b2c{n}",
        route="customer",
        request={"route": "customer", "customer_id": n, "body": {"responseTypeId": 1}},
        location_reason="no location",
    ).with_id()


def test_read_queue_lists_pending_requests_in_order_and_never_a_safe_code(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    first, second = _incident(1), _incident(2)
    journal.commit_press(_press(1), decision="raise", reason="r", new_incident=first)
    journal.commit_press(_press(2), decision="raise", reason="r", new_incident=second)
    attempt = journal.claim_next_alarm()
    assert attempt is not None
    journal.mark_raised(attempt.item.seq, first.id, 880001, None, "created")
    journal.request_cancel(first.id, {"safe_code": "4321"})
    journal.note_error(second.id, "POST /customers/2/callouts: ConnectError", reached_aura=False)
    journal.close()

    rows = read_queue(path)
    assert [(r["kind"], r["incident_id"]) for r in rows] == [
        ("raise", second.id),
        ("cancel", first.id),
    ]
    data = queue_data(rows, None, source="journal", now=NOW + 100)
    assert "4321" not in json.dumps(data)
    raised, cancel = data["items"]
    assert raised["last_error"].endswith("ConnectError") and raised["attempts"] == 0
    assert cancel["last_error"] is None and cancel["attempts"] is None
    assert cancel["callout_id"] == 880001
    assert data["running"] is False and data["uplink"] is None
    assert raised["why"] == "daemon not running: goes out, in this order, when it starts"
    with pytest.raises(FileNotFoundError):
        read_queue(tmp_path / "none.sqlite")


def _row(kind: str = "raise", incident: str = "inc-1", state: str = "pending") -> dict[str, Any]:
    return {"seq": 1, "kind": kind, "incident_id": incident, "incident_state": state}


@pytest.mark.parametrize(
    ("daemon", "row", "first", "said"),
    [
        ({"uplink": "down"}, _row(), True, "AURA unreachable: retried with backoff"),
        ({"uplink": "down"}, _row(), False, "AURA unreachable: waits its turn"),
        ({"uplink": "unauthorized"}, _row(), True, "AURA refuses the gateway's login: retried"),
        (
            {"uplink": "down", "backing_off": {"inc-1": 3.2}},
            _row(),
            True,
            "AURA answered it with an error; tried again in 3 s, alone",
        ),
        ({"uplink": "up", "creating": True}, _row(state="sending"), True, "being sent to AURA now"),
        ({"uplink": "up"}, _row(state="sending"), True, "an earlier try may have reached AURA"),
        ({"uplink": "up"}, _row(), True, "next to go"),
        ({"uplink": "up"}, _row(), False, "waiting its turn: alarms go in press order"),
        ({"uplink": "up"}, _row(kind="note"), False, "behind the alarms (note after its raise)"),
    ],
)
def test_why_a_request_waits(
    daemon: dict[str, Any], row: dict[str, Any], first: bool, said: str
) -> None:
    assert said in why(row, daemon, first=first)


def test_why_without_an_answer_from_a_living_daemon_says_so() -> None:
    assert "did not answer" in why(_row(), None, first=True, running=True)


def test_queue_listing_is_a_table_with_the_uplink_first() -> None:
    rows = [
        {**_row(), "seq": 4, "created_wall": NOW - 90, "device_id": "00a1b2c4", "attempts": 12}
        | {"last_error": "ConnectError: refused", "route": "customer", "callout_id": None},
    ]
    data = queue_data(rows, {"uplink": "down", "uplink_error": "refused"}, source="daemon", now=NOW)
    lines = queue_listing(data).splitlines()
    assert lines[0] == "uplink: down (refused)"
    assert lines[1] == "1 waiting for AURA, in the order they go:"
    assert lines[2].split() == [
        *("SEQ", "KIND", "INCIDENT", "DEVICE", "WAITING", "TRIES", "LAST", "ERROR", "WHY"),
    ]
    assert lines[3].startswith("#4   raise  inc-1     00a1b2c4  90 s     12     ConnectError")
    empty = queue_data([], {"uplink": "up"}, source="daemon")
    assert queue_listing(empty, "daemon not running").splitlines()[-1] == "nothing waits for AURA"


# ------------------------------------------------------------------ status words


def _status(**more: Any) -> dict[str, Any]:
    return {
        "summary": "online, 0 queued, 4 devices, 1 open callout",
        "uplink": {"state": "up", "error": None},
        "pending_alarms": 0,
        "open_callouts": {"inc-1": "Responder Dispatched"},
        "undeliverable": {"inc-2": "HTTP 403: no subscription"},
        **more,
    }


def test_status_from_the_daemon_names_pid_uptime_and_version() -> None:
    data = _status(source="daemon", running=True, pid=42, uptime_s=750.0, version="0.1.0")
    lines = format_status(data).splitlines()
    assert lines[0] == "running: online, 0 queued, 4 devices, 1 open callout"
    assert lines[1] == "daemon: pid 42, up 12 min, version 0.1.0"
    assert "open callout: inc-1 stage Responder Dispatched" in lines
    assert "UNDELIVERABLE: inc-2: HTTP 403: no subscription" in lines
    assert readout.status_exit(data) == 0


def test_status_from_a_dead_daemons_file_says_how_old_it_is() -> None:
    data = _status(source="status-file", running=False, status_age_s=200.0, daemon_error="x")
    shown = format_status(data)
    assert shown.startswith("daemon not running (last status written 3 min ago): online, ")
    assert "daemon: pid" not in shown
    assert readout.status_exit(data) == readout.NOT_RUNNING == 3


def test_status_from_a_living_daemon_that_did_not_answer() -> None:
    data = _status(
        source="status-file", running=True, status_age_s=1.0, daemon_error="permission denied"
    )
    assert format_status(data).startswith(
        "daemon not answering (permission denied); its status file, written 1 s ago: online"
    )
    assert readout.status_exit(data) == readout.NOT_ANSWERING == 4
    none = {
        "source": "none",
        "running": False,
        "error": "no status file at /x",
        "daemon_error": "y",
    }
    assert readout.headline(none) == "daemon not running (no status file at /x)"
    assert readout.status_exit(none) == 3


def test_devices_listing_says_when_it_is_not_the_daemons_answer() -> None:
    data = {
        "running": True,
        "source": "status-file",
        "state": "daemon not answering (timeout); last status written 5 s ago",
        "devices": [],
        "unknown_devices": [],
    }
    assert devices_listing(data).splitlines()[0] == data["state"]
    assert devices_listing({**data, "source": "daemon"}).splitlines()[0] == "0 devices"


# ------------------------------------------------------------------ incidents


def _incident_row(n: int, state: str, stage: str | None = None, acked: bool = False) -> dict:
    return {
        "id": f"inc-{n}",
        "state": state,
        "aura_status": stage,
        "acknowledged_wall": NOW if acked else None,
        "press_wall": NOW + n,
        "press_wall_trusted": True,
        "device_id": "00a1b2c4",
        "callout_id": 880000 + n if stage else None,
    }


def test_incidents_list_open_first_then_recent_with_their_stage() -> None:
    newest_first = [
        _incident_row(6, "closed", "Closed"),
        _incident_row(5, "failed", acked=True),
        _incident_row(4, "open", "Responder On Scene"),
        _incident_row(3, "failed"),
        _incident_row(2, "cancelled"),
        _incident_row(1, "pending"),
    ]
    rows = for_list(newest_first, limit=2)
    assert [(r["id"], r["open"], r["stage"]) for r in rows] == [
        ("inc-4", True, "Responder On Scene"),
        ("inc-3", True, "UNDELIVERABLE"),
        ("inc-1", True, "not raised yet: queued for AURA"),
        ("inc-6", False, "Closed"),
        ("inc-5", False, "UNDELIVERABLE (acknowledged)"),
    ]
    assert len(for_list(newest_first)) == 6  # 0: no limit
    lines = grouped_listing(rows, total_ended=3).splitlines()
    assert lines[0] == "open or undeliverable: 3"
    assert lines[1].split()[:3] == ["INCIDENT", "PRESSED", "(UTC)"]
    assert lines[2].startswith("inc-4  ") and lines[2].endswith("Responder On Scene")
    assert lines[5] == "recent, ended: 2 of 3; --limit 0 lists all (newest first)"
    assert lines[7].startswith("inc-6  ") and "880006" in lines[7]
    assert grouped_listing([]) == "no incidents"


# ------------------------------------------------------------------ asking the daemon


@pytest.fixture
def silent_daemon(tmp_path: Path) -> Iterator[RuntimePaths]:
    """A control socket that accepts and never answers, and a status file whose writer
    lives (this process): a hung daemon."""
    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    status = tmp_path / "status.json"
    status.write_text(json.dumps({**_status(), "pid": os.getpid(), "updated_wall": time.time()}))
    try:
        yield RuntimePaths(tmp_path / "gateway.toml", tmp_path / "j.sqlite", status, path)
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_daemon_that_does_not_answer_is_not_waited_for(silent_daemon: RuntimePaths) -> None:
    asked = readout.ask(silent_daemon, "status", timeout_s=0.3)
    assert asked.answer is None and asked.alive
    assert asked.error == "the daemon did not answer within 0.3 s"


def test_status_falls_back_to_the_file_of_a_living_daemon(silent_daemon: RuntimePaths) -> None:
    data = readout.read_any_status(silent_daemon, timeout_s=0.3)
    assert (data["source"], data["running"]) == ("status-file", True)
    assert data["daemon_error"].startswith("the daemon did not answer")
    assert readout.status_exit(data) == 4


def test_without_socket_or_status_file_the_answer_is_still_json(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nstatus_path = "s.json"\ncontrol_path = "c.sock"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3
    data = json.loads(done.stdout)
    assert (data["source"], data["running"]) == ("none", False)
    assert data["daemon_error"] == f"no control socket at {tmp_path / 'c.sock'}"
    assert "daemon not running" in done.stderr
    broken = subprocess.run(
        [sys.executable, "-m", "gateway", "queue", "--json", "--config", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["source"] == "none"


def test_a_status_call_imports_none_of_the_daemons_libraries(tmp_path: Path) -> None:
    """Kept fast by keeping imports lazy: no pydantic, httpx, paho or asyncio for status
    (a figure for the time is in the README, never a timed assertion here)."""
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nstatus_path = "s.json"\ncontrol_path = "c.sock"\n')
    code = (
        "import sys\n"
        "from gateway.cli import main\n"
        f"main(['status', '--json', '--config', {str(config)!r}])\n"
        "heavy = sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('pydantic', 'httpx', 'paho', 'asyncio', 'serial'))\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []", done.stdout + done.stderr

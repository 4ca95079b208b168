"""The technician's read commands through the real daemon and the real CLI, as
subprocesses: `status`, `queue`, `devices` and `incidents` tell the truth while AURA is
down, when it is back, while a callout moves through its stages, for an alarm AURA
refuses, and after the daemon has stopped (where they say so, and what they still know).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

DESK = 0x00A1B2C4  # devices.sim.toml: customer 1003, fixed location
NO_SUBSCRIPTION = 0x00BAD001  # customer 1002: the sandbox answers 403 (no subscription)
CONFIGURED = {"00a1b2c3", "00a1b2c4", "00c0ffee", "00bad001"}


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def as_json(config: Path, *args: str) -> tuple[int, dict[str, Any] | list[Any], str]:
    done = cli(config, *args, "--json")
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise AssertionError(f"not JSON ({exc}): {done.stdout!r} {done.stderr!r}") from exc
    return done.returncode, data, done.stderr


def wait_cli(
    config: Path, command: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Run ``aura-gateway COMMAND --json`` until its answer matches (or fail with it)."""
    deadline = time.monotonic() + timeout
    while True:
        rc, data, _ = as_json(config, command)
        assert isinstance(data, dict)
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{command} never matched within {timeout} s: rc {rc} {data}")
        time.sleep(0.2)


def test_status_queue_and_incidents_tell_the_truth_from_outage_to_refusal(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox
) -> None:
    config = daemon_runner.write_config()
    daemon = daemon_runner.start()
    receiver = daemon_runner.receiver

    rc, status, _ = as_json(config, "status")
    assert rc == 0
    assert isinstance(status, dict)
    assert status["source"] == "daemon" and status["running"] is True
    assert status["pid"] == daemon.proc.pid
    assert status["status_age_s"] == 0 and status["uptime_s"] >= 0 and status["version"]
    assert status["daemon_error"] is None
    assert "sandbox-secret" not in json.dumps(status)

    # AURA taken down: the press is stored, its raise waits, and everything says why.
    sandbox.set_fault("down")
    receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    daemon.wait_event("raise_retry", 10)
    status = wait_cli(
        config, "status", lambda s: s["uplink"]["state"] == "down" and s["pending_alarms"], 10
    )
    assert status["source"] == "daemon" and status["pending_alarms"] == 1
    assert status["uplink"]["error"]
    assert status["open_callouts"] == {} and status["undeliverable"] == {}
    assert "uplink down" in status["summary"] and "1 queued" in status["summary"]

    rc, queue, _ = as_json(config, "queue")
    assert rc == 0
    assert isinstance(queue, dict)
    assert queue["source"] == "daemon" and queue["uplink"]["state"] == "down"
    [waiting] = queue["items"]
    assert (waiting["kind"], waiting["incident"], waiting["device"]) == (
        "raise",
        incident,
        "00a1b2c4",
    )
    assert waiting["attempts"] >= 1 and waiting["last_error"]
    assert "AURA unreachable" in waiting["why"]
    human = cli(config, "queue")
    assert human.returncode == 0, human.stderr
    assert incident in human.stdout and "AURA unreachable" in human.stdout
    assert human.stdout.splitlines()[0].startswith("uplink: down")

    rc, listed, _ = as_json(config, "incidents")
    assert rc == 0 and isinstance(listed, list)
    assert (listed[0]["id"], listed[0]["open"]) == (incident, True)
    assert listed[0]["stage"] == "not raised yet: queued for AURA"

    # AURA back: the alarm goes, the queue is empty, the callout is open at its first stage.
    sandbox.clear_fault()
    callout = int(daemon.wait_event("callout_raised", 15)["callout"])
    status = wait_cli(
        config,
        "status",
        lambda s: s["uplink"]["state"] == "up" and incident in s["open_callouts"],
        10,
    )
    assert status["pending_alarms"] == 0 and status["uplink"]["error"] is None
    assert status["open_callouts"][incident] == "created"
    queue = wait_cli(config, "queue", lambda q: q["items"] == [], 10)
    assert queue["pending"] == 0 and queue["uplink"]["state"] == "up"
    assert "nothing waits for AURA" in cli(config, "queue").stdout

    # The callout moves through its stages; status and incidents follow it.
    for stage in ("Responder Dispatched", "Responder On Scene"):
        sandbox.set_status(callout, stage)
        wait_cli(config, "status", lambda s, st=stage: s["open_callouts"].get(incident) == st, 10)
        human = cli(config, "status")
        assert human.returncode == 0, human.stderr
        assert f"open callout: {incident} stage {stage}" in human.stdout
    listed = wait_cli_list(config, lambda rows: rows[0]["stage"] == "Responder On Scene", 10)
    assert listed[0]["callout_id"] == callout and listed[0]["open"] is True
    sandbox.close_callout(callout)
    wait_cli(config, "status", lambda s: s["open_callouts"] == {}, 15)

    # An alarm AURA refuses (403, no subscription): undeliverable, said until acknowledged.
    receiver.press(NO_SUBSCRIPTION)
    refused = daemon.wait_event("alarm_undeliverable", 15)["incident"]
    status = wait_cli(config, "status", lambda s: refused in s["undeliverable"], 10)
    assert "Customer has no active subscription" in status["undeliverable"][refused]
    assert "1 UNDELIVERABLE" in status["summary"]
    human = cli(config, "status")
    assert f"UNDELIVERABLE: {refused}: " in human.stdout
    rows = wait_cli_list(config, lambda rows: rows[0]["id"] == refused, 5)
    assert (rows[0]["open"], rows[0]["stage"]) == (True, "UNDELIVERABLE")
    closed = next(r for r in rows if r["id"] == incident)
    assert closed["open"] is False and closed["state"] == "closed"
    shown = cli(config, "incidents")
    assert shown.stdout.startswith("open or undeliverable: 1\n"), shown.stdout
    assert shown.stdout.index(refused) < shown.stdout.index("recent, ended: 1")
    assert shown.stdout.index("recent, ended: 1") < shown.stdout.index(incident)
    assert wait_cli(config, "queue", lambda q: q["items"] == [], 5)["pending"] == 0

    rc, devices, _ = as_json(config, "devices")
    assert rc == 0 and isinstance(devices, dict)
    assert devices["source"] == "daemon" and devices["running"] is True
    assert {d["id"] for d in devices["devices"]} == CONFIGURED
    by_id = {d["id"]: d for d in devices["devices"]}
    assert by_id["00a1b2c4"]["last_seen_wall"] is not None  # it pressed
    assert by_id["00a1b2c4"]["route"] == "customer 1003"
    assert by_id["00a1b2c4"]["spoofable"] is False

    # The daemon stops: status says so, with what it knew last, and exits 3.
    daemon.stop()
    rc, status, err = as_json(config, "status")
    assert rc == 3
    assert isinstance(status, dict)
    assert status["source"] == "status-file" and status["running"] is False
    assert status["daemon_error"] and status["status_age_s"] >= 0
    assert refused in status["undeliverable"]  # what it knew is still shown
    assert "daemon not running (last status written" in err
    human = cli(config, "status")
    assert human.returncode == 3
    assert human.stdout.startswith("daemon not running (last status written "), human.stdout

    rc, queue, err = as_json(config, "queue")
    assert rc == 3 and isinstance(queue, dict)
    assert queue["source"] == "journal" and queue["running"] is False and queue["items"] == []
    assert "daemon not running" in err

    rc, devices, err = as_json(config, "devices")
    assert rc == 0 and isinstance(devices, dict)
    assert devices["source"] == "status-file" and devices["running"] is False
    assert {d["id"] for d in devices["devices"]} == CONFIGURED
    assert devices["state"].startswith("daemon not running (last status written")
    assert "daemon not running" in err


def wait_cli_list(
    config: Path, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rc, rows, err = as_json(config, "incidents")
        assert rc == 0 and isinstance(rows, list), err
        if rows and predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"incidents never matched within {timeout} s: {rows}")
        time.sleep(0.2)


def test_queue_keeps_the_raise_across_a_stopped_daemon_and_says_why(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox
) -> None:
    """With the daemon stopped while AURA is down, the queued raise is still listed from
    the journal, said to wait for the daemon; no status file and no journal: source none."""
    config = daemon_runner.write_config()
    assert as_json(config, "status")[:2] == (
        3,
        {
            "source": "none",
            "running": False,
            "daemon_error": f"no control socket at {daemon_runner.workdir / 'control.sock'}",
            "error": f"no status file at {daemon_runner.workdir / 'status.json'}",
            "status_path": str(daemon_runner.workdir / "status.json"),
        },
    )
    rc, queue, _ = as_json(config, "queue")
    assert (rc, queue["source"], queue["items"]) == (3, "none", [])  # type: ignore[index]

    daemon = daemon_runner.start()
    sandbox.set_fault("down")
    daemon_runner.receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    daemon.wait_event("raise_retry", 10)
    daemon.stop()

    rc, queue, _ = as_json(config, "queue")
    assert rc == 3 and isinstance(queue, dict)
    assert queue["source"] == "journal" and queue["uplink"] is None
    [waiting] = queue["items"]
    assert (waiting["kind"], waiting["incident"]) == ("raise", incident)
    assert waiting["why"].startswith("daemon not running")
    human = cli(config, "queue")
    assert human.returncode == 3
    assert human.stdout.startswith("daemon not running: nothing is sent until it starts")
    assert incident in human.stdout

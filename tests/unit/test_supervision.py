"""Device supervision timing, table-driven, with an injected monotonic clock and no I/O:
silent after interval x missed check-ins (not a nanosecond before), recovered when heard,
offline at once, and silent across a restart until the device speaks."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config.models import DevicesFile
from gateway.device_watch import DeviceWatch
from gateway.journal import AsyncJournal, Journal
from gateway.status import StatusModel
from gateway.supervision import RECOVERED, SILENT, Supervisor, Transition

S = 1_000_000_000
START = 7_000 * S  # the supervisor's start on the monotonic clock


class Clock:
    def __init__(self, ns: int = START) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def site(device_id: str, kind: str, **more: Any) -> dict[str, Any]:
    return {"id": device_id, "type": kind, "route": "site", "site_ref": "SHOP-1", **more}


def registry(*devices: dict[str, Any]) -> DevicesFile:
    return DevicesFile.model_validate(
        {
            "device_types": {
                "beacon": {"checkin_interval_s": 30, "missed_checkins": 3},  # silent at 90 s
                "plain": {},  # does not check in: not supervised by time
            },
            "devices": list(devices),
        }
    )


# a: every 30 s, 3 misses -> 90 s; b: overridden to every 10 s -> 30 s; c: not supervised.
REGISTRY = registry(
    site("a", "beacon"), site("b", "beacon", checkin_interval_s=10), site("c", "plain")
)


@dataclass
class Case:
    # (seconds after START as ns, operation, device, transitions expected as (device, state))
    steps: list[tuple[int, str, str | None, list[tuple[str, str]]]]
    silent_at_end: set[str]
    silent_at_start: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "unsupervised device is never silent by time": Case(
        [(1_000_000 * S, "check", None, [("a", SILENT), ("b", SILENT)])], {"a", "b"}
    ),
    "silent exactly at interval x misses, not a nanosecond before": Case(
        [
            (30 * S - 1, "check", None, []),
            (30 * S, "check", None, [("b", SILENT)]),
            (90 * S - 1, "check", None, []),
            (90 * S, "check", None, [("a", SILENT)]),
            (500 * S, "check", None, []),  # said once, not on every check
        ],
        {"a", "b"},
    ),
    "the per-device interval beats the type's": Case(
        [(30 * S, "check", None, [("b", SILENT)])], {"b"}
    ),
    "a check-in restarts the allowance": Case(
        [
            (25 * S, "heard", "b", []),
            (60 * S, "heard", "a", []),
            (55 * S - 1, "check", None, []),
            (55 * S, "check", None, [("b", SILENT)]),
            (150 * S - 1, "check", None, []),
            (150 * S, "check", None, [("a", SILENT)]),
        ],
        {"a", "b"},
    ),
    "a silent device that speaks recovers and gets a full allowance again": Case(
        [
            (30 * S, "check", None, [("b", SILENT)]),
            (40 * S, "heard", "b", [("b", RECOVERED)]),
            (41 * S, "heard", "b", []),  # recovered once
            (71 * S - 1, "check", None, []),
            (71 * S, "check", None, [("b", SILENT)]),
        ],
        {"b"},
    ),
    "offline is silent at once, supervised or not; any message recovers it": Case(
        [
            (5 * S, "offline", "c", [("c", SILENT)]),
            (6 * S, "offline", "c", []),
            (7 * S, "heard", "c", [("c", RECOVERED)]),
            (8 * S, "offline", "a", [("a", SILENT)]),
            (90 * S, "check", None, [("b", SILENT)]),  # a is silent already: not again
            (100 * S, "heard", "a", [("a", RECOVERED)]),
            (190 * S - 1, "check", None, []),
            (190 * S, "check", None, [("a", SILENT)]),
        ],
        {"a", "b"},
    ),
    "silent before the restart stays silent until it speaks": Case(
        [
            (1_000 * S, "check", None, [("b", SILENT)]),
            (1_001 * S, "heard", "a", [("a", RECOVERED)]),
        ],
        {"b"},
        silent_at_start={"a": "no check-in for 95 s (3 missed, every 30 s)"},
    ),
    "silent before the restart, unsupervised: silent until it speaks": Case(
        [
            (1_000_000 * S, "check", None, [("a", SILENT), ("b", SILENT)]),
            (1_000_001 * S, "heard", "c", [("c", RECOVERED)]),
        ],
        {"a", "b"},
        silent_at_start={"c": "its bridge reports it unavailable"},
    ),
    "not silent before the restart: a full allowance from the start": Case(
        [(30 * S - 1, "check", None, []), (30 * S, "check", None, [("b", SILENT)])], {"b"}
    ),
    "a device not in the registry is ignored": Case(
        [
            (1 * S, "heard", "0badf00d", []),
            (1 * S, "offline", "0badf00d", []),
            (29 * S, "check", None, []),
        ],
        set(),
        silent_at_start={"0badf00d": "removed from the registry since"},
    ),
}


def apply(sup: Supervisor, clock: Clock, at: int, op: str, dev: str | None) -> list[Transition]:
    clock.ns = START + at
    if op == "check":
        return sup.check(clock.ns)
    assert dev is not None
    one = sup.heard(dev, clock.ns) if op == "heard" else sup.offline(dev, clock.ns)
    return [] if one is None else [one]


@pytest.mark.parametrize("name", list(CASES))
def test_supervision_timing(name: str) -> None:
    case = CASES[name]
    clock = Clock()
    sup = Supervisor(REGISTRY, clock, case.silent_at_start)
    for at, op, dev, expected in case.steps:
        got = apply(sup, clock, at, op, dev)
        assert [(t.device_id, t.state) for t in got] == expected, (name, at / S, op, dev)
        assert all(t.reason for t in got)
    assert set(sup.silent()) == case.silent_at_end


@pytest.mark.parametrize(
    ("heard_at", "check_at", "reason"),
    [
        (5, 100, "no check-in for 95 s (3 missed, every 30 s)"),
        (5, 185, "no check-in for 180 s (6 missed, every 30 s)"),  # a late check says so
        (None, 90, "not heard since the gateway started 90 s ago (3 check-ins missed, every 30 s)"),
    ],
)
def test_reason_in_words(heard_at: int | None, check_at: int, reason: str) -> None:
    clock = Clock()
    sup = Supervisor(registry(site("a", "beacon")), clock)
    if heard_at is not None:
        sup.heard("a", START + heard_at * S)
    (silent,) = sup.check(START + check_at * S)
    assert silent.reason == reason
    assert sup.silent() == {"a": reason}
    recovered = sup.heard("a", START + (check_at + 10) * S)
    assert recovered is not None and recovered.state == RECOVERED
    assert "heard again" in recovered.reason and reason in recovered.reason


@pytest.mark.parametrize(
    ("devices", "steps", "deadline_s"),
    [
        ("abc", [], 30),  # b's 30 s first
        ("abc", [(30, "check", None)], 90),  # b silent: a's 90 s next
        ("abc", [(20, "heard", "b"), (25, "heard", "a")], 50),
        ("abc", [(60, "heard", "a"), (90, "check", None)], 150),
        ("abc", [(1_000, "check", None)], None),  # all supervised ones silent
        ("abc", [(5, "offline", "a"), (5, "offline", "b")], None),
        ("abc", [(5, "offline", "a"), (6, "heard", "a")], 30),
        ("c", [], None),  # nothing supervised: the daemon never wakes for it
        ("", [], None),
    ],
)
def test_next_deadline(
    devices: str, steps: list[tuple[int, str, str | None]], deadline_s: int | None
) -> None:
    clock = Clock()
    chosen = [d for d in REGISTRY.devices if d.id in devices]
    sup = Supervisor(DevicesFile(device_types=REGISTRY.device_types, devices=chosen), clock)
    for at, op, dev in steps:
        apply(sup, clock, at * S, op, dev)
    expected = None if deadline_s is None else START + deadline_s * S
    assert sup.next_deadline_ns() == expected


def test_silent_at_start_has_no_deadline_until_heard() -> None:
    clock = Clock()
    sup = Supervisor(registry(site("a", "beacon")), clock, {"a"})
    assert sup.is_silent("a") and sup.next_deadline_ns() is None
    assert sup.silent() == {"a": "silent since before the restart"}
    said = Supervisor(registry(site("a", "beacon")), clock, {"a": "no check-in for 95 s"})
    assert said.silent() == {"a": "silent since before the restart: no check-in for 95 s"}
    sup.heard("A", START + 10 * S)  # ids are matched without case, as in the registry
    assert not sup.is_silent("a") and sup.next_deadline_ns() == START + 100 * S


def test_reload_forgets_removed_devices_and_times_new_ones_from_now() -> None:
    clock = Clock()
    sup = Supervisor(REGISTRY, clock)
    assert [t.device_id for t in sup.check(START + 30 * S)] == ["b"]
    assert sup.offline("c", START + 31 * S) is not None
    clock.ns = START + 40 * S
    changed = sup.reload(
        registry(
            site("a", "beacon", checkin_interval_s=5),  # now every 5 s: silent at 15 s
            site("c", "plain"),
            site("d", "beacon"),  # new: 90 s from the reload
        )
    )
    assert changed == []
    assert set(sup.silent()) == {"c"}  # b is gone; c's offline stands
    assert sup.heard("b", START + 41 * S) is None  # forgotten
    assert [t.device_id for t in sup.check(START + 40 * S)] == ["a"]  # 40 s since start
    assert sup.next_deadline_ns() == START + 130 * S
    assert [t.device_id for t in sup.check(START + 130 * S)] == ["d"]


def test_reload_ends_a_timer_silence_when_supervision_is_switched_off() -> None:
    clock = Clock()
    sup = Supervisor(REGISTRY, clock)
    sup.check(START + 90 * S)
    clock.ns = START + 100 * S
    changed = sup.reload(registry(site("a", "plain"), site("b", "beacon", checkin_interval_s=10)))
    assert [(t.device_id, t.state) for t in changed] == [("a", RECOVERED)]
    assert set(sup.silent()) == {"b"}


# ---------------------------------------------------------------------- persistence


def test_journal_keeps_silent_devices_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    assert journal.silent_devices() == {}
    journal.set_supervision("00a1b2c3", True, "no check-in for 95 s (3 missed, every 30 s)")
    journal.set_supervision("00a1b2c4", True, "its bridge reports it unavailable")
    journal.set_supervision("00a1b2c4", False, "heard again after 12 s")
    journal.close()  # as after a power cut: the write was committed

    again = Journal(path)
    assert again.silent_devices() == {"00a1b2c3": "no check-in for 95 s (3 missed, every 30 s)"}
    again.close()


def test_supervision_table_is_added_to_an_older_journal(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE supervision")  # as written by a version before supervision
    db.commit()
    db.close()
    journal = Journal(path)
    journal.set_supervision("a", True, "r")
    assert journal.silent_devices() == {"a": "r"}
    journal.close()


# ---------------------------------------------------------------------- the daemon's side


async def test_device_watch_feeds_status_and_journal_from_device_seen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the inputs call (StatusModel.device_seen) drives supervision; transitions
    reach the status, the log and the journal, and a restart keeps the silence."""
    caplog.set_level(logging.INFO, logger="gateway.device_watch")
    journal = await AsyncJournal(tmp_path / "j.sqlite").open()
    clock = Clock()
    status = StatusModel(devices=3)
    changes: list[str] = []
    status.subscribe(lambda s: changes.append(s.summary()))
    watch = DeviceWatch(REGISTRY, journal, status, {}, clock_ns=clock)
    task = asyncio.create_task(watch.run())
    try:
        status.device_seen("a")  # a check-in
        status.device_seen("c", available=False)  # zigbee2mqtt: offline
        assert status.devices_seen["c"].silent
        assert "1 device silent" in status.summary()
        status.device_seen("c", checkin=False)  # a retained message: old news
        assert status.devices_seen["c"].silent
        status.device_seen("c", available=True, checkin=False)  # retained availability
        assert not status.devices_seen["c"].silent
        clock.ns = START + 30 * S
        watch._wake.set()  # the real clock did not move: wake it as the timeout would
        for _ in range(100):
            await asyncio.sleep(0.01)
            if status.devices_seen.get("b") and status.devices_seen["b"].silent:
                break
        b = status.devices_seen["b"]
        assert b.silent and b.last_seen_wall is None  # never heard, still listed
        assert b.silent_reason and "not heard since the gateway started 30 s ago" in b.silent_reason
        assert "1 device silent" in changes[-1]
        for _ in range(100):
            if await journal.call(lambda j: j.silent_devices()):
                break
            await asyncio.sleep(0.01)
        assert set(await journal.call(lambda j: j.silent_devices())) == {"b"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    events = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("event=device_silent device=b reason=") for m in events)
    assert any(m.startswith("event=device_silent device=c ") for m in events)
    assert any(m.startswith("event=device_recovered device=c ") for m in events)

    # A restart: b is silent from the first moment, before anything is heard.
    restarted = StatusModel(devices=3)
    silent = await journal.call(lambda j: j.silent_devices())
    DeviceWatch(REGISTRY, journal, restarted, silent, clock_ns=Clock())
    assert restarted.devices_seen["b"].silent
    assert (restarted.devices_seen["b"].silent_reason or "").startswith(
        "silent since before the restart: not heard since the gateway started 30 s ago"
    )
    assert restarted.summary().endswith("1 device silent")
    restarted.device_seen("b")
    assert not restarted.devices_seen["b"].silent
    await journal.close()


def test_fleet_status_lists_silent_devices_by_id_only() -> None:
    from gateway.mqtt_status import status_payload

    status = StatusModel(devices=3)
    status.device_supervision("00a1b2c4", True, "no check-in for 95 s (3 missed, every 30 s)")
    status.device_seen("sos_button_2", available=False)  # zigbee2mqtt says so, as before
    status.device_seen("00a1b2c3", tamper=True, low=True)
    payload = status_payload(status, "gw")
    assert payload["devices_silent"] == ["00a1b2c4", "sos_button_2"]
    assert "no check-in" not in str(payload)  # the reason stays on the gateway
    assert payload["summary"].endswith("1 device silent, 1 tampered, 1 battery low")


async def test_device_watch_reload_clears_a_removed_device(tmp_path: Path) -> None:
    journal = await AsyncJournal(tmp_path / "j.sqlite").open()
    status = StatusModel(devices=3)
    watch = DeviceWatch(REGISTRY, journal, status, {"b": "r"}, clock_ns=Clock())
    assert status.devices_seen["b"].silent
    watch.reload(registry(site("a", "beacon"), site("c", "plain")))
    assert not status.devices_seen["b"].silent
    assert "silent" not in status.summary()
    await journal.close()

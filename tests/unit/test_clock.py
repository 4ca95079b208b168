"""Clock trust: when the wall clock may be believed, and honest press times when it was not.

A gateway with no RTC and no network boots in 1970. Presses are ordered and timed by the
monotonic clock whatever the wall says; their wall times are recorded with whether the
clock was trusted, corrected from the monotonic clock once it is, and never shown to a
person as if they were true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

import pytest

from gateway import app
from gateway import clock as clock_module
from gateway.clock import CLOCK_FLOOR, GPS_FRESH_S, KERNEL_CACHE_S, ClockTrust, TrustState
from gateway.config import Config
from gateway.config.models import GpsdInputConfig
from gateway.incidents_view import describe, listing, read_incidents
from gateway.inputs import gpsd as gpsd_module
from gateway.inputs.gpsd import GpsdInput
from gateway.journal import AsyncJournal, Incident, Journal, NewIncident
from gateway.router import Router
from gateway.signals import Press, Stamp
from gateway.status import StatusModel
from gateway.uplink import late_note_text

NOW = 1_790_000_000.0  # 2026-09-21: after the floor
BOOT_1970 = 86_400.0  # a clock that started at the epoch, a day ago


class FakeClocks:
    """The tracker's three sources, set by the test."""

    def __init__(self, wall: float = NOW, kernel: bool = False) -> None:
        self.wall = wall
        self.mono = 1_000.0
        self.kernel = kernel
        self.kernel_calls = 0

    def kernel_synced(self) -> bool:
        self.kernel_calls += 1
        return self.kernel

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def tracker(self) -> ClockTrust:
        return ClockTrust(kernel=self.kernel_synced, wall=lambda: self.wall, mono=lambda: self.mono)


# ------------------------------------------------------------------ the trust rule


@pytest.mark.parametrize(
    ("case", "wall", "kernel", "gps_offset_s", "trusted", "source", "why"),
    [
        ("kernel synced", NOW, True, None, True, "kernel", None),
        ("GPS agrees", NOW, False, 0.5, True, "gps", None),
        ("GPS agrees within 2 s", NOW, False, -1.9, True, "gps", None),
        ("GPS disagrees: the clock is off", NOW, False, 30.0, False, None, "off by"),
        ("GPS disagrees even with kernel sync", NOW, True, -5.0, False, None, "off by"),
        ("wall in 1970, kernel says synced", BOOT_1970, True, None, False, None, "not set"),
        ("wall in 1970, GPS present", BOOT_1970, False, 0.0, False, None, "not set"),
        ("nothing vouches", NOW, False, None, False, None, "not synchronised"),
    ],
)
def test_trust_table(
    case: str,
    wall: float,
    kernel: bool,
    gps_offset_s: float | None,
    trusted: bool,
    source: str | None,
    why: str | None,
) -> None:
    clocks = FakeClocks(wall=wall, kernel=kernel)
    tracker = clocks.tracker()
    if gps_offset_s is not None:
        # The GPS says it is NOW; the wall clock reads NOW + offset (or 1970).
        tracker.gps_time(NOW - gps_offset_s if wall == NOW else NOW)
    state = tracker.state()
    assert (state.trusted, state.source) == (trusted, source), case
    if why is None:
        assert state.reason is None
    else:
        assert state.reason is not None and why in state.reason, state.reason


def test_stale_gps_time_expires() -> None:
    clocks = FakeClocks()
    tracker = clocks.tracker()
    tracker.gps_time(NOW)
    assert tracker.state().source == "gps"
    clocks.advance(GPS_FRESH_S - 1)
    assert tracker.trusted()
    clocks.advance(2)
    state = tracker.state()
    assert not state.trusted and "no recent GPS time" in (state.reason or "")


def test_stale_gps_time_no_longer_contradicts_a_synced_kernel() -> None:
    clocks = FakeClocks(kernel=True)
    tracker = clocks.tracker()
    tracker.gps_time(NOW - 60)  # a minute off
    assert not tracker.trusted()
    clocks.advance(GPS_FRESH_S + 1)
    assert tracker.state().source == "kernel"


def test_gps_time_is_anchored_to_the_monotonic_clock_across_a_jump() -> None:
    """The GPS time was heard while the clock said 1970; the clock then jumps to the right
    time: the GPS time, carried forward by the monotonic clock, now agrees with it."""
    clocks = FakeClocks(wall=BOOT_1970)
    tracker = clocks.tracker()
    tracker.gps_time(NOW)
    assert not tracker.trusted()
    clocks.mono += 10
    clocks.wall = NOW + 10  # NTP, or a technician, sets the clock
    state = tracker.state()
    assert (state.trusted, state.source) == (True, "gps")
    # A later jump away from the GPS time: untrusted again.
    clocks.mono += 1
    clocks.wall = NOW + 11 + 3600
    assert "off by +3600" in (tracker.state().reason or "")


def test_adjtimex_is_asked_at_most_once_a_second() -> None:
    clocks = FakeClocks(kernel=True)
    tracker = clocks.tracker()
    for _ in range(100):
        assert tracker.trusted()
    assert clocks.kernel_calls == 1
    clocks.advance(KERNEL_CACHE_S)
    tracker.trusted()
    assert clocks.kernel_calls == 2


def test_transitions_are_logged_once_and_told_with_an_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocks = FakeClocks(wall=BOOT_1970)
    tracker = clocks.tracker()
    told: list[TrustState] = []
    tracker.subscribe(told.append)
    with caplog.at_level(logging.INFO, logger="gateway.clock"):
        for _ in range(3):
            tracker.state()
        clocks.wall = NOW
        tracker.gps_time(NOW)
        tracker.gps_time(NOW + 0.2)
        clocks.advance(1)
        tracker.gps_time(NOW + 1 - 40)  # GPS: the clock is 40 s fast
        tracker.gps_time(NOW + 1 - 41)  # a new offset is not a new story
        clocks.advance(1)
        tracker.gps_time(NOW + 2)
    events = [r.getMessage().split(" wall=")[0] for r in caplog.records]
    assert events == [
        "event=clock_untrusted reason='wall clock before 2026-01-01T00:00:00Z: not set'",
        "event=clock_trusted source=gps",
        "event=clock_untrusted reason='GPS time says the wall clock is off by +40.0 s'",
        "event=clock_trusted source=gps",
    ]
    assert [(s.trusted, s.epoch) for s in told] == [(False, 0), (True, 1), (False, 1), (True, 2)]


def test_stamp_now_records_the_trackers_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = FakeClocks(kernel=True)
    monkeypatch.setattr("gateway.signals.CLOCK", clocks.tracker())
    assert Stamp.now().wall_trusted
    clocks.kernel = False
    clocks.advance(KERNEL_CACHE_S)
    assert not Stamp.now().wall_trusted
    # Built by hand (tests, the journal): untrusted unless said.
    assert not Stamp(mono_ns=1, wall=NOW).wall_trusted


def test_clock_synchronised_answers_a_bool() -> None:
    assert clock_module.clock_synchronised() in (True, False)


# ------------------------------------------------------------------ the journal


def press(n: int, mono_s: float, wall: float, trusted: bool, boot: str = "this-boot") -> Press:
    return Press(
        source="serial:receiver",
        device_id=f"00a1b2c{n}",
        gesture="single",
        dedup_key=f"rf:{n}",
        counter=n,
        stamp=Stamp(mono_ns=int(mono_s * 1e9), wall=wall, boot_id=boot, wall_trusted=trusted),
    )


def raise_(journal: Journal, p: Press, new: NewIncident) -> None:
    journal.commit_press(p, decision="raise", reason="r", new_incident=new)


def new_incident(n: int) -> NewIncident:
    return NewIncident(
        key=f"customer:{n}",
        device_id=f"00a1b2c{n}",
        route="customer",
        request={"route": "customer", "customer_id": n, "body": {"responseTypeId": 1}},
        location_reason="no location",
    ).with_id()


def test_restamp_corrects_this_boots_untrusted_press_times_from_the_monotonic_clock(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    # Booted in 1970: presses at monotonic 100 s and 103 s, walls a day after the epoch.
    first, second = new_incident(1), new_incident(2)
    raise_(journal, press(1, 100.0, BOOT_1970 + 100, False), first)
    raise_(journal, press(2, 103.0, BOOT_1970 + 103, False), second)
    # One from an earlier boot (its monotonic clock is gone) and one already trusted.
    old, good = new_incident(3), new_incident(4)
    raise_(journal, press(3, 50.0, BOOT_1970 + 50, False, boot="old-boot"), old)
    raise_(journal, press(4, 104.0, NOW - 6, True), good)

    # The clock is trusted at monotonic 110 s, when it reads NOW.
    assert journal.restamp_untrusted("this-boot", NOW, int(110 * 1e9)) == (2, 2)
    corrected = {i.id: i for i in journal.incidents()}
    assert corrected[first.id].press_wall == pytest.approx(NOW - 10)
    assert corrected[second.id].press_wall == pytest.approx(NOW - 7)
    assert corrected[first.id].press_wall_trusted and corrected[second.id].press_wall_trusted
    assert corrected[old.id].press_wall == BOOT_1970 + 50
    assert not corrected[old.id].press_wall_trusted
    assert corrected[good.id].press_wall == NOW - 6 and corrected[good.id].press_wall_trusted
    rows = journal._db.execute("SELECT dedup_key, wall, wall_trusted FROM presses ORDER BY id")
    walls = {key: (wall, bool(trusted)) for key, wall, trusted in rows}
    assert walls["rf:1"] == (pytest.approx(NOW - 10), True)
    assert walls["rf:3"] == (BOOT_1970 + 50, False)
    # Done once: a second pass finds nothing left to correct.
    assert journal.restamp_untrusted("this-boot", NOW + 5, int(115 * 1e9)) == (0, 0)
    assert journal.press(1).stamp.wall_trusted
    assert journal.incidents()[0].id == first.id  # insertion order, not wall order
    journal.close()


def test_an_old_journal_gains_the_trust_columns_as_untrusted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    journal = Journal(path)
    inc = new_incident(1)
    raise_(journal, press(1, 100.0, NOW, True), inc)
    journal.close()
    # As written by the version before: no trust columns at all.
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE presses DROP COLUMN wall_trusted")
    db.execute("ALTER TABLE incidents DROP COLUMN press_wall_trusted")
    db.commit()
    # The technician's view reads it before any daemon migrated it.
    [row] = read_incidents(path)
    assert row["press_wall_trusted"] is False and row["presses"][0]["wall_trusted"] is False
    db.close()

    reopened = Journal(path)
    [old] = reopened.incidents()
    assert old.press_wall == NOW and not old.press_wall_trusted
    assert not reopened.press(1).stamp.wall_trusted
    reopened.close()


def test_attached_press_note_never_says_a_1970_time(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    inc = new_incident(1)
    raise_(journal, press(1, 100.0, BOOT_1970 + 100, False), inc)
    again = Press(
        "serial:receiver",
        "00a1b2c1",
        "single",
        "rf:again",
        2,
        stamp=Stamp(mono_ns=int(101e9), wall=BOOT_1970 + 101, boot_id="this-boot"),
    )
    journal.commit_press(again, decision="attach", reason="open", incident_id=inc.id)
    notes = journal._db.execute("SELECT payload FROM outbox WHERE kind = 'note'").fetchall()
    [text] = [json.loads(n[0])["text"] for n in notes]
    assert text == (
        "Panic button 00a1b2c1 pressed again (time unknown: the gateway's clock was not set)."
    )
    journal.close()


# ------------------------------------------------------------------ what people are shown


def incident_row(*, boot: str, mono_s: float, wall: float, trusted: bool) -> Incident:
    return Incident(
        id="inc-1",
        key="customer:1",
        device_id="00a1b2c1",
        route="customer",
        state="sending",
        request={},
        location_reason="r",
        callout_id=None,
        tracking_url=None,
        aura_status=None,
        attempts=1,
        last_error=None,
        press_mono_ns=int(mono_s * 1e9),
        press_boot_id=boot,
        press_wall=wall,
        press_wall_trusted=trusted,
    )


def note(incident: Incident, *, trusted_now: bool, now_wall: float = NOW) -> str | None:
    return late_note_text(
        incident,
        now_mono_ns=int(195 * 1e9),
        now_wall=now_wall,
        trusted=trusted_now,
        late_after_s=30.0,
        boot_id="this-boot",
    )


def test_late_note_same_boot_trusted_clock_computes_the_press_time_from_the_delay() -> None:
    # Stamped in 1970; the clock is trusted now: the press was 95 s before now.
    pressed = incident_row(boot="this-boot", mono_s=100.0, wall=BOOT_1970, trusted=False)
    assert note(pressed, trusted_now=True) == (
        "Panic button pressed at 2026-09-21 14:11:45 UTC, delivered 95 s late: "
        "the gateway's uplink was down."
    )


def test_late_note_same_boot_untrusted_clock_says_the_time_is_unknown() -> None:
    pressed = incident_row(boot="this-boot", mono_s=100.0, wall=BOOT_1970 + 100, trusted=False)
    text = note(pressed, trusted_now=False, now_wall=BOOT_1970 + 195)
    assert text == (
        "Panic button pressed at an unknown time (the gateway's clock was not set), "
        "95 s before delivery; delivered late: the gateway's uplink was down."
    )
    assert "1970" not in (text or "")
    unsynced = note(pressed, trusted_now=False, now_wall=NOW)
    assert unsynced is not None and "clock was not synchronised" in unsynced


def test_late_note_not_late_is_no_note() -> None:
    pressed = incident_row(boot="this-boot", mono_s=180.0, wall=NOW, trusted=True)
    assert note(pressed, trusted_now=True) is None


def test_late_note_previous_boot_says_the_time_only_when_it_was_trusted() -> None:
    trusted = incident_row(boot="old-boot", mono_s=5.0, wall=NOW - 3600, trusted=True)
    assert note(trusted, trusted_now=True) == (
        "Panic button pressed before the gateway restarted (power cut or crash); delivered "
        "late. Press time per the gateway's clock: 2026-09-21 13:13:20 UTC"
    )
    untrusted = incident_row(boot="old-boot", mono_s=5.0, wall=BOOT_1970, trusted=False)
    assert note(untrusted, trusted_now=True) == (
        "Panic button pressed before the gateway restarted (power cut or crash); delivered "
        "late. Press time unknown: the gateway's clock was not set at the press."
    )


def test_incidents_view_marks_untrusted_press_times(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    raise_(journal, press(1, 100.0, BOOT_1970 + 100, False), new_incident(1))
    raise_(journal, press(2, 101.0, NOW, False), new_incident(2))
    raise_(journal, press(3, 102.0, NOW + 1, True), new_incident(3))
    journal.close()
    rows = read_incidents(path)
    assert [r["device_id"] for r in rows] == ["00a1b2c3", "00a1b2c2", "00a1b2c1"]
    shown = listing(rows)
    assert "1970" not in shown
    lines = shown.splitlines()
    assert "2026-09-21 14:13:21  " in lines[1]  # trusted: the time, unmarked
    assert "2026-09-21 14:13:20 ?" in lines[2]  # plausible but unverified
    assert "clock not set" in lines[3]  # 1970
    assert lines[-1].startswith("? the gateway's clock was not synchronised")
    set_1970 = describe(rows[2])
    assert "pressed    time unknown (the gateway's clock was not set)" in set_1970
    assert "1970" not in set_1970
    assert "pressed    2026-09-21 14:13:21 UTC;" in describe(rows[0])


# ------------------------------------------------------------------ gpsd feeds the tracker


class _Router:
    def on_gateway_fix(self, fix: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("tpv", "told"),
    [
        ({"mode": 3, "time": "2026-09-21T14:13:20.000Z", "lat": 1.0, "lon": 2.0}, NOW),
        ({"mode": 2, "time": "2026-09-21T14:13:20.500Z"}, NOW + 0.5),  # a fix, no position
        ({"mode": 1, "time": "2026-09-21T14:13:20.000Z"}, None),  # no fix: never trusted
        ({"mode": 0, "time": "2026-09-21T14:13:20.000Z"}, None),
        ({"mode": 3, "time": "not a time"}, None),
        ({"mode": 3}, None),
    ],
)
def test_gpsd_tells_the_tracker_the_gps_time_only_with_a_fix(
    monkeypatch: pytest.MonkeyPatch, tpv: dict[str, Any], told: float | None
) -> None:
    heard: list[float] = []

    class Tracker:
        def gps_time(self, utc: float, received_mono: float | None = None) -> None:
            heard.append(utc)

    monkeypatch.setattr(gpsd_module, "CLOCK", Tracker())
    cfg = GpsdInputConfig(type="gpsd", name="gps", port=2947)
    gps = GpsdInput(cfg, cast(Router, _Router()), StatusModel(), cast(Config, None))
    gps._on_tpv({"class": "TPV", **tpv})
    assert heard == ([] if told is None else [pytest.approx(told)])


async def test_the_daemon_task_corrects_press_times_when_trust_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clocks = FakeClocks(wall=BOOT_1970)
    tracker = clocks.tracker()
    monkeypatch.setattr(app, "CLOCK", tracker)
    monkeypatch.setattr(app, "CLOCK_CHECK_S", 0.05)
    journal = await AsyncJournal(tmp_path / "j.sqlite").open()
    try:
        mono_ns = time.monotonic_ns() - int(20e9)  # pressed 20 s ago, clock in 1970
        stamp = Stamp(mono_ns=mono_ns, wall=BOOT_1970, boot_id=app.BOOT_ID)
        p = Press("serial:receiver", "00a1b2c1", "single", "rf:1", 1, stamp=stamp)
        inc = new_incident(1)
        await journal.call(
            lambda j: j.commit_press(p, decision="raise", reason="r", new_incident=inc)
        )
        task = asyncio.create_task(app._correct_press_times(journal))
        await asyncio.sleep(0.2)
        [before] = await journal.call(lambda j: j.incidents())
        assert not before.press_wall_trusted
        real_now = time.time()
        clocks.wall = real_now  # the clock is set...
        tracker.gps_time(real_now)  # ...and the GPS agrees: the listener wakes the task
        for _ in range(100):
            [after] = await journal.call(lambda j: j.incidents())
            if after.press_wall_trusted:
                break
            await asyncio.sleep(0.02)
        assert after.press_wall_trusted
        assert after.press_wall == pytest.approx(real_now - 20, abs=1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await journal.close()


def test_the_floor_is_2026() -> None:
    assert time.strftime("%Y-%m-%d", time.gmtime(CLOCK_FLOOR)) == "2026-01-01"
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW)) == "2026-09-21 14:13:20"

"""A gateway that boots with its clock in 1970 still raises alarms in press order and, once
the clock is trusted, tells everyone the true press times.

The real daemon runs under libfaketime (Debian package ``faketime``): its wall clock
starts at 1970-01-02 while its monotonic clock is the real one, as on a box with no RTC
and no network. Two buttons of two customers are pressed while AURA is down. Then the
clock jumps to the right time (the timestamp file is rewritten to ``+0``) with a real
gpsd reporting a fix and the current UTC time, so trust comes; then AURA comes back.
"""

from __future__ import annotations

import calendar
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.sim import SimulatedReceiver
from gateway.clock import CLOCK_FLOOR, clock_synchronised
from gateway.demo import DaemonProcess, write_sim_config
from gateway.incidents_view import read_incidents
from gateway.sandbox import AuraSandbox, RecordedRequest
from tests.gpsd_service import GpsdService

from .conftest import FAST_AURA, DaemonRunner

PENDANT = 0x00A1B2C3  # devices.sim.toml: customer 1001
DESK = 0x00A1B2C4  # customer 1003
LATE_AFTER_S = 2.0  # a raise this late gets the control-room note saying when it was pressed


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        message = "libfaketime is not installed (apt-get install faketime)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


def sentence(body: str) -> bytes:
    checksum = 0
    for byte in body.encode():
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n".encode()


def gps_cycle(now: float) -> list[bytes]:
    """One receiver cycle (RMC, GGA, GSA) with a 3D fix near Vienna at UTC ``now``."""
    t = time.gmtime(now)
    hms = time.strftime("%H%M%S", t) + f".{int(now % 1 * 100):02d}"
    date = time.strftime("%d%m%y", t)
    return [
        sentence(f"GPRMC,{hms},A,4804.1454,N,01621.5400,E,0.0,0.0,{date},,,A"),
        sentence(f"GPGGA,{hms},4804.1454,N,01621.5400,E,1,09,0.9,190.0,M,44.0,M,,"),
        sentence("GPGSA,A,3,02,05,12,15,18,21,25,29,31,,,,1.6,0.9,1.3"),
    ]


class GpsFeed:
    """A receiver sending the current time twice a second, until stopped."""

    def __init__(self, gpsd: GpsdService) -> None:
        self.gpsd = gpsd
        self._on = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmea-now", daemon=True)

    def start(self) -> None:
        self._on.set()
        self._thread.start()

    def _run(self) -> None:
        while self._on.is_set():
            self.gpsd.send_cycle(gps_cycle(time.time()))
            time.sleep(0.5)  # a receiver's pace (twice its usual rate), not a synchronisation

    def stop(self) -> None:
        self._on.clear()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


@pytest.fixture
def gpsd() -> Iterator[GpsdService]:
    with GpsdService() as service:
        yield service


def creates(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [
        r
        for r in requests
        if r.method == "POST" and r.path.endswith("/callouts") and r.status == 201
    ]


def event_posts(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [
        r
        for r in requests
        if r.method == "POST" and r.path.endswith("/events") and (r.status or 500) < 300
    ]


def incidents_cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "incidents", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def pressed_at(note: str) -> float:
    found = re.search(r"pressed at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", note)
    assert found, note
    return calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))


def test_boot_in_1970_then_clock_jump_raises_in_press_order_with_honest_times(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    gpsd: GpsdService,
    tmp_path: Path,
) -> None:
    lib = libfaketime()
    clock_file = tmp_path / "faketime"
    clock_file.write_text("@1970-01-02 00:00:00\n")
    config = write_sim_config(
        tmp_path,
        base_url=sandbox.base_url,
        port_path=str(tmp_path / "receiver"),
        aura=FAST_AURA,
        gateway={"late_alarm_after_s": LATE_AFTER_S},
        extra_inputs=[
            {
                "type": "gpsd",
                "name": "gps",
                "port": gpsd.port,
                "connect_timeout_s": 1.0,
                "read_timeout_s": 2.0,
                "reconnect_max_s": 0.5,
            }
        ],
    )
    daemon_runner.config_path = config
    sandbox.set_fault("down")  # the uplink is down too: the alarms wait in the journal
    daemon = DaemonProcess(
        config,
        echo=lambda _line: None,
        env={
            "LD_PRELOAD": lib,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_TIMESTAMP_FILE": str(clock_file),
            "FAKETIME_NO_CACHE": "1",
        },
    )
    daemon_runner.processes.append(daemon)  # stopped, and its log shown on failure
    daemon.wait_event("ready", 20)
    untrusted = daemon.wait_event("clock_untrusted", 5)
    assert "not set" in untrusted["reason"] and untrusted["wall"].startswith("1970-01-02")

    # Two buttons, two customers, a few seconds apart, while the clock says 1970.
    first = receiver.press(PENDANT, gesture="single")
    first_at = time.time()  # the test's own clock is the real one
    assert receiver.wait_acked(first, 10)
    first_incident = daemon.wait_event("press_stored", 10)["incident"]
    time.sleep(2.0)  # the gap between the two presses, the point of the scenario
    second = receiver.press(DESK, gesture="single")
    second_at = time.time()
    assert receiver.wait_acked(second, 10)
    second_incident = daemon.wait_event("press_stored", 10)["incident"]

    # The journal knows the presses' order (monotonic), but their wall times are 1970
    # and marked so; the technician is never shown a 1970 date.
    rows = {r["id"]: r for r in read_incidents(tmp_path / "journal.sqlite")}
    for incident in (first_incident, second_incident):
        assert rows[incident]["press_wall"] < CLOCK_FLOOR
        assert rows[incident]["press_wall_trusted"] is False
    listed = incidents_cli(config, "list")
    assert "1970" not in listed and listed.count("clock not set") == 2, listed

    # The GPS gets a fix and the time; then the clock jumps to the right time.
    feed = GpsFeed(gpsd)
    feed.start()
    try:
        daemon.wait_event("gps_fix", 10)
        clock_file.write_text("+0\n")
        trusted = daemon.wait_event("clock_trusted", 10)
        # Where the kernel clock is NTP-disciplined (a CI runner) it may vouch first.
        assert trusted["source"] in (("gps", "kernel") if clock_synchronised() else ("gps",))
        corrected = daemon.wait_event("press_times_corrected", 10)
        assert (corrected["presses"], corrected["incidents"]) == ("2", "2")

        # AURA comes back, late enough for both alarms to count as late: both are raised,
        # in press order.
        time.sleep(max(0.0, second_at + LATE_AFTER_S + 1.0 - time.time()))
        sandbox.clear_fault()
        raised = [daemon.wait_event("callout_raised", 15) for _ in range(2)]
    finally:
        feed.stop()
    assert [r["incident"] for r in raised] == [first_incident, second_incident]
    made = creates(sandbox.requests())
    assert [r.path for r in made] == [
        "/panic-api/v2/customers/1001/callouts",
        "/panic-api/v2/customers/1003/callouts",
    ]

    # The journal and the technician's view: true press times, marked trusted.
    for incident, pressed in ((first_incident, first_at), (second_incident, second_at)):
        [record] = json.loads(incidents_cli(config, "--json", "show", incident))
        assert record["press_wall_trusted"] is True
        assert abs(record["press_wall"] - pressed) < 2.0, (record["press_wall"], pressed)
        assert all(p["wall_trusted"] for p in record["presses"])
        assert all(abs(p["wall"] - pressed) < 2.0 for p in record["presses"])
        shown = incidents_cli(config, "show", incident)
        expected = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record["press_wall"]))
        assert f"pressed    {expected}" in shown and "1970" not in shown, shown
        assert "clock not set" not in shown.split("raised")[0], shown

    # The control room's late-alarm notes say when each button was really pressed. (The
    # pendant's callout also gets a note that its location is not a live one.)
    for done in raised:
        assert daemon.wait_event("late_alarm", 10)["incident"] == done["incident"]
    assert sandbox.wait_for(lambda reqs: len(event_posts(reqs)) >= 3, 10)
    events = {c["id"]: c["events"] for c in sandbox.callouts()}
    for done, pressed in zip(raised, (first_at, second_at), strict=True):
        [note] = [e for e in events[int(done["callout"])] if "late" in e]
        assert "1970" not in note and "unknown" not in note, note
        assert -1.5 < pressed_at(note) - pressed < 2.0, (note, pressed)

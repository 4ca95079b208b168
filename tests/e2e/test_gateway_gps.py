"""A button in a vehicle has no GPS of its own: the callout carries the gateway's gpsd fix.

Through the real daemon process, a real gpsd fed a real receiver log over UDP
(tests/gpsd_service.py), the simulated receiver on a pty and the AURA sandbox.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox, RecordedRequest
from tests.gpsd_service import GpsdService, nmea_positions

from .conftest import DaemonRunner

# A button the simulated receiver holds a key for (gateway.demo.SIM_DEVICE_KEYS), set up
# here as a dashboard button in a vehicle: no GPS, customer route, live location.
VEHICLE = 0x00A1B2C4
HAB = "hab-gpspi.log"  # steady 3D fix near Vienna (48.069 N, 16.359 E)
MAX_FIX_AGE_S = 3.0  # short, so a dead gpsd's fix goes stale within the test
MAX_ERROR_M = 50.0

DEVICES = f"""\
[device_types.vehicle-button]
raise_gestures = ["single"]

[[devices]]
id = "{VEHICLE:08x}"
type = "vehicle-button"
label = "Van 7, dashboard button"
route = "customer"
customer_id = 1001
response_type_id = 1
location = {{ policy = "live" }}
travels_with_gateway = true
"""


@pytest.fixture
def gpsd() -> Iterator[GpsdService]:
    with GpsdService() as service:
        service.stream(HAB, cycle_s=0.1)  # the receiver on the dashboard, always sending
        yield service


def start_daemon(daemon_runner: DaemonRunner, gpsd: GpsdService, tmp_path: Path) -> Any:
    devices = tmp_path / "devices.toml"
    devices.write_text(DEVICES)
    path = daemon_runner.write_config(devices_file=devices)
    config = tomllib.loads(path.read_text())
    config["gateway"]["max_fix_age_s"] = MAX_FIX_AGE_S
    config["inputs"].append(
        {
            "type": "gpsd",
            "name": "gps",
            "port": gpsd.port,
            "connect_timeout_s": 1.0,
            "read_timeout_s": 2.0,
            "reconnect_max_s": 0.5,
            "max_error_m": MAX_ERROR_M,
            "watchdog_s": 4.0,
        }
    )
    path.write_text(tomli_w.dumps(config))
    daemon = daemon_runner.start()
    daemon.wait_event("gps_fix", 10)  # the gateway knows where it is before the press
    return daemon


# Both take the sandbox's record (sandbox.requests(), or the list wait_for hands its
# predicate: wait_for holds the sandbox's lock, so its predicate must not ask again).
def locations(requests: list[RecordedRequest], callout_id: int) -> list[RecordedRequest]:
    """Location updates AURA accepted for the callout."""
    path = f"/panic-api/v2/callouts/{callout_id}/location/callout"
    return [r for r in requests if r.path == path and r.status == 200]


def reads(requests: list[RecordedRequest], callout_id: int) -> list[RecordedRequest]:
    """Plain reads of the callout: what the follower does when it has no fresh fix."""
    path = f"/panic-api/v2/callouts/{callout_id}"
    return [r for r in requests if r.method == "GET" and r.path == path]


def coordinates(request: RecordedRequest) -> tuple[float, float]:
    body = request.body
    return body["latitude"], body["longitude"]


def test_press_in_the_vehicle_raises_with_the_gateway_gps_position(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    gpsd: GpsdService,
    tmp_path: Path,
) -> None:
    daemon = start_daemon(daemon_runner, gpsd, tmp_path)
    reported = gpsd.reported_positions(distinct=len(nmea_positions(HAB)))
    assert len(reported) == 3, "gpsd should report the log's three positions"

    seq = receiver.press(VEHICLE, gesture="single")
    raised = daemon.wait_event("callout_raised", 15)
    assert receiver.wait_acked(seq, 5)
    [create] = [
        r for r in sandbox.requests() if r.method == "POST" and r.path.endswith("/callouts")
    ]
    assert create.path == "/panic-api/v2/customers/1001/callouts"
    location = create.body["location"]
    # Exactly what gpsd reported: the same numbers, not the gateway's surveyed fallback.
    assert (location["latitude"], location["longitude"]) in reported
    assert 0 < location["accuracy"] <= MAX_ERROR_M
    assert set(create.body) == {"responseTypeId", "location"}  # never also a fixed site

    # The technician's view of the incident says where the position came from.
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "incidents",
            "--config",
            str(daemon_runner.config_path),
            "show",
            raised["incident"],
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "location   fresh gateway GPS fix" in shown.stdout

    # Following the callout streams the gateway's position too.
    callout_id = int(raised["callout"])
    assert sandbox.wait_for(lambda reqs: len(locations(reqs, callout_id)) >= 1, 10)
    assert coordinates(locations(sandbox.requests(), callout_id)[0]) in reported


def test_gpsd_killed_mid_callout_stops_updates_once_stale_and_resumes_after_restart(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    gpsd: GpsdService,
    tmp_path: Path,
) -> None:
    daemon = start_daemon(daemon_runner, gpsd, tmp_path)
    reported = gpsd.reported_positions(distinct=len(nmea_positions(HAB)))
    receiver.press(VEHICLE, gesture="single")
    callout_id = int(daemon.wait_event("callout_raised", 15)["callout"])
    assert sandbox.wait_for(lambda reqs: len(locations(reqs, callout_id)) >= 2, 10)

    gpsd.kill()
    killed_ns = time.monotonic_ns()
    daemon_runner.wait_status(lambda s: s["inputs"]["gps"]["state"] == "disconnected", 10)
    # Once the last fix is older than max_fix_age_s the follower only reads the callout:
    # two reads in a row with no location update since the first of them.
    reads_before = len(reads(sandbox.requests(), callout_id))
    assert sandbox.wait_for(lambda reqs: len(reads(reqs, callout_id)) >= reads_before + 2, 15)
    first_read = reads(sandbox.requests(), callout_id)[reads_before]
    after_kill = [r for r in locations(sandbox.requests(), callout_id) if r.arrived_ns > killed_ns]
    assert all(r.arrived_ns < first_read.arrived_ns for r in after_kill)
    # ... but not at once: the fix that was fresh when gpsd died was still sent, so a gpsd
    # restart of a second or two does not cost the responder the position.
    assert after_kill, "the last fix was dropped when gpsd died, before it was stale"
    assert all(coordinates(r) in reported for r in after_kill)

    sent = len(locations(sandbox.requests(), callout_id))
    gpsd.start()  # same port; the receiver has been sending all along
    daemon_runner.wait_status(lambda s: s["inputs"]["gps"]["state"] == "ok", 15)
    assert sandbox.wait_for(lambda reqs: len(locations(reqs, callout_id)) > sent, 10)
    assert all(coordinates(r) in reported for r in locations(sandbox.requests(), callout_id)[sent:])

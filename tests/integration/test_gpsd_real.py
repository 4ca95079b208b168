"""The gpsd input against a real gpsd fed real receiver logs (tests/data/nmea) over UDP.

The router is the boundary: a recorder of what the engine would be told. What is checked
is what a responder would notice: the coordinates the receiver reported, never a
position made up from missing fields, a lost fix withdrawn, and gpsd crashing and coming
back without anybody restarting the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest

from gateway.config import Config
from gateway.config.models import GpsdInputConfig
from gateway.inputs.gpsd import GpsdInput
from gateway.router import Router
from gateway.signals import GATEWAY_FIX, Fix
from gateway.status import StatusModel
from tests.gpsd_service import GpsdService, nmea_positions

HAB = "hab-gpspi.log"  # a Raspberry Pi GPS board with a steady 3D fix near Vienna
COLDBOOT = "gp-320fw-2019-04-07-coldboot.log"  # a fix, then the receiver reboots: no fix
MAX_ERROR_M = 100.0


class RecordingRouter:
    def __init__(self) -> None:
        self.calls: list[Fix | None] = []

    def on_gateway_fix(self, fix: Fix | None) -> None:
        self.calls.append(fix)

    @property
    def fixes(self) -> list[Fix]:
        return [c for c in self.calls if c is not None]


async def until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def near(fix: Fix, positions: list[tuple[float, float]]) -> bool:
    return any(
        abs(fix.latitude - lat) < 1e-6 and abs(fix.longitude - lon) < 1e-6 for lat, lon in positions
    )


@pytest.fixture
def gpsd() -> Iterator[GpsdService]:
    with GpsdService() as service:
        yield service


class Running:
    def __init__(self, gpsd: GpsdService) -> None:
        self.router = RecordingRouter()
        self.status = StatusModel()
        config = GpsdInputConfig(
            type="gpsd",
            name="gps",
            port=gpsd.port,
            connect_timeout_s=1.0,
            read_timeout_s=2.0,
            reconnect_max_s=0.5,
            max_error_m=MAX_ERROR_M,
        )
        # The gpsd input reads nothing of the gateway config.
        self.input = GpsdInput(config, cast(Router, self.router), self.status, cast(Config, None))

    @property
    def health(self) -> Any:
        return self.status.inputs["gps"]

    async def watching(self) -> None:
        """Connected, and gpsd has answered ?WATCH (DEVICES and WATCH came back): from
        now on every report of the receiver reaches the input."""
        frames = self.input.frames_ok
        await until(lambda: self.input.connected and self.input.frames_ok >= frames + 2)


@pytest.fixture
async def running(gpsd: GpsdService) -> AsyncIterator[Running]:
    r = Running(gpsd)
    task = asyncio.create_task(r.input.run())
    await r.watching()
    yield r
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_steady_receiver_gives_its_own_coordinates(
    gpsd: GpsdService, running: Running
) -> None:
    expected = nmea_positions(HAB)
    await asyncio.to_thread(gpsd.replay, HAB)
    # Every position of the log arrives (gpsd reports each cycle's fix).
    await until(
        lambda: all(any(near(f, [position]) for f in running.router.fixes) for position in expected)
    )
    fixes = running.router.fixes
    assert running.router.calls == fixes  # nothing withdrawn
    assert all(near(f, expected) for f in fixes)
    assert all(f.device_id == GATEWAY_FIX and f.source == "gpsd:gps" for f in fixes)
    # The 3D fixes carry gpsd's error estimate (eph from the HDOP); a fix without any
    # estimate is never claimed to be better than the gate.
    assert any(f.accuracy_m < MAX_ERROR_M for f in fixes)
    assert all(0 < f.accuracy_m <= MAX_ERROR_M for f in fixes)
    assert running.health.state == "ok"
    assert running.health.counters["tpv_good"] == len(fixes)


async def test_receiver_reboot_withdraws_the_fix_once_and_never_gives_a_void_position(
    gpsd: GpsdService, running: Running
) -> None:
    # The log: a 3D fix near Munich, then the receiver restarts ($PLCS) and reports "void"
    # with 0000.0000/00000.0000 coordinates, garbled sentences among them, until the log
    # ends: it never regains the fix. Played twice, so the second pass is a receiver
    # without a fix that then gets one: reports without a fix come first, then a fix.
    expected = nmea_positions(COLDBOOT)
    await asyncio.to_thread(gpsd.replay, COLDBOOT, loops=2)
    await until(lambda: running.router.calls.count(None) == 2)
    calls = running.router.calls
    # Runs of "fix" and "no fix": the loss is told once per loss, not per report.
    assert [key for key, _ in itertools.groupby(c is None for c in calls)] == [
        False,
        True,
        False,
        True,
    ]
    # Every position given is one the receiver reported with a fix: no 0.0, 0.0 from the
    # void sentences, no fix from the reports gpsd calls mode 1.
    assert all(near(f, expected) for f in running.router.fixes)
    assert not any(abs(f.latitude) < 1 and abs(f.longitude) < 1 for f in running.router.fixes)
    counters = running.health.counters
    assert counters["tpv_no_fix"] > 2  # many reports without a fix, two withdrawals
    assert running.health.state == "no_fix"
    assert running.health.connected


async def test_gpsd_killed_and_restarted_on_the_same_port(
    gpsd: GpsdService, running: Running
) -> None:
    gpsd.stream(HAB, cycle_s=0.05)
    await until(lambda: len(running.router.fixes) >= 2)
    assert running.health.state == "ok"

    gpsd.kill()
    await until(lambda: running.health.state == "disconnected")
    assert not running.input.connected
    fed = len(running.router.calls)
    reconnects = running.health.counters["reconnects"]
    # It keeps trying while gpsd is away, and nothing reaches the router meanwhile; the
    # fix is not withdrawn either (it goes stale by age in the engine).
    await until(lambda: running.health.counters["reconnects"] >= reconnects + 2)
    assert len(running.router.calls) == fed
    assert None not in running.router.calls

    await asyncio.to_thread(gpsd.start)  # same ports; the receiver is still sending
    await until(lambda: len(running.router.calls) > fed)
    assert running.input.connected
    assert running.health.state == "ok"
    assert None not in running.router.calls
    assert all(near(f, nmea_positions(HAB)) for f in running.router.fixes)

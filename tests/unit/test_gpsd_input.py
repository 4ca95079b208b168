"""The gpsd input against a fake gpsd in Python: fix gating, timeouts, reconnects, health.

The fake is a real TCP server on loopback speaking gpsd's JSON lines; the router is the
boundary, replaced by a recorder of what the engine would be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from gateway.config import Config
from gateway.config.models import GpsdInputConfig
from gateway.inputs import input_class
from gateway.inputs.gpsd import GpsdInput
from gateway.router import Router
from gateway.signals import GATEWAY_FIX, Fix
from gateway.status import StatusModel

VERSION = {"class": "VERSION", "release": "3.22", "proto_major": 3, "proto_minor": 14}
HERE = {"lat": 48.0690898, "lon": 16.3590008}


def tpv(**fields: Any) -> dict[str, Any]:
    return {"class": "TPV", "device": "udp://test", "time": "2024-06-15T12:00:05.000Z", **fields}


class FakeGpsd:
    """Accepts clients, greets them (or not), and sends what the test tells it to."""

    def __init__(self, greeting: bytes | None = json.dumps(VERSION).encode() + b"\r\n") -> None:
        self.greeting = greeting
        self.connections = 0
        self.watches: list[bytes] = []
        self.closed_by_client = 0
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> FakeGpsd:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self._writer = writer
        try:
            if self.greeting is not None:
                writer.write(self.greeting)
                await writer.drain()
            while line := await reader.readline():
                self.watches.append(line)
            self.closed_by_client += 1
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def send(self, *messages: dict[str, Any] | bytes) -> None:
        assert self._writer is not None
        for message in messages:
            raw = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\r\n"
            self._writer.write(raw)
        await self._writer.drain()

    def hang_up(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()


class RecordingRouter:
    def __init__(self) -> None:
        self.calls: list[Fix | None] = []

    def on_gateway_fix(self, fix: Fix | None) -> None:
        self.calls.append(fix)


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll until the predicate holds (the input runs in this loop, so yield to it)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Rig:
    def __init__(self, gpsd: FakeGpsd, *, port: int | None = None, **settings: Any) -> None:
        self.gpsd = gpsd
        self.router = RecordingRouter()
        self.status = StatusModel()
        self.changes = 0
        self.status.subscribe(lambda _s: setattr(self, "changes", self.changes + 1))
        options = {
            "connect_timeout_s": 0.5,
            "read_timeout_s": 2.0,
            "reconnect_max_s": 0.2,
            "max_error_m": 100.0,
            **settings,
        }
        self.config = GpsdInputConfig(type="gpsd", name="gps", port=port or gpsd.port, **options)
        # The gpsd input reads nothing of the gateway config: no device is its own.
        self.input = GpsdInput(
            self.config, cast(Router, self.router), self.status, cast(Config, None)
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def health(self) -> Any:
        return self.status.inputs["gps"]

    async def start(self, *, watching: bool = True) -> Rig:
        self.task = asyncio.create_task(self.input.run())
        if watching:
            await until(lambda: len(self.gpsd.watches) >= 1)
        return self

    async def feed(self, *messages: dict[str, Any] | bytes) -> None:
        """Send messages and wait until the input has read them all."""
        before = self.input.frames_ok + self.health.bad_frames
        await self.gpsd.send(*messages)
        await until(lambda: self.input.frames_ok + self.health.bad_frames >= before + len(messages))

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def gpsd() -> AsyncIterator[FakeGpsd]:
    fake = await FakeGpsd().start()
    yield fake
    await fake.close()


@pytest.fixture
async def rig(gpsd: FakeGpsd) -> AsyncIterator[Rig]:
    r = Rig(gpsd)
    yield r
    await r.stop()


def test_registered_as_the_gpsd_input_type() -> None:
    assert input_class("gpsd") is GpsdInput


async def test_watches_in_json_and_a_good_fix_reaches_the_router(rig: Rig) -> None:
    await rig.start()
    assert rig.gpsd.watches[0] == b'?WATCH={"enable":true,"json":true}\n'
    assert rig.input.connected
    await rig.feed(tpv(mode=3, eph=12.5, **HERE))
    [fix] = rig.router.calls
    assert fix is not None
    assert (fix.device_id, fix.source) == (GATEWAY_FIX, "gpsd:gps")
    assert (fix.latitude, fix.longitude, fix.accuracy_m, fix.age_s) == (
        HERE["lat"],
        HERE["lon"],
        12.5,
        0.0,
    )
    assert rig.health.state == "ok" and rig.health.connected
    assert rig.health.counters["tpv_good"] == 1


@pytest.mark.parametrize(
    ("message", "min_mode", "accuracy", "counter"),
    [
        pytest.param(tpv(mode=1, **HERE), 2, None, "tpv_no_fix", id="mode-1-no-fix"),
        pytest.param(tpv(mode=0), 2, None, "tpv_no_fix", id="mode-0-unknown"),
        pytest.param(tpv(**HERE), 2, None, "tpv_no_fix", id="no-mode-field"),
        pytest.param(tpv(mode=2, **HERE), 3, None, "tpv_no_fix", id="2d-when-3d-required"),
        pytest.param(tpv(mode=2, **HERE), 2, 100.0, "tpv_good", id="2d-unknown-error"),
        pytest.param(tpv(mode=3, eph=150.0, **HERE), 2, None, "tpv_poor_accuracy", id="eph-big"),
        pytest.param(tpv(mode=3, eph=99.0, **HERE), 2, 99.0, "tpv_good", id="eph-within"),
        pytest.param(
            tpv(mode=3, epx=30.0, epy=40.0, **HERE), 2, 40.0, "tpv_good", id="epx-epy-larger"
        ),
        pytest.param(
            tpv(mode=3, epx=30.0, epy=150.0, **HERE), 2, None, "tpv_poor_accuracy", id="epy-big"
        ),
        pytest.param(tpv(mode=3, epx=30.0, **HERE), 2, 100.0, "tpv_good", id="epx-alone"),
        pytest.param(
            tpv(mode=3, eph=20.0, epx=500.0, epy=500.0, **HERE), 2, 20.0, "tpv_good", id="eph-wins"
        ),
        pytest.param(tpv(mode=3, lon=16.36), 2, None, "tpv_no_position", id="missing-lat"),
        pytest.param(tpv(mode=3, lat=48.06), 2, None, "tpv_no_position", id="missing-lon"),
        pytest.param(tpv(mode=3, lat=None, lon=None), 2, None, "tpv_no_position", id="null-coords"),
        pytest.param(
            tpv(mode=3, lat="48.06", lon=16.36), 2, None, "tpv_no_position", id="text-lat"
        ),
        pytest.param(tpv(mode=3, lat=148.0, lon=16.36), 2, None, "tpv_no_position", id="lat-91+"),
    ],
)
async def test_fix_quality_gate(
    gpsd: FakeGpsd,
    message: dict[str, Any],
    min_mode: int,
    accuracy: float | None,
    counter: str,
) -> None:
    rig = await Rig(gpsd, min_mode=min_mode).start()
    try:
        await rig.feed(message)
        assert rig.health.counters[counter] == 1
        if accuracy is None:
            # Rejected, and never turned into a position (no 0.0, 0.0 anywhere).
            assert rig.router.calls == []
            assert rig.health.state == "no_fix"
        else:
            [fix] = rig.router.calls
            assert fix is not None
            assert (fix.latitude, fix.longitude) == (message["lat"], message["lon"])
            assert fix.accuracy_m == accuracy
            assert rig.health.state == "ok"
    finally:
        await rig.stop()


async def test_losing_the_fix_is_said_once_and_a_new_fix_is_used_again(rig: Rig) -> None:
    await rig.start()
    good = tpv(mode=3, eph=10.0, **HERE)
    await rig.feed(good)
    await rig.feed(tpv(mode=1), tpv(mode=1), tpv(mode=3, eph=500.0, **HERE))
    # One "no usable fix now" for the whole loss, not one per TPV.
    assert [c is None for c in rig.router.calls] == [False, True]
    assert rig.health.state == "no_fix"
    assert rig.health.error == "no usable fix: error 500 m"
    assert rig.health.counters["tpv_no_fix"] == 2
    assert rig.health.counters["tpv_poor_accuracy"] == 1
    await rig.feed(good)
    assert [c is None for c in rig.router.calls] == [False, True, False]
    assert rig.health.state == "ok" and rig.health.error is None


async def test_other_messages_are_read_but_give_no_fix(rig: Rig) -> None:
    await rig.start()
    await rig.feed({"class": "SKY", "hdop": 0.9, "satellites": []}, {"class": "DEVICE"})
    assert rig.router.calls == []
    assert rig.health.state == "starting"  # connected; no TPV yet


async def test_bad_json_line_is_skipped_and_counted(rig: Rig) -> None:
    await rig.start()
    await rig.feed(b'{"class":"TPV","mode":3,"lat":48.1,\r\n', b"\xff\xfe garbage\r\n", b"[1]\n")
    await rig.feed(tpv(mode=3, eph=10.0, **HERE))
    assert rig.health.bad_frames == 3
    assert rig.health.counters["bad_lines"] == 3
    assert len(rig.router.calls) == 1 and rig.router.calls[0] is not None
    assert rig.gpsd.connections == 1  # skipped, not a reason to reconnect


async def test_gpsd_silent_reconnects_and_keeps_the_fix_for_the_engine_to_age(
    gpsd: FakeGpsd,
) -> None:
    rig = await Rig(gpsd, read_timeout_s=0.3).start()
    try:
        await rig.feed(tpv(mode=3, eph=10.0, **HERE))
        # Nothing more from gpsd: after read_timeout_s the input connects again by itself.
        await until(lambda: gpsd.connections >= 2 and len(gpsd.watches) >= 2)
        assert rig.health.counters["reconnects"] >= 1
        # gpsd going quiet is not "no fix": the fix is left to go stale by age.
        assert all(call is not None for call in rig.router.calls)
        await rig.feed(tpv(mode=3, eph=11.0, **HERE))
        assert rig.router.calls[-1] is not None and rig.router.calls[-1].accuracy_m == 11.0
    finally:
        await rig.stop()


async def test_gpsd_closing_the_connection_reconnects_without_dropping_the_fix(
    rig: Rig,
) -> None:
    await rig.start()
    await rig.feed(tpv(mode=3, eph=10.0, **HERE))
    rig.gpsd.hang_up()
    await until(lambda: rig.gpsd.connections >= 2 and len(rig.gpsd.watches) >= 2)
    assert rig.router.calls and all(call is not None for call in rig.router.calls)
    await rig.feed(tpv(mode=1))  # back, and says the fix is gone: now it is withdrawn
    assert rig.router.calls[-1] is None


async def test_server_that_accepts_but_never_speaks_times_out_and_retries() -> None:
    silent = await FakeGpsd(greeting=None).start()
    rig = await Rig(silent, connect_timeout_s=0.2).start(watching=False)
    try:
        await until(lambda: silent.connections >= 3)
        assert not rig.input.connected
        assert rig.health.state == "disconnected"
        assert not rig.task.done()  # never raises out of run()
        assert rig.router.calls == []
    finally:
        await rig.stop()
        await silent.close()


async def test_a_server_that_is_not_gpsd_is_not_watched() -> None:
    ssh = await FakeGpsd(greeting=b"SSH-2.0-OpenSSH_9.2p1\r\n").start()
    rig = await Rig(ssh).start(watching=False)
    try:
        await until(lambda: ssh.connections >= 2)
        assert ssh.watches == []  # hung up on it without sending ?WATCH
        assert not rig.input.connected
        assert rig.health.state == "disconnected"
        assert "not gpsd" in rig.health.error
    finally:
        await rig.stop()
        await ssh.close()


async def test_gpsd_not_running_then_started_is_picked_up() -> None:
    with socket.socket() as s:  # a free port, with nobody listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    late = FakeGpsd()
    rig = await Rig(late, port=port).start(watching=False)
    try:
        await until(lambda: rig.health.counters.get("reconnects", 0) >= 2)
        assert rig.health.state == "disconnected" and not rig.input.connected
        await late.start(port)
        await until(lambda: rig.input.connected and len(late.watches) == 1)
        await rig.feed(tpv(mode=3, eph=10.0, **HERE))
        assert rig.health.state == "ok"
    finally:
        await rig.stop()
        await late.close()


async def test_cancelling_run_closes_the_socket(rig: Rig) -> None:
    await rig.start()
    await rig.stop()
    await until(lambda: rig.gpsd.closed_by_client == 1)


async def test_health_changes_are_announced(rig: Rig) -> None:
    await rig.start()
    before = rig.changes
    await rig.feed(tpv(mode=3, eph=10.0, **HERE))
    assert rig.changes > before  # starting -> ok
    same = rig.changes
    await rig.feed(tpv(mode=3, eph=10.0, **HERE))
    assert rig.changes == same  # no change, no announcement
    await rig.feed(tpv(mode=1))
    assert rig.changes > same and rig.health.state == "no_fix"


async def test_receiver_silent_for_watchdog_is_lost(rig: Rig) -> None:
    await rig.start()
    await rig.feed(tpv(mode=3, eph=10.0, **HERE))
    rig.input.refresh_health(now=time.monotonic() + rig.config.watchdog_s + 1)
    assert rig.health.state == "lost"
    assert rig.health.connected

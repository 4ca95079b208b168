"""ReceiverLink against SimulatedReceiver over a real pty, through pyserial-asyncio-fast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import firmware_bridge.link as link_mod
from firmware_bridge.frames import (
    CrcMismatch,
    DeviceFix,
    Frame,
    Hello,
    NakReason,
    Press,
    ReceiverStatus,
    decode,
)
from firmware_bridge.link import LinkDown, ReceiverLink
from firmware_bridge.sim import SimulatedReceiver

from .helpers import TEST_RESEND_S

TIMEOUT_S = 3.0


@dataclass
class Running:
    """A link with a consumer task that moves every frame into a queue."""

    link: ReceiverLink
    frames: asyncio.Queue[Frame]

    async def next(self) -> Frame:
        async with asyncio.timeout(TIMEOUT_S):
            return await self.frames.get()

    async def next_new(self, seen: set[int]) -> Frame:
        """Next frame whose seq is not in ``seen`` (skips resends still in flight)."""
        while True:
            frame = await self.next()
            if frame.seq not in seen:
                return frame


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll in the test only; the code under test waits on asyncio primitives."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(port: str | Path, **kwargs: float) -> AsyncIterator[Running]:
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    async with ReceiverLink(str(port), **kwargs) as link:  # type: ignore[arg-type]

        async def consume() -> None:
            async for frame in link.frames():
                queue.put_nowait(frame)

        task = asyncio.create_task(consume(), name="test-link-consumer")
        try:
            yield Running(link, queue)
        finally:
            await link.close()
            async with asyncio.timeout(TIMEOUT_S):
                await task  # frames() ends on close; an exception in it surfaces here


@pytest.fixture
async def rx(sim: SimulatedReceiver) -> AsyncIterator[Running]:
    assert sim.link_path is not None
    async with running(sim.link_path) as r:
        await wait_until(lambda: r.link.connected)
        yield r


async def acked(sim: SimulatedReceiver, seq: int) -> bool:
    return await asyncio.to_thread(sim.wait_acked, seq, TIMEOUT_S)


# --------------------------------------------------------------------------- frames


async def test_press_arrives_with_its_fields(sim: SimulatedReceiver, rx: Running) -> None:
    seq = sim.press(0x00A1B2C3, gesture="long", counter=7, battery_pct=None, rssi_dbm=-71)
    frame = await rx.next()
    assert frame == Press(
        seq=seq,
        device_id=0x00A1B2C3,
        counter=7,
        gesture="long",
        battery_pct=None,
        rssi_dbm=-71,
    )
    assert rx.link.last_frame_mono is not None
    await rx.link.ack(frame.seq)
    assert await acked(sim, seq)


async def test_every_receiver_frame_type_arrives(sim: SimulatedReceiver, rx: Running) -> None:
    seqs = [
        sim.hello(),
        sim.send_fix(0xA1, 59.9138688, 10.7522454, accuracy_m=8, age_s=3),
        sim.send_status(radio_frames=10, radio_errors=1),
        sim.press(0xA1),
        sim.press(0xA1, gesture="double"),
    ]
    got: dict[int, Frame] = {}
    while len(got) < len(seqs):
        frame = await rx.next()
        got[frame.seq] = frame
        await rx.link.ack(frame.seq)
    hello, fix, status, first, second = (got[s] for s in seqs)
    assert isinstance(hello, Hello) and hello.receiver_id == 0x5A17
    assert hello.session == sim.session
    assert fix == DeviceFix(
        seq=seqs[1],
        device_id=0xA1,
        latitude=59.9138688,
        longitude=10.7522454,
        accuracy_m=8,
        age_s=3,
    )
    assert isinstance(status, ReceiverStatus) and status.radio_frames == 10
    assert isinstance(first, Press) and isinstance(second, Press)
    assert (first.counter, second.counter, second.gesture) == (1, 2, "double")
    for seq in seqs:
        assert await acked(sim, seq)


async def test_ack_stops_the_resends(sim: SimulatedReceiver, rx: Running) -> None:
    seq = sim.press(0x1234)
    frame = await rx.next()
    await rx.link.ack(frame.seq)
    assert await acked(sim, seq)
    resends = sim.counters.resends
    await asyncio.sleep(6 * TEST_RESEND_S)
    assert sim.counters.resends == resends
    assert sim.unacked() == []
    assert sim.acked()[seq] >= sim.sent_ns(seq)


async def test_without_ack_the_sim_resends_the_same_frame(
    sim: SimulatedReceiver, rx: Running
) -> None:
    seq = sim.press(0x1234, counter=99)
    first = await rx.next()
    again = await rx.next()
    assert first == again
    assert isinstance(first, Press) and (first.seq, first.counter) == (seq, 99)
    assert sim.counters.resends >= 1
    assert sim.unacked() == [seq]


async def test_nak_does_not_stop_the_resends(sim: SimulatedReceiver, rx: Running) -> None:
    seq = sim.press(0x1234)
    await rx.next()
    await rx.link.nak(seq, NakReason.STORE_FAILED)
    again = await rx.next()
    assert again.seq == seq
    assert sim.counters.naks_received == 1
    await rx.link.ack(seq)
    assert await acked(sim, seq)


async def test_garbage_between_presses_is_counted_and_skipped(
    sim: SimulatedReceiver, rx: Running
) -> None:
    seen: set[int] = set()
    first_seq = sim.press(0xA1)
    first = await rx.next_new(seen)
    seen.add(first.seq)
    await rx.link.ack(first.seq)
    assert await acked(sim, first_seq)

    truncated = Press(seq=999, device_id=0xA1, counter=50, gesture="single").to_bytes()[:9]
    bad_crc = bytearray(Press(seq=998, device_id=0xA1, counter=51, gesture="single").to_bytes())
    bad_crc[-3] ^= 0x10  # a CRC byte
    with pytest.raises(CrcMismatch):
        decode(bytes(bad_crc))
    noise = b"\x13\x37 line noise \xff"
    sim.send_raw(noise + b"\x00")  # COBS error
    sim.send_raw(truncated)  # a receiver reset mid-frame; ends at the next delimiter
    sim.send_raw(b"\x00" + bytes(bad_crc))
    second_seq = sim.press(0xA1)
    second = await rx.next_new(seen)
    await rx.link.ack(second.seq)

    assert isinstance(first, Press) and isinstance(second, Press)
    assert (first.seq, first.counter, second.seq, second.counter) == (first_seq, 1, second_seq, 2)
    counters = rx.link.counters
    assert counters.decode_errors == 2
    assert counters.crc_errors == 1
    assert counters.resyncs == 3
    assert counters.discarded_bytes == len(noise) + len(truncated) + len(bad_crc) - 1
    assert counters.frames_ok >= 2


# --------------------------------------------------------------------------- opening


async def test_link_waits_for_a_port_that_appears_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="firmware_bridge.link")
    path = tmp_path / "late-receiver"
    async with running(path, reopen_backoff_max_s=0.05) as rx:
        await wait_until(lambda: rx.link.counters.open_failures >= 3)
        assert not rx.link.connected
        with pytest.raises(LinkDown):
            await rx.link.ack(1)
        with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S) as sim:
            # Written possibly before the link opens (pyserial then flushes it): the
            # resend carries it through.
            seq = sim.press(0xBEEF)
            frame = await rx.next()
            assert isinstance(frame, Press) and (frame.seq, frame.device_id) == (seq, 0xBEEF)
            assert rx.link.connected
            await rx.link.ack(seq)
            assert await acked(sim, seq)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not per attempt"
    assert "cannot open" in warnings[0].getMessage()
    assert rx.link.counters.reopens == 0


async def test_unplug_and_replug_reopens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "receiver"
    first_sim = SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S).start()
    async with running(path, reopen_backoff_max_s=0.05) as rx:
        try:
            await wait_until(lambda: rx.link.connected)
            seq = first_sim.press(1)
            assert (await rx.next()).seq == seq
            await rx.link.ack(seq)
            assert await acked(first_sim, seq)
        finally:
            first_sim.close()  # the master side goes away: the link reads EIO
        await wait_until(lambda: not rx.link.connected)
        assert rx.link.counters.connection_losses == 1
        await wait_until(lambda: rx.link.counters.open_failures >= 1)

        with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S) as sim:
            seq = sim.press(2)
            frame = await rx.next()
            assert isinstance(frame, Press) and frame.device_id == 2
            await rx.link.ack(frame.seq)
            assert await acked(sim, seq)
            assert rx.link.counters.reopens == 1
    lost = [r for r in caplog.records if r.levelno == logging.WARNING and "lost" in r.message]
    assert len(lost) == 1
    assert not [r for r in caplog.records if "cannot open" in r.message]  # same outage


async def test_backoff_is_capped_full_jitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds: list[tuple[float, float]] = []

    def fake_uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return 0.0

    monkeypatch.setattr(link_mod.random, "uniform", fake_uniform)
    async with running(tmp_path / "absent", reopen_backoff_max_s=1.5):
        await wait_until(lambda: len(bounds) >= 5)
    base = link_mod.REOPEN_BACKOFF_BASE_S
    assert bounds[:5] == [(0, base), (0, 2 * base), (0, 1.5), (0, 1.5), (0, 1.5)]


# --------------------------------------------------------------------------- lifecycle


async def test_close_ends_frames_and_send_raises_link_down(sim: SimulatedReceiver) -> None:
    async with running(sim.port_path) as rx:
        await wait_until(lambda: rx.link.connected)
        seq = sim.press(5)
        await rx.next()
        await rx.link.close()
        assert not rx.link.connected
        with pytest.raises(LinkDown):
            await rx.link.ack(seq)
        await rx.link.close()  # idempotent


async def test_only_one_consumer(sim: SimulatedReceiver, rx: Running) -> None:
    with pytest.raises(RuntimeError, match="already being iterated"):
        await anext(rx.link.frames())


async def test_invalid_port_url_is_a_config_error() -> None:
    link = ReceiverLink("nosuchscheme://receiver")
    with pytest.raises(ValueError, match="nosuchscheme"):
        await anext(link.frames())
    await link.close()

"""ReceiverLink against SimulatedReceiver over a real pty, through pyserial-asyncio-fast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import firmware_bridge.link as link_mod
from firmware_bridge.auth import verify_press, verify_status
from firmware_bridge.frames import (
    Ack,
    CrcMismatch,
    DeviceFix,
    DeviceStatus,
    Frame,
    Hello,
    IndicationState,
    NakReason,
    Press,
    ReceiverStatus,
    decode,
)
from firmware_bridge.link import LinkDown, ReceiverLink
from firmware_bridge.sim import SimFaults, SimulatedReceiver

from .helpers import TEST_RESEND_S

TIMEOUT_S = 3.0


@dataclass
class Running:
    """A link with a consumer task that moves every frame into a queue.

    HELLOs (the receiver's answer to the link's PING after every open) are acked at once,
    as the gateway does, and go to their own queue so tests about other frames need not
    skip them.
    """

    link: ReceiverLink
    frames: asyncio.Queue[Frame]
    hellos: asyncio.Queue[Hello]

    async def next(self) -> Frame:
        async with asyncio.timeout(TIMEOUT_S):
            return await self.frames.get()

    async def hello(self) -> Hello:
        async with asyncio.timeout(TIMEOUT_S):
            return await self.hellos.get()

    async def next_new(self, seen: set[int]) -> Frame:
        """Next frame whose seq is not in ``seen`` (skips resends still in flight)."""
        while True:
            frame = await self.next()
            if frame.seq not in seen:
                return frame


async def wait_until(predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Poll in the test only; the code under test waits on asyncio primitives."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(port: str | Path, **kwargs: float) -> AsyncIterator[Running]:
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    hellos: asyncio.Queue[Hello] = asyncio.Queue()
    async with ReceiverLink(str(port), **kwargs) as link:  # type: ignore[arg-type]

        async def consume() -> None:
            async for frame in link.frames():
                if isinstance(frame, Hello):
                    hellos.put_nowait(frame)
                    with contextlib.suppress(LinkDown):
                        await link.ack(frame.seq)
                else:
                    queue.put_nowait(frame)

        task = asyncio.create_task(consume(), name="test-link-consumer")
        try:
            yield Running(link, queue, hellos)
        finally:
            await link.close()
            async with asyncio.timeout(TIMEOUT_S):
                await task  # frames() ends on close; an exception in it surfaces here


@pytest.fixture
async def rx(sim: SimulatedReceiver) -> AsyncIterator[Running]:
    assert sim.link_path is not None
    async with running(sim.link_path) as r:
        # The handshake: the link pings after opening, the sim answers with a HELLO.
        hello = await r.hello()
        assert hello.session == sim.session
        await wait_until(lambda: not sim.unacked())
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
    while len(got) < len(seqs) - 1:
        frame = await rx.next()
        got[frame.seq] = frame
        await rx.link.ack(frame.seq)
    while seqs[0] not in got:
        hello_frame = await rx.hello()
        got[hello_frame.seq] = hello_frame
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
        with pytest.raises(LinkDown):
            await rx.link.send_indication(1, IndicationState.HELP_CALLED)
        with pytest.raises(LinkDown):
            await rx.link.send_time(0, trusted=True)
        with pytest.raises(LinkDown):
            await rx.link.ping()
        with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S) as sim:
            # Written possibly before the link opens (pyserial then flushes it): the
            # resend carries it through.
            seq = sim.press(0xBEEF)
            assert (await rx.hello()).session == sim.session
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


# --------------------------------------------------------------------------- handshake, downlink


async def test_link_pings_after_every_open(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S) as sim:
        async with running(path, reopen_backoff_max_s=0.05) as rx:
            first = await rx.hello()
            assert first.session == sim.session and first.receiver_id == sim.receiver_id
            assert sim.counters.pings_received == 1
            assert await asyncio.to_thread(sim.wait_pinged, 0.0)
            sim.unplug()
            await wait_until(lambda: not rx.link.connected)
            assert not sim.wait_pinged(0.0)
            sim.replug()
            assert await asyncio.to_thread(sim.wait_pinged, TIMEOUT_S)
            # Opened and pinged: radio repeats written now all arrive.
            seq = sim.press(0xD, repeats=4)
            repeats = [await rx.next() for _ in range(4)]
            assert {f.seq for f in repeats} == {seq}
            second = await rx.hello()
            while second.seq == first.seq:  # a resend that crossed the first ACK
                second = await rx.hello()
            # The replug's own HELLO, or the answer to the PING: the same boot.
            assert second.session == first.session
            await wait_until(lambda: sim.counters.pings_received == 2)
            assert rx.link.counters.reopens == 1


async def test_indication_and_time_are_acked_by_the_receiver(
    sim: SimulatedReceiver, rx: Running
) -> None:
    seq = await rx.link.send_indication(0x00A1B2C3, IndicationState.HELP_CALLED)
    ack = await rx.next()
    assert isinstance(ack, Ack) and ack.acked_seq == seq
    seq = await rx.link.send_time(1_767_225_600_000, trusted=False)
    ack = await rx.next()
    assert isinstance(ack, Ack) and ack.acked_seq == seq
    await rx.link.send_indication(0x00A1B2C3, 9)  # a state from a later version: acked too
    assert isinstance(await rx.next(), Ack)
    assert [(d, s) for _, d, s in sim.indications()] == [(0x00A1B2C3, 1), (0x00A1B2C3, 9)]
    assert [(ms, t) for _, ms, t in sim.time_syncs()] == [(1_767_225_600_000, False)]
    assert sim.unacked() == []


async def test_nak_rejected_ends_the_resends(sim: SimulatedReceiver, rx: Running) -> None:
    seq = sim.press(0x1234, tag=b"\0" * 8)
    frame = await rx.next()
    assert frame.seq == seq
    await rx.link.nak(seq, NakReason.REJECTED)
    assert not await acked(sim, seq)
    assert sim.refused() == {seq: NakReason.REJECTED}
    await asyncio.sleep(2 * TEST_RESEND_S)  # a resend already on the wire may arrive
    while not rx.frames.empty():
        assert rx.frames.get_nowait().seq == seq
    await asyncio.sleep(5 * TEST_RESEND_S)
    assert rx.frames.empty()


async def test_keys_give_tags_the_gateway_can_verify(tmp_path: Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "receiver"
    with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S, keys={7: key}) as sim:
        async with running(path) as rx:
            seqs = [sim.press(7, gesture="double"), sim.device_status(7, tamper=True)]
            seqs.append(sim.press(7, tag=b"\xff" * 8))
            got: dict[int, Frame] = {}
            while len(got) < 3:
                frame = await rx.next()
                got[frame.seq] = frame
            press, status, forged = (got[s] for s in seqs)
            assert isinstance(press, Press) and verify_press(key, press)
            assert isinstance(status, DeviceStatus) and verify_status(key, status)
            assert status.tamper and status.counter == press.counter + 1
            assert isinstance(forged, Press) and not verify_press(key, forged)


# --------------------------------------------------------------------------- faults


async def test_unplug_while_pressing_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    sent: dict[int, int] = {}  # seq -> counter
    heard: dict[int, list[Frame]] = {}
    with SimulatedReceiver(link_path=path, resend_interval_s=TEST_RESEND_S) as sim:
        async with running(path, reopen_backoff_max_s=0.1) as rx:
            await rx.hello()

            async def consume() -> None:
                while True:
                    frame = await rx.frames.get()
                    heard.setdefault(frame.seq, []).append(frame)
                    with contextlib.suppress(LinkDown):
                        await rx.link.ack(frame.seq)

            consumer = asyncio.create_task(consume())
            start = time.monotonic()
            unplugged_at, replugged_at = start + 0.3, start + 1.3
            while (now := time.monotonic()) < start + 1.8:
                if sim.plugged and unplugged_at <= now < replugged_at:
                    sim.unplug()
                elif not sim.plugged and now >= replugged_at:
                    sim.replug()
                device = len(sent) % 3
                seq = sim.press(device)
                sent[seq] = len([s for s in sent if s % 3 == device]) + 1
                await asyncio.sleep(0.02)
            await wait_until(lambda: not sim.unacked(), timeout_s=5.0)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            assert rx.link.counters.connection_losses == 1
            assert rx.link.counters.reopens == 1

    assert len(sent) > 60
    presses = {seq: frames for seq, frames in heard.items() if isinstance(frames[0], Press)}
    assert set(presses) == set(sent), "every press arrives"
    for frames in presses.values():
        assert all(f == frames[0] for f in frames), "a duplicate is the same frame"
    # Counters per device advanced by one per press, whatever the cable did.
    by_device: dict[int, list[int]] = {}
    for seq in sorted(presses):
        press = presses[seq][0]
        assert isinstance(press, Press)
        by_device.setdefault(press.device_id, []).append(press.counter)
    for counters in by_device.values():
        assert counters == list(range(1, len(counters) + 1))


async def test_split_duplicated_dropped_writes_deliver_every_press(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    faults = SimFaults(seed=2, split_writes=True, duplicate=0.2, drop_first=0.2)
    key = bytes(16)
    with SimulatedReceiver(
        link_path=path, resend_interval_s=TEST_RESEND_S, faults=faults, keys={5: key}
    ) as sim:
        async with running(path) as rx:
            await rx.hello()
            sent = {sim.press(5, counter=1000 + i): 1000 + i for i in range(100)}
            heard: dict[int, Frame] = {}
            async with asyncio.timeout(15):
                while not set(sent) <= set(heard):
                    frame = await rx.next()
                    assert frame.seq in sent, f"a frame that was not sent: {frame}"
                    assert isinstance(frame, Press) and verify_press(key, frame)
                    assert frame.counter == sent[frame.seq]
                    assert heard.setdefault(frame.seq, frame) == frame
                    await rx.link.ack(frame.seq)
            await wait_until(lambda: not sim.unacked())
            counters = sim.counters
            assert counters.dropped_first > 5 and counters.duplicated > 5
            assert rx.link.counters.resyncs == 0  # chunks and duplicates are not errors


async def test_a_silent_receiver_sends_no_bytes(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    with SimulatedReceiver(
        link_path=path, resend_interval_s=TEST_RESEND_S, heartbeat_interval_s=0.05
    ) as sim:
        async with running(path) as rx:
            await rx.hello()
            status = await rx.next()
            assert isinstance(status, ReceiverStatus)
            sim.press(3)  # never acked: resent every 50 ms until the silence
            await rx.next()
            sim.silence(True)
            await asyncio.sleep(0.05)
            await rx.link.ping()  # a hung receiver does not answer
            before = (rx.link.counters, rx.link.last_frame_mono)
            await asyncio.sleep(0.4)
            assert (rx.link.counters, rx.link.last_frame_mono) == before
            sim.silence(False)
            await rx.next()  # resends and heartbeats resume
            assert rx.link.last_frame_mono != before[1]


async def test_ready_frames_takes_a_burst_and_leaves_a_loss_for_frames(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    with SimulatedReceiver(link_path=path, resend_interval_s=0.3) as sim:
        async with ReceiverLink(str(path), reopen_backoff_max_s=0.05) as link:
            frames = link.frames()
            hello = await anext(frames)
            assert isinstance(hello, Hello)
            await link.ack(hello.seq)
            seqs = [sim.press(1) for _ in range(5)]
            await wait_until(lambda: link.counters.frames_ok >= 6)
            burst = [await anext(frames), *link.ready_frames()]
            assert [f.seq for f in burst] == seqs
            assert link.ready_frames() == []

            sim.unplug()
            await wait_until(lambda: not link.connected)
            assert link.ready_frames() == []  # the loss marker stays for frames()
            sim.replug()
            async with asyncio.timeout(TIMEOUT_S):
                after = await anext(frames)  # frames() reopened the port
            assert after.seq in {*seqs, *sim.unacked()}
            assert link.counters.reopens == 1
            await link.close()
            await frames.aclose()

"""SimulatedReceiver on its own: the gateway side is a plain pyserial port here."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

import firmware_bridge
from firmware_bridge.auth import verify_press, verify_status
from firmware_bridge.frames import (
    Ack,
    DeviceStatus,
    Frame,
    FrameDecoder,
    Hello,
    Indication,
    IndicationState,
    Nak,
    NakReason,
    Ping,
    Press,
    ReceiverStatus,
    TimeSync,
)
from firmware_bridge.sim import SimFaults, SimulatedReceiver

from .helpers import TEST_RESEND_S, wait_for


class Gateway:
    """The other end of the pty, driven synchronously."""

    def __init__(self, port: str) -> None:
        self.port = serial.serial_for_url(port, baudrate=115200, timeout=0.05)
        self.decoder = FrameDecoder()
        self.backlog: list[Frame] = []  # read but not yet returned
        self._seq = 0

    def read_frames(self, count: int, timeout: float = 3.0) -> list[Frame]:
        got, self.backlog = self.backlog, []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += self.decoder.feed(self.port.read(4096))
        return got

    def send(self, frame: Frame) -> None:
        self.port.write(frame.to_bytes())

    def ack(self, seq: int) -> None:
        self._seq += 1
        self.send(Ack(seq=self._seq, acked_seq=seq))


@pytest.fixture
def gateway(sim: SimulatedReceiver) -> Iterator[Gateway]:
    gw = Gateway(sim.port_path)
    yield gw
    gw.port.close()


def test_repeats_write_the_identical_frame(sim: SimulatedReceiver, gateway: Gateway) -> None:
    before = time.monotonic_ns()
    seq = sim.press(0xA1, gesture="hold", repeats=3)
    frames = gateway.read_frames(3)  # plus any resend that came in the same read
    assert len(frames) >= 3 and all(f == frames[0] for f in frames)
    assert isinstance(frames[0], Press) and frames[0].seq == seq and frames[0].gesture == "hold"
    assert sim.counters.frames_written >= 3
    assert before <= sim.sent_ns(seq) <= time.monotonic_ns()
    gateway.ack(seq)
    assert sim.wait_acked(seq, 3.0)


def test_counters_auto_increment_per_device(sim: SimulatedReceiver, gateway: Gateway) -> None:
    seqs = [
        sim.press(1),
        sim.press(1),
        sim.press(2),
        sim.press(1, counter=10),
        sim.press(1),
    ]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    by_seq: dict[int, Press] = {}
    while len(by_seq) < 5:
        for frame in gateway.read_frames(1):
            assert isinstance(frame, Press)
            by_seq[frame.seq] = frame
    assert [(by_seq[s].device_id, by_seq[s].counter) for s in seqs] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (1, 10),
        (1, 11),
    ]


def test_resends_until_acked_and_nak_does_not_stop_them(
    sim: SimulatedReceiver, gateway: Gateway
) -> None:
    seq = sim.hello()
    frames = gateway.read_frames(3)
    assert [f.seq for f in frames] == [seq] * 3 and isinstance(frames[0], Hello)
    gateway.send(Nak(seq=0, acked_seq=seq, reason=3))
    assert wait_for(lambda: sim.counters.naks_received == 1, 3.0)
    assert gateway.read_frames(1)[0].seq == seq
    assert sim.unacked() == [seq]
    gateway.ack(seq)
    assert sim.wait_acked(seq, 3.0)
    assert sim.unacked() == []
    assert seq in sim.acked()
    resends = sim.counters.resends
    time.sleep(5 * TEST_RESEND_S)
    assert sim.counters.resends == resends
    gateway.ack(seq)  # a late duplicate ACK is ignored
    assert wait_for(lambda: sim.counters.unknown_acks == 1, 3.0)


def test_wait_acked_times_out(sim: SimulatedReceiver) -> None:
    seq = sim.press(7)
    start = time.monotonic()
    assert not sim.wait_acked(seq, 0.1)
    assert 0.1 <= time.monotonic() - start < 1.0


def test_on_reply_callback() -> None:
    replies: list[Ack | Nak] = []
    with SimulatedReceiver(resend_interval_s=TEST_RESEND_S, on_reply=replies.append) as sim:
        gateway = Gateway(sim.port_path)
        try:
            seq = sim.press(3)
            gateway.ack(seq)
            assert sim.wait_acked(seq, 3.0)
        finally:
            gateway.port.close()
    assert replies and isinstance(replies[0], Ack) and replies[0].acked_seq == seq


def test_symlink_lifecycle(tmp_path: Path) -> None:
    link = tmp_path / "receiver"
    link.symlink_to("/dev/null-stale-target")  # stale link from a crashed run
    first = SimulatedReceiver(link_path=link).start()
    try:
        assert os.readlink(link) == first.port_path == os.ttyname(first._slave_fd)
        with SimulatedReceiver(link_path=link) as second:
            assert os.readlink(link) == second.port_path
            first.close()  # not its link any more: it must leave it alone
            assert os.readlink(link) == second.port_path
        assert not link.exists() and not link.is_symlink()
    finally:
        first.close()


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "receiver"
    path.write_text("not a link")
    with pytest.raises(FileExistsError, match="not a symlink"):
        SimulatedReceiver(link_path=path).start()
    assert path.read_text() == "not a link"


def test_close_is_prompt_and_releases_everything() -> None:
    sim = SimulatedReceiver(resend_interval_s=10.0).start()
    thread = sim._thread
    assert thread is not None and thread.is_alive()
    sim.press(1)
    start = time.monotonic()
    sim.close()
    assert time.monotonic() - start < 1.0
    assert not thread.is_alive()
    assert sim._master_fd == sim._slave_fd == -1
    sim.close()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        sim.press(1)


def test_never_blocks_when_nobody_reads() -> None:
    with SimulatedReceiver(resend_interval_s=5.0) as sim:
        start = time.monotonic()
        for _ in range(6000):  # ~150 kB: more than the pty buffers
            sim.press(0xA1)
        assert time.monotonic() - start < 3.0
        # The simulator thread does the writing: it drops once the pty stays full.
        assert wait_for(lambda: sim.counters.bytes_dropped > 0, 5.0)


class LineReader:
    """Lines from a child's stdout with a deadline (no buffered readline behind select)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""

    def wait_for(self, want: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            lines = self._buf.split(b"\n")
            for i, line in enumerate(lines[:-1]):
                if want.encode() in line:
                    self._buf = b"\n".join(lines[i + 1 :])
                    return line.decode()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line containing {want!r} in {self._buf!r}")
            with selectors.DefaultSelector() as sel:
                sel.register(self._fd, selectors.EVENT_READ)
                if sel.select(timeout=left):
                    chunk = os.read(self._fd, 4096)
                    if not chunk:
                        raise AssertionError(f"stdout closed; no line containing {want!r}")
                    self._buf += chunk


def test_cli_presses_and_prints_acks(tmp_path: Path) -> None:
    link = tmp_path / "sim" / "receiver"
    repo = Path(firmware_bridge.__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_bridge.sim",
            "--link",
            str(link),
            "--press",
            "00a1b2c3",
            "--gesture",
            "long",
            "--resend-interval",
            "0.05",
            "--key",
            f"00a1b2c3={KEY_A1.hex()}",
            "--heartbeat",
            "0.1",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = LineReader(proc)
    try:
        assert str(link) in out.wait_for("simulated receiver on")
        gateway = Gateway(str(link))
        try:
            seen: dict[int, Frame] = {}
            while len(seen) < 2:
                for frame in gateway.read_frames(1):
                    seen[frame.seq] = frame
            press = next(f for f in seen.values() if isinstance(f, Press))
            assert (press.device_id, press.gesture) == (0x00A1B2C3, "long")
            assert verify_press(KEY_A1, press)
            gateway.ack(press.seq)
            assert out.wait_for(f"ACK for seq {press.seq}")
            assert isinstance(_read_until(gateway, lambda f: f.seq not in seen), ReceiverStatus)
        finally:
            gateway.port.close()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=5.0)
        assert proc.returncode == 0, stderr
        assert stderr == b""
        assert not link.is_symlink()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_bad_device_id() -> None:
    from firmware_bridge.sim import main

    with pytest.raises(SystemExit) as info:
        main(["--press", "not-hex"])
    assert info.value.code == 2


# --------------------------------------------------------------------------- keys and tags

KEY_A1 = bytes(range(16))


def _read_until(gateway: Gateway, want: Callable[[Frame], bool], timeout: float = 3.0) -> Frame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = gateway.read_frames(1, timeout=deadline - time.monotonic())
        for i, frame in enumerate(frames):
            if want(frame):
                gateway.backlog = frames[i + 1 :]
                return frame
    raise AssertionError("no matching frame")


def _by_seq(gateway: Gateway, seqs: list[int]) -> dict[int, Frame]:
    got: dict[int, Frame] = {}
    deadline = time.monotonic() + 3.0
    while not set(seqs) <= set(got) and time.monotonic() < deadline:
        for frame in gateway.read_frames(1, timeout=0.2):
            got[frame.seq] = frame
    return got


def test_keys_give_verifying_tags_and_one_counter_per_device(tmp_path: Path) -> None:
    with SimulatedReceiver(resend_interval_s=TEST_RESEND_S, keys={0xA1: KEY_A1}) as sim:
        gateway = Gateway(sim.port_path)
        try:
            seqs = [
                sim.press(0xA1, gesture="long", battery_pct=None),
                sim.device_status(0xA1, battery_pct=12, tamper=True, battery_low=True),
                sim.press(0xA1),
                sim.press(0xB2),  # no key: no tag
                sim.press(0xA1, tag=b"\0" * 8),  # a forger, or a button with another key
                sim.device_status(0xA1, counter=2),  # replayed counter, fresh valid tag
            ]
            got = _by_seq(gateway, seqs)
        finally:
            gateway.port.close()
    press1, status, press2, keyless, forged, replay = (got[s] for s in seqs)
    assert isinstance(press1, Press) and isinstance(press2, Press)
    assert isinstance(status, DeviceStatus) and isinstance(replay, DeviceStatus)
    assert isinstance(keyless, Press) and isinstance(forged, Press)
    assert (press1.counter, status.counter, press2.counter, forged.counter) == (1, 2, 3, 4)
    assert verify_press(KEY_A1, press1) and verify_press(KEY_A1, press2)
    assert verify_status(KEY_A1, status) and verify_status(KEY_A1, replay)
    assert (status.battery_pct, status.tamper, status.battery_low) == (12, True, True)
    assert keyless.tag == b"" and keyless.counter == 1
    assert forged.tag == b"\0" * 8 and not verify_press(KEY_A1, forged)
    assert replay.counter == 2  # catching this is the gateway's job (PROTOCOL.md §8.2)


# --------------------------------------------------------------------------- downlink


def test_ping_is_answered_with_one_hello(sim: SimulatedReceiver, gateway: Gateway) -> None:
    gateway.send(Ping(seq=1))
    gateway.send(Ping(seq=2))  # a HELLO is already outstanding: it answers both
    hello = _read_until(gateway, lambda f: isinstance(f, Hello))
    assert isinstance(hello, Hello) and hello.session == sim.session
    assert wait_for(lambda: sim.counters.pings_received == 2, 3.0)
    assert sim.unacked() == [hello.seq]
    gateway.ack(hello.seq)
    assert sim.wait_acked(hello.seq, 3.0)
    gateway.send(Ping(seq=3))
    again = _read_until(gateway, lambda f: isinstance(f, Hello) and f.seq != hello.seq)
    assert isinstance(again, Hello) and again.session == hello.session


def test_indication_and_time_are_acked_and_recorded(
    sim: SimulatedReceiver, gateway: Gateway
) -> None:
    before = time.monotonic_ns()
    gateway.send(Indication(seq=40, device_id=0xA1, state=IndicationState.HELP_ON_THE_WAY))
    gateway.send(TimeSync(seq=41, unix_ms=1_767_225_600_123, trusted=True))
    gateway.send(Indication(seq=40, device_id=0xA1, state=2))  # sent again: acked again
    acks = [_read_until(gateway, lambda f: isinstance(f, Ack)) for _ in range(3)]
    assert [a.acked_seq for a in acks if isinstance(a, Ack)] == [40, 41, 40]
    assert len({a.seq for a in acks}) == 3  # the receiver numbers its ACKs
    indications = sim.indications()
    assert [(dev, state) for _, dev, state in indications] == [(0xA1, 2), (0xA1, 2)]
    assert before <= indications[0][0] <= time.monotonic_ns()
    assert [(ms, trusted) for _, ms, trusted in sim.time_syncs()] == [(1_767_225_600_123, True)]
    assert sim.unacked() == []  # its ACKs are not resent, nothing waits for an answer
    counters = sim.counters
    assert (counters.indications_received, counters.time_syncs_received) == (2, 1)
    assert counters.acks_sent == 3


@pytest.mark.parametrize("reason", [1, 2, 4, 5, 9])
def test_a_nak_other_than_store_failed_ends_the_resends(
    sim: SimulatedReceiver, gateway: Gateway, reason: int
) -> None:
    seq = sim.press(0xA1)
    assert gateway.read_frames(1)[0].seq == seq
    gateway.send(Nak(seq=7, acked_seq=seq, reason=reason))
    start = time.monotonic()
    assert not sim.wait_acked(seq, 3.0)
    assert time.monotonic() - start < 1.0  # refused: no need to wait for the timeout
    assert sim.refused() == {seq: reason}
    assert sim.unacked() == []
    gateway.read_frames(100, timeout=2 * TEST_RESEND_S)  # resends already in flight
    assert gateway.read_frames(1, timeout=5 * TEST_RESEND_S) == []
    assert sim.counters.refused == 1


def test_store_failed_keeps_the_resends_going(sim: SimulatedReceiver, gateway: Gateway) -> None:
    seq = sim.press(0xA1)
    gateway.read_frames(1)
    for _ in range(3):
        gateway.send(Nak(seq=7, acked_seq=seq, reason=NakReason.STORE_FAILED))
        assert gateway.read_frames(1)[0].seq == seq
    assert sim.refused() == {} and sim.unacked() == [seq]
    gateway.ack(seq)
    assert sim.wait_acked(seq, 3.0)


# --------------------------------------------------------------------------- heartbeats, silence


def test_heartbeats_replace_unanswered_ones() -> None:
    with SimulatedReceiver(resend_interval_s=1.0, heartbeat_interval_s=0.05) as sim:
        gateway = Gateway(sim.port_path)
        try:
            sim.press(1)
            sim.press(1)
            beats = [f for f in gateway.read_frames(8) if isinstance(f, ReceiverStatus)]
            assert len(beats) >= 5
            assert [b.seq for b in beats] == sorted({b.seq for b in beats})
            assert beats[-1].radio_frames == 2  # what it heard on the radio
            assert sim.counters.heartbeats >= 5
            assert sim.counters.superseded >= 4
            assert len(sim.unacked()) <= 3  # two presses and the newest heartbeat
        finally:
            gateway.port.close()


def test_silence_writes_nothing_at_all() -> None:
    with SimulatedReceiver(resend_interval_s=TEST_RESEND_S, heartbeat_interval_s=0.05) as sim:
        gateway = Gateway(sim.port_path)
        try:
            seq = sim.press(0xA1)
            assert gateway.read_frames(2)
            sim.silence(True)
            time.sleep(0.05)  # a write in progress finishes
            gateway.port.reset_input_buffer()
            gateway.send(Ping(seq=1))  # a hung receiver does not answer
            gateway.ack(seq)  # nor does it hear its ACKs
            later = sim.press(0xA1)  # queued
            deadline = time.monotonic() + 0.4
            while time.monotonic() < deadline:
                assert gateway.port.read(4096) == b""
            assert wait_for(lambda: sim.counters.ignored_while_silent == 2, 1.0)
            assert set(sim.unacked()) >= {seq, later}

            sim.silence(False)
            got = {f.seq for f in gateway.read_frames(10, timeout=1.0)}
            assert {seq, later} <= got
        finally:
            gateway.port.close()


# --------------------------------------------------------------------------- the cable


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_unplug_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "receiver"
    with SimulatedReceiver(link_path=link, resend_interval_s=TEST_RESEND_S) as sim:
        first_port = sim.port_path
        gateway = Gateway(str(link))
        before = sim.press(1)
        assert gateway.read_frames(1)[0].seq == before
        sim.unplug()
        sim.unplug()  # idempotent
        assert not sim.plugged and not link.is_symlink()
        with pytest.raises(serial.SerialException):
            gateway.port.read(1)  # the gateway sees the cable go
        gateway.port.close()
        during = [sim.press(1), sim.device_status(1), sim.send_fix(1, 1.0, 2.0)]
        sim.send_raw(b"lost with the cable")
        assert sim.counters.bytes_dropped == len(b"lost with the cable")
        time.sleep(3 * TEST_RESEND_S)
        assert sim.unacked() == [before, *during]

        sim.replug()
        assert sim.plugged and os.readlink(link) == sim.port_path
        gateway = Gateway(str(link))
        try:
            got = _by_seq(gateway, [before, *during])
            hello = next((f for f in got.values() if isinstance(f, Hello)), None)
            if hello is None:  # written before the port was opened (and flushed): resent
                hello = _read_until(gateway, lambda f: isinstance(f, Hello))
            assert isinstance(hello, Hello) and hello.session == sim.session  # not a reboot
            got[hello.seq] = hello
            assert {before, *during} <= set(got)
            press = got[during[0]]
            assert isinstance(press, Press) and press.counter == 2
            for seq in got:
                gateway.ack(seq)
            assert wait_for(lambda: sim.unacked() == [], 3.0)
        finally:
            gateway.port.close()
        assert sim.counters.unplugs == 1
        assert first_port  # the old slave name may be reused by the kernel; no claim


def test_unplug_replug_cycles_leave_no_stale_fd_and_keep_the_thread() -> None:
    with SimulatedReceiver(resend_interval_s=0.01, heartbeat_interval_s=0.01) as sim:
        thread = sim._thread
        assert thread is not None
        sim.unplug()
        sim.replug()
        fds = _open_fds()
        for i in range(30):
            sim.press(i)
            sim.unplug()
            sim.press(i)
            if i % 3 == 0:
                time.sleep(0.01)
            sim.replug()
        time.sleep(0.1)
        assert thread.is_alive()
        assert _open_fds() == fds
        seq = sim.press(99)
        gateway = Gateway(sim.port_path)
        try:
            assert _read_until(gateway, lambda f: f.seq == seq)
        finally:
            gateway.port.close()
    assert not thread.is_alive()


def test_close_while_unplugged() -> None:
    sim = SimulatedReceiver().start()
    sim.unplug()
    sim.press(1)
    sim.close()
    assert sim._master_fd == sim._slave_fd == -1
    with pytest.raises(RuntimeError, match="not running"):
        sim.replug()


# --------------------------------------------------------------------------- faults


def _first_transmissions(seed: int) -> tuple[list[int], list[int]]:
    faults = SimFaults(seed=seed, drop_first=0.5)
    with SimulatedReceiver(resend_interval_s=10.0, faults=faults) as sim:
        gateway = Gateway(sim.port_path)
        try:
            seqs = [sim.press(1) for _ in range(40)]
            assert wait_for(lambda: not sim._outbox, 3.0)
            heard = sorted({f.seq for f in gateway.read_frames(40, timeout=0.3)})
        finally:
            gateway.port.close()
        assert sim.counters.dropped_first == len(seqs) - len(heard)
    return seqs, heard


def test_drop_first_is_reproducible_from_the_seed() -> None:
    seqs, heard = _first_transmissions(seed=7)
    rng = random.Random(7)
    assert heard == [s for s in seqs if not rng.random() < 0.5]
    assert 5 < len(heard) < 35
    assert _first_transmissions(seed=7)[1] == heard


def test_split_and_duplicated_writes_still_decode() -> None:
    faults = SimFaults(seed=3, split_writes=True, duplicate=0.5, delay_s=0.001)
    with SimulatedReceiver(resend_interval_s=5.0, faults=faults) as sim:
        gateway = Gateway(sim.port_path)
        try:
            seqs = [sim.press(0xA1, counter=100 + i) for i in range(10)]
            assert wait_for(lambda: not sim._outbox, 3.0)
            frames = gateway.read_frames(20, timeout=0.2)
        finally:
            gateway.port.close()
    assert {f.seq for f in frames} == set(seqs)
    assert len(frames) == 10 + sim.counters.duplicated
    assert sim.counters.duplicated > 0
    assert gateway.decoder.counters.resyncs == 0


@pytest.mark.parametrize(
    "kwargs", [{"drop_first": 1.5}, {"duplicate": -0.1}, {"delay_s": -1.0}], ids=str
)
def test_fault_settings_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SimFaults(**kwargs)  # type: ignore[arg-type]


def test_cli_rejects_a_bad_key_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    from firmware_bridge.sim import main

    secret = "00112233445566778899aabbccddeeXX"
    with pytest.raises(SystemExit) as info:
        main(["--key", f"00a1b2c3={secret}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "device 00a1b2c3: device key is not hexadecimal" in err
    assert secret not in err


def test_closing_amid_heartbeats_pings_and_faults_is_clean() -> None:
    # Thread-side sends racing close() must not raise in the thread (pytest turns an
    # unhandled thread exception into an error here).
    faults = SimFaults(split_writes=True, delay_s=0.001)
    for _ in range(10):
        sim = SimulatedReceiver(
            resend_interval_s=0.002, heartbeat_interval_s=0.001, faults=faults
        ).start()
        gateway = Gateway(sim.port_path)
        gateway.send(Ping(seq=1))
        sim.press(1)
        time.sleep(0.005)
        sim.close()
        gateway.port.close()

"""SimulatedReceiver on its own: the gateway side is a plain pyserial port here."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

import firmware_bridge
from firmware_bridge.frames import Ack, Frame, FrameDecoder, Hello, Nak, Press
from firmware_bridge.sim import SimulatedReceiver

from .helpers import TEST_RESEND_S, wait_for


class Gateway:
    """The other end of the pty, driven synchronously."""

    def __init__(self, port: str) -> None:
        self.port = serial.serial_for_url(port, baudrate=115200, timeout=0.05)
        self.decoder = FrameDecoder()
        self._seq = 0

    def read_frames(self, count: int, timeout: float = 3.0) -> list[Frame]:
        got: list[Frame] = []
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
        assert sim.counters.bytes_dropped > 0


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
            gateway.ack(press.seq)
            assert out.wait_for(f"ACK for seq {press.seq}")
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

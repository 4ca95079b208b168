"""A simulated receiver MCU on a pty pair: the demo, benchmarks and tests drive it.

The gateway opens :attr:`SimulatedReceiver.port_path` (or ``link_path``) exactly as it
opens the real ``/dev/serial/by-id/...`` device, so the whole path through pyserial and
the asyncio link is exercised. The simulator behaves like the firmware that
``PROTOCOL.md`` describes: it numbers its frames, prefixes each with a delimiter and
resends every frame until the gateway ACKs it.

It runs in its own daemon thread (not asyncio) so it can be used from synchronous tests,
from benchmarks and from another process::

    python -m firmware_bridge.sim --link /tmp/aura-gateway-sim/receiver --press 00a1b2c3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import secrets
import select
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self, get_args

from firmware_bridge.frames import (
    DELIMITER,
    Ack,
    DeviceFix,
    Frame,
    FrameDecoder,
    Gesture,
    Hello,
    Nak,
    Press,
    ReceiverStatus,
)

#: PROTOCOL.md §5: the receiver resends an unacknowledged frame this often.
RESEND_INTERVAL_S: Final = 0.5
#: Simulated firmware version reported in HELLO.
SIM_FW_VERSION: Final = (1, 0, 0)
#: A UART never blocks its sender. If the gateway does not read and the pty buffer is
#: full, wait this long, then drop the rest of the write (the next frame's leading
#: delimiter resynchronises the reader, and the resend timer repairs the loss).
WRITE_STALL_S: Final = 0.25
DEFAULT_LINK_PATH: Final = "/tmp/aura-gateway-sim/receiver"

ReplyCallback = Callable[[Ack | Nak], None]

__all__ = ["RESEND_INTERVAL_S", "SimCounters", "SimulatedReceiver", "main"]


@dataclass(slots=True)
class SimCounters:
    """What the simulator did. ``frames_written`` includes radio repeats and resends."""

    frames_written: int = 0
    resends: int = 0
    acks_received: int = 0
    naks_received: int = 0
    unknown_acks: int = 0  # ACK/NAK for a seq that is not pending (late duplicate)
    bytes_dropped: int = 0


@dataclass(slots=True)
class _Pending:
    wire: bytes
    due_ns: int


class SimulatedReceiver:
    """A receiver MCU on one end of a pty; the gateway opens the other end.

    Args:
        link_path: if given, a symlink to the pty is made here (a stale symlink is
            replaced; a non-symlink file is refused) and removed on close.
        receiver_id: reported in HELLO.
        resend_interval_s: how often an unacknowledged frame is written again.
        session: HELLO session id; random per instance (per "boot") when None.
        on_reply: called from the simulator thread with each ACK or NAK received.
    """

    def __init__(
        self,
        *,
        link_path: str | os.PathLike[str] | None = None,
        receiver_id: int = 0x5A17,
        resend_interval_s: float = RESEND_INTERVAL_S,
        session: int | None = None,
        on_reply: ReplyCallback | None = None,
    ) -> None:
        self.link_path = Path(link_path) if link_path is not None else None
        self.receiver_id = receiver_id
        self.resend_interval_s = resend_interval_s
        self.session = secrets.randbits(32) if session is None else session
        self.port_path = ""
        self._on_reply = on_reply
        self._master_fd = -1
        self._slave_fd = -1
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._started_ns = 0
        # Lock order: _write_lock, then _cond. Never write while holding _cond.
        self._write_lock = threading.Lock()
        self._stalled = False  # the last write was cut short; guarded by _write_lock
        self._cond = threading.Condition()
        self._next_seq = 1
        self._pending: dict[int, _Pending] = {}
        self._sent_ns: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._counters = SimCounters()
        self._device_counters: dict[int, int] = {}
        self._decoder = FrameDecoder()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Create the pty (and symlink) and start the thread. Returns self."""
        if self._thread is not None or self._closed:
            raise RuntimeError("SimulatedReceiver can be started once")
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._master_fd, self._slave_fd = master, slave
            self.port_path = os.ttyname(slave)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            if self.link_path is not None:
                _replace_symlink(self.link_path, self.port_path)
        except BaseException:
            self._close_fds()
            raise
        self._started_ns = time.monotonic_ns()
        self._thread = threading.Thread(
            target=self._run, name=f"sim-receiver-{self.receiver_id:x}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (within ~1 s), close both pty ends, remove the symlink."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.link_path is not None and self.port_path:
            with contextlib.suppress(OSError):
                # Only remove our own link; another simulator may have replaced it.
                if os.readlink(self.link_path) == self.port_path:
                    self.link_path.unlink()
        with self._write_lock:
            self._close_fds()
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ sending

    def hello(self) -> int:
        """Send HELLO; returns its seq."""
        major, minor, patch = SIM_FW_VERSION
        return self._send(
            lambda seq: Hello(
                seq=seq,
                receiver_id=self.receiver_id,
                fw_major=major,
                fw_minor=minor,
                fw_patch=patch,
                session=self.session,
            )
        )

    def press(
        self,
        device_id: int,
        *,
        gesture: Gesture = "single",
        counter: int | None = None,
        battery_pct: int | None = 95,
        rssi_dbm: int | None = -60,
        repeats: int = 1,
    ) -> int:
        """Send a PRESS heard from ``device_id``; returns its seq.

        ``counter`` None continues the device's own counter (starting at 1). ``repeats``
        writes the identical frame that many times back-to-back, as radio repeats that
        the receiver did not filter.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        with self._cond:
            if counter is None:
                counter = self._device_counters.get(device_id, 0) + 1
            self._device_counters[device_id] = counter

        def build(seq: int, counter: int = counter) -> Press:
            return Press(
                seq=seq,
                device_id=device_id,
                counter=counter,
                gesture=gesture,
                battery_pct=battery_pct,
                rssi_dbm=rssi_dbm,
            )

        return self._send(build, repeats=repeats)

    def send_fix(
        self,
        device_id: int,
        latitude: float,
        longitude: float,
        accuracy_m: int = 10,
        age_s: int = 0,
    ) -> int:
        """Send a DEVICE_FIX; returns its seq."""
        return self._send(
            lambda seq: DeviceFix(
                seq=seq,
                device_id=device_id,
                latitude=latitude,
                longitude=longitude,
                accuracy_m=accuracy_m,
                age_s=age_s,
            )
        )

    def send_status(self, radio_frames: int = 0, radio_errors: int = 0) -> int:
        """Send a RECEIVER_STATUS with the simulator's uptime; returns its seq."""
        uptime_s = (time.monotonic_ns() - self._started_ns) // 1_000_000_000
        return self._send(
            lambda seq: ReceiverStatus(
                seq=seq,
                uptime_s=uptime_s,
                radio_frames=radio_frames,
                radio_errors=radio_errors,
            )
        )

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (garbage, truncated frames) for fault tests."""
        with self._write_lock:
            self._write(data)

    # ------------------------------------------------------------------ observing

    def wait_acked(self, seq: int, timeout: float) -> bool:
        """Block until the frame ``seq`` is acknowledged; False on timeout or close."""
        with self._cond:
            return self._cond.wait_for(lambda: seq in self._acked or self._closed, timeout) and (
                seq in self._acked
            )

    def acked(self) -> dict[int, int]:
        """seq → ``time.monotonic_ns()`` when its first ACK arrived."""
        with self._cond:
            return dict(self._acked)

    def sent_ns(self, seq: int) -> int:
        """``time.monotonic_ns()`` taken just before the first write of frame ``seq``."""
        with self._cond:
            return self._sent_ns[seq]

    def unacked(self) -> list[int]:
        """Seqs still being resent, oldest first."""
        with self._cond:
            return list(self._pending)

    @property
    def counters(self) -> SimCounters:
        """A snapshot of the counters."""
        with self._cond:
            return dataclasses.replace(self._counters)

    # ------------------------------------------------------------------ internals

    def _send(self, build: Callable[[int], Frame], *, repeats: int = 1) -> int:
        if self._closed or self._thread is None:
            raise RuntimeError("SimulatedReceiver is not running (start() it first)")
        with self._write_lock:
            with self._cond:
                seq = self._next_seq
                self._next_seq = (seq + 1) & 0xFFFF
                # Prefix a delimiter, as PROTOCOL.md allows: a truncated frame or noise
                # before this one then cannot swallow it.
                wire = DELIMITER + build(seq).to_bytes()
                now = time.monotonic_ns()
                self._acked.pop(seq, None)  # seq wrapped: forget the old frame
                self._pending[seq] = _Pending(wire, now + self._interval_ns())
                self._sent_ns[seq] = now
                self._counters.frames_written += repeats
                # Every frame is due one interval after it was sent, so a new frame is
                # never due before those already pending; the thread only needs waking
                # when it was sleeping with nothing to resend.
                wake = len(self._pending) == 1
            self._write(wire * repeats)
        if wake:
            self._wake()
        return seq

    def _interval_ns(self) -> int:
        return int(self.resend_interval_s * 1e9)

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` unless the reader stalls; caller holds _write_lock."""
        if self._master_fd < 0:
            raise RuntimeError("SimulatedReceiver is closed")
        view = memoryview(data)
        # Once a write was dropped, drop at once until one goes through again: a UART
        # with no listener does not slow its sender down.
        deadline = time.monotonic() + (0.0 if self._stalled else WRITE_STALL_S)
        while view:
            try:
                written = os.write(self._master_fd, view)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                written = 0
            view = view[written:]
            if not view:
                self._stalled = False
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poller = select.poll()
            poller.register(self._master_fd, select.POLLOUT)
            poller.poll(left * 1000)
        self._stalled = True
        with self._cond:
            self._counters.bytes_dropped += len(view)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: a wake-up is already pending
            os.write(self._wake_w, b"\x01")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._master_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            poller.poll(self._poll_timeout_ms())
            if self._stop.is_set():
                return
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            self._read_replies()
            self._resend_due()

    def _poll_timeout_ms(self) -> int | None:
        """Sleep until the next resend is due, or indefinitely when nothing is pending."""
        with self._cond:
            if not self._pending:
                return None
            due = min(p.due_ns for p in self._pending.values())
        return max(0, (due - time.monotonic_ns() + 999_999) // 1_000_000)

    def _read_replies(self) -> None:
        try:
            data = os.read(self._master_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EIO: no process has the slave open. Cannot happen while we hold the slave
            # fd, but do not let a quirk kill the thread.
            if exc.errno == errno.EIO:
                return
            raise
        for frame in self._decoder.feed(data):
            if isinstance(frame, Ack | Nak):
                self._on_reply_frame(frame)

    def _on_reply_frame(self, frame: Ack | Nak) -> None:
        now = time.monotonic_ns()
        with self._cond:
            if isinstance(frame, Ack):
                self._counters.acks_received += 1
                if self._pending.pop(frame.acked_seq, None) is not None:
                    self._acked[frame.acked_seq] = now
                    self._cond.notify_all()
                else:
                    self._counters.unknown_acks += 1
            else:
                # A NAK changes nothing: the frame goes out again at its next interval.
                self._counters.naks_received += 1
                if frame.acked_seq not in self._pending:
                    self._counters.unknown_acks += 1
        if self._on_reply is not None:
            self._on_reply(frame)

    def _resend_due(self) -> None:
        now = time.monotonic_ns()
        with self._cond:
            due = [(seq, p.wire) for seq, p in self._pending.items() if p.due_ns <= now]
            for seq, _ in due:
                self._pending[seq].due_ns = now + self._interval_ns()
        for seq, wire in due:
            with self._write_lock:
                with self._cond:
                    if seq not in self._pending:
                        continue  # acked meanwhile
                    self._counters.resends += 1
                    self._counters.frames_written += 1
                if self._master_fd < 0:
                    return
                self._write(wire)

    def _close_fds(self) -> None:
        for name in ("_master_fd", "_slave_fd", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


def _replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically; refuse to replace a non-symlink."""
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


# ---------------------------------------------------------------------- CLI


def _device_id(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a hex device id: {text!r}") from None
    if not 0 <= value <= 0xFFFF_FFFF:
        raise argparse.ArgumentTypeError(f"device id {text!r} does not fit in 32 bits")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run a simulated receiver until Ctrl-C. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.sim",
        description="Simulated receiver MCU on a pty: point the gateway's serial port at "
        "--link and press buttons from here.",
    )
    parser.add_argument(
        "--link",
        default=DEFAULT_LINK_PATH,
        help=f"symlink to create for the pty (default {DEFAULT_LINK_PATH})",
    )
    parser.add_argument(
        "--press",
        type=_device_id,
        action="append",
        default=[],
        metavar="DEVICE_HEX",
        help="press this device (hex id, e.g. 00a1b2c3); repeat the option for several",
    )
    parser.add_argument("--gesture", choices=get_args(Gesture), default="single")
    parser.add_argument(
        "--every", type=float, metavar="SECONDS", help="press again every SECONDS (default once)"
    )
    parser.add_argument(
        "--receiver-id", type=_device_id, default=0x5A17, help="hex receiver id for HELLO"
    )
    parser.add_argument("--resend-interval", type=float, default=RESEND_INTERVAL_S)
    args = parser.parse_args(argv)
    if args.every is not None and args.every <= 0:
        parser.error("--every must be > 0")

    link = Path(args.link)
    link.parent.mkdir(parents=True, exist_ok=True)

    def print_reply(frame: Ack | Nak) -> None:
        what = "ACK" if isinstance(frame, Ack) else f"NAK reason {int(frame.reason)}"
        print(f"{what} for seq {frame.acked_seq}", flush=True)

    sim = SimulatedReceiver(
        link_path=link,
        receiver_id=args.receiver_id,
        resend_interval_s=args.resend_interval,
        on_reply=print_reply,
    )
    try:
        sim.start()
    except OSError as exc:
        print(f"cannot start simulated receiver: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    try:
        print(f"simulated receiver on {sim.port_path} (link {link}); Ctrl-C to stop", flush=True)
        print(f"HELLO seq {sim.hello()}", flush=True)
        while True:
            for device in args.press:
                seq = sim.press(device, gesture=args.gesture)
                print(f"PRESS {device:08x} {args.gesture} seq {seq}", flush=True)
            stop.wait(args.every)  # None: wait until Ctrl-C
    except KeyboardInterrupt:
        pending = sim.unacked()
        if pending:
            print(f"stopping with unacknowledged seqs {pending}", flush=True)
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

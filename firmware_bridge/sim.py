"""A simulated receiver MCU on a pty pair: the demo, benchmarks and tests drive it.

The gateway opens :attr:`SimulatedReceiver.port_path` (or ``link_path``) exactly as it
opens the real ``/dev/serial/by-id/...`` device, so the whole path through pyserial and
the asyncio link is exercised. The simulator behaves like the firmware that
``PROTOCOL.md`` describes: it numbers its frames, prefixes each with a delimiter, resends
every frame until the gateway ACKs it (or refuses it for good), answers PING with HELLO,
ACKs INDICATION and TIME, and relays the tags of buttons whose keys it was given.

It can also misbehave on purpose: :class:`SimFaults` splits, drops, duplicates and delays
writes; :meth:`SimulatedReceiver.unplug` and :meth:`~SimulatedReceiver.replug` pull and
reinsert the USB cable; :meth:`~SimulatedReceiver.silence` makes it a hung receiver.

It runs in its own daemon thread (not asyncio) so it can be used from synchronous tests,
from benchmarks and from another process. Every write to the pty happens in that thread,
so no method blocks its caller, whatever the faults or the state of the cable::

    python -m firmware_bridge.sim --link /tmp/aura-gateway-sim/receiver --press 00a1b2c3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import random
import secrets
import select
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self, get_args

from firmware_bridge.auth import parse_key, press_tag, status_tag
from firmware_bridge.frames import (
    DELIMITER,
    STATUS_FLAG_BATTERY_LOW,
    STATUS_FLAG_TAMPER,
    Ack,
    DeviceFix,
    DeviceStatus,
    Frame,
    FrameDecoder,
    Gesture,
    Hello,
    Indication,
    Nak,
    Ping,
    Press,
    ReceiverStatus,
    TimeSync,
    nak_ends_resends,
)

#: PROTOCOL.md §5.2: the receiver resends an unacknowledged frame this often.
RESEND_INTERVAL_S: Final = 0.5
#: Simulated firmware version reported in HELLO.
SIM_FW_VERSION: Final = (1, 0, 0)
#: A UART never blocks its sender. If the gateway does not read and the pty buffer is
#: full, wait this long, then drop the rest of the write (the next frame's leading
#: delimiter resynchronises the reader, and the resend timer repairs the loss).
WRITE_STALL_S: Final = 0.25
#: SimFaults.split_writes: chunk sizes and the pause between chunks.
SPLIT_CHUNK_BYTES: Final = (1, 8)
SPLIT_GAP_S: Final = 0.002
DEFAULT_LINK_PATH: Final = "/tmp/aura-gateway-sim/receiver"

ReplyCallback = Callable[[Ack | Nak], None]
_Kind = Literal["frame", "hello", "heartbeat"]

__all__ = ["RESEND_INTERVAL_S", "SimCounters", "SimFaults", "SimulatedReceiver", "main"]


@dataclass(frozen=True, slots=True)
class SimFaults:
    """Faults the simulator injects into what it writes; all off by default.

    The random choices come from ``random.Random(seed)``, drawn in the simulator thread,
    so a run is reproducible as far as the gateway's timing allows.

    Attributes:
        seed: seed of the fault RNG.
        split_writes: write each frame in chunks of 1..8 bytes with 0-2 ms pauses, as a
            UART read by a USB bridge arrives.
        drop_first: probability that the first transmission of a frame that expects an
            answer is silently not written; its resends still happen.
        duplicate: probability that a frame is written twice back to back.
        delay_s: pause before each write.
    """

    seed: int = 0
    split_writes: bool = False
    drop_first: float = 0.0
    duplicate: float = 0.0
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop_first", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SimFaults.{name}: {value} is not a probability 0..1")
        if self.delay_s < 0:
            raise ValueError(f"SimFaults.delay_s: {self.delay_s} is negative")


@dataclass(slots=True)
class SimCounters:
    """What the simulator did. ``frames_written`` includes radio repeats and resends."""

    frames_written: int = 0
    resends: int = 0
    acks_received: int = 0
    naks_received: int = 0
    unknown_acks: int = 0  # ACK/NAK for a seq that is not pending (late duplicate)
    refused: int = 0  # frames whose resends a NAK ended (any reason but "store failed")
    bytes_dropped: int = 0
    pings_received: int = 0
    indications_received: int = 0
    time_syncs_received: int = 0
    acks_sent: int = 0
    heartbeats: int = 0
    superseded: int = 0  # unacknowledged heartbeats replaced by a newer one
    ignored_while_silent: int = 0
    dropped_first: int = 0  # SimFaults.drop_first
    duplicated: int = 0  # SimFaults.duplicate
    unplugs: int = 0


@dataclass(slots=True)
class _Pending:
    wire: bytes
    kind: _Kind
    written: bool = False  # first transmission done (or deliberately dropped)
    due_ns: int = 0  # next resend, once written


@dataclass(frozen=True, slots=True)
class _Out:
    """One queued write: a frame's first transmission, a reply, or raw bytes."""

    data: bytes
    seq: int | None = None  # a pending frame: resent until answered
    frame: bool = True  # False for send_raw bytes: no frame faults apply


class SimulatedReceiver:
    """A receiver MCU on one end of a pty; the gateway opens the other end.

    Args:
        link_path: if given, a symlink to the pty is made here (a stale symlink is
            replaced; a non-symlink file is refused) and removed on close and unplug.
        receiver_id: reported in HELLO.
        resend_interval_s: how often an unacknowledged frame is written again.
        session: HELLO session id; random per instance (per "boot") when None.
        on_reply: called from the simulator thread with each ACK or NAK received.
        keys: device id → key; presses and statuses of these devices carry a valid tag.
        heartbeat_interval_s: send a RECEIVER_STATUS this often; None: never.
        faults: write faults to inject; None: none.
    """

    def __init__(
        self,
        *,
        link_path: str | os.PathLike[str] | None = None,
        receiver_id: int = 0x5A17,
        resend_interval_s: float = RESEND_INTERVAL_S,
        session: int | None = None,
        on_reply: ReplyCallback | None = None,
        keys: Mapping[int, bytes] | None = None,
        heartbeat_interval_s: float | None = None,
        faults: SimFaults | None = None,
    ) -> None:
        if heartbeat_interval_s is not None and heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
        self.link_path = Path(link_path) if link_path is not None else None
        self.receiver_id = receiver_id
        self.resend_interval_s = resend_interval_s
        self.session = secrets.randbits(32) if session is None else session
        self.heartbeat_interval_s = heartbeat_interval_s
        self.faults = faults or SimFaults()
        self.port_path = ""
        self._keys = dict(keys or {})
        self._on_reply = on_reply
        self._rng = random.Random(self.faults.seed)  # used by the simulator thread only
        self._master_fd = -1
        self._slave_fd = -1
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._started_ns = 0
        # Lock order: _io_lock, then _cond. _io_lock guards the pty fds' lifetime: every
        # read and write of the master holds it, unplug/replug/close swap the fds under
        # it, and _gen counts the swaps so the thread never uses a stale or reused fd.
        self._io_lock = threading.Lock()
        self._gen = 0
        self._stalled = False  # the last write was cut short; guarded by _io_lock
        self._cond = threading.Condition()
        self._unplugged = False
        self._silent = False
        self._pinged = False  # a PING arrived since start or the last replug
        self._next_seq = 1
        self._pending: dict[int, _Pending] = {}
        self._outbox: deque[_Out] = deque()
        self._sent_ns: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._refused: dict[int, int] = {}
        self._counters = SimCounters()
        self._device_counters: dict[int, int] = {}
        self._radio_frames = 0
        self._next_heartbeat_ns = 0
        self._indications: list[tuple[int, int, int]] = []
        self._time_syncs: list[tuple[int, int, bool]] = []
        self._decoder = FrameDecoder()  # used by the simulator thread only
        self._decoder_gen = 0  # the pty generation the decoder's buffer belongs to

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Create the pty (and symlink) and start the thread. Returns self."""
        if self._thread is not None or self._closed:
            raise RuntimeError("SimulatedReceiver can be started once")
        try:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._open_pty()
        except BaseException:
            self._close_fds()
            raise
        self._started_ns = time.monotonic_ns()
        if self.heartbeat_interval_s is not None:
            self._next_heartbeat_ns = self._started_ns + _ns(self.heartbeat_interval_s)
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
        with self._io_lock:
            self._remove_own_link()
            self._close_fds()
            self._gen += 1
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

    # ------------------------------------------------------------------ the cable

    def unplug(self) -> None:
        """Pull the USB cable: close both pty ends and remove the symlink.

        The gateway's reads fail at once, as with a real unplug. Frames sent from now on
        are queued (unacknowledged) and go out after :meth:`replug`. Idempotent.
        """
        self._require_started()
        with self._io_lock:
            with self._cond:
                if self._unplugged or self._closed:
                    return
                self._unplugged = True
                self._pinged = False
                self._counters.unplugs += 1
            self._remove_own_link()
            self._close_pty()
            self._gen += 1
        self._wake()

    def replug(self) -> None:
        """Reinsert the cable: a new pty pair, the symlink points at its slave.

        Then a HELLO, and every unacknowledged frame is resent at once (PROTOCOL.md §5.4:
        the gateway will PING as well when it reopens). Idempotent.
        """
        self._require_started()
        with self._io_lock:
            with self._cond:
                if not self._unplugged or self._closed:
                    return
            self._open_pty()
            self._gen += 1
            self._stalled = False
            with self._cond:
                self._unplugged = False
                now = time.monotonic_ns()
                for pending in self._pending.values():
                    pending.due_ns = now
        self._send_hello(front=True)

    def silence(self, on: bool) -> None:
        """A hung receiver: while on, write nothing at all and ignore what arrives.

        Frames sent meanwhile are queued; writing resumes (with the resends due) when
        turned off.
        """
        with self._cond:
            self._silent = on
        self._wake()

    # ------------------------------------------------------------------ sending

    def hello(self) -> int:
        """Send HELLO; returns its seq."""
        self._require_started()
        return self._send_hello()

    def press(
        self,
        device_id: int,
        *,
        gesture: Gesture = "single",
        counter: int | None = None,
        battery_pct: int | None = 95,
        rssi_dbm: int | None = -60,
        repeats: int = 1,
        tag: bytes | None = None,
    ) -> int:
        """Send a PRESS heard from ``device_id``; returns its seq.

        ``counter`` None continues the device's own counter (starting at 1, shared with
        :meth:`device_status`). ``repeats`` writes the identical frame that many times
        back-to-back, as radio repeats that the receiver did not filter. ``tag`` None
        computes the button's tag from ``keys`` (none for a device without a key); pass
        bytes to simulate a wrong key or a forger.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        counter = self._device_counter(device_id, counter)
        if tag is None:
            key = self._keys.get(device_id)
            tag = b"" if key is None else press_tag(key, device_id, counter, gesture, battery_pct)
        frame_tag = tag

        def build(seq: int) -> Press:
            return Press(
                seq=seq,
                device_id=device_id,
                counter=counter,
                gesture=gesture,
                battery_pct=battery_pct,
                rssi_dbm=rssi_dbm,
                tag=frame_tag,
            )

        return self._send(build, repeats=repeats, radio=repeats)

    def device_status(
        self,
        device_id: int,
        *,
        battery_pct: int | None = 90,
        tamper: bool = False,
        battery_low: bool = False,
        counter: int | None = None,
        tag: bytes | None = None,
    ) -> int:
        """Relay a button's heartbeat (DEVICE_STATUS); returns its seq.

        ``counter`` and ``tag`` work as for :meth:`press` (one counter per device).
        """
        counter = self._device_counter(device_id, counter)
        flags = (STATUS_FLAG_TAMPER if tamper else 0) | (
            STATUS_FLAG_BATTERY_LOW if battery_low else 0
        )
        if tag is None:
            key = self._keys.get(device_id)
            tag = b"" if key is None else status_tag(key, device_id, counter, battery_pct, flags)
        frame_tag = tag
        return self._send(
            lambda seq: DeviceStatus(
                seq=seq,
                device_id=device_id,
                counter=counter,
                battery_pct=battery_pct,
                flags=flags,
                tag=frame_tag,
            ),
            radio=1,
        )

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
            ),
            radio=1,
        )

    def send_status(self, radio_frames: int = 0, radio_errors: int = 0) -> int:
        """Send a RECEIVER_STATUS with the simulator's uptime; returns its seq."""
        return self._send(lambda seq: self._status(seq, radio_frames, radio_errors))

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (garbage, truncated frames) for fault tests.

        Queued in order with the frames; lost while the cable is out.
        """
        self._require_started()
        with self._cond:
            if self._unplugged:
                self._counters.bytes_dropped += len(data)
                return
            self._outbox.append(_Out(bytes(data), frame=False))
        self._wake()

    # ------------------------------------------------------------------ observing

    def wait_acked(self, seq: int, timeout: float) -> bool:
        """Block until the frame ``seq`` is acknowledged; False on timeout, refusal or close."""
        with self._cond:
            self._cond.wait_for(
                lambda: seq in self._acked or seq in self._refused or self._closed, timeout
            )
            return seq in self._acked

    def wait_pinged(self, timeout: float) -> bool:
        """Block until the gateway has pinged since start or the last replug.

        The link pings right after it opened the port (PROTOCOL.md §5.4), so from then on
        nothing written is lost to the input flush of its open: wait for this before a
        test that counts radio repeats. False on timeout or close.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pinged or self._closed, timeout)
            return self._pinged

    def acked(self) -> dict[int, int]:
        """seq → ``time.monotonic_ns()`` when its first ACK arrived."""
        with self._cond:
            return dict(self._acked)

    def refused(self) -> dict[int, int]:
        """seq → NAK reason, for frames a NAK ended the resends of."""
        with self._cond:
            return dict(self._refused)

    def sent_ns(self, seq: int) -> int:
        """``time.monotonic_ns()`` taken just before the first write of frame ``seq``.

        Until the simulator thread has written it: when it was queued.
        """
        with self._cond:
            return self._sent_ns[seq]

    def unacked(self) -> list[int]:
        """Seqs still being resent (or queued), oldest first."""
        with self._cond:
            return list(self._pending)

    def indications(self) -> list[tuple[int, int, int]]:
        """``(monotonic_ns, device_id, state)`` of every INDICATION received, in order."""
        with self._cond:
            return list(self._indications)

    def time_syncs(self) -> list[tuple[int, int, bool]]:
        """``(monotonic_ns, unix_ms, trusted)`` of every TIME received, in order."""
        with self._cond:
            return list(self._time_syncs)

    @property
    def plugged(self) -> bool:
        """False between :meth:`unplug` and :meth:`replug`."""
        with self._cond:
            return not self._unplugged

    @property
    def counters(self) -> SimCounters:
        """A snapshot of the counters."""
        with self._cond:
            return dataclasses.replace(self._counters)

    # ------------------------------------------------------------------ queueing

    def _require_started(self) -> None:
        if self._closed or self._thread is None:
            raise RuntimeError("SimulatedReceiver is not running (start() it first)")

    def _device_counter(self, device_id: int, counter: int | None) -> int:
        with self._cond:
            if counter is None:
                counter = self._device_counters.get(device_id, 0) + 1
            self._device_counters[device_id] = counter
            return counter

    def _status(self, seq: int, radio_frames: int, radio_errors: int) -> ReceiverStatus:
        uptime_s = (time.monotonic_ns() - self._started_ns) // 1_000_000_000
        return ReceiverStatus(
            seq=seq, uptime_s=uptime_s, radio_frames=radio_frames, radio_errors=radio_errors
        )

    def _send_hello(self, *, front: bool = False, coalesce: bool = False) -> int:
        major, minor, patch = SIM_FW_VERSION
        return self._queue(
            lambda seq: Hello(
                seq=seq,
                receiver_id=self.receiver_id,
                fw_major=major,
                fw_minor=minor,
                fw_patch=patch,
                session=self.session,
            ),
            kind="hello",
            front=front,
            coalesce=coalesce,
        )

    def _send(self, build: Callable[[int], Frame], *, repeats: int = 1, radio: int = 0) -> int:
        """Queue a frame that expects an answer; the thread writes and resends it.

        ``radio`` is how many radio frames it stands for (the heartbeat reports them).
        """
        self._require_started()
        return self._queue(build, repeats=repeats, radio=radio)

    def _queue(
        self,
        build: Callable[[int], Frame],
        *,
        repeats: int = 1,
        radio: int = 0,
        kind: _Kind = "frame",
        front: bool = False,
        coalesce: bool = False,
    ) -> int:
        """:meth:`_send` without the running check: the thread's own frames use it, so a
        heartbeat or a HELLO racing :meth:`close` cannot raise in the thread."""
        with self._cond:
            if coalesce:
                # PROTOCOL.md §5.4: a HELLO still outstanding answers this PING too.
                for seq, pending in self._pending.items():
                    if pending.kind == kind:
                        return seq
            if kind == "heartbeat":
                # §5.2: a new RECEIVER_STATUS may replace an unanswered one, so a gateway
                # that does not ack heartbeats cannot fill the receiver up.
                for seq in [s for s, p in self._pending.items() if p.kind == "heartbeat"]:
                    del self._pending[seq]
                    self._counters.superseded += 1
            seq = self._take_seq()
            # Prefix a delimiter, as PROTOCOL.md allows: a truncated frame or noise
            # before this one then cannot swallow it.
            wire = DELIMITER + build(seq).to_bytes()
            self._acked.pop(seq, None)  # seq wrapped: forget the old frame
            self._refused.pop(seq, None)
            self._pending[seq] = _Pending(wire, kind)
            self._sent_ns[seq] = time.monotonic_ns()
            self._radio_frames += radio
            out = _Out(wire * repeats, seq=seq)
            if front:
                self._outbox.appendleft(out)
            else:
                self._outbox.append(out)
        self._wake()
        return seq

    def _reply(self, frame_seq: int) -> None:
        """Queue an ACK for the gateway's frame (never resent: PROTOCOL.md §5.3)."""
        with self._cond:
            wire = DELIMITER + Ack(seq=self._take_seq(), acked_seq=frame_seq).to_bytes()
            self._outbox.append(_Out(wire))
            self._counters.acks_sent += 1

    def _take_seq(self) -> int:
        """Next seq; caller holds _cond. Skips seqs still outstanding after a wrap."""
        seq = self._next_seq
        while seq in self._pending:
            seq = (seq + 1) & 0xFFFF
        self._next_seq = (seq + 1) & 0xFFFF
        return seq

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: a wake-up is already pending
            os.write(self._wake_w, b"\x01")

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        poller = select.poll()
        gen = -1
        while not self._stop.is_set():
            with self._io_lock:
                if gen != self._gen:
                    # New, closed or reopened pty: never poll a stale fd number.
                    gen = self._gen
                    poller = select.poll()
                    poller.register(self._wake_r, select.POLLIN)
                    if self._master_fd >= 0:
                        poller.register(self._master_fd, select.POLLIN)
            poller.poll(self._poll_timeout_ms())
            if self._stop.is_set():
                return
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            self._read_replies()
            self._heartbeat_if_due()
            self._flush()

    def _writable(self) -> bool:
        """Caller holds _cond."""
        return not (self._unplugged or self._silent or self._closed)

    def _poll_timeout_ms(self) -> int | None:
        """Sleep until the next write, resend or heartbeat is due; else until woken."""
        with self._cond:
            deadlines = []
            if self._writable():
                if self._outbox:
                    return 0
                deadlines = [p.due_ns for p in self._pending.values() if p.written]
            if self.heartbeat_interval_s is not None:
                deadlines.append(self._next_heartbeat_ns)
        if not deadlines:
            return None
        return max(0, (min(deadlines) - time.monotonic_ns() + 999_999) // 1_000_000)

    def _read_replies(self) -> None:
        with self._io_lock:
            if self._master_fd < 0:
                return
            if self._decoder_gen != self._gen:
                # A new pty: a partial frame from the old one must not glue onto it.
                self._decoder.reset()
                self._decoder_gen = self._gen
            try:
                data = os.read(self._master_fd, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EIO: no process has the slave open. Cannot happen while we hold the
                # slave fd, but do not let a quirk kill the thread.
                if exc.errno == errno.EIO:
                    return
                raise
        for frame in self._decoder.feed(data):
            self._on_gateway_frame(frame)

    def _on_gateway_frame(self, frame: Frame) -> None:
        now = time.monotonic_ns()
        with self._cond:
            if self._silent:
                self._counters.ignored_while_silent += 1
                return
        if isinstance(frame, Ack | Nak):
            self._on_reply_frame(frame, now)
        elif isinstance(frame, Ping):
            with self._cond:
                self._counters.pings_received += 1
                self._pinged = True
                self._cond.notify_all()
            self._send_hello(coalesce=True)
        elif isinstance(frame, Indication):
            with self._cond:
                self._counters.indications_received += 1
                self._indications.append((now, frame.device_id, int(frame.state)))
            self._reply(frame.seq)
        elif isinstance(frame, TimeSync):
            with self._cond:
                self._counters.time_syncs_received += 1
                self._time_syncs.append((now, frame.unix_ms, frame.trusted))
            self._reply(frame.seq)
        # Anything else is a receiver → gateway type: not for us.

    def _on_reply_frame(self, frame: Ack | Nak, now: int) -> None:
        with self._cond:
            if isinstance(frame, Ack):
                self._counters.acks_received += 1
                if self._pending.pop(frame.acked_seq, None) is not None:
                    self._acked[frame.acked_seq] = now
                    self._cond.notify_all()
                else:
                    self._counters.unknown_acks += 1
            else:
                self._counters.naks_received += 1
                if frame.acked_seq not in self._pending:
                    self._counters.unknown_acks += 1
                elif nak_ends_resends(frame.reason):
                    # PROTOCOL.md §5.2: only "store failed" is worth another try.
                    del self._pending[frame.acked_seq]
                    self._refused[frame.acked_seq] = int(frame.reason)
                    self._counters.refused += 1
                    self._cond.notify_all()
                # else: resent at its next interval, as if nothing had arrived.
        if self._on_reply is not None:
            self._on_reply(frame)

    def _heartbeat_if_due(self) -> None:
        interval = self.heartbeat_interval_s
        if interval is None:
            return
        now = time.monotonic_ns()
        with self._cond:
            if now < self._next_heartbeat_ns:
                return
            self._next_heartbeat_ns = now + _ns(interval)
            if not self._writable():
                return  # unpowered or hung: no heartbeat is the point
            self._counters.heartbeats += 1
            radio_frames = self._radio_frames
        self._queue(lambda seq: self._status(seq, radio_frames, 0), kind="heartbeat")

    def _flush(self) -> None:
        """Write the queue in order, then the resends that are due."""
        while (out := self._next_out()) is not None:
            self._emit(out.data, frame=out.frame)
            self._read_replies()  # keep ACKs flowing while a long queue drains
        now = time.monotonic_ns()
        with self._cond:
            if not self._writable():
                return
            due = [seq for seq, p in self._pending.items() if p.written and p.due_ns <= now]
            for seq in due:
                self._pending[seq].due_ns = now + _ns(self.resend_interval_s)
        for seq in due:
            with self._cond:
                pending = self._pending.get(seq)
                if pending is None or not self._writable() or self._stop.is_set():
                    continue  # answered meanwhile, or the cable went
                self._counters.resends += 1
                self._counters.frames_written += 1
                wire = pending.wire
            self._emit(wire, frame=True)
            self._read_replies()

    def _next_out(self) -> _Out | None:
        """Pop the next queued write, deciding the first-transmission faults."""
        while True:
            with self._cond:
                if not self._outbox or not self._writable() or self._stop.is_set():
                    return None
                out = self._outbox.popleft()
                if out.seq is None:
                    return out
                pending = self._pending.get(out.seq)
                if pending is None:
                    continue  # answered before it was ever written
                now = time.monotonic_ns()
                pending.written = True
                pending.due_ns = now + _ns(self.resend_interval_s)
                self._sent_ns[out.seq] = now
                if self.faults.drop_first and self._rng.random() < self.faults.drop_first:
                    self._counters.dropped_first += 1
                    continue
                self._counters.frames_written += len(out.data) // len(pending.wire)
                return out

    def _emit(self, data: bytes, *, frame: bool) -> None:
        """One write with the configured faults (simulator thread only)."""
        faults = self.faults
        if faults.delay_s and self._stop.wait(faults.delay_s):
            return
        if frame and faults.duplicate and self._rng.random() < faults.duplicate:
            data += data
            with self._cond:
                self._counters.duplicated += 1
                self._counters.frames_written += 1
        if not faults.split_writes:
            self._write(data)
            return
        lo, hi = SPLIT_CHUNK_BYTES
        start = 0
        while start < len(data):
            end = start + self._rng.randint(lo, hi)
            self._write(data[start:end])
            start = end
            if start < len(data) and self._stop.wait(self._rng.uniform(0, SPLIT_GAP_S)):
                return

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` unless the reader stalls or the cable goes."""
        with self._io_lock:
            view = memoryview(data)
            if self._master_fd < 0:
                self._count_dropped(len(view))
                return
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
            self._count_dropped(len(view))

    def _count_dropped(self, size: int) -> None:
        with self._cond:
            self._counters.bytes_dropped += size

    # ------------------------------------------------------------------ fds

    def _open_pty(self) -> None:
        """A new pty pair and symlink; caller holds _io_lock (or is start())."""
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            port_path = os.ttyname(slave)
            if self.link_path is not None:
                _replace_symlink(self.link_path, port_path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master_fd, self._slave_fd = master, slave
        self.port_path = port_path

    def _remove_own_link(self) -> None:
        if self.link_path is None or not self.port_path:
            return
        with contextlib.suppress(OSError):
            # Only remove our own link; another simulator may have replaced it.
            if os.readlink(self.link_path) == self.port_path:
                self.link_path.unlink()

    def _close_pty(self) -> None:
        for name in ("_master_fd", "_slave_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def _close_fds(self) -> None:
        self._close_pty()
        for name in ("_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


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


def _device_key(text: str) -> tuple[int, bytes]:
    device, sep, key = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected DEVICEHEX=KEYHEX")
    try:
        return _device_id(device), parse_key(key)
    except ValueError as exc:  # names the problem, never the key
        raise argparse.ArgumentTypeError(f"device {device}: {exc}") from None


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
        "--key",
        type=_device_key,
        action="append",
        default=[],
        metavar="DEVICEHEX=KEYHEX",
        help="the button's key (32 or 64 hex digits): its presses carry a valid tag; "
        "repeat the option for several devices",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help="send a RECEIVER_STATUS heartbeat every SECONDS (default: none)",
    )
    parser.add_argument(
        "--receiver-id", type=_device_id, default=0x5A17, help="hex receiver id for HELLO"
    )
    parser.add_argument("--resend-interval", type=float, default=RESEND_INTERVAL_S)
    args = parser.parse_args(argv)
    if args.every is not None and args.every <= 0:
        parser.error("--every must be > 0")
    if args.heartbeat is not None and args.heartbeat <= 0:
        parser.error("--heartbeat must be > 0")

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
        keys=dict(args.key),
        heartbeat_interval_s=args.heartbeat,
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

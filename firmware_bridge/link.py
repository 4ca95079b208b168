"""asyncio link to the receiver MCU over pyserial-asyncio-fast.

The link owns the port: it opens it, decodes frames with :class:`FrameDecoder`, and
reopens it with capped full-jitter backoff when it cannot be opened or is lost. After
every open it sends a PING, so the receiver announces itself with a HELLO (PROTOCOL.md
§5.4). It does not decide when to acknowledge: the gateway calls
:meth:`ReceiverLink.ack` only after a press is durably stored (DESIGN.md invariant 1),
and the receiver resends until then.

:meth:`ReceiverLink.frames` yields every decoded frame, including the receiver's ACKs of
INDICATION and TIME frames: those answer the gateway and must not be acknowledged.
:attr:`ReceiverLink.last_frame_mono` is the input of the gateway's receiver watchdog.

Usage::

    async with ReceiverLink("/dev/serial/by-id/usb-...") as link:
        async for frame in link.frames():
            ...                      # store it, then
            await link.ack(frame.seq)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import termios
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import serial
import serial_asyncio_fast

from firmware_bridge.frames import (
    DELIMITER,
    Ack,
    DecoderCounters,
    Frame,
    FrameDecoder,
    FrameError,
    Indication,
    IndicationState,
    Nak,
    NakReason,
    Ping,
    TimeSync,
)

logger = logging.getLogger(__name__)

#: Sub-DEBUG level for per-frame traffic (raw bytes in hex, decoded frames).
TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

#: First reopen delay bound; doubles per failed attempt up to ``reopen_backoff_max_s``.
REOPEN_BACKOFF_BASE_S: Final = 0.5
#: Decoded frames waiting for the consumer before the link stops reading the port.
#: The kernel and the receiver's resend timer hold the rest; nothing is dropped here.
RX_QUEUE_HIGH: Final = 512
RX_QUEUE_LOW: Final = 128
#: How long close() waits for the transport to finish closing the port.
CLOSE_TIMEOUT_S: Final = 2.0

#: What pyserial raises when a port is missing, busy or unplugged (TESTBED.md §4).
#: ``SerialException`` is an ``OSError``; ``termios.error`` is not.
PORT_ERRORS: Final = (serial.SerialException, OSError, termios.error)


class LinkDown(ConnectionError):
    """The port is not open right now; the receiver will resend what needs an answer."""


@dataclass(slots=True)
class LinkCounters(DecoderCounters):
    """Decoder counters plus the link's own.

    ``reopens`` counts successful opens after the first one; ``open_failures`` every
    failed attempt; ``connection_losses`` every open port that went away.
    """

    reopens: int = 0
    open_failures: int = 0
    connection_losses: int = 0
    frames_sent: int = 0


class _Lost:
    """Queue marker: the connection that produced earlier items is gone."""


_LOST: Final = _Lost()
_QueueItem = Frame | _Lost


class _LinkProtocol(asyncio.Protocol):
    """Forwards transport callbacks to the link, tagged with this connection."""

    def __init__(self, link: ReceiverLink) -> None:
        self._link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._link._on_made(self, transport)

    def data_received(self, data: bytes) -> None:
        self._link._on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._on_lost(self, exc)

    def pause_writing(self) -> None:
        self._link._writable.clear()

    def resume_writing(self) -> None:
        self._link._writable.set()


class ReceiverLink:
    """One serial port to one receiver MCU.

    Args:
        port: a device path (``/dev/serial/by-id/...``, a pty) or a pyserial URL with a
            file descriptor (``socket://``; ``loop://`` has none and cannot work here).
        baudrate: line speed; ptys and USB CDC ignore it.
        name: used in log lines, to tell several links apart.
        reopen_backoff_max_s: cap of the reopen delay.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        name: str = "receiver",
        reopen_backoff_max_s: float = 10.0,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.name = name
        self.reopen_backoff_max_s = reopen_backoff_max_s
        self.last_frame_mono: float | None = None
        self._decoder = FrameDecoder(on_error=self._on_frame_error)
        self._link_counters = LinkCounters()
        self._queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        self._pushback: _QueueItem | None = None  # a loss marker ready_frames() put back
        self._protocol: _LinkProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = asyncio.Event()
        self._lost_event: asyncio.Event | None = None  # set when the current port is closed
        self._tx_seq = 0
        self._prefix_next = True
        self._ever_connected = False
        self._iterating = False
        self._outage_since: float | None = None  # monotonic start of the current outage

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True while the port is open and usable."""
        return self._transport is not None and not self._transport.is_closing()

    @property
    def counters(self) -> LinkCounters:
        """A snapshot of decoder and link counters."""
        snapshot = dataclasses.replace(self._link_counters)
        for field in dataclasses.fields(DecoderCounters):
            setattr(snapshot, field.name, getattr(self._decoder.counters, field.name))
        return snapshot

    async def frames(self) -> AsyncIterator[Frame]:
        """Yield decoded frames until :meth:`close`, opening and reopening the port.

        Only one consumer may iterate at a time. Frames already decoded when the port is
        lost are still yielded before the reopen.

        Raises:
            ValueError: the port string or baud rate is invalid (a config error; retrying
                cannot help). Port errors are never raised: they are retried.
        """
        if self._iterating:
            raise RuntimeError(f"{self.name}: frames() is already being iterated")
        self._iterating = True
        try:
            need_open = self._protocol is None
            while not self._closing.is_set():
                if need_open:
                    if not await self._open_with_backoff():
                        return
                    need_open = False
                item = await self._next_item()
                if item is None:
                    return
                if isinstance(item, _Lost):
                    need_open = self._protocol is None
                    continue
                yield item
        finally:
            self._iterating = False

    def ready_frames(self, limit: int = 256) -> list[Frame]:
        """Frames already decoded and waiting, taken without waiting (up to ``limit``).

        For the consumer of :meth:`frames` to handle a burst as one batch (one journal
        transaction for many presses). A loss marker stays queued for :meth:`frames`.
        """
        out: list[Frame] = []
        while len(out) < limit and self._pushback is None:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if isinstance(item, _Lost):
                self._pushback = item  # the next frames() step sees the loss
            else:
                out.append(item)
        self._resume_if_drained()
        return out

    async def send(self, frame: Frame) -> None:
        """Write ``frame`` to the receiver.

        Raises:
            LinkDown: the port is not open.
        """
        await self._writable.wait()
        self._write_frame(frame)

    async def ack(self, seq: int) -> None:
        """Acknowledge the receiver's frame ``seq``: call only once it is durably stored."""
        await self.send(Ack(seq=self._next_tx_seq(), acked_seq=seq))

    async def nak(self, seq: int, reason: NakReason | int) -> None:
        """Refuse the receiver's frame ``seq``.

        The receiver resends it later only for :attr:`NakReason.STORE_FAILED`; any other
        reason ends its resends of that frame (PROTOCOL.md §5.2).
        """
        await self.send(Nak(seq=self._next_tx_seq(), acked_seq=seq, reason=int(reason)))

    async def send_indication(self, device_id: int, state: IndicationState | int) -> int:
        """Ask the receiver to show ``state`` on button ``device_id``.

        Returns the frame's seq: the receiver's ACK (from :meth:`frames`) names it in
        ``acked_seq``. Sending it again, if that matters, is the caller's choice.

        Raises:
            LinkDown: the port is not open.
        """
        seq = self._next_tx_seq()
        await self.send(Indication(seq=seq, device_id=device_id, state=state))
        return seq

    async def send_time(self, unix_ms: int, trusted: bool) -> int:
        """Tell the receiver the wall time and whether the gateway's clock is trusted.

        Returns the frame's seq, which the receiver's ACK names.

        Raises:
            LinkDown: the port is not open.
        """
        seq = self._next_tx_seq()
        await self.send(TimeSync(seq=seq, unix_ms=unix_ms, trusted=trusted))
        return seq

    async def ping(self) -> int:
        """Ask the receiver to announce itself; a live receiver answers with HELLO.

        The link pings by itself after every open; the gateway's watchdog may ping too.
        Returns the PING's seq (the HELLO does not name it).

        Raises:
            LinkDown: the port is not open.
        """
        seq = self._next_tx_seq()
        await self.send(Ping(seq=seq))
        return seq

    def _write_frame(self, frame: Frame) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise LinkDown(f"{self.name}: {self.port} is not open")
        wire = frame.to_bytes()
        if self._prefix_next:
            # The first frame after opening terminates whatever noise the receiver may
            # have buffered, so this frame is not glued to it (PROTOCOL.md §2).
            wire = DELIMITER + wire
            self._prefix_next = False
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "%s tx %r: %s", self.name, frame, wire.hex())
        transport.write(wire)
        self._link_counters.frames_sent += 1

    async def close(self) -> None:
        """Close the port and end :meth:`frames`. Idempotent."""
        self._closing.set()
        self._queue.put_nowait(_LOST)  # wake a consumer blocked on the queue
        self._writable.set()  # wake senders; they will see LinkDown
        transport, lost = self._transport, self._lost_event
        if transport is not None:
            # abort, not close: close() flushes with tcdrain, which can block on a tty
            # nobody reads. An unsent ACK is harmless: the receiver resends.
            transport.abort()
        if lost is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await lost.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<ReceiverLink {self.name} {self.port} {state}>"

    # ------------------------------------------------------------------ opening

    async def _open_with_backoff(self) -> bool:
        """Open the port, retrying until it works; False if closed meanwhile."""
        attempt = 0
        while not self._closing.is_set():
            try:
                await self._open_once()
            except PORT_ERRORS as exc:
                self._link_counters.open_failures += 1
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    logger.warning(
                        "%s: cannot open %s: %s; retrying (backoff up to %.1f s)",
                        self.name,
                        self.port,
                        exc,
                        self.reopen_backoff_max_s,
                    )
                else:
                    logger.debug("%s: open %s failed again: %s", self.name, self.port, exc)
            else:
                if self._closing.is_set():  # closed while the open ran in the executor
                    await self.close()
                    return False
                return True
            delay = random.uniform(
                0, min(self.reopen_backoff_max_s, REOPEN_BACKOFF_BASE_S * 2 ** min(attempt, 30))
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
        return False

    async def _open_once(self) -> None:
        loop = asyncio.get_running_loop()
        protocol = _LinkProtocol(self)
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop, lambda: protocol, url=self.port, baudrate=self.baudrate
        )
        # connection_made runs on the next loop iteration; take the transport now so
        # connected/send are right as soon as we return.
        self._on_made(protocol, transport)

    def _on_made(self, protocol: _LinkProtocol, transport: asyncio.BaseTransport) -> None:
        if self._protocol is protocol:
            return  # second call (from connection_made) for the same connection
        assert isinstance(transport, asyncio.Transport)
        self._protocol = protocol
        self._transport = transport
        self._lost_event = asyncio.Event()
        self._reading_paused = False
        self._writable.set()
        self._decoder.reset()
        self._prefix_next = True
        if self._ever_connected:
            self._link_counters.reopens += 1
        self._ever_connected = True
        if self._outage_since is not None:
            logger.info(
                "%s: %s open after %.1f s unavailable",
                self.name,
                self.port,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
        else:
            logger.info("%s: %s open", self.name, self.port)
        # The receiver may have booted long ago, or this may be a reopen after a replug:
        # ask it who it is (and that it is alive). The leading delimiter goes with it.
        self._write_frame(Ping(seq=self._next_tx_seq()))

    # ------------------------------------------------------------------ receiving

    def _on_data(self, protocol: _LinkProtocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        if logger.isEnabledFor(TRACE):
            logger.log(TRACE, "%s rx %s", self.name, data.hex())
        frames = self._decoder.feed(data)
        if not frames:
            return
        self.last_frame_mono = time.monotonic()
        for frame in frames:
            if logger.isEnabledFor(TRACE):
                logger.log(TRACE, "%s rx %r", self.name, frame)
            self._queue.put_nowait(frame)
        if self._queue.qsize() >= RX_QUEUE_HIGH and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _on_frame_error(self, exc: FrameError) -> None:
        logger.debug("%s: skipped bad input: %s", self.name, exc)

    def _on_lost(self, protocol: _LinkProtocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        lost_event = self._lost_event
        self._protocol = None
        self._transport = None
        self._lost_event = None
        self._writable.set()
        if lost_event is not None:
            lost_event.set()
        if self._closing.is_set():
            logger.info("%s: %s closed", self.name, self.port)
            return
        self._link_counters.connection_losses += 1
        self._outage_since = time.monotonic()
        logger.warning("%s: lost %s: %s; reopening", self.name, self.port, exc or "closed")
        self._queue.put_nowait(_LOST)

    async def _next_item(self) -> _QueueItem | None:
        """Next queued frame or loss marker; None once the link is closed."""
        if self._closing.is_set():
            return None
        if self._pushback is not None:
            pushed, self._pushback = self._pushback, None
            return pushed
        item = await self._queue.get()
        if self._closing.is_set():
            return None
        self._resume_if_drained()
        return item

    def _resume_if_drained(self) -> None:
        """Read the port again once the consumer has caught up (see RX_QUEUE_HIGH)."""
        if (
            self._reading_paused
            and self._queue.qsize() <= RX_QUEUE_LOW
            and self._transport is not None
        ):
            self._reading_paused = False
            self._transport.resume_reading()

    def _next_tx_seq(self) -> int:
        seq = self._tx_seq
        self._tx_seq = (seq + 1) & 0xFFFF
        return seq


__all__ = [
    "PORT_ERRORS",
    "REOPEN_BACKOFF_BASE_S",
    "TRACE",
    "LinkCounters",
    "LinkDown",
    "ReceiverLink",
]

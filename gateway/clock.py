"""Whether the wall clock can be trusted, and who vouches for it.

A gateway without an RTC boots in the past until NTP (or chrony fed by GPS) sets the
clock. Ordering, windows and timeouts never use the wall clock (they use the monotonic
one); the wall clock is only what people are shown, so every stamp records whether it was
trusted when taken, and stamps taken before trust came are corrected from the monotonic
clock once it does (``Journal.restamp_untrusted``).

The rule (:class:`ClockTrust`): the wall clock is trusted when

* it is not before :data:`CLOCK_FLOOR` (a clock in 1970 is wrong whatever adjtimex says), and
* no recent GPS time says it is off by more than :data:`GPS_AGREE_S` (a clock jump), and
* the kernel says it is synchronised (NTP, chrony), or a recent GPS time from gpsd
  (a TPV with a fix, received within :data:`GPS_FRESH_S`) agrees with it.

A GPS time is kept anchored to the monotonic clock at which it was received, so a jump of
the wall clock after it is measured against what the GPS said, not against the old wall.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
_TIMEX_SIZE = 512  # larger than struct timex on every Linux ABI; modes = 0 reads only

CLOCK_FLOOR = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a wall clock before it is not set
GPS_AGREE_S = 2.0  # a GPS time further from the wall clock than this: the clock is wrong
GPS_FRESH_S = 180.0  # a GPS time older than this (monotonic) no longer vouches for anything
KERNEL_CACHE_S = 1.0  # adjtimex is asked at most this often (Stamp.now() runs per signal)

# systemd-timesyncd creates this file once it has synchronised the clock (and removes it
# at start), see systemd-timesyncd.service(8).
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")

_libc: ctypes.CDLL | None = None


def clock_synchronised() -> bool:
    """True when the kernel reports a synchronised clock; False when unknown.

    The unit runs with ``ProtectClock=yes``, which filters the whole ``@clock`` syscall
    group, adjtimex(2) included even with modes = 0 (a pure read): it fails with EPERM.
    Then the answer is the flag file systemd-timesyncd keeps (:data:`TIMESYNC_FLAG`), the
    time service of Debian and Raspberry Pi OS. With chrony instead, which keeps no such
    file, the clock counts as unsynchronised (GPS time may still vouch for it) unless the
    unit gets a drop-in with ``ProtectClock=no`` (README, Running in production).
    """
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # zeroed: modes = 0, change nothing
        state = _libc.adjtimex(buf)
    except (OSError, AttributeError):
        state = -1
    if state < 0:  # refused (EPERM under ProtectClock=yes) or not available
        return TIMESYNC_FLAG.exists()
    return state != TIME_ERROR


@dataclass(frozen=True, slots=True)
class TrustState:
    trusted: bool
    source: str | None  # "kernel" or "gps" when trusted
    reason: str | None  # why not, when not trusted
    epoch: int  # counts untrusted -> trusted transitions: one restamp per epoch


def _utc(wall: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
    except (OverflowError, OSError, ValueError):
        return f"{wall:.0f}"


class ClockTrust:
    """The process-wide answer to "can the wall clock be believed now?".

    Cheap enough for every signal: adjtimex is cached for :data:`KERNEL_CACHE_S`. Each
    change is logged once (``event=clock_trusted`` / ``event=clock_untrusted``) and told to
    the listeners (called in the thread that noticed it; they must not block).
    """

    def __init__(
        self,
        *,
        kernel: Callable[[], bool] = clock_synchronised,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        floor: float = CLOCK_FLOOR,
    ) -> None:
        self._kernel = kernel
        self._wall = wall
        self._mono = mono
        self.floor = floor
        self._lock = threading.Lock()
        self._kernel_ok = False
        self._kernel_at: float | None = None
        self._gps: tuple[float, float] | None = None  # (GPS UTC, monotonic when received)
        self._state: TrustState | None = None
        self._epoch = 0
        self._listeners: list[Callable[[TrustState], None]] = []

    def subscribe(self, listener: Callable[[TrustState], None]) -> Callable[[], None]:
        """Call ``listener`` on every change; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def gps_time(self, utc: float, received_mono: float | None = None) -> TrustState:
        """A time from the GPS (gpsd TPV with a fix), received at ``received_mono``."""
        with self._lock:
            self._gps = (utc, self._mono() if received_mono is None else received_mono)
        return self.state()

    def trusted(self) -> bool:
        return self.state().trusted

    def state(self) -> TrustState:
        """Evaluate now; log and tell the listeners when the answer changed."""
        with self._lock:
            mono = self._mono()
            wall = self._wall()
            if self._kernel_at is None or mono - self._kernel_at >= KERNEL_CACHE_S:
                self._kernel_ok = self._kernel()
                self._kernel_at = mono
            trusted, source, reason = self._judge(wall, mono)
            before = self._state
            if before is not None and not _news(before, trusted, source, reason):
                if before.reason != reason:  # the same story, a new number: not logged again
                    self._state = dataclasses.replace(before, reason=reason)
                return self._state
            if trusted and (before is None or not before.trusted):
                self._epoch += 1
            state = self._state = TrustState(trusted, source, reason, self._epoch)
            listeners = list(self._listeners)
        if trusted:
            logger.info("event=clock_trusted source=%s wall=%s", source, _utc(wall))
        else:
            logger.warning("event=clock_untrusted reason=%r wall=%s", reason, _utc(wall))
        for listener in listeners:
            listener(state)
        return state

    def _judge(self, wall: float, mono: float) -> tuple[bool, str | None, str | None]:
        if wall < self.floor:
            return False, None, f"wall clock before {_utc(self.floor)}: not set"
        gps_offset: float | None = None
        if self._gps is not None:
            utc, at = self._gps
            age = mono - at
            if 0 <= age <= GPS_FRESH_S:
                gps_offset = wall - (utc + age)  # what the GPS says the time is now
            else:
                self._gps = None  # stale: vouches for nothing, contradicts nothing
        if gps_offset is not None and abs(gps_offset) > GPS_AGREE_S:
            return False, None, f"GPS time says the wall clock is off by {gps_offset:+.1f} s"
        if self._kernel_ok:
            return True, "kernel", None
        if gps_offset is not None:
            return True, "gps", None
        return False, None, "kernel clock not synchronised and no recent GPS time"


def _news(before: TrustState, trusted: bool, source: str | None, reason: str | None) -> bool:
    """A change worth logging: trust, its source, or the kind of reason (not a new offset)."""
    if before.trusted != trusted or before.source != source:
        return True
    return (before.reason or "").split(" off by ")[0] != (reason or "").split(" off by ")[0]


# The one tracker of this process: Stamp.now(), the gpsd input and the daemon share it.
CLOCK = ClockTrust()


def untrusted_why(wall: float) -> str:
    """Why a wall time is not believed, in words for a person."""
    if wall < CLOCK_FLOOR:
        return "the gateway's clock was not set"
    return "the gateway's clock was not synchronised"

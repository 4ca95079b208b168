"""What sources hand to the daemon. Sources know nothing about customers or AURA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.clock import CLOCK
from gateway.config.models import Gesture


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


BOOT_ID = _boot_id()
# The device id under which the gateway's own gpsd fix is kept (not a valid device id).
GATEWAY_FIX = "@gateway"


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a signal was received: monotonic for order and timeouts, wall for people.

    ``wall_trusted``: the wall clock was trusted when the stamp was taken
    (``gateway.clock``); an untrusted wall is corrected from ``mono_ns`` once the clock is
    trusted in the same boot, and is never shown to a person as if it were true.
    """

    mono_ns: int
    wall: float
    boot_id: str = BOOT_ID
    wall_trusted: bool = False

    @classmethod
    def now(cls) -> Stamp:
        trusted = CLOCK.trusted()
        return cls(mono_ns=time.monotonic_ns(), wall=time.time(), wall_trusted=trusted)


@dataclass(frozen=True, slots=True)
class Press:
    """A button press as a source saw it.

    ``dedup_key`` names the transmission: the same key seen again (a radio repeat or a
    receiver resending an unacknowledged frame) is the same press.
    """

    source: str
    device_id: str
    gesture: Gesture
    dedup_key: str
    counter: int | None = None
    battery_pct: int | None = None
    rssi_dbm: int | None = None
    stamp: Stamp = field(default_factory=Stamp.now)
    # The frame that carried it (receiver session and sequence), to recognise a resend.
    frame_key: str | None = None
    # The counter is covered by a verified MAC, so it must advance (replay protection).
    authenticated: bool = False
    # How long the button was held, where the source measures it (else None).
    held_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fix:
    """A position report from a device with its own GPS."""

    source: str
    device_id: str
    latitude: float
    longitude: float
    accuracy_m: float
    age_s: float = 0.0
    stamp: Stamp = field(default_factory=Stamp.now)

    @property
    def taken_mono_ns(self) -> int:
        return self.stamp.mono_ns - int(self.age_s * 1e9)

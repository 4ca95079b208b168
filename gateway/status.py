"""The one place that knows the gateway's truth; every indicator reads from here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class InputHealth:
    connected: bool = False
    state: str = "starting"  # starting | ok | lost | disconnected
    last_frame_age_s: float | None = None
    frames_ok: int = 0
    bad_frames: int = 0
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class DeviceHealth:
    last_seen_wall: float
    battery_pct: int | None = None
    tamper: bool = False
    battery_low: bool = False


@dataclass
class StatusModel:
    devices: int = 0
    uplink: str = "unknown"  # unknown | up | down | unauthorized
    uplink_error: str | None = None
    pending_alarms: int = 0
    open_callouts: dict[str, str] = field(default_factory=dict)  # incident id -> AURA stage
    failed_incidents: dict[str, str] = field(default_factory=dict)  # incident id -> reason
    inputs: dict[str, InputHealth] = field(default_factory=dict)
    devices_seen: dict[str, DeviceHealth] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    journal: dict[str, float] = field(default_factory=dict)  # used/disk bytes, fill %
    callout_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # count, last
    _listeners: list[Callable[[StatusModel], None]] = field(default_factory=list, repr=False)

    def subscribe(self, listener: Callable[[StatusModel], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in self._listeners:
            listener(self)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def device_seen(
        self, device_id: str, *, battery_pct: int | None, tamper: bool, low: bool
    ) -> None:
        self.devices_seen[device_id] = DeviceHealth(time.time(), battery_pct, tamper, low)

    def set_uplink(self, state: str, error: str | None = None) -> None:
        if state != self.uplink or error != self.uplink_error:
            self.uplink, self.uplink_error = state, error
            self.changed()

    def summary(self) -> str:
        """Plain words for sd_notify STATUS= and the log."""
        words = {"up": "online", "down": "uplink down", "unauthorized": "credentials refused"}
        parts = [
            words.get(self.uplink, "starting"),
            f"{self.pending_alarms} queued",
            f"{self.devices} devices",
            f"{len(self.open_callouts)} open callout"
            + ("" if len(self.open_callouts) == 1 else "s"),
        ]
        if self.failed_incidents:
            parts.append(f"{len(self.failed_incidents)} UNDELIVERABLE")
        lost = [name for name, h in self.inputs.items() if h.state in ("lost", "disconnected")]
        if lost:
            parts.append("receiver lost: " + ", ".join(sorted(lost)))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Everything a technician's `aura-gateway status` shows; no secrets in here."""
        return {
            "summary": self.summary(),
            "uplink": {"state": self.uplink, "error": self.uplink_error},
            "pending_alarms": self.pending_alarms,
            "devices_configured": self.devices,
            "open_callouts": dict(self.open_callouts),
            "callout_events": dict(self.callout_events),
            "undeliverable": dict(self.failed_incidents),
            "inputs": {name: asdict(h) for name, h in self.inputs.items()},
            "devices_seen": {dev: asdict(h) for dev, h in self.devices_seen.items()},
            "counters": dict(self.counters),
            "journal": dict(self.journal),
        }

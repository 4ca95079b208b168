"""The one place that knows the gateway's truth; every indicator reads from here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# (device id, availability it reported or None, whether it shows the device alive now)
HeardListener = Callable[[str, "bool | None", bool], None]


@dataclass
class InputHealth:
    connected: bool = False
    state: str = "starting"  # starting | ok | lost | disconnected
    last_frame_age_s: float | None = None
    frames_ok: int = 0
    bad_frames: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # why it is not ok, in words (never a secret)


@dataclass
class DeviceHealth:
    last_seen_wall: float | None = None  # None: not heard since the daemon started
    battery_pct: int | None = None
    tamper: bool = False
    battery_low: bool = False
    source: str | None = None
    rssi_dbm: int | None = None
    linkquality: int | None = None
    available: bool | None = None  # zigbee2mqtt availability, where it is reported
    spoofable: bool = False
    # Supervision (gateway/supervision.py): missed its check-ins, or reported unavailable.
    silent: bool = False
    silent_reason: str | None = None


@dataclass
class UnknownDevice:
    """A device that spoke but is not in the registry: shown so a technician can add it."""

    source: str
    first_seen_wall: float
    last_seen_wall: float
    messages: int = 0
    presses: int = 0
    detail: str = ""


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
    unknown_devices: dict[str, UnknownDevice] = field(default_factory=dict)
    walk_test: dict[str, Any] | None = None  # scope, started, ends in: while one runs
    abort_windows: int = 0  # presses held in their abort window now (the LEDs show it)
    # Why the last reload was refused (the old config still runs); None: the config is good.
    config_error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    journal: dict[str, float] = field(default_factory=dict)  # used/disk bytes, fill %
    callout_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # count, last
    _listeners: list[Callable[[StatusModel], None]] = field(default_factory=list, repr=False)
    _heard: list[HeardListener] = field(default_factory=list, repr=False)

    def subscribe(self, listener: Callable[[StatusModel], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in self._listeners:
            listener(self)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def on_device_heard(self, listener: HeardListener) -> None:
        """Called with (device id, availability it reported or None, checkin) after every
        :meth:`device_seen`: the seam device supervision listens on."""
        self._heard.append(listener)

    def device_seen(
        self,
        device_id: str,
        *,
        battery_pct: int | None = None,
        tamper: bool | None = None,
        low: bool | None = None,
        checkin: bool = True,
        **more: object,
    ) -> DeviceHealth:
        """A device was heard: keep what it said; what it did not say stays as it was.

        ``checkin`` False: what was said is old (an MQTT message the broker retained), so
        it does not show the device is alive now; supervision does not count it.
        """
        health = self.devices_seen.get(device_id)
        if health is None:
            health = self.devices_seen[device_id] = DeviceHealth(time.time())
        health.last_seen_wall = time.time()
        if battery_pct is not None:
            health.battery_pct = battery_pct
        if tamper is not None:
            health.tamper = tamper
        if low is not None:
            health.battery_low = low
        for name, value in more.items():
            if value is not None:
                setattr(health, name, value)
        available = more.get("available")
        for listener in self._heard:
            listener(device_id, available if isinstance(available, bool) else None, checkin)
        return health

    def device_supervision(self, device_id: str, silent: bool, reason: str | None) -> None:
        """Supervision's verdict on a configured device, heard since the start or not."""
        health = self.devices_seen.get(device_id)
        if health is None:
            health = self.devices_seen[device_id] = DeviceHealth()
        health.silent = silent
        health.silent_reason = reason if silent else None

    # Bounded: a neighbour's weather station must not grow the status without end.
    MAX_UNKNOWN = 200

    def unknown_device(self, device_id: str, source: str, *, press: bool, detail: str) -> bool:
        """Count a message from a device not in the registry; True the first time."""
        now = time.time()
        entry = self.unknown_devices.get(device_id)
        first = entry is None
        if entry is None:
            if len(self.unknown_devices) >= self.MAX_UNKNOWN:
                oldest = min(
                    self.unknown_devices, key=lambda k: self.unknown_devices[k].last_seen_wall
                )
                del self.unknown_devices[oldest]
            entry = self.unknown_devices[device_id] = UnknownDevice(source, now, now)
        entry.last_seen_wall = now
        entry.messages += 1
        entry.presses += press
        entry.detail = detail[:200]
        self.count("unknown_device_messages")
        if first:
            self.changed()
        return first

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
        if self.config_error:
            parts.append("config error (reload refused)")
        silent = sum(1 for h in self.devices_seen.values() if h.silent)
        if silent:
            parts.append(f"{silent} device{'' if silent == 1 else 's'} silent")
        tampered = sum(1 for h in self.devices_seen.values() if h.tamper)
        if tampered:
            parts.append(f"{tampered} tampered")
        low = sum(1 for h in self.devices_seen.values() if h.battery_low)
        if low:
            parts.append(f"{low} battery low")
        for name, h in sorted(self.inputs.items()):
            if h.state in ("lost", "disconnected"):
                parts.append(f"{name} lost")  # the receiver, the broker, gpsd: by its name
            elif h.state not in ("ok", "starting"):
                parts.append(f"{name} {h.state.replace('_', ' ')}")
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
            "unknown_devices": {dev: asdict(u) for dev, u in self.unknown_devices.items()},
            "walk_test": self.walk_test,
            "abort_windows": self.abort_windows,
            "config_error": self.config_error,
            "counters": dict(self.counters),
            "journal": dict(self.journal),
        }

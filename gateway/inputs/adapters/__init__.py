"""Payload adapters for the MQTT input: one message in, what it says about devices out.

Adapters are pure (no I/O, no clock): they know a payload shape, never a customer. What a
press means is for the engine; whether a device is known is for the registry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.config.models import DeviceType, Gesture

# The registered device's type, or None for a device not in the registry.
TypeOf = Callable[[str], DeviceType | None]


class PayloadError(ValueError):
    """A message the adapter cannot read: counted and skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What one message said about one device."""

    device_id: str
    gesture: Gesture | None = None  # set: the message is a press
    dedup_key: str | None = None  # the transmission: seen again soon, it is a repeat
    frame_key: str | None = None  # the same key later still means a redelivery
    counter: int | None = None
    battery_pct: int | None = None
    battery_low: bool | None = None
    tamper: bool | None = None
    rssi_dbm: int | None = None
    linkquality: int | None = None
    available: bool | None = None
    heartbeat: bool = False
    fix: tuple[float, float, float] | None = None  # latitude, longitude, accuracy in metres
    spoofable: bool = False
    detail: str = ""  # what a technician needs to add an unknown device


def topic_base(topic_filter: str) -> str:
    """The levels of a subscription before its first wildcard: 'zigbee2mqtt/#' -> 'zigbee2mqtt'."""
    levels: list[str] = []
    for level in topic_filter.split("/"):
        if level in ("+", "#"):
            break
        levels.append(level)
    return "/".join(levels)


def json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    return data


def digest(data: dict[str, Any], volatile: Iterable[str]) -> str:
    """The content of a message without what changes between radio repeats."""
    skip = set(volatile)
    kept = {k: v for k, v in data.items() if k not in skip}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def as_flag(value: Any) -> bool | None:
    """rtl_433 and zigbee2mqtt say yes as true, 1 or "1"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.lower() in ("1", "0", "true", "false", "yes", "no"):
        return value.lower() in ("1", "true", "yes")
    return None

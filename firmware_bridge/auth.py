"""Button authentication tags: HMAC-SHA256 truncated to 8 bytes (PROTOCOL.md §8).

Sans-IO and stdlib only. The tag covers what the *button* sends (identity, counter,
gesture or status, battery), never what the receiver adds or measures (RSSI, the repeat
hint), so every receiver that hears a transmission relays the same tag.

Tags only say "a holder of this device's key made this". Replay protection is the
counter: the gateway accepts a device's counter only when it advances (PRESS and
DEVICE_STATUS share one counter per device), and a radio repeat carries the same counter
and tag as the transmission it repeats. That bookkeeping lives in the gateway, not here.
"""

from __future__ import annotations

import hashlib
import hmac
import string
import struct
from typing import Final

from firmware_bridge.frames import BATTERY_UNKNOWN, GESTURE_CODES, DeviceStatus, Gesture, Press

#: Bytes of the truncated HMAC carried in a frame's ``tag``.
TAG_LEN: Final = 8
#: Key sizes a technician may provision (AES-128/256-sized, as MCU key stores expect).
KEY_LENGTHS: Final = (16, 32)
#: Domain separation: a PRESS tag can never pass as a DEVICE_STATUS tag and vice versa.
PRESS_DOMAIN: Final = b"AGW1P"
STATUS_DOMAIN: Final = b"AGW1S"

_FIELDS = struct.Struct("<IIBB")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) not in KEY_LENGTHS:
        # Length only: the key itself never goes into a message (DESIGN.md invariant 9).
        raise ValueError(f"key is {len(key)} bytes, expected 16 or 32")


def _tag(key: bytes, domain: bytes, a: int, b: int, c: int, d: int) -> bytes:
    _check_key(key)
    try:
        message = domain + _FIELDS.pack(a, b, c, d)
    except struct.error as exc:
        raise ValueError(f"field out of range for the tag: {exc}") from None
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_LEN]


def _battery_byte(battery_pct: int | None) -> int:
    return BATTERY_UNKNOWN if battery_pct is None else battery_pct


def press_tag(
    key: bytes, device_id: int, counter: int, gesture: Gesture, battery_pct: int | None
) -> bytes:
    """The tag a button with ``key`` puts on a PRESS.

    ``HMAC-SHA256(key, b"AGW1P" || u32 device_id || u32 counter || u8 gesture ||
    u8 battery)[:8]``, integers little-endian, battery 255 when unknown.
    """
    if gesture not in GESTURE_CODES:
        raise ValueError(f"unknown gesture {gesture!r}")
    return _tag(
        key, PRESS_DOMAIN, device_id, counter, GESTURE_CODES[gesture], _battery_byte(battery_pct)
    )


def status_tag(
    key: bytes, device_id: int, counter: int, battery_pct: int | None, flags: int
) -> bytes:
    """The tag a button with ``key`` puts on a DEVICE_STATUS (all 8 flag bits covered)."""
    return _tag(key, STATUS_DOMAIN, device_id, counter, _battery_byte(battery_pct), flags)


def verify_press(key: bytes, frame: Press) -> bool:
    """True when ``frame.tag`` is the tag of its fields under ``key`` (constant time)."""
    expected = press_tag(key, frame.device_id, frame.counter, frame.gesture, frame.battery_pct)
    return len(frame.tag) == TAG_LEN and hmac.compare_digest(expected, frame.tag)


def verify_status(key: bytes, frame: DeviceStatus) -> bool:
    """True when ``frame.tag`` is the tag of its fields under ``key`` (constant time)."""
    expected = status_tag(key, frame.device_id, frame.counter, frame.battery_pct, frame.flags)
    return len(frame.tag) == TAG_LEN and hmac.compare_digest(expected, frame.tag)


def parse_key(text: str) -> bytes:
    """A key as the technician writes it: 32 or 64 hex digits (16 or 32 bytes).

    Surrounding whitespace is ignored. The error never repeats the text: it is a secret.
    """
    digits = text.strip()
    if len(digits) not in (2 * n for n in KEY_LENGTHS):
        raise ValueError(
            f"device key must be 32 or 64 hex digits (16 or 32 bytes), got {len(digits)} characters"
        )
    bad = next((i for i, ch in enumerate(digits) if ch not in string.hexdigits), None)
    if bad is not None:
        raise ValueError(f"device key is not hexadecimal: character {bad + 1} is not 0-9 or a-f")
    return bytes.fromhex(digits)


__all__ = [
    "KEY_LENGTHS",
    "PRESS_DOMAIN",
    "STATUS_DOMAIN",
    "TAG_LEN",
    "parse_key",
    "press_tag",
    "status_tag",
    "verify_press",
    "verify_status",
]

"""rtl_433 JSON events (``-F mqtt`` events topic or ``-F json`` piped to a broker).

One radio transmission is printed several times (the device repeats its frame): those
lines share everything but their timestamps and signal levels, so they get one dedup key
and the journal counts them as one press. A different line a second later is a new
transmission. No rtl_433 device authenticates what it sends: all are spoofable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.inputs.adapters import (
    PayloadError,
    Reading,
    TypeOf,
    as_flag,
    as_int,
    digest,
    json_object,
)

VOLATILE = ("time", "rssi", "snr", "noise", "freq", "freq1", "freq2", "mod", "protocol")
DEFAULT_PRESS_WHEN: dict[str, str | int | bool] = {"alarm": 1}


class Rtl433:
    def __init__(self, base: str, type_of: TypeOf) -> None:
        self.base = base
        self._type_of = type_of

    def read(self, topic: str, payload: bytes) -> list[Reading]:
        data = json_object(payload)
        model, ident = data.get("model"), data.get("id")
        if not isinstance(model, str) or ident is None or isinstance(ident, bool | dict | list):
            raise PayloadError("an rtl_433 event needs 'model' and 'id'")
        device_id = device_id_of(model, ident, data.get("channel"))
        dtype = self._type_of(device_id)
        press_when = dtype.press_when if dtype is not None else DEFAULT_PRESS_WHEN
        heartbeat = as_flag(data.get("heartbeat")) is True
        pressed = not heartbeat and all(_matches(data.get(k), v) for k, v in press_when.items())
        battery_ok = as_flag(data.get("battery_ok"))
        return [
            Reading(
                device_id,
                gesture="single" if pressed else None,
                dedup_key=f"rtl433:{device_id}:{digest(data, VOLATILE)}" if pressed else None,
                battery_low=None if battery_ok is None else not battery_ok,
                tamper=as_flag(data.get("tamper")),
                rssi_dbm=as_int(data.get("rssi")),
                heartbeat=heartbeat,
                spoofable=True,
                detail=f"rtl_433 {json.dumps(data, default=str)[:160]}",
            )
        ]


def device_id_of(model: str, ident: Any, channel: Any) -> str:
    """rtl433:<model>[:<channel>]:<id>, lower case, as devices.toml spells it."""
    parts = [model, *([str(channel)] if channel is not None else []), str(ident)]
    clean = [re.sub(r"[^a-z0-9._-]", "-", p.lower()) for p in parts]
    return "rtl433:" + ":".join(clean)


def _matches(value: Any, expected: str | int | bool) -> bool:
    if value is None:
        return False
    if isinstance(expected, bool) or isinstance(value, bool):
        return as_flag(value) == as_flag(expected)
    if isinstance(expected, int) and isinstance(value, int | float):
        return value == expected
    return str(value) == str(expected)

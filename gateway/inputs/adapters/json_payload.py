"""A generic JSON payload: the subscription names the fields (dotted paths reach into
nested objects). A message with a gesture is a press; with coordinates, a position."""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.config.models import GESTURES, Z2M_PANIC_ACTIONS, JsonFields
from gateway.inputs.adapters import (
    PayloadError,
    Reading,
    TypeOf,
    as_int,
    digest,
    json_object,
)

# Accuracy assumed for a position sent without one: deliberately modest.
UNKNOWN_ACCURACY_M = 100.0


class JsonPayload:
    def __init__(self, fields: JsonFields, type_of: TypeOf) -> None:
        self.fields = fields
        self._type_of = type_of

    def read(self, topic: str, payload: bytes) -> list[Reading]:
        data = json_object(payload)
        f = self.fields
        raw_id = _get(data, f.device_id)
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or raw_id == "":
            raise PayloadError(f"no device id in field {f.device_id!r}")
        device_id = str(raw_id).lower()
        gesture = self._gesture(device_id, _get(data, f.gesture) if f.gesture else None)
        counter = as_int(_get(data, f.counter)) if f.counter else None
        if gesture is None:
            key = frame = None
        elif counter is not None:
            # The sender numbers its presses: that number is the transmission, for good.
            key = frame = f"json:{device_id}:c{counter}"
        else:
            key, frame = f"json:{device_id}:{digest(data, ())}", None
        battery = as_int(_get(data, f.battery)) if f.battery else None
        return [
            Reading(
                device_id,
                gesture=gesture,  # type: ignore[arg-type]
                dedup_key=key,
                frame_key=frame,
                counter=counter,
                battery_pct=battery if battery is not None and 0 <= battery <= 100 else None,
                fix=self._fix(data),
                detail=f"json on {topic}: {json.dumps(data, default=str)[:120]}",
            )
        ]

    def _gesture(self, device_id: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        if value in GESTURES:
            return value
        dtype = self._type_of(device_id)
        # An unknown device: a default type's actions, so its press shows as one.
        return (dtype.actions if dtype is not None else Z2M_PANIC_ACTIONS).get(value)

    def _fix(self, data: dict[str, Any]) -> tuple[float, float, float] | None:
        f = self.fields
        if f.latitude is None or f.longitude is None:
            return None
        lat, lon = _get(data, f.latitude), _get(data, f.longitude)
        if lat is None and lon is None:
            return None
        acc = _get(data, f.accuracy) if f.accuracy else None
        if any(isinstance(v, bool) for v in (lat, lon, acc)):
            raise PayloadError("latitude, longitude and accuracy must be numbers")
        try:
            lat, lon = float(lat), float(lon)  # type: ignore[arg-type]
            acc = UNKNOWN_ACCURACY_M if acc is None else float(acc)
        except (TypeError, ValueError):
            raise PayloadError("latitude, longitude and accuracy must be numbers") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not math.isfinite(acc) or acc <= 0:
            raise PayloadError(f"position out of range: {lat}, {lon} ±{acc}")
        return lat, lon, acc


def _get(data: dict[str, Any], path: str | None) -> Any:
    if path is None:
        return None
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value

"""Zigbee2MQTT: ``<base>/<friendly_name>`` state messages and ``.../availability``.

A press is an ``action`` the device's model maps to a gesture (``DeviceType.actions``,
e.g. emergency, sos); the rest of the message (battery, tamper, linkquality) is the
device's health. A Zigbee device is authenticated by its network, so it is not spoofable
the way a fixed-code radio is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.config.models import Z2M_PANIC_ACTIONS
from gateway.inputs.adapters import (
    PayloadError,
    Reading,
    TypeOf,
    as_flag,
    as_int,
    digest,
    json_object,
)

# Values that change without the device having said anything new.
VOLATILE = ("linkquality", "last_seen", "elapsed", "update", "update_available")
# Topics under the base that are not devices, or are commands to devices.
NOT_DEVICES = ("bridge/",)
COMMANDS = ("/set", "/get")
DEVICE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Some SOS buttons report a boolean instead of an action.
FLAG_ACTIONS = ("sos", "emergency", "panic")


class Zigbee2Mqtt:
    def __init__(self, base: str, type_of: TypeOf) -> None:
        self.base = base
        self._type_of = type_of

    def read(self, topic: str, payload: bytes) -> list[Reading]:
        prefix = self.base + "/" if self.base else ""
        if not topic.startswith(prefix):
            return []
        rest = topic[len(prefix) :]
        if rest.startswith(NOT_DEVICES) or _is_command(rest) or not rest:
            return []
        if rest.endswith("/availability"):
            return [self._availability(rest.removesuffix("/availability"), payload)]
        return [self._state(rest, json_object(payload))]

    def _availability(self, name: str, payload: bytes) -> Reading:
        text = payload.decode(errors="replace").strip()
        state = json_object(payload).get("state") if text.startswith("{") else text
        if state not in ("online", "offline"):
            raise PayloadError(f"availability of {name!r} is {state!r}, not online/offline")
        return Reading(_device_id(name), available=state == "online", detail=f"zigbee2mqtt {name}")

    def _state(self, name: str, data: dict[str, Any]) -> Reading:
        device_id = _device_id(name)
        dtype = self._type_of(device_id)
        actions = dtype.actions if dtype is not None else Z2M_PANIC_ACTIONS
        action = data.get("action")
        if not isinstance(action, str) or not action:
            flagged = [f for f in FLAG_ACTIONS if as_flag(data.get(f)) is True]
            action = flagged[0] if flagged else None
        gesture = actions.get(action) if action is not None else None
        battery_low = as_flag(data.get("battery_low"))
        battery = as_int(data.get("battery"))
        return Reading(
            device_id,
            gesture=gesture,  # type: ignore[arg-type]
            dedup_key=f"z2m:{device_id}:{digest(data, VOLATILE)}" if gesture else None,
            battery_pct=battery if battery is not None and 0 <= battery <= 100 else None,
            battery_low=battery_low,
            tamper=as_flag(data.get("tamper")),
            linkquality=as_int(data.get("linkquality")),
            detail=f"zigbee2mqtt {name}: {json.dumps(data, default=str)[:120]}",
        )


def _is_command(rest: str) -> bool:
    """``<name>/set``, ``<name>/get`` and their ``/set/<attribute>`` forms: to a device."""
    return rest.endswith(COMMANDS) or any(c + "/" in rest for c in COMMANDS)


def _device_id(name: str) -> str:
    """The registry id of a friendly name: the name itself, compared ignoring case."""
    if not DEVICE_ID.match(name):
        # Still reported (as unknown) so the technician sees why it cannot be added as is.
        return "z2m-unusable-name:" + re.sub(r"[^A-Za-z0-9._:-]", "_", name)[:40].lower()
    return name.lower()

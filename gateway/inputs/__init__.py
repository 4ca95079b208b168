"""Input backends by config name. Imported lazily, so a missing optional library only
fails when that backend is chosen, and the error names both."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from gateway.errors import GatewayError

BACKENDS: dict[str, str] = {
    "serial": "gateway.inputs.serial:SerialInput",
    "mqtt": "gateway.inputs.mqtt:MqttInput",
    "gpsd": "gateway.inputs.gpsd:GpsdInput",
}


class Input(Protocol):
    """What the daemon needs of every input: built as ``cls(config, router, status,
    gateway_config)``, then run in the daemon's TaskGroup."""

    name: str

    @property
    def connected(self) -> bool:
        """Its source is reachable now (READY waits briefly for every input)."""
        ...

    async def run(self) -> None:
        """Until cancelled; reconnects by itself, never raises for a source being away."""
        ...

    async def indicate(self, device_id: str, state: str) -> None:
        """Tell a button how its alarm is doing, where the input can (best effort)."""
        ...

    def refresh_health(self) -> None:
        """Bring ``status.inputs[name]`` up to date (called every few seconds)."""
        ...


def input_class(kind: str) -> Any:
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise GatewayError(f"unknown input type {kind!r} (known: {', '.join(BACKENDS)})") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GatewayError(f"input type {kind!r} cannot be loaded: {exc}") from exc
    return getattr(module, class_name)

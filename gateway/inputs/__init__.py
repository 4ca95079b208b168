"""Input backends by config name. Imported lazily, so a missing optional library only
fails when that backend is chosen, and the error names both."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from gateway.errors import GatewayError

BACKENDS: dict[str, str] = {
    "serial": "gateway.inputs.serial:SerialInput",
}


class Input(Protocol):
    name: str

    async def run(self) -> None: ...


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

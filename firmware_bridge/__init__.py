"""Serial link to the radio-receiver microcontroller.

Layers (STYLE.md item 1), each usable without the ones above it:

- :mod:`firmware_bridge.frames`: sans-IO codec (COBS framing, CRC, frame dataclasses,
  stream decoder). Imports neither asyncio nor pyserial.
- :mod:`firmware_bridge.auth`: sans-IO button authentication (truncated HMAC-SHA256
  tags), standard library only.
- :mod:`firmware_bridge.link`: :class:`ReceiverLink`, asyncio over pyserial-asyncio-fast,
  with resync and reopen. Imported lazily so a machine without pyserial can still use
  the codec and the simulator.
- :mod:`firmware_bridge.sim`: :class:`SimulatedReceiver`, a receiver MCU on a pty pair,
  with :class:`SimFaults` and a pullable cable.

The wire protocol is specified in ``PROTOCOL.md`` in this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from firmware_bridge.auth import parse_key, verify_press, verify_status
from firmware_bridge.frames import (
    Ack,
    DecoderCounters,
    DeviceFix,
    DeviceStatus,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    Gesture,
    Hello,
    Indication,
    IndicationState,
    Nak,
    NakReason,
    Ping,
    Press,
    ReceiverStatus,
    TimeSync,
    decode,
    encode,
)

if TYPE_CHECKING:
    from firmware_bridge.link import LinkCounters, LinkDown, ReceiverLink
    from firmware_bridge.sim import SimFaults, SimulatedReceiver

# Imported on first use: the link needs pyserial, and importing the simulator here
# would make ``python -m firmware_bridge.sim`` warn about a module imported twice.
_LAZY = {
    "LinkCounters": "firmware_bridge.link",
    "LinkDown": "firmware_bridge.link",
    "ReceiverLink": "firmware_bridge.link",
    "SimFaults": "firmware_bridge.sim",
    "SimulatedReceiver": "firmware_bridge.sim",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "Ack",
    "DecoderCounters",
    "DeviceFix",
    "DeviceStatus",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "Gesture",
    "Hello",
    "Indication",
    "IndicationState",
    "LinkCounters",
    "LinkDown",
    "Nak",
    "NakReason",
    "Ping",
    "Press",
    "ReceiverLink",
    "ReceiverStatus",
    "SimFaults",
    "SimulatedReceiver",
    "TimeSync",
    "decode",
    "encode",
    "parse_key",
    "verify_press",
    "verify_status",
]

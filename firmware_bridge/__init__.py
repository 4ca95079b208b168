"""Serial link to the radio-receiver microcontroller.

Layers (STYLE.md item 1), each usable without the ones above it:

- :mod:`firmware_bridge.frames`: sans-IO codec (COBS framing, CRC, frame dataclasses,
  stream decoder). Imports neither asyncio nor pyserial.
- :mod:`firmware_bridge.link`: :class:`ReceiverLink`, asyncio over pyserial-asyncio-fast,
  with resync and reopen. Imported lazily so a machine without pyserial can still use
  the codec and the simulator.
- :mod:`firmware_bridge.sim`: :class:`SimulatedReceiver`, a receiver MCU on a pty pair.

The wire protocol is specified in ``PROTOCOL.md`` in this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from firmware_bridge.frames import (
    Ack,
    DecoderCounters,
    DeviceFix,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    Gesture,
    Hello,
    Nak,
    NakReason,
    Press,
    ReceiverStatus,
    decode,
    encode,
)

if TYPE_CHECKING:
    from firmware_bridge.link import LinkCounters, LinkDown, ReceiverLink
    from firmware_bridge.sim import SimulatedReceiver

# Imported on first use: the link needs pyserial, and importing the simulator here
# would make ``python -m firmware_bridge.sim`` warn about a module imported twice.
_LAZY = {
    "LinkCounters": "firmware_bridge.link",
    "LinkDown": "firmware_bridge.link",
    "ReceiverLink": "firmware_bridge.link",
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
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "Gesture",
    "Hello",
    "LinkCounters",
    "LinkDown",
    "Nak",
    "NakReason",
    "Press",
    "ReceiverLink",
    "ReceiverStatus",
    "SimulatedReceiver",
    "decode",
    "encode",
]

"""Sans-IO codec for the receiver serial protocol (see ``PROTOCOL.md`` next to this file).

Layers, bottom up::

    wire   = [0x00] COBS(raw) 0x00          (a sender may prefix a delimiter)
    raw    = version u8 | type u8 | seq u16 LE | body | crc u32 LE
    frames = Hello | Press | DeviceFix | ReceiverStatus | DeviceStatus      (receiver → gateway)
           | Indication | Ping | TimeSync                                   (gateway → receiver)
           | Ack | Nak                      (ACK both ways; NAK gateway → receiver)

This module does no I/O and imports neither asyncio nor pyserial, so the same code serves
the asyncio link, the threaded simulator, benchmarks and property tests.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import ClassVar, Final, Literal, Self, TypeAlias

PROTOCOL_VERSION: Final = 1
DELIMITER: Final = b"\x00"
HEADER_LEN: Final = 4  # version, type, seq
CRC_LEN: Final = 4
MIN_RAW_LEN: Final = HEADER_LEN + CRC_LEN
MAX_RAW_LEN: Final = 250
MAX_TAG_LEN: Final = 16
#: COBS adds one code byte per started run of 254 bytes; for <= 253 raw bytes that is one.
MAX_ENCODED_LEN: Final = MAX_RAW_LEN + 1

_HEADER = struct.Struct("<BBH")
_CRC = struct.Struct("<I")


class FrameType(IntEnum):
    """Type codes. 0x01-0x7F: receiver → gateway; 0x80-0xFF: gateway → receiver."""

    HELLO = 0x01
    PRESS = 0x02
    DEVICE_FIX = 0x03
    RECEIVER_STATUS = 0x04
    DEVICE_STATUS = 0x05
    ACK = 0x80
    NAK = 0x81
    INDICATION = 0x82
    PING = 0x83
    TIME = 0x84


class NakReason(IntEnum):
    """Why the gateway refused a frame.

    Only STORE_FAILED is temporary: the receiver resends the frame at its next interval.
    Every other reason (and a code this version does not know) ends the resends of that
    frame: sending the same bytes again cannot change the answer.
    """

    CRC = 1
    UNKNOWN_TYPE = 2
    STORE_FAILED = 3
    UNSUPPORTED_VERSION = 4
    REJECTED = 5  # authentication failed, replayed counter or unknown device


_NAK_REASON_CODES: Final = frozenset(int(r) for r in NakReason)
#: The NAK reasons after which the receiver keeps resending (PROTOCOL.md §5).
NAK_RESEND_REASONS: Final = frozenset({NakReason.STORE_FAILED})


def nak_ends_resends(reason: int) -> bool:
    """True when a NAK with ``reason`` means "stop resending this frame"."""
    return reason not in NAK_RESEND_REASONS


class IndicationState(IntEnum):
    """What a button's LED or buzzer should show about its alarm (INDICATION frame)."""

    CLEAR = 0
    HELP_CALLED = 1  # the press is stored by the gateway
    HELP_ON_THE_WAY = 2  # AURA accepted the callout
    ON_SCENE = 3  # a responder is with the person
    DELIVERY_FAILING = 4  # the gateway cannot get the alarm through


_INDICATION_CODES: Final = frozenset(int(s) for s in IndicationState)


Gesture: TypeAlias = Literal["single", "double", "long", "hold"]
GESTURE_CODES: Final[dict[Gesture, int]] = {"single": 0, "double": 1, "long": 2, "hold": 3}
_GESTURE_BY_CODE: Final[dict[int, Gesture]] = {v: k for k, v in GESTURE_CODES.items()}

BATTERY_UNKNOWN: Final = 255
RSSI_UNKNOWN: Final = 127
PRESS_FLAG_REPEAT: Final = 0x01
STATUS_FLAG_TAMPER: Final = 0x01
STATUS_FLAG_BATTERY_LOW: Final = 0x02
TIME_FLAG_TRUSTED: Final = 0x01
_DEG_SCALE: Final = 10_000_000  # 1e-7 degree units on the wire


# --------------------------------------------------------------------------- errors


class FrameError(ValueError):
    """A frame could not be decoded or built; the message says what was wrong."""


class CrcMismatch(FrameError):
    """The CRC over version..body does not match the trailing CRC field."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC mismatch: expected 0x{expected:08x}, got 0x{actual:08x}")
        self.expected = expected
        self.actual = actual


class UnknownFrameType(FrameError):
    """A well-formed frame (good CRC) of a type this version does not know."""

    def __init__(self, type_code: int, seq: int) -> None:
        super().__init__(f"unknown frame type 0x{type_code:02x} (seq {seq})")
        self.type_code = type_code
        self.seq = seq


class UnsupportedVersion(FrameError):
    """A frame with a good CRC but a protocol version this codec does not speak.

    ``seq`` is read from the header (its position is the same in every version), so the
    gateway can answer NAK "unsupported version" for it.
    """

    def __init__(self, version: int, seq: int) -> None:
        super().__init__(f"unsupported protocol version {version} (expected {PROTOCOL_VERSION})")
        self.version = version
        self.seq = seq


class OversizeFrame(FrameError):
    """More bytes than the protocol allows for one frame."""


# --------------------------------------------------------------------------- COBS + CRC


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """Encode ``data`` so the result holds no 0x00 (Cheshire & Baker COBS, no trailer).

    Each block is a code byte ``n`` (1..255) followed by ``n - 1`` non-zero bytes; a code
    below 0xFF stands for "those bytes, then a zero". The zero implied after the last
    block is not part of the data. ``b""`` encodes as ``b"\\x01"``.
    """
    src = bytes(data)
    out = bytearray()
    start = 0
    end = len(src)
    while True:
        zero = src.find(0, start, start + 254)
        if zero == -1:
            run = src[start : start + 254]
            if len(run) == 254:
                out.append(0xFF)
                out += run
                start += 254
                if start == end:
                    return bytes(out)
                continue
            out.append(len(run) + 1)
            out += run
            return bytes(out)
        out.append(zero - start + 1)
        out += src[start:zero]
        start = zero + 1


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Invert :func:`cobs_encode`; raise :class:`FrameError` on malformed input."""
    src = bytes(data)
    if not src:
        raise FrameError("COBS: empty input (the shortest encoding is 0x01)")
    out = bytearray()
    pos = 0
    end = len(src)
    while pos < end:
        code = src[pos]
        if code == 0:
            raise FrameError(f"COBS: zero byte at offset {pos}")
        block_end = pos + code
        if block_end > end:
            raise FrameError(
                f"COBS: code 0x{code:02x} at offset {pos} needs {code - 1} bytes, "
                f"only {end - pos - 1} left"
            )
        block = src[pos + 1 : block_end]
        if 0 in block:
            raise FrameError(f"COBS: zero byte at offset {pos + 1 + block.index(0)}")
        out += block
        pos = block_end
        if code != 0xFF and pos < end:
            out.append(0)
    return bytes(out)


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/ISO-HDLC (zlib's): poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF."""
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------- helpers


def _check_int(frame: str, name: str, value: int, lo: int, hi: int) -> None:
    # bool is an int; a True device id is a bug, not a value.
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(f"{frame}.{name}: expected int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise FrameError(f"{frame}.{name}: {value} out of range {lo}..{hi}")


def _check_fields(frame: object, spec: dict[str, tuple[int, int]]) -> None:
    name = type(frame).__name__
    for field_name, (lo, hi) in spec.items():
        _check_int(name, field_name, getattr(frame, field_name), lo, hi)


_U8 = (0, 0xFF)
_U16 = (0, 0xFFFF)
_U32 = (0, 0xFFFF_FFFF)
_U64 = (0, 0xFFFF_FFFF_FFFF_FFFF)


def _check_bool(frame: str, name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise FrameError(f"{frame}.{name}: expected bool, got {type(value).__name__}")


def _check_battery(frame: str, value: int | None) -> None:
    if value is not None:
        _check_int(frame, "battery_pct", value, 0, 100)


def _check_tag(frame: str, tag: bytes) -> None:
    if not isinstance(tag, bytes):
        raise FrameError(f"{frame}.tag: expected bytes, got {type(tag).__name__}")
    if len(tag) > MAX_TAG_LEN:
        raise FrameError(f"{frame}.tag: {len(tag)} bytes, maximum is {MAX_TAG_LEN}")


def _expect_body_range(cls: type, body: bytes, size: int) -> None:
    """A fixed part of ``size`` bytes followed by a tag of 0..MAX_TAG_LEN bytes."""
    if not size <= len(body) <= size + MAX_TAG_LEN:
        raise FrameError(
            f"{cls.__name__} body is {len(body)} bytes, expected {size}..{size + MAX_TAG_LEN}"
        )


def _quantize_degrees(frame: str, name: str, value: float, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{frame}.{name}: expected float degrees, got {type(value).__name__}")
    if not math.isfinite(value):
        raise FrameError(f"{frame}.{name}: {value} is not a finite number")
    quantized = round(value * _DEG_SCALE) / _DEG_SCALE
    if not -limit <= quantized <= limit:
        raise FrameError(f"{frame}.{name}: {value} out of range -{limit:g}..{limit:g}")
    return quantized


def _split_raw(raw: bytes | bytearray | memoryview) -> tuple[int, int, bytes]:
    """Check length, CRC and version of a raw frame; return (type, seq, body)."""
    raw = bytes(raw)
    if len(raw) > MAX_RAW_LEN:
        raise OversizeFrame(f"frame is {len(raw)} bytes, maximum is {MAX_RAW_LEN}")
    if len(raw) < MIN_RAW_LEN:
        raise FrameError(f"frame too short: {len(raw)} bytes, need at least {MIN_RAW_LEN}")
    (actual,) = _CRC.unpack_from(raw, len(raw) - CRC_LEN)
    expected = crc32(raw[:-CRC_LEN])
    if actual != expected:
        raise CrcMismatch(expected, actual)
    version, type_code, seq = _HEADER.unpack_from(raw)
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version, seq)
    return type_code, seq, raw[HEADER_LEN:-CRC_LEN]


def _expect_body_len(cls: type, body: bytes, size: int) -> None:
    if len(body) != size:
        raise FrameError(f"{cls.__name__} body is {len(body)} bytes, expected {size}")


# --------------------------------------------------------------------------- frames


class _FrameBase:
    """Shared wire plumbing; subclasses supply TYPE, _pack_body and _from_body."""

    __slots__ = ()
    TYPE: ClassVar[FrameType]
    seq: int

    def _pack_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        raise NotImplementedError

    def to_raw(self) -> bytes:
        """The frame before COBS: header, body and CRC."""
        head = _HEADER.pack(PROTOCOL_VERSION, self.TYPE, self.seq) + self._pack_body()
        if len(head) + CRC_LEN > MAX_RAW_LEN:
            raise OversizeFrame(f"frame would be {len(head) + CRC_LEN} bytes, max {MAX_RAW_LEN}")
        return head + _CRC.pack(crc32(head))

    def to_bytes(self) -> bytes:
        """The exact wire bytes: ``COBS(raw) + b"\\x00"``."""
        return cobs_encode(self.to_raw()) + DELIMITER

    @classmethod
    def from_raw(cls, raw: bytes | bytearray | memoryview) -> Self:
        """Decode a raw (already COBS-decoded) frame that must be of this class's type."""
        type_code, seq, body = _split_raw(raw)
        if type_code != cls.TYPE:
            raise FrameError(
                f"expected {cls.TYPE.name} (0x{cls.TYPE:02x}), got type 0x{type_code:02x}"
            )
        return cls._from_body(seq, body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(_FrameBase):
    """Receiver → gateway after boot: who it is and which firmware it runs."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    _BODY: ClassVar[struct.Struct] = struct.Struct("<IBBBIH")

    seq: int
    receiver_id: int
    fw_major: int
    fw_minor: int
    fw_patch: int
    session: int  # random per receiver boot
    capabilities: int = 0  # all bits reserved in version 1

    def __post_init__(self) -> None:
        _check_fields(
            self,
            {
                "seq": _U16,
                "receiver_id": _U32,
                "fw_major": _U8,
                "fw_minor": _U8,
                "fw_patch": _U8,
                "session": _U32,
                "capabilities": _U16,
            },
        )

    def _pack_body(self) -> bytes:
        return self._BODY.pack(
            self.receiver_id,
            self.fw_major,
            self.fw_minor,
            self.fw_patch,
            self.session,
            self.capabilities,
        )

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        rid, major, minor, patch, session, caps = cls._BODY.unpack(body)
        return cls(
            seq=seq,
            receiver_id=rid,
            fw_major=major,
            fw_minor=minor,
            fw_patch=patch,
            session=session,
            capabilities=caps,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Press(_FrameBase):
    """Receiver → gateway: a button transmission heard on the radio.

    ``tag`` is the button's authentication tag (:mod:`firmware_bridge.auth`), empty for a
    button without a key. ``flags`` is set by the receiver, not the button, and keeps
    unknown bits so a frame round-trips unchanged; senders set them to 0.
    """

    TYPE: ClassVar[FrameType] = FrameType.PRESS
    _BODY: ClassVar[struct.Struct] = struct.Struct("<IIBBbB")

    seq: int
    device_id: int
    counter: int
    gesture: Gesture
    battery_pct: int | None = None
    rssi_dbm: int | None = None
    flags: int = 0
    tag: bytes = b""

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "device_id": _U32, "counter": _U32, "flags": _U8})
        if self.gesture not in GESTURE_CODES:
            raise FrameError(f"Press.gesture: {self.gesture!r} is not one of {list(GESTURE_CODES)}")
        _check_battery("Press", self.battery_pct)
        if self.rssi_dbm is not None:
            _check_int("Press", "rssi_dbm", self.rssi_dbm, -128, RSSI_UNKNOWN - 1)
        _check_tag("Press", self.tag)

    @property
    def repeat_hint(self) -> bool:
        """The receiver believes this is a repeat of an earlier radio transmission."""
        return bool(self.flags & PRESS_FLAG_REPEAT)

    def _pack_body(self) -> bytes:
        return (
            self._BODY.pack(
                self.device_id,
                self.counter,
                GESTURE_CODES[self.gesture],
                BATTERY_UNKNOWN if self.battery_pct is None else self.battery_pct,
                RSSI_UNKNOWN if self.rssi_dbm is None else self.rssi_dbm,
                self.flags,
            )
            + self.tag
        )

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        size = cls._BODY.size
        _expect_body_range(cls, body, size)
        device_id, counter, gesture, battery, rssi, flags = cls._BODY.unpack_from(body)
        if gesture not in _GESTURE_BY_CODE:
            raise FrameError(f"Press.gesture: unknown code {gesture} (expected 0..3)")
        return cls(
            seq=seq,
            device_id=device_id,
            counter=counter,
            gesture=_GESTURE_BY_CODE[gesture],
            battery_pct=None if battery == BATTERY_UNKNOWN else battery,
            rssi_dbm=None if rssi == RSSI_UNKNOWN else rssi,
            flags=flags,
            tag=body[size:],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFix(_FrameBase):
    """Receiver → gateway: a position a device reported.

    Degrees are stored already rounded to the wire's 1e-7 resolution, so a decoded frame
    compares equal to the one that was sent.
    """

    TYPE: ClassVar[FrameType] = FrameType.DEVICE_FIX
    _BODY: ClassVar[struct.Struct] = struct.Struct("<IiiHH")

    seq: int
    device_id: int
    latitude: float
    longitude: float
    accuracy_m: int
    age_s: int = 0

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "device_id": _U32, "accuracy_m": _U16, "age_s": _U16})
        for name, limit in (("latitude", 90.0), ("longitude", 180.0)):
            value = _quantize_degrees("DeviceFix", name, getattr(self, name), limit)
            object.__setattr__(self, name, value)

    def _pack_body(self) -> bytes:
        return self._BODY.pack(
            self.device_id,
            round(self.latitude * _DEG_SCALE),
            round(self.longitude * _DEG_SCALE),
            self.accuracy_m,
            self.age_s,
        )

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        device_id, lat, lon, accuracy, age = cls._BODY.unpack(body)
        return cls(
            seq=seq,
            device_id=device_id,
            latitude=lat / _DEG_SCALE,
            longitude=lon / _DEG_SCALE,
            accuracy_m=accuracy,
            age_s=age,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverStatus(_FrameBase):
    """Receiver → gateway: the receiver's own health counters."""

    TYPE: ClassVar[FrameType] = FrameType.RECEIVER_STATUS
    _BODY: ClassVar[struct.Struct] = struct.Struct("<III")

    seq: int
    uptime_s: int
    radio_frames: int
    radio_errors: int

    def __post_init__(self) -> None:
        _check_fields(
            self, {"seq": _U16, "uptime_s": _U32, "radio_frames": _U32, "radio_errors": _U32}
        )

    def _pack_body(self) -> bytes:
        return self._BODY.pack(self.uptime_s, self.radio_frames, self.radio_errors)

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        uptime, frames_, errors = cls._BODY.unpack(body)
        return cls(seq=seq, uptime_s=uptime, radio_frames=frames_, radio_errors=errors)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus(_FrameBase):
    """Receiver → gateway: a button's periodic heartbeat, relayed by the receiver.

    ``flags`` is the wire byte; ``tamper`` and ``battery_low`` are its bits 0 and 1. A bit
    is set when either the flag or the named field says so, and after construction both
    agree, so ``DeviceStatus(..., tamper=True)`` equals ``DeviceStatus(..., flags=0x01)``.
    Reserved bits are kept so a frame round-trips unchanged (the button's tag covers them).
    """

    TYPE: ClassVar[FrameType] = FrameType.DEVICE_STATUS
    _BODY: ClassVar[struct.Struct] = struct.Struct("<IIBB")

    seq: int
    device_id: int
    counter: int
    battery_pct: int | None = None
    tamper: bool = False
    battery_low: bool = False
    flags: int = 0
    tag: bytes = b""

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "device_id": _U32, "counter": _U32, "flags": _U8})
        _check_battery("DeviceStatus", self.battery_pct)
        _check_bool("DeviceStatus", "tamper", self.tamper)
        _check_bool("DeviceStatus", "battery_low", self.battery_low)
        _check_tag("DeviceStatus", self.tag)
        flags = self.flags
        if self.tamper:
            flags |= STATUS_FLAG_TAMPER
        if self.battery_low:
            flags |= STATUS_FLAG_BATTERY_LOW
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "tamper", bool(flags & STATUS_FLAG_TAMPER))
        object.__setattr__(self, "battery_low", bool(flags & STATUS_FLAG_BATTERY_LOW))

    def _pack_body(self) -> bytes:
        battery = BATTERY_UNKNOWN if self.battery_pct is None else self.battery_pct
        return self._BODY.pack(self.device_id, self.counter, battery, self.flags) + self.tag

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        size = cls._BODY.size
        _expect_body_range(cls, body, size)
        device_id, counter, battery, flags = cls._BODY.unpack_from(body)
        return cls(
            seq=seq,
            device_id=device_id,
            counter=counter,
            battery_pct=None if battery == BATTERY_UNKNOWN else battery,
            flags=flags,
            tag=body[size:],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(_FrameBase):
    """The frame with ``acked_seq`` was taken; stop resending it.

    Gateway → receiver for the receiver's frames (a PRESS: durably stored); receiver →
    gateway for INDICATION and TIME. The header ``seq`` is the sender's own.
    """

    TYPE: ClassVar[FrameType] = FrameType.ACK
    _BODY: ClassVar[struct.Struct] = struct.Struct("<H")

    seq: int
    acked_seq: int

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "acked_seq": _U16})

    def _pack_body(self) -> bytes:
        return self._BODY.pack(self.acked_seq)

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        (acked,) = cls._BODY.unpack(body)
        return cls(seq=seq, acked_seq=acked)


@dataclass(frozen=True, slots=True, kw_only=True)
class Nak(_FrameBase):
    """Gateway → receiver: the frame with ``acked_seq`` was not taken.

    ``reason`` is a :class:`NakReason` value; unknown codes are kept as plain ints. Only
    STORE_FAILED asks for a resend (:func:`nak_ends_resends`).
    """

    TYPE: ClassVar[FrameType] = FrameType.NAK
    _BODY: ClassVar[struct.Struct] = struct.Struct("<HB")

    seq: int
    acked_seq: int
    reason: int

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "acked_seq": _U16, "reason": _U8})

    def _pack_body(self) -> bytes:
        return self._BODY.pack(self.acked_seq, self.reason)

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        acked, code = cls._BODY.unpack(body)
        # A reason from a newer gateway stays a plain number.
        reason = NakReason(code) if code in _NAK_REASON_CODES else code
        return cls(seq=seq, acked_seq=acked, reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Indication(_FrameBase):
    """Gateway → receiver: show ``state`` on the button ``device_id`` (LED, buzzer).

    ``state`` is an :class:`IndicationState` when known; a code from a newer gateway stays
    a plain int (a receiver ACKs it and keeps showing what it showed before).
    """

    TYPE: ClassVar[FrameType] = FrameType.INDICATION
    _BODY: ClassVar[struct.Struct] = struct.Struct("<IB")

    seq: int
    device_id: int
    state: int

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "device_id": _U32, "state": _U8})
        if self.state in _INDICATION_CODES:
            object.__setattr__(self, "state", IndicationState(self.state))

    def _pack_body(self) -> bytes:
        return self._BODY.pack(self.device_id, self.state)

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        device_id, state = cls._BODY.unpack(body)
        return cls(seq=seq, device_id=device_id, state=state)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(_FrameBase):
    """Gateway → receiver: "announce yourself". The receiver answers with a HELLO."""

    TYPE: ClassVar[FrameType] = FrameType.PING

    seq: int

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16})

    def _pack_body(self) -> bytes:
        return b""

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, 0)
        return cls(seq=seq)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSync(_FrameBase):
    """Gateway → receiver: the gateway's wall clock, and whether it is synchronised.

    Reserved flag bits are sent as 0 and ignored when decoding.
    """

    TYPE: ClassVar[FrameType] = FrameType.TIME
    _BODY: ClassVar[struct.Struct] = struct.Struct("<QB")

    seq: int
    unix_ms: int
    trusted: bool

    def __post_init__(self) -> None:
        _check_fields(self, {"seq": _U16, "unix_ms": _U64})
        _check_bool("TimeSync", "trusted", self.trusted)

    def _pack_body(self) -> bytes:
        return self._BODY.pack(self.unix_ms, TIME_FLAG_TRUSTED if self.trusted else 0)

    @classmethod
    def _from_body(cls, seq: int, body: bytes) -> Self:
        _expect_body_len(cls, body, cls._BODY.size)
        unix_ms, flags = cls._BODY.unpack(body)
        return cls(seq=seq, unix_ms=unix_ms, trusted=bool(flags & TIME_FLAG_TRUSTED))


Frame: TypeAlias = (
    Hello
    | Press
    | DeviceFix
    | ReceiverStatus
    | DeviceStatus
    | Ack
    | Nak
    | Indication
    | Ping
    | TimeSync
)

FRAME_CLASSES: Final[dict[int, type[Frame]]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Press,
        DeviceFix,
        ReceiverStatus,
        DeviceStatus,
        Ack,
        Nak,
        Indication,
        Ping,
        TimeSync,
    )
}


def frame_fields(frame: Frame) -> dict[str, object]:
    """The dataclass fields of ``frame`` as a dict (``dataclasses.asdict`` without copying)."""
    return {f.name: getattr(frame, f.name) for f in fields(frame)}


def decode_raw(raw: bytes | bytearray | memoryview) -> Frame:
    """Decode one raw frame of any known type.

    Raises:
        CrcMismatch: the CRC does not match.
        UnknownFrameType: the CRC matches but the type code is not one of ours.
        OversizeFrame: more than ``MAX_RAW_LEN`` bytes.
        FrameError: anything else (short, bad version, body length or field value).
    """
    type_code, seq, body = _split_raw(raw)
    cls = FRAME_CLASSES.get(type_code)
    if cls is None:
        raise UnknownFrameType(type_code, seq)
    return cls._from_body(seq, body)


def decode(wire: bytes | bytearray | memoryview) -> Frame:
    """Decode exactly one frame from its wire bytes (delimiters around it are optional)."""
    segment = bytes(wire).strip(DELIMITER)
    if DELIMITER in segment:
        raise FrameError("more than one frame in input; use FrameDecoder for a stream")
    if len(segment) > MAX_ENCODED_LEN:
        raise OversizeFrame(f"encoded frame is {len(segment)} bytes, max {MAX_ENCODED_LEN}")
    return decode_raw(cobs_decode(segment))


def encode(frame: Frame) -> bytes:
    """The wire bytes of ``frame`` (same as ``frame.to_bytes()``)."""
    return frame.to_bytes()


# --------------------------------------------------------------------------- stream decoder


@dataclass(slots=True)
class DecoderCounters:
    """What a :class:`FrameDecoder` has seen since it was made.

    ``resyncs`` counts discarded non-empty segments (any that did not yield a frame
    because of a CRC, decode or size error); ``discarded_bytes`` their total size.
    A frame of an unknown type is skipped but is not a resync: it was well-formed.
    """

    frames_ok: int = 0
    crc_errors: int = 0
    decode_errors: int = 0
    resyncs: int = 0
    discarded_bytes: int = 0
    oversize: int = 0
    unknown_type: int = 0


class FrameDecoder:
    """Turn a byte stream into frames; resynchronise on the next 0x00 after any error.

    :meth:`feed` never raises. Bytes are buffered up to one maximum-size encoded frame;
    a longer run without a delimiter is counted as oversize and dropped up to the next
    delimiter, so memory stays bounded whatever arrives.
    """

    def __init__(self, on_error: Callable[[FrameError], None] | None = None) -> None:
        self.counters = DecoderCounters()
        self._on_error = on_error
        self._buf = bytearray()
        self._discarding = False  # inside an oversize run, until the next delimiter

    def reset(self) -> None:
        """Forget a partial frame (e.g. after reopening the port); counters stay."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; return the frames completed by them, in order."""
        data = bytes(data)
        out: list[Frame] = []
        start = 0
        while True:
            zero = data.find(0, start)
            if zero == -1:
                self._append(data, start, len(data))
                return out
            self._append(data, start, zero)
            start = zero + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._buf:
                segment = bytes(self._buf)
                self._buf.clear()
                frame = self._decode_segment(segment)
                if frame is not None:
                    out.append(frame)

    def _append(self, data: bytes, start: int, end: int) -> None:
        if start == end:
            return
        if self._discarding:
            self.counters.discarded_bytes += end - start
            return
        self._buf += data[start:end]
        if len(self._buf) > MAX_ENCODED_LEN:
            size = len(self._buf)
            self.counters.oversize += 1
            self.counters.resyncs += 1
            self.counters.discarded_bytes += size
            self._buf.clear()
            self._discarding = True
            self._report(OversizeFrame(f"no delimiter within {size} bytes, max {MAX_ENCODED_LEN}"))

    def _decode_segment(self, segment: bytes) -> Frame | None:
        c = self.counters
        try:
            frame = decode_raw(cobs_decode(segment))
        except UnknownFrameType as exc:
            c.unknown_type += 1
            self._report(exc)
            return None
        except FrameError as exc:
            if isinstance(exc, CrcMismatch):
                c.crc_errors += 1
            elif isinstance(exc, OversizeFrame):
                c.oversize += 1
            else:
                c.decode_errors += 1
            c.resyncs += 1
            c.discarded_bytes += len(segment)
            self._report(exc)
            return None
        c.frames_ok += 1
        return frame

    def _report(self, exc: FrameError) -> None:
        if self._on_error is not None:
            self._on_error(exc)


__all__ = [
    "BATTERY_UNKNOWN",
    "DELIMITER",
    "FRAME_CLASSES",
    "GESTURE_CODES",
    "MAX_ENCODED_LEN",
    "MAX_RAW_LEN",
    "MAX_TAG_LEN",
    "NAK_RESEND_REASONS",
    "PRESS_FLAG_REPEAT",
    "PROTOCOL_VERSION",
    "RSSI_UNKNOWN",
    "STATUS_FLAG_BATTERY_LOW",
    "STATUS_FLAG_TAMPER",
    "TIME_FLAG_TRUSTED",
    "Ack",
    "CrcMismatch",
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
    "Nak",
    "NakReason",
    "OversizeFrame",
    "Ping",
    "Press",
    "ReceiverStatus",
    "TimeSync",
    "UnknownFrameType",
    "UnsupportedVersion",
    "cobs_decode",
    "cobs_encode",
    "crc32",
    "decode",
    "decode_raw",
    "encode",
    "frame_fields",
    "nak_ends_resends",
]

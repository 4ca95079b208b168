"""The sans-IO codec: PROTOCOL.md vectors both ways, COBS, CRC, errors, stream decoding."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import frames as fr
from firmware_bridge.frames import (
    Ack,
    DeviceFix,
    DeviceStatus,
    FrameDecoder,
    FrameError,
    Hello,
    Indication,
    IndicationState,
    Nak,
    NakReason,
    Ping,
    Press,
    ReceiverStatus,
    TimeSync,
)

from .helpers import fenced_blocks, parse_records, valid_vectors

VECTORS = valid_vectors()
INVALID = [rec for block in fenced_blocks("invalid-vectors") for rec in parse_records(block)]


def _raw(type_code: int, seq: int, body: bytes, version: int = 1) -> bytes:
    head = struct.pack("<BBH", version, type_code, seq) + body
    return head + struct.pack("<I", zlib.crc32(head))


def _crc32_bitwise(data: bytes) -> int:
    """CRC-32/ISO-HDLC from its parameters, independent of zlib (PROTOCOL.md §3)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------- vectors


def test_protocol_md_has_a_vector_for_every_frame_type() -> None:
    assert len(VECTORS) >= 6
    assert {type(v.frame) for v in VECTORS} == set(fr.FRAME_CLASSES.values())
    assert len(INVALID) >= 5


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_decodes_to_its_fields(vector) -> None:
    assert fr.decode(vector.wire) == vector.frame
    assert fr.cobs_decode(vector.wire[:-1]) == vector.raw
    assert fr.decode_raw(vector.raw) == vector.frame
    assert type(vector.frame).from_raw(vector.raw) == vector.frame
    assert struct.unpack("<I", vector.raw[-4:])[0] == vector.crc == fr.crc32(vector.raw[:-4])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_encodes_to_its_wire_bytes(vector) -> None:
    assert vector.frame.to_raw() == vector.raw
    assert vector.frame.to_bytes() == vector.wire
    assert fr.encode(vector.frame) == vector.wire
    assert vector.wire.count(0) == 1 and vector.wire.endswith(b"\x00")


def test_all_vectors_through_one_stream_decoder_byte_by_byte() -> None:
    decoder = FrameDecoder()
    stream = b"".join(v.wire for v in VECTORS)
    got = [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]
    assert got == [v.frame for v in VECTORS]
    assert decoder.counters == fr.DecoderCounters(frames_ok=len(VECTORS))


@pytest.mark.parametrize("record", INVALID, ids=lambda r: r["name"])
def test_invalid_vector_is_counted_and_skipped(record: dict[str, str]) -> None:
    wire = bytes.fromhex(record["wire"])
    with pytest.raises(FrameError, match=record["error"].replace(".", r"\.")):
        fr.decode(wire)
    good = VECTORS[0]
    decoder = FrameDecoder()
    assert decoder.feed(wire + good.wire) == [good.frame]
    counters = decoder.counters
    assert getattr(counters, record["counter"]) == 1
    errors = {"crc_errors", "decode_errors", "oversize", "unknown_type"} - {record["counter"]}
    assert all(getattr(counters, name) == 0 for name in errors)
    assert counters.resyncs == (0 if record["counter"] == "unknown_type" else 1)


# --------------------------------------------------------------------------- CRC


def test_crc_check_value() -> None:
    assert fr.crc32(b"123456789") == 0xCBF43926
    assert _crc32_bitwise(b"123456789") == 0xCBF43926


@given(st.binary(max_size=300))
def test_crc_matches_its_parameters(data: bytes) -> None:
    assert fr.crc32(data) == _crc32_bitwise(data)


# --------------------------------------------------------------------------- COBS


def _cobs_doc_vectors() -> list[tuple[bytes, bytes]]:
    pairs = []
    for block in fenced_blocks("cobs-vectors"):
        for line in block.strip().splitlines():
            left, right = (side.strip() for side in line.split("->"))
            raw = b"" if left == "(empty)" else bytes.fromhex(left)
            pairs.append((raw, bytes.fromhex(right)))
    return pairs


RUN_254 = bytes(range(1, 255))  # 254 non-zero bytes
RUN_255 = bytes(range(1, 256))  # 255 non-zero bytes

COBS_CASES = [
    *_cobs_doc_vectors(),
    (b"", b"\x01"),
    (b"\x00" * 5, b"\x01" * 6),
    (b"\x00" * 254, b"\x01" * 255),
    (RUN_254, b"\xff" + RUN_254),
    (RUN_255, b"\xff" + RUN_254 + b"\x02\xff"),
    (b"\x00" + RUN_254, b"\x01\xff" + RUN_254),
    (RUN_254 + b"\x00", b"\xff" + RUN_254 + b"\x01\x01"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
    (RUN_254 * 2, b"\xff" + RUN_254 + b"\xff" + RUN_254),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_CASES, ids=range(len(COBS_CASES)))
def test_cobs_known_encodings(raw: bytes, encoded: bytes) -> None:
    assert len(_cobs_doc_vectors()) >= 5
    assert fr.cobs_encode(raw) == encoded
    assert fr.cobs_decode(encoded) == raw


def test_cobs_decode_accepts_a_trailing_01_after_a_full_block() -> None:
    # PROTOCOL.md §2: non-canonical but produced by some encoders.
    assert fr.cobs_decode(b"\xff" + RUN_254 + b"\x01") == RUN_254


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "empty input"),
        (b"\x00", "zero byte at offset 0"),
        (b"\x03\x11\x00", "zero byte at offset 2"),
        (b"\x05\x11\x22", "code 0x05 at offset 0 needs 4 bytes, only 2 left"),
        (b"\x02\x11\x04\x22", "code 0x04 at offset 2 needs 3 bytes, only 1 left"),
    ],
)
def test_cobs_decode_errors_say_where(encoded: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        fr.cobs_decode(encoded)


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_overhead(data: bytes) -> None:
    encoded = fr.cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert fr.cobs_decode(encoded) == data


# --------------------------------------------------------------------------- frame errors


def test_crc_error_names_expected_and_actual() -> None:
    raw = bytearray(VECTORS[1].raw)
    raw[-1] ^= 0x80
    with pytest.raises(fr.CrcMismatch) as info:
        fr.decode_raw(bytes(raw))
    expected = VECTORS[1].crc
    actual = expected ^ 0x8000_0000
    assert str(info.value) == f"CRC mismatch: expected 0x{expected:08x}, got 0x{actual:08x}"
    assert (info.value.expected, info.value.actual) == (expected, actual)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02\x03", "frame too short: 3 bytes, need at least 8"),
        (_raw(0x02, 1, b"\x00" * 11), r"Press body is 11 bytes, expected 12\.\.28"),
        (_raw(0x02, 1, b"\x00" * 29), r"Press body is 29 bytes, expected 12\.\.28"),
        (_raw(0x01, 1, b"\x00" * 14), "Hello body is 14 bytes, expected 13"),
        (_raw(0x03, 1, b"\x00" * 15), "DeviceFix body is 15 bytes, expected 16"),
        (_raw(0x04, 1, b""), "ReceiverStatus body is 0 bytes, expected 12"),
        (_raw(0x81, 1, b"\x01\x00"), "Nak body is 2 bytes, expected 3"),
        (_raw(0x02, 1, b"\x00" * 9 + b"\xff\x7f\x00", version=7), "version 7 .expected 1."),
        (_raw(0x42, 513, b""), "unknown frame type 0x42 .seq 513."),
        (_raw(0x02, 1, b"\x00" * 8 + b"\x05\xff\x7f\x00"), "Press.gesture: unknown code 5"),
        (_raw(0x02, 1, b"\x00" * 8 + b"\x00\x65\x7f\x00"), r"battery_pct: 101 out of range"),
        (
            _raw(0x03, 1, b"\x00" * 4 + struct.pack("<iiHH", 900_000_001, 0, 0, 0)),
            "DeviceFix.latitude: 90.0000001 out of range -90..90",
        ),
        (
            _raw(0x03, 1, b"\x00" * 4 + struct.pack("<iiHH", 0, -1_800_000_001, 0, 0)),
            "DeviceFix.longitude: -180.0000001 out of range -180..180",
        ),
        (_raw(0x02, 1, b"\x00" * 300), "frame is 308 bytes, maximum is 250"),
        (_raw(0x05, 1, b"\x00" * 27), r"DeviceStatus body is 27 bytes, expected 10\.\.26"),
        (_raw(0x05, 1, b"\x00" * 8 + b"\xfe\x00"), r"DeviceStatus\.battery_pct: 254 out of"),
        (_raw(0x82, 1, b"\x00" * 4), "Indication body is 4 bytes, expected 5"),
        (_raw(0x82, 1, b"\x00" * 6), "Indication body is 6 bytes, expected 5"),
        (_raw(0x83, 1, b"\x00" * 2), "Ping body is 2 bytes, expected 0"),
        (_raw(0x84, 1, b"\x00" * 10), "TimeSync body is 10 bytes, expected 9"),
        (_raw(0x85, 7, b""), "unknown frame type 0x85 .seq 7."),
    ],
)
def test_decode_raw_errors_name_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        fr.decode_raw(raw)


def test_from_raw_refuses_another_type() -> None:
    hello = next(v for v in VECTORS if isinstance(v.frame, Hello))
    with pytest.raises(FrameError, match=r"expected PRESS \(0x02\), got type 0x01"):
        Press.from_raw(hello.raw)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Ack(seq=65536, acked_seq=0), r"Ack\.seq: 65536 out of range 0\.\.65535"),
        (lambda: Ack(seq=True, acked_seq=0), r"Ack\.seq: expected int, got bool"),
        (lambda: Nak(seq=0, acked_seq=0, reason=256), r"Nak\.reason: 256 out of range"),
        (
            lambda: Press(seq=0, device_id=-1, counter=0, gesture="single"),
            r"Press\.device_id: -1 out of range 0\.\.4294967295",
        ),
        (
            lambda: Press(seq=0, device_id=0, counter=0, gesture="triple"),  # type: ignore[arg-type]
            r"Press\.gesture: 'triple' is not one of",
        ),
        (
            lambda: Press(seq=0, device_id=0, counter=0, gesture="hold", rssi_dbm=127),
            r"Press\.rssi_dbm: 127 out of range -128\.\.126",
        ),
        (
            lambda: Press(seq=0, device_id=0, counter=0, gesture="hold", tag=b"x" * 17),
            r"Press\.tag: 17 bytes, maximum is 16",
        ),
        (
            lambda: DeviceFix(
                seq=0, device_id=0, latitude=float("nan"), longitude=0.0, accuracy_m=1
            ),
            r"DeviceFix\.latitude: nan is not a finite number",
        ),
        (
            lambda: Hello(seq=0, receiver_id=0, fw_major=256, fw_minor=0, fw_patch=0, session=0),
            r"Hello\.fw_major: 256 out of range 0\.\.255",
        ),
        (
            lambda: DeviceStatus(seq=0, device_id=0, counter=0, battery_pct=101),
            r"DeviceStatus\.battery_pct: 101 out of range 0\.\.100",
        ),
        (
            lambda: DeviceStatus(seq=0, device_id=0, counter=0, tamper=1),  # type: ignore[arg-type]
            r"DeviceStatus\.tamper: expected bool, got int",
        ),
        (
            lambda: DeviceStatus(seq=0, device_id=0, counter=0, flags=0x100),
            r"DeviceStatus\.flags: 256 out of range 0\.\.255",
        ),
        (
            lambda: DeviceStatus(seq=0, device_id=0, counter=0, tag=b"t" * 17),
            r"DeviceStatus\.tag: 17 bytes, maximum is 16",
        ),
        (
            lambda: Indication(seq=0, device_id=0, state=256),
            r"Indication\.state: 256 out of range 0\.\.255",
        ),
        (lambda: Ping(seq=-1), r"Ping\.seq: -1 out of range"),
        (
            lambda: TimeSync(seq=0, unix_ms=-1, trusted=True),
            r"TimeSync\.unix_ms: -1 out of range 0\.\.18446744073709551615",
        ),
        (
            lambda: TimeSync(seq=0, unix_ms=0, trusted=None),  # type: ignore[arg-type]
            r"TimeSync\.trusted: expected bool, got NoneType",
        ),
    ],
)
def test_constructing_an_unencodable_frame_fails_early(build, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        build()


def test_device_status_flags_and_named_bits_agree() -> None:
    named = DeviceStatus(seq=1, device_id=2, counter=3, tamper=True)
    by_flags = DeviceStatus(seq=1, device_id=2, counter=3, flags=fr.STATUS_FLAG_TAMPER)
    assert named == by_flags and named.flags == 0x01
    assert (by_flags.tamper, by_flags.battery_low) == (True, False)
    both = DeviceStatus(seq=1, device_id=2, counter=3, battery_low=True, flags=0x81)
    assert (both.flags, both.tamper, both.battery_low) == (0x83, True, True)
    decoded = fr.decode(both.to_bytes())
    assert decoded == both  # reserved bit 7 survives
    assert both.to_raw()[4 + 8 : 4 + 10] == bytes([fr.BATTERY_UNKNOWN, 0x83])


def test_indication_state_is_an_enum_when_known() -> None:
    frame = Indication(seq=1, device_id=2, state=2)
    assert frame.state is IndicationState.HELP_ON_THE_WAY
    assert frame == Indication(seq=1, device_id=2, state=IndicationState.HELP_ON_THE_WAY)
    assert [int(s) for s in IndicationState] == [0, 1, 2, 3, 4]
    future = fr.decode(Indication(seq=1, device_id=2, state=9).to_bytes())
    assert isinstance(future, Indication)
    assert future.state == 9 and not isinstance(future.state, IndicationState)


def test_time_sync_ignores_reserved_flag_bits() -> None:
    raw = _raw(0x84, 1, struct.pack("<QB", 1_767_225_600_000, 0xFE))
    assert fr.decode_raw(raw) == TimeSync(seq=1, unix_ms=1_767_225_600_000, trusted=False)
    raw = _raw(0x84, 1, struct.pack("<QB", 2**64 - 1, 0xFF))
    assert fr.decode_raw(raw) == TimeSync(seq=1, unix_ms=2**64 - 1, trusted=True)


def test_only_store_failed_asks_for_a_resend() -> None:
    assert [int(r) for r in NakReason] == [1, 2, 3, 4, 5]
    assert not fr.nak_ends_resends(NakReason.STORE_FAILED)
    assert not fr.nak_ends_resends(3)
    for reason in (1, 2, 4, 5, 6, 255):
        assert fr.nak_ends_resends(reason), reason


def test_unsupported_version_carries_the_seq_for_a_nak() -> None:
    with pytest.raises(fr.UnsupportedVersion) as info:
        fr.decode_raw(_raw(0x02, 0x1234, b"\x00" * 12, version=2))
    assert (info.value.version, info.value.seq) == (2, 0x1234)
    assert isinstance(info.value, FrameError)


def test_nak_keeps_an_unknown_reason_as_a_number() -> None:
    frame = fr.decode(Nak(seq=1, acked_seq=2, reason=9).to_bytes())
    assert isinstance(frame, Nak) and frame.reason == 9
    known = fr.decode(Nak(seq=1, acked_seq=2, reason=3).to_bytes())
    assert isinstance(known, Nak) and known.reason is fr.NakReason.STORE_FAILED


def test_degrees_are_rounded_to_the_wire_resolution() -> None:
    fix = DeviceFix(seq=1, device_id=1, latitude=12.345678949, longitude=-0.00000005, accuracy_m=3)
    assert fix.latitude == 12.3456789
    assert fr.decode(fix.to_bytes()) == fix
    lat, lon = struct.unpack_from("<ii", fix.to_raw(), 8)
    assert lat == 123_456_789 and lon in (0, -1)  # -0.5 units: banker's rounding either way


def test_press_flags_and_unknown_sentinels() -> None:
    press = Press(seq=1, device_id=1, counter=1, gesture="double", flags=0x81)
    assert press.repeat_hint
    raw = press.to_raw()
    assert raw[4 + 9 : 4 + 12] == bytes([255, 127, 0x81])  # battery, rssi, flags
    assert fr.decode(press.to_bytes()) == press  # reserved flag bits survive


# --------------------------------------------------------------------------- hypothesis

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
U8 = st.integers(0, 0xFF)

FRAME_STRATEGIES: dict[type, st.SearchStrategy[fr.Frame]] = {
    Hello: st.builds(
        Hello,
        seq=U16,
        receiver_id=U32,
        fw_major=U8,
        fw_minor=U8,
        fw_patch=U8,
        session=U32,
        capabilities=U16,
    ),
    Press: st.builds(
        Press,
        seq=U16,
        device_id=U32,
        counter=U32,
        gesture=st.sampled_from(["single", "double", "long", "hold"]),
        battery_pct=st.none() | st.integers(0, 100),
        rssi_dbm=st.none() | st.integers(-128, 126),
        flags=U8,
        tag=st.binary(max_size=16),
    ),
    DeviceFix: st.builds(
        DeviceFix,
        seq=U16,
        device_id=U32,
        latitude=st.floats(-90, 90),
        longitude=st.floats(-180, 180),
        accuracy_m=U16,
        age_s=U16,
    ),
    ReceiverStatus: st.builds(
        ReceiverStatus, seq=U16, uptime_s=U32, radio_frames=U32, radio_errors=U32
    ),
    DeviceStatus: st.builds(
        DeviceStatus,
        seq=U16,
        device_id=U32,
        counter=U32,
        battery_pct=st.none() | st.integers(0, 100),
        tamper=st.booleans(),
        battery_low=st.booleans(),
        flags=U8,
        tag=st.binary(max_size=16),
    ),
    Ack: st.builds(Ack, seq=U16, acked_seq=U16),
    Nak: st.builds(Nak, seq=U16, acked_seq=U16, reason=U8),
    Indication: st.builds(Indication, seq=U16, device_id=U32, state=U8),
    Ping: st.builds(Ping, seq=U16),
    TimeSync: st.builds(
        TimeSync, seq=U16, unix_ms=st.integers(0, 2**64 - 1), trusted=st.booleans()
    ),
}
FRAMES = st.one_of(*FRAME_STRATEGIES.values())


def test_the_strategies_cover_every_frame_type() -> None:
    # FRAMES feeds the round-trip and the garbage properties below; a new frame class
    # must be added there too.
    assert set(FRAME_STRATEGIES) == set(fr.FRAME_CLASSES.values())


@given(FRAMES)
def test_every_frame_round_trips(frame: fr.Frame) -> None:
    wire = frame.to_bytes()
    assert wire.index(0) == len(wire) - 1
    assert fr.decode(wire) == frame
    assert type(frame).from_raw(frame.to_raw()) == frame
    assert FrameDecoder().feed(wire) == [frame]


@st.composite
def _corruption(draw: st.DrawFn) -> bytes:
    """Bytes that must not yield a frame: noise, a cut-off frame, a frame with a bit flipped."""
    kind = draw(st.sampled_from(["garbage", "long-garbage", "truncated", "bitflip"]))
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    if kind == "long-garbage":  # beyond the buffer cap, no delimiter
        return draw(st.binary(min_size=252, max_size=600)).replace(b"\x00", b"\x01")
    wire = draw(FRAMES).to_bytes()
    if kind == "truncated":
        # Stop before the last encoded byte: a frame missing only its delimiter is whole.
        return wire[: draw(st.integers(1, len(wire) - 2))]
    encoded = bytearray(wire[:-1])
    bit = draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    return bytes(encoded) + draw(st.sampled_from([b"", b"\x00"]))


def _expected_segment_count(stream: bytes) -> int:
    """Non-empty delimited segments, plus a trailing undelimited one over the cap."""
    *complete, tail = stream.split(b"\x00")
    return sum(1 for s in complete if s) + (1 if len(tail) > fr.MAX_ENCODED_LEN else 0)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.booleans(), FRAMES, _corruption()), max_size=12),
    st.data(),
)
def test_garbage_never_breaks_the_stream(
    items: list[tuple[bool, fr.Frame, bytes]], data: st.DataObject
) -> None:
    # Each item is a valid frame (prefixed with a delimiter, as PROTOCOL.md §2 asks of a
    # sender after an error) or corruption.
    buf = bytearray()
    sent: list[fr.Frame] = []
    for is_valid, frame, corruption in items:
        if is_valid:
            buf += b"\x00" + frame.to_bytes()
            sent.append(frame)
        else:
            buf += corruption
    stream = bytes(buf)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    got: list[fr.Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])

    assert got == sent
    c = decoder.counters
    assert c.frames_ok == len(sent)
    assert c.resyncs == c.crc_errors + c.decode_errors + c.oversize
    handled = c.frames_ok + c.crc_errors + c.decode_errors + c.oversize + c.unknown_type
    assert handled == _expected_segment_count(stream)


# --------------------------------------------------------------------------- stream decoder


def test_delimiters_alone_are_not_errors() -> None:
    decoder = FrameDecoder()
    wire = VECTORS[0].wire
    assert decoder.feed(b"\x00") == []
    assert decoder.feed(b"\x00\x00" + wire + b"\x00\x00\x00" + wire) == [VECTORS[0].frame] * 2
    assert decoder.counters == fr.DecoderCounters(frames_ok=2)


def test_counters_count_each_kind_of_bad_input() -> None:
    seen: list[FrameError] = []
    decoder = FrameDecoder(on_error=seen.append)
    good = VECTORS[1]
    bad_crc = bytearray(good.wire)
    bad_crc[-3] ^= 0x01
    stream = (
        b"\x13\x37 line noise"  # COBS error
        + b"\x00"
        + bytes(bad_crc)
        + fr.cobs_encode(_raw(0x77, 5, b"future"))  # unknown type, good CRC
        + b"\x00"
        + b"\x01" * 300  # oversize
        + b"\x00"
        + good.wire
    )
    assert decoder.feed(stream) == [good.frame]
    assert decoder.counters == fr.DecoderCounters(
        frames_ok=1,
        crc_errors=1,
        decode_errors=1,
        resyncs=3,
        discarded_bytes=13 + len(good.wire) - 1 + 300,
        oversize=1,
        unknown_type=1,
    )
    assert [type(e).__name__ for e in seen] == [
        "FrameError",
        "CrcMismatch",
        "UnknownFrameType",
        "OversizeFrame",
    ]


def test_buffer_stays_bounded_without_delimiters() -> None:
    decoder = FrameDecoder()
    chunk = b"\x55" * 1000
    for _ in range(1000):  # 1 MB of noise with no delimiter
        assert decoder.feed(chunk) == []
        assert len(decoder._buf) <= fr.MAX_ENCODED_LEN
    assert decoder.counters.oversize == 1
    assert decoder.counters.discarded_bytes == 1_000_000
    # The next delimiter ends the oversize run; the frame after it is decoded.
    assert decoder.feed(b"\x00" + VECTORS[2].wire) == [VECTORS[2].frame]


def test_size_limit_boundary() -> None:
    at_limit = _raw(0x42, 1, b"\x01" * (fr.MAX_RAW_LEN - 8))  # 250 bytes, unknown type
    over = _raw(0x42, 1, b"\x01" * (fr.MAX_RAW_LEN - 7))  # 251 bytes
    assert len(fr.cobs_encode(at_limit)) == fr.MAX_ENCODED_LEN
    decoder = FrameDecoder()
    decoder.feed(fr.cobs_encode(at_limit) + b"\x00" + fr.cobs_encode(over) + b"\x00")
    assert decoder.counters.unknown_type == 1
    assert decoder.counters.oversize == 1
    with pytest.raises(fr.OversizeFrame):
        fr.decode(fr.cobs_encode(over))


def test_reset_forgets_a_partial_frame() -> None:
    decoder = FrameDecoder()
    wire = VECTORS[3].wire
    decoder.feed(wire[:5])
    decoder.reset()
    assert decoder.feed(wire) == [VECTORS[3].frame]
    assert decoder.counters.resyncs == 0


def test_decode_refuses_two_frames() -> None:
    with pytest.raises(FrameError, match="more than one frame"):
        fr.decode(VECTORS[0].wire + VECTORS[1].wire)


def test_codec_imports_no_io_libraries() -> None:
    code = (
        "import sys, firmware_bridge.frames, firmware_bridge.auth, firmware_bridge.sim\n"
        "bad = {'asyncio', 'serial', 'serial_asyncio_fast'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Button authentication tags: PROTOCOL.md §9.4 vectors both ways, tamper detection, keys."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import frames as fr
from firmware_bridge.auth import (
    KEY_LENGTHS,
    PRESS_DOMAIN,
    STATUS_DOMAIN,
    TAG_LEN,
    parse_key,
    press_tag,
    status_tag,
    verify_press,
    verify_status,
)
from firmware_bridge.frames import DeviceStatus, Press

from .helpers import fenced_blocks, parse_frame, parse_records, valid_vectors

AUTH = [rec for block in fenced_blocks("auth-vectors") for rec in parse_records(block)]
KEY = bytes(range(32))
GESTURES: list[fr.Gesture] = ["single", "double", "long", "hold"]


def _frame(record: dict[str, str]) -> Press | DeviceStatus:
    frame = parse_frame(record["frame"])
    assert isinstance(frame, Press | DeviceStatus)
    return frame


def _tag_of(key: bytes, frame: Press | DeviceStatus) -> bytes:
    if isinstance(frame, Press):
        return press_tag(key, frame.device_id, frame.counter, frame.gesture, frame.battery_pct)
    return status_tag(key, frame.device_id, frame.counter, frame.battery_pct, frame.flags)


def _verify(key: bytes, frame: Press | DeviceStatus) -> bool:
    return verify_press(key, frame) if isinstance(frame, Press) else verify_status(key, frame)


# --------------------------------------------------------------------------- vectors


def test_protocol_md_has_auth_vectors_for_both_kinds_and_key_sizes() -> None:
    assert len(AUTH) >= 4
    kinds = {(type(_frame(r)), len(bytes.fromhex(r["key"]))) for r in AUTH}
    assert kinds == {(k, n) for k in (Press, DeviceStatus) for n in KEY_LENGTHS}


@pytest.mark.parametrize("record", AUTH, ids=lambda r: r["name"])
def test_auth_vector_computes_and_verifies(record: dict[str, str]) -> None:
    key = parse_key(record["key"])
    frame = _frame(record)
    tag = bytes.fromhex(record["tag"])
    message = bytes.fromhex(record["message"])
    # The documented HMAC input is exactly the domain and the body fields as sent.
    domain = PRESS_DOMAIN if isinstance(frame, Press) else STATUS_DOMAIN
    assert message[:5] == domain
    assert message[5:] == frame.to_raw()[4 : 4 + 10]
    # HMAC-SHA256 computed here independently of firmware_bridge.auth.
    assert hmac.new(key, message, hashlib.sha256).digest()[:TAG_LEN] == tag
    assert _tag_of(key, frame) == tag == frame.tag
    assert _verify(key, frame)


@pytest.mark.parametrize("record", AUTH, ids=lambda r: r["name"])
def test_auth_vector_frame_is_a_wire_vector_too(record: dict[str, str]) -> None:
    wire = {v.frame: v for v in valid_vectors()}
    vector = wire[_frame(record)]  # the same frame, with its wire bytes, in §9.1
    decoded = fr.decode(vector.wire)
    assert isinstance(decoded, Press | DeviceStatus)
    assert _verify(parse_key(record["key"]), decoded)


# --------------------------------------------------------------------------- tampering


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


PRESS = Press(
    seq=1, device_id=0x00A1B2C3, counter=44, gesture="single", battery_pct=95, rssi_dbm=-60
)
PRESS = dataclasses.replace(PRESS, tag=_tag_of(KEY, PRESS))
STATUS = DeviceStatus(seq=2, device_id=0x00A1B2C3, counter=45, battery_pct=80, flags=0x05)
STATUS = dataclasses.replace(STATUS, tag=_tag_of(KEY, STATUS))


@pytest.mark.parametrize("frame", [PRESS, STATUS], ids=["press", "status"])
def test_every_single_bit_flip_of_key_or_tag_fails(frame: Press | DeviceStatus) -> None:
    assert _verify(KEY, frame)
    for bit in range(len(KEY) * 8):
        assert not _verify(_flip(KEY, bit), frame), f"key bit {bit}"
    for bit in range(TAG_LEN * 8):
        bad = dataclasses.replace(frame, tag=_flip(frame.tag, bit))
        assert not _verify(KEY, bad), f"tag bit {bit}"


@pytest.mark.parametrize("frame", [PRESS, STATUS], ids=["press", "status"])
def test_every_single_bit_flip_of_a_covered_field_fails(frame: Press | DeviceStatus) -> None:
    for name in ("device_id", "counter"):
        for bit in range(32):
            changed = dataclasses.replace(frame, **{name: getattr(frame, name) ^ (1 << bit)})
            assert not _verify(KEY, changed), f"{name} bit {bit}"
    for battery in [None, *range(101)]:
        if battery != frame.battery_pct:
            changed = dataclasses.replace(frame, battery_pct=battery)
            assert not _verify(KEY, changed), f"battery {battery}"


def test_gesture_and_status_flags_are_covered() -> None:
    for gesture in GESTURES:
        if gesture != PRESS.gesture:
            assert not verify_press(KEY, dataclasses.replace(PRESS, gesture=gesture))
    for bit in range(8):  # reserved bits too: the button sent them
        flags = STATUS.flags ^ (1 << bit)
        changed = DeviceStatus(
            seq=STATUS.seq,
            device_id=STATUS.device_id,
            counter=STATUS.counter,
            battery_pct=STATUS.battery_pct,
            flags=flags,
            tag=STATUS.tag,
        )
        assert not verify_status(KEY, changed), f"flags bit {bit}"


def test_what_the_receiver_adds_is_not_covered() -> None:
    # RSSI is measured by the receiver, the repeat hint and seq are set by it: any
    # receiver that hears the button relays a tag that verifies.
    for rssi in (None, -128, -90, 0, 126):
        assert verify_press(KEY, dataclasses.replace(PRESS, rssi_dbm=rssi))
    assert verify_press(KEY, dataclasses.replace(PRESS, flags=fr.PRESS_FLAG_REPEAT, seq=999))
    assert verify_status(KEY, dataclasses.replace(STATUS, seq=999))


def test_a_press_tag_never_verifies_as_a_status_tag() -> None:
    # The same key and the same ten field bytes (gesture 0 and battery 95 read as battery
    # 0 and flags 95): only the domain string differs.
    status = DeviceStatus(
        seq=1,
        device_id=PRESS.device_id,
        counter=PRESS.counter,
        battery_pct=fr.GESTURE_CODES[PRESS.gesture],
        flags=95,
        tag=PRESS.tag,
    )
    assert status.to_raw()[4:14] == PRESS.to_raw()[4:14]
    assert not verify_status(KEY, status)


@pytest.mark.parametrize("tag", [b"", PRESS.tag[:7], PRESS.tag + b"\x00", PRESS.tag * 2])
def test_a_tag_of_the_wrong_length_fails(tag: bytes) -> None:
    assert not verify_press(KEY, dataclasses.replace(PRESS, tag=tag))


@settings(max_examples=200)
@given(
    key=st.sampled_from(KEY_LENGTHS).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    device_id=st.integers(0, 0xFFFF_FFFF),
    counter=st.integers(0, 0xFFFF_FFFF),
    gesture=st.sampled_from(GESTURES),
    battery=st.none() | st.integers(0, 100),
    rssi=st.none() | st.integers(-128, 126),
)
def test_tag_round_trips_over_the_wire(
    key: bytes,
    device_id: int,
    counter: int,
    gesture: fr.Gesture,
    battery: int | None,
    rssi: int | None,
) -> None:
    tag = press_tag(key, device_id, counter, gesture, battery)
    assert len(tag) == TAG_LEN
    sent = Press(
        seq=1,
        device_id=device_id,
        counter=counter,
        gesture=gesture,
        battery_pct=battery,
        rssi_dbm=rssi,
        tag=tag,
    )
    received = fr.decode(sent.to_bytes())
    assert isinstance(received, Press) and verify_press(key, received)
    assert not verify_press(key, dataclasses.replace(received, counter=counter ^ 1))


# --------------------------------------------------------------------------- keys


def test_parse_key_accepts_both_sizes_and_whitespace() -> None:
    assert parse_key(KEY.hex()) == KEY
    assert parse_key("  " + KEY[:16].hex().upper() + "\n") == KEY[:16]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "32 or 64 hex digits .16 or 32 bytes., got 0 characters"),
        ("00" * 15, "got 30 characters"),
        ("00" * 24, "got 48 characters"),
        ("00" * 33, "got 66 characters"),
        ("0x" + "00" * 15, "character 2 is not 0-9 or a-f"),
        ("00" * 15 + "zz", "character 31 is not"),
        ("00 1" + "0" * 28, "character 3 is not"),
    ],
)
def test_parse_key_errors_are_clear_and_never_echo_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_key(text)
    if text.strip():
        assert text.strip() not in str(info.value)


@pytest.mark.parametrize("size", [0, 8, 15, 17, 31, 33, 64])
def test_tags_refuse_a_key_of_the_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match=f"key is {size} bytes, expected 16 or 32"):
        press_tag(bytes(size), 1, 1, "single", None)
    with pytest.raises(ValueError, match="expected 16 or 32"):
        verify_status(bytes(size), STATUS)


def test_tags_refuse_fields_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="field out of range"):
        status_tag(KEY, 1 << 32, 1, None, 0)
    with pytest.raises(ValueError, match="unknown gesture"):
        press_tag(KEY, 1, 1, "triple", None)  # type: ignore[arg-type]

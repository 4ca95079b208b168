"""The pure MQTT payload adapters: one message in, what it says about devices out.

Table-driven; the rtl_433 cases replay real rtl_433 output (tests/data/rtl_433).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config.models import Z2M_PANIC_ACTIONS, DeviceType, JsonFields
from gateway.inputs.adapters import PayloadError, Reading, digest, topic_base
from gateway.inputs.adapters.json_payload import UNKNOWN_ACCURACY_M, JsonPayload
from gateway.inputs.adapters.rtl433 import Rtl433, device_id_of
from gateway.inputs.adapters.zigbee2mqtt import Zigbee2Mqtt

RTL_DATA = Path(__file__).resolve().parents[1] / "data" / "rtl_433"
HONEYWELL_5811 = "honeywell-5811-event192.jsonl"
HONEYWELL_DW10 = "honeywell-2gig-dw10-event160.jsonl"
EV1527 = "ev1527-gs558.jsonl"

TypeOf = Callable[[str], DeviceType | None]


def registry(types: dict[str, DeviceType] | None = None) -> TypeOf:
    """type_of over a fixed registry: every other device is unknown (None)."""
    known = types or {}
    return lambda device_id: known.get(device_id)


def unknown(device_id: str) -> DeviceType | None:
    return None


def dumps(data: Any) -> bytes:
    return json.dumps(data).encode()


def one(readings: list[Reading]) -> Reading:
    assert len(readings) == 1, readings
    return readings[0]


def rtl_lines(name: str) -> list[bytes]:
    return [line.encode() for line in (RTL_DATA / name).read_text().splitlines() if line.strip()]


def rtl_event(name: str, **changes: Any) -> bytes:
    """The first line of a data file, with some fields changed (None removes one)."""
    data = json.loads(rtl_lines(name)[0])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return dumps(data)


# --------------------------------------------------------------------------- topic_base


@pytest.mark.parametrize(
    ("topic_filter", "base"),
    [
        ("zigbee2mqtt/#", "zigbee2mqtt"),
        ("rtl_433/+/events", "rtl_433"),
        ("#", ""),
        ("+", ""),
        ("site/zigbee2mqtt/#", "site/zigbee2mqtt"),
        ("sensors/panic", "sensors/panic"),
    ],
)
def test_topic_base(topic_filter: str, base: str) -> None:
    assert topic_base(topic_filter) == base


def test_digest_ignores_key_order_and_volatile_fields() -> None:
    a = {"action": "sos", "battery": 90, "linkquality": 10}
    b = {"linkquality": 200, "battery": 90, "action": "sos"}
    assert digest(a, ["linkquality"]) == digest(b, ["linkquality"])
    assert digest(a, []) != digest(b, [])
    assert digest(a, ["linkquality"]) != digest({**a, "battery": 89}, ["linkquality"])


# --------------------------------------------------------------------------- zigbee2mqtt

SOS_TYPE = DeviceType()  # default actions: emergency/sos/panic -> single
REMOTE_TYPE = DeviceType(
    raise_gestures=["single", "long"],
    actions={"emergency": "single", "long": "long"},
)
Z2M_TYPES = {"sos_button": SOS_TYPE, "remote": REMOTE_TYPE}


def z2m(base: str = "zigbee2mqtt") -> Zigbee2Mqtt:
    return Zigbee2Mqtt(base, registry(Z2M_TYPES))


@pytest.mark.parametrize(
    ("topic", "payload", "device_id", "gesture"),
    [
        # the registered type's actions decide
        ("zigbee2mqtt/sos_button", {"action": "emergency"}, "sos_button", "single"),
        ("zigbee2mqtt/sos_button", {"action": "sos"}, "sos_button", "single"),
        ("zigbee2mqtt/sos_button", {"action": "long"}, "sos_button", None),
        ("zigbee2mqtt/remote", {"action": "emergency"}, "remote", "single"),
        ("zigbee2mqtt/remote", {"action": "long"}, "remote", "long"),
        ("zigbee2mqtt/remote", {"action": "sos"}, "remote", None),  # not in its actions
        ("zigbee2mqtt/remote", {"action": "brightness_up"}, "remote", None),
        ("zigbee2mqtt/remote", {"action": ""}, "remote", None),
        ("zigbee2mqtt/remote", {"action": 1}, "remote", None),
        # an unknown device: the default panic actions
        ("zigbee2mqtt/stranger", {"action": "emergency"}, "stranger", "single"),
        ("zigbee2mqtt/stranger", {"action": "panic"}, "stranger", "single"),
        ("zigbee2mqtt/stranger", {"action": "long"}, "stranger", None),
        # SOS buttons that report a boolean instead of an action
        ("zigbee2mqtt/stranger", {"sos": True}, "stranger", "single"),
        ("zigbee2mqtt/sos_button", {"sos": True, "battery": 80}, "sos_button", "single"),
        ("zigbee2mqtt/sos_button", {"emergency": 1}, "sos_button", "single"),
        ("zigbee2mqtt/sos_button", {"action": "", "sos": True}, "sos_button", "single"),
        ("zigbee2mqtt/sos_button", {"sos": False}, "sos_button", None),
        ("zigbee2mqtt/remote", {"sos": True}, "remote", None),  # its actions lack sos
        # health only
        ("zigbee2mqtt/sos_button", {"battery": 50, "linkquality": 90}, "sos_button", None),
        ("zigbee2mqtt/sos_button", {}, "sos_button", None),
        # friendly names compare ignoring case
        ("zigbee2mqtt/SOS_Button", {"action": "emergency"}, "sos_button", "single"),
    ],
)
def test_z2m_action_to_gesture(
    topic: str, payload: dict[str, Any], device_id: str, gesture: str | None
) -> None:
    r = one(z2m().read(topic, dumps(payload)))
    assert r.device_id == device_id
    assert r.gesture == gesture
    assert (r.dedup_key is not None) == (gesture is not None)
    if r.dedup_key is not None:
        assert r.dedup_key.startswith(f"z2m:{device_id}:")
    assert r.frame_key is None
    assert r.spoofable is False
    assert r.available is None


def test_z2m_unknown_device_uses_default_panic_actions() -> None:
    adapter = Zigbee2Mqtt("zigbee2mqtt", unknown)
    for action, gesture in Z2M_PANIC_ACTIONS.items():
        assert one(adapter.read("zigbee2mqtt/x", dumps({"action": action}))).gesture == gesture


@pytest.mark.parametrize(
    ("payload", "battery_pct", "battery_low", "tamper", "linkquality"),
    [
        (
            {"battery": 87, "battery_low": False, "tamper": False, "linkquality": 120},
            87,
            False,
            False,
            120,
        ),
        ({"battery": 3, "battery_low": True, "tamper": True}, 3, True, True, None),
        ({"battery": 0}, 0, None, None, None),
        ({"battery": 100}, 100, None, None, None),
        ({"battery": 99.6}, 99, None, None, None),
        ({"battery": 101}, None, None, None, None),
        ({"battery": 255}, None, None, None, None),
        ({"battery": -1}, None, None, None, None),
        ({"battery": "80"}, None, None, None, None),
        ({"battery": True}, None, None, None, None),
        ({"battery_low": 1, "tamper": "true"}, None, True, True, None),
        ({"linkquality": 0}, None, None, None, 0),
        ({}, None, None, None, None),
    ],
)
def test_z2m_health(
    payload: dict[str, Any],
    battery_pct: int | None,
    battery_low: bool | None,
    tamper: bool | None,
    linkquality: int | None,
) -> None:
    for extra in ({}, {"action": "emergency"}):
        r = one(z2m().read("zigbee2mqtt/sos_button", dumps({**payload, **extra})))
        assert (r.battery_pct, r.battery_low, r.tamper, r.linkquality) == (
            battery_pct,
            battery_low,
            tamper,
            linkquality,
        )


@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/bridge/state",
        "zigbee2mqtt/bridge/info",
        "zigbee2mqtt/bridge/devices",
        "zigbee2mqtt/bridge/event",
        "zigbee2mqtt/bridge/logging",
        "zigbee2mqtt/bridge/request/permit_join",
        "zigbee2mqtt/bridge/response/device/rename",
        "zigbee2mqtt/sos_button/set",
        "zigbee2mqtt/sos_button/get",
        "zigbee2mqtt/sos_button/set/state",
        "zigbee2mqtt/sos_button/get/state",
        "zigbee2mqtt/",
        "zigbee2mqtt",
        "other/sos_button",
        "zigbee2mqttx/sos_button",
    ],
)
def test_z2m_topics_that_are_not_device_state_are_ignored(topic: str) -> None:
    # Even with a payload that would be a press anywhere else.
    for payload in (dumps({"action": "emergency"}), b"online", b"ON", b"[]"):
        assert z2m().read(topic, payload) == []


@pytest.mark.parametrize(
    ("payload", "available"),
    [
        (b"online", True),
        (b"offline", False),
        (b"online\n", True),
        (b" offline ", False),
        (b'{"state": "online"}', True),
        (b'{"state": "offline"}', False),
        (b'{"state":"online","extra":1}', True),
    ],
)
def test_z2m_availability(payload: bytes, available: bool) -> None:
    r = one(z2m().read("zigbee2mqtt/sos_button/availability", payload))
    assert r == Reading("sos_button", available=available, detail="zigbee2mqtt sos_button")
    assert r.gesture is None and r.dedup_key is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"ONLINE",
        b"true",
        b"1",
        b"unknown",
        b'"online"',
        b"\xff\xfe",
        b'{"state": "ONLINE"}',
        b'{"state": true}',
        b'{"availability": "online"}',
        b"{}",
        b"{not json",
        b'["online"]',
    ],
)
def test_z2m_bad_availability(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        z2m().read("zigbee2mqtt/sos_button/availability", payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'[{"action": "emergency"}]',
        b'"sos"',
        b"1",
        b"null",
    ],
)
def test_z2m_state_that_is_not_a_json_object(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        z2m().read("zigbee2mqtt/sos_button", payload)


@pytest.mark.parametrize(
    ("topic", "device_id"),
    [
        ("zigbee2mqtt/panic button", "z2m-unusable-name:panic_button"),
        ("zigbee2mqtt/living room/sos", "z2m-unusable-name:living_room_sos"),
        ("zigbee2mqtt/floor1/SOS", "z2m-unusable-name:floor1_sos"),
        ("zigbee2mqtt/bouton-d'urgence", "z2m-unusable-name:bouton-d_urgence"),
        ("zigbee2mqtt/" + "a" * 65, "z2m-unusable-name:" + "a" * 40),
        ("zigbee2mqtt/" + "a" * 64, "a" * 64),
        ("zigbee2mqtt/0x00158d0001a9ec71", "0x00158d0001a9ec71"),
        ("zigbee2mqtt/hall.sos_1:b-2", "hall.sos_1:b-2"),
    ],
)
def test_z2m_friendly_names(topic: str, device_id: str) -> None:
    r = one(Zigbee2Mqtt("zigbee2mqtt", unknown).read(topic, dumps({"action": "emergency"})))
    assert r.device_id == device_id
    # An unusable name is still reported, press included, so the technician sees it.
    assert r.gesture == "single"
    avail = one(Zigbee2Mqtt("zigbee2mqtt", unknown).read(topic + "/availability", b"online"))
    assert avail.device_id == device_id and avail.available is True


def test_z2m_unusable_names_make_the_problem_visible() -> None:
    for name in ("panic button", "living/sos"):
        r = one(z2m().read(f"zigbee2mqtt/{name}", dumps({"battery": 50})))
        assert r.device_id.startswith("z2m-unusable-name:")
        assert name in r.detail


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        # radio/bridge noise does not make a new transmission
        (
            {"action": "emergency", "battery": 90, "linkquality": 120},
            {"action": "emergency", "battery": 90, "linkquality": 36},
            True,
        ),
        (
            {"action": "emergency", "last_seen": "2024-01-01T10:00:00Z"},
            {"action": "emergency", "last_seen": "2024-01-01T10:00:01Z"},
            True,
        ),
        (
            {"action": "emergency", "linkquality": 1, "last_seen": 1, "elapsed": 5},
            {"elapsed": 900, "last_seen": 2, "linkquality": 2, "action": "emergency"},
            True,
        ),
        (
            {"action": "emergency", "update": {"state": "idle"}},
            {"action": "emergency", "update": {"state": "available"}},
            True,
        ),
        # what the device said does
        ({"action": "emergency"}, {"action": "sos"}, False),
        ({"action": "emergency", "battery": 90}, {"action": "emergency", "battery": 89}, False),
        ({"action": "emergency", "tamper": False}, {"action": "emergency", "tamper": True}, False),
    ],
)
def test_z2m_dedup_key(first: dict[str, Any], second: dict[str, Any], same: bool) -> None:
    a = one(z2m().read("zigbee2mqtt/sos_button", dumps(first)))
    b = one(z2m().read("zigbee2mqtt/sos_button", dumps(second)))
    assert a.dedup_key is not None and b.dedup_key is not None
    assert (a.dedup_key == b.dedup_key) is same


def test_z2m_dedup_key_differs_between_devices() -> None:
    payload = dumps({"action": "emergency"})
    a = one(z2m().read("zigbee2mqtt/sos_button", payload))
    b = one(z2m().read("zigbee2mqtt/stranger", payload))
    assert a.dedup_key != b.dedup_key


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        ("sos_button", dumps({"action": "emergency"}), ("sos_button", "single", None)),
        ("remote", dumps({"action": "long"}), ("remote", "long", None)),
        ("stranger", dumps({"sos": True}), ("stranger", "single", None)),
        ("sos_button/availability", b"offline", ("sos_button", None, False)),
        ("bridge/state", b"online", None),
        ("sos_button/set", dumps({"action": "emergency"}), None),
        # with '#', a topic carrying the usual base is a name with a '/': visibly unusable
        (
            "zigbee2mqtt/sos_button",
            dumps({"action": "emergency"}),
            ("z2m-unusable-name:zigbee2mqtt_sos_button", "single", None),
        ),
    ],
)
def test_z2m_empty_base_subscription_everything(
    topic: str, payload: bytes, expected: tuple[str, str | None, bool | None] | None
) -> None:
    adapter = Zigbee2Mqtt(topic_base("#"), registry(Z2M_TYPES))
    assert adapter.base == ""
    readings = adapter.read(topic, payload)
    if expected is None:
        assert readings == []
    else:
        r = one(readings)
        assert (r.device_id, r.gesture, r.available) == expected


def test_z2m_nested_base() -> None:
    adapter = Zigbee2Mqtt(topic_base("site/a/zigbee2mqtt/+"), registry(Z2M_TYPES))
    r = one(adapter.read("site/a/zigbee2mqtt/remote", dumps({"action": "long"})))
    assert (r.device_id, r.gesture) == ("remote", "long")
    assert adapter.read("site/a/zigbee2mqtt/bridge/state", b"online") == []


# --------------------------------------------------------------------------- rtl_433

ALL_FILES = [HONEYWELL_5811, HONEYWELL_DW10, EV1527]
EVERY_TRANSMISSION = DeviceType(press_when={})


@pytest.mark.parametrize(
    ("name", "device_id", "lines"),
    [
        (HONEYWELL_5811, "rtl433:honeywell-security:8:698779", 6),
        (HONEYWELL_DW10, "rtl433:honeywell-security:10:73942", 6),
        (EV1527, "rtl433:smoke-gs558:27111", 1),
    ],
)
def test_rtl433_each_file_is_one_transmission(name: str, device_id: str, lines: int) -> None:
    payloads = rtl_lines(name)
    assert len(payloads) == lines
    for type_of in (unknown, registry({device_id: EVERY_TRANSMISSION})):
        readings = [one(Rtl433("rtl_433", type_of).read("rtl_433/events", p)) for p in payloads]
        assert {r.device_id for r in readings} == {device_id}
        assert len({r.dedup_key for r in readings}) == 1
        assert all(r.spoofable for r in readings)
    # A registered fixed-code device presses on every transmission; one key for all repeats.
    pressed = [
        one(Rtl433("rtl_433", registry({device_id: EVERY_TRANSMISSION})).read("t", p))
        for p in payloads
    ]
    keys = {r.dedup_key for r in pressed}
    assert len(keys) == 1
    (key,) = keys
    assert key is not None and key.startswith(f"rtl433:{device_id}:")
    assert all(r.gesture == "single" and r.frame_key is None for r in pressed)


def test_rtl433_repeats_differing_in_signal_levels_are_one_transmission() -> None:
    adapter = Rtl433("rtl_433", registry({"rtl433:smoke-gs558:27111": EVERY_TRANSMISSION}))
    variants = [
        rtl_event(EV1527),
        rtl_event(EV1527, time="2024-05-01 10:00:00", rssi=-0.1, snr=20.5, noise=-20.6),
        rtl_event(EV1527, time="@1.2s", freq=433.92, mod="ASK", protocol=86),
        rtl_event(EV1527, freq1=433.91, freq2=433.93, rssi=-12.0),
    ]
    keys = {one(adapter.read("t", p)).dedup_key for p in variants}
    assert len(keys) == 1 and None not in keys


@pytest.mark.parametrize(
    ("model", "ident", "channel", "device_id"),
    [
        ("Honeywell-Security", 73942, 10, "rtl433:honeywell-security:10:73942"),
        ("Smoke-GS558", 27111, None, "rtl433:smoke-gs558:27111"),
        ("Acurite-Tower", 1234, "A", "rtl433:acurite-tower:a:1234"),
        ("Generic-Remote", "0xABCD", None, "rtl433:generic-remote:0xabcd"),
        ("Some Model/v2", 7, 0, "rtl433:some-model-v2:0:7"),
        ("EV1527", 0, None, "rtl433:ev1527:0"),
    ],
)
def test_rtl433_device_id_of(model: str, ident: Any, channel: Any, device_id: str) -> None:
    assert device_id_of(model, ident, channel) == device_id
    assert device_id == device_id.lower()


HONEYWELL_DW10_ID = "rtl433:honeywell-security:10:73942"
EV1527_ID = "rtl433:smoke-gs558:27111"


@pytest.mark.parametrize(
    ("payload", "types", "pressed"),
    [
        # default press_when {"alarm": 1}: the real Honeywell events (alarm 0) are no press
        (rtl_event(HONEYWELL_5811), {}, False),
        (rtl_event(HONEYWELL_DW10), {}, False),
        (rtl_event(HONEYWELL_DW10), {HONEYWELL_DW10_ID: DeviceType()}, False),
        (rtl_event(EV1527), {}, False),  # no alarm field at all
        (rtl_event(HONEYWELL_DW10, alarm=1), {}, True),
        (rtl_event(HONEYWELL_DW10, alarm=True), {}, True),
        (rtl_event(HONEYWELL_DW10, alarm=1, heartbeat=1), {}, False),
        # press_when {}: every transmission that is not a heartbeat
        (rtl_event(HONEYWELL_DW10), {HONEYWELL_DW10_ID: EVERY_TRANSMISSION}, True),
        (rtl_event(EV1527), {EV1527_ID: EVERY_TRANSMISSION}, True),
        (rtl_event(HONEYWELL_DW10, heartbeat=1), {HONEYWELL_DW10_ID: EVERY_TRANSMISSION}, False),
        (rtl_event(EV1527, heartbeat="1"), {EV1527_ID: EVERY_TRANSMISSION}, False),
        (rtl_event(EV1527, heartbeat=True), {EV1527_ID: EVERY_TRANSMISSION}, False),
        (rtl_event(EV1527, heartbeat=0), {EV1527_ID: EVERY_TRANSMISSION}, True),
        # press_when {"state": "open"}
        (
            rtl_event(HONEYWELL_DW10),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open"})},
            True,
        ),
        (
            rtl_event(HONEYWELL_DW10, state="closed"),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open"})},
            False,
        ),
        (
            rtl_event(HONEYWELL_DW10, state=None),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open"})},
            False,
        ),
        (
            rtl_event(HONEYWELL_DW10, heartbeat=1),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open"})},
            False,
        ),
        # several fields: all must match
        (
            rtl_event(HONEYWELL_DW10),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open", "contact_open": 1})},
            True,
        ),
        (
            rtl_event(HONEYWELL_DW10),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"state": "open", "alarm": 1})},
            False,
        ),
        # value kinds: flags, numbers, strings
        (
            rtl_event(HONEYWELL_DW10),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"contact_open": True})},
            True,
        ),
        (
            rtl_event(HONEYWELL_DW10),
            {HONEYWELL_DW10_ID: DeviceType(press_when={"alarm": False})},
            True,
        ),
        (rtl_event(EV1527), {EV1527_ID: DeviceType(press_when={"unit": 22})}, True),
        (rtl_event(EV1527), {EV1527_ID: DeviceType(press_when={"unit": 21})}, False),
        (rtl_event(EV1527), {EV1527_ID: DeviceType(press_when={"code": "8d3cf6"})}, True),
        (rtl_event(EV1527), {EV1527_ID: DeviceType(press_when={"code": "8d3cf7"})}, False),
        (rtl_event(EV1527, unit="22"), {EV1527_ID: DeviceType(press_when={"unit": 22})}, True),
    ],
)
def test_rtl433_press_when(payload: bytes, types: dict[str, DeviceType], pressed: bool) -> None:
    r = one(Rtl433("rtl_433", registry(types)).read("rtl_433/events", payload))
    assert r.gesture == ("single" if pressed else None)
    assert (r.dedup_key is not None) is pressed
    assert r.spoofable is True


@pytest.mark.parametrize(
    ("payload", "battery_low", "tamper", "heartbeat", "rssi"),
    [
        (rtl_event(HONEYWELL_5811), False, True, False, None),
        (rtl_event(HONEYWELL_DW10), False, False, False, None),
        (rtl_event(HONEYWELL_DW10, battery_ok=0), True, False, False, None),
        (rtl_event(HONEYWELL_DW10, battery_ok=0, tamper=1, heartbeat=1), True, True, True, None),
        (rtl_event(HONEYWELL_DW10, battery_ok=None, tamper=None), None, None, False, None),
        (rtl_event(EV1527), None, None, False, None),
        (rtl_event(EV1527, rssi=-7.6), None, None, False, -7),
    ],
)
def test_rtl433_health(
    payload: bytes, battery_low: bool | None, tamper: bool | None, heartbeat: bool, rssi: int | None
) -> None:
    r = one(Rtl433("rtl_433", unknown).read("rtl_433/events", payload))
    assert (r.battery_low, r.tamper, r.heartbeat, r.rssi_dbm) == (
        battery_low,
        tamper,
        heartbeat,
        rssi,
    )
    assert r.spoofable is True
    assert r.battery_pct is None and r.available is None and r.fix is None


@pytest.mark.parametrize("name", ALL_FILES)
def test_rtl433_every_reading_is_spoofable(name: str) -> None:
    device_id = one(Rtl433("", unknown).read("t", rtl_lines(name)[0])).device_id
    for type_of in (unknown, registry({device_id: EVERY_TRANSMISSION})):
        for payload in rtl_lines(name):
            assert one(Rtl433("rtl_433", type_of).read("rtl_433/events", payload)).spoofable


@pytest.mark.parametrize(
    ("changes", "same"),
    [
        ({"time": "@9.9s"}, True),
        ({"rssi": -3.1, "snr": 9.0, "noise": -12.1}, True),
        ({"alarm": 1}, False),
        ({"tamper": 0}, False),
        ({"battery_ok": 0}, False),
        ({"event": 128}, False),
        ({"state": "closed"}, False),
    ],
)
def test_rtl433_dedup_key(changes: dict[str, Any], same: bool) -> None:
    adapter = Rtl433(
        "rtl_433", registry({"rtl433:honeywell-security:8:698779": EVERY_TRANSMISSION})
    )
    a = one(adapter.read("t", rtl_event(HONEYWELL_5811)))
    b = one(adapter.read("t", rtl_event(HONEYWELL_5811, **changes)))
    assert a.dedup_key is not None and b.dedup_key is not None
    assert (a.dedup_key == b.dedup_key) is same


def test_rtl433_alarm_change_makes_a_new_transmission_under_default_press_when() -> None:
    adapter = Rtl433("rtl_433", unknown)
    first = one(adapter.read("t", rtl_event(HONEYWELL_DW10, alarm=1)))
    second = one(adapter.read("t", rtl_event(HONEYWELL_DW10, alarm=1, event=161)))
    assert first.dedup_key is not None and second.dedup_key is not None
    assert first.dedup_key != second.dedup_key


@pytest.mark.parametrize(
    "payload",
    [
        rtl_event(EV1527, model=None),
        rtl_event(EV1527, id=None),
        dumps({"time": "@0.1s"}),
        dumps({"model": 5, "id": 1}),
        dumps({"model": "X", "id": None}),
        dumps({"model": "X", "id": True}),
        dumps({"model": "X", "id": {"a": 1}}),
        dumps({"model": "X", "id": [1]}),
        b"not json",
        b"[]",
        b"\xff",
    ],
)
def test_rtl433_unreadable(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        Rtl433("rtl_433", unknown).read("rtl_433/events", payload)


def test_rtl433_detail_names_the_device_for_a_technician() -> None:
    r = one(Rtl433("rtl_433", unknown).read("t", rtl_event(EV1527)))
    assert r.detail.startswith("rtl_433 ") and "Smoke-GS558" in r.detail and "27111" in r.detail


# --------------------------------------------------------------------------- json

PENDANT_TYPE = DeviceType(
    raise_gestures=["single"],
    cancel_gestures=["double"],
    actions={"SOS": "single", "cancel": "double", "emergency": "single"},
)
JSON_TYPES = {"pendant-7": PENDANT_TYPE}
NESTED = JsonFields(
    device_id="dev.id",
    gesture="evt.kind",
    counter="evt.seq",
    latitude="pos.lat",
    longitude="pos.lon",
    accuracy="pos.acc",
    battery="power.pct",
)


def json_adapter(fields: JsonFields | None = None) -> JsonPayload:
    return JsonPayload(fields or JsonFields(), registry(JSON_TYPES))


@pytest.mark.parametrize(
    ("fields", "payload", "device_id", "gesture"),
    [
        (JsonFields(), {"id": "pendant-7", "gesture": "single"}, "pendant-7", "single"),
        (JsonFields(), {"id": "pendant-7", "gesture": "double"}, "pendant-7", "double"),
        (JsonFields(), {"id": "pendant-7", "gesture": "long"}, "pendant-7", "long"),
        (JsonFields(), {"id": "pendant-7", "gesture": "hold"}, "pendant-7", "hold"),
        (JsonFields(), {"id": "pendant-7", "gesture": "SOS"}, "pendant-7", "single"),
        (JsonFields(), {"id": "pendant-7", "gesture": "cancel"}, "pendant-7", "double"),
        (JsonFields(), {"id": "pendant-7", "gesture": "sos"}, "pendant-7", None),
        (JsonFields(), {"id": "pendant-7", "gesture": "Single"}, "pendant-7", None),
        (JsonFields(), {"id": "pendant-7", "gesture": ""}, "pendant-7", None),
        (JsonFields(), {"id": "pendant-7", "gesture": 1}, "pendant-7", None),
        (JsonFields(), {"id": "pendant-7"}, "pendant-7", None),
        (JsonFields(), {"id": "PENDANT-7", "gesture": "SOS"}, "pendant-7", "single"),
        # an unknown device: gesture names, and the default (panic) actions of a type
        (JsonFields(), {"id": "other", "gesture": "single"}, "other", "single"),
        (JsonFields(), {"id": "other", "gesture": "emergency"}, "other", "single"),
        (JsonFields(), {"id": "other", "gesture": "SOS"}, "other", None),
        # configured field names
        (JsonFields(device_id="dev", gesture="press"), {"dev": "X", "press": "long"}, "x", "long"),
        (JsonFields(gesture=None), {"id": "pendant-7", "gesture": "single"}, "pendant-7", None),
        (NESTED, {"dev": {"id": "pendant-7"}, "evt": {"kind": "SOS"}}, "pendant-7", "single"),
        (NESTED, {"dev": {"id": 42}, "evt": {"kind": "double"}}, "42", "double"),
        (NESTED, {"dev": {"id": "a"}, "evt": "single"}, "a", None),  # not an object: absent
        (NESTED, {"dev": {"id": "a"}, "evt.kind": "single"}, "a", None),  # a path, not a key
    ],
)
def test_json_gesture(
    fields: JsonFields, payload: dict[str, Any], device_id: str, gesture: str | None
) -> None:
    r = one(json_adapter(fields).read("alarms/in", dumps(payload)))
    assert (r.device_id, r.gesture) == (device_id, gesture)
    assert (r.dedup_key is not None) == (gesture is not None)
    assert r.spoofable is False


@pytest.mark.parametrize(
    ("raw_id", "device_id"),
    [
        (1234, "1234"),
        (0, "0"),
        ("ABC-01", "abc-01"),
        ("already-lower", "already-lower"),
    ],
)
def test_json_device_ids(raw_id: str | int, device_id: str) -> None:
    r = one(json_adapter().read("t", dumps({"id": raw_id, "gesture": "single"})))
    assert r.device_id == device_id
    assert isinstance(r.device_id, str)


@pytest.mark.parametrize(
    ("fields", "payload"),
    [
        (JsonFields(), {"gesture": "single"}),
        (JsonFields(), {"id": "", "gesture": "single"}),
        (JsonFields(), {"id": None, "gesture": "single"}),
        (JsonFields(), {"id": True, "gesture": "single"}),
        (JsonFields(), {"id": 1.5, "gesture": "single"}),
        (JsonFields(), {"id": ["a"], "gesture": "single"}),
        (JsonFields(), {"id": {"x": 1}, "gesture": "single"}),
        (JsonFields(device_id="serial"), {"id": "a", "gesture": "single"}),
        (NESTED, {"dev": "a", "evt": {"kind": "single"}}),
        (NESTED, {"dev": {}, "evt": {"kind": "single"}}),
    ],
)
def test_json_missing_device_id(fields: JsonFields, payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        json_adapter(fields).read("t", dumps(payload))


@pytest.mark.parametrize("payload", [b"", b"nope", b"[]", b'[{"id": "a"}]', b'"a"', b"\xff"])
def test_json_not_an_object(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        json_adapter().read("t", payload)


COUNTED = JsonFields(counter="n")


@pytest.mark.parametrize(
    ("fields", "payload", "dedup_key", "frame_key", "counter"),
    [
        (COUNTED, {"id": "pendant-7", "gesture": "SOS", "n": 17}, "json:pendant-7:c17", True, 17),
        (COUNTED, {"id": "P", "gesture": "single", "n": 0}, "json:p:c0", True, 0),
        (COUNTED, {"id": 9, "gesture": "single", "n": 3.0}, "json:9:c3", True, 3),
        (
            NESTED,
            {"dev": {"id": "pendant-7"}, "evt": {"kind": "double", "seq": 5}},
            "json:pendant-7:c5",
            True,
            5,
        ),
        # no usable counter: a content digest, and no frame key
        (COUNTED, {"id": "a", "gesture": "single"}, None, False, None),
        (COUNTED, {"id": "a", "gesture": "single", "n": "17"}, None, False, None),
        (COUNTED, {"id": "a", "gesture": "single", "n": True}, None, False, None),
        (JsonFields(), {"id": "a", "gesture": "single", "n": 17}, None, False, None),
    ],
)
def test_json_keys(
    fields: JsonFields,
    payload: dict[str, Any],
    dedup_key: str | None,
    frame_key: bool,
    counter: int | None,
) -> None:
    r = one(json_adapter(fields).read("t", dumps(payload)))
    assert r.counter == counter
    if frame_key:
        assert r.dedup_key == r.frame_key == dedup_key
    else:
        assert r.frame_key is None
        assert r.dedup_key is not None
        assert r.dedup_key == f"json:{r.device_id}:{digest(payload, ())}"


def test_json_content_digest() -> None:
    adapter = json_adapter()
    a = one(adapter.read("t", dumps({"id": "a", "gesture": "single", "ts": 1})))
    again = one(adapter.read("t", dumps({"ts": 1, "gesture": "single", "id": "a"})))
    later = one(adapter.read("t", dumps({"id": "a", "gesture": "single", "ts": 2})))
    other = one(adapter.read("t", dumps({"id": "b", "gesture": "single", "ts": 1})))
    assert a.dedup_key == again.dedup_key
    assert len({a.dedup_key, later.dedup_key, other.dedup_key}) == 3


def test_json_counter_without_gesture_is_kept_but_makes_no_key() -> None:
    r = one(json_adapter(COUNTED).read("t", dumps({"id": "a", "n": 4})))
    assert (r.gesture, r.counter, r.dedup_key, r.frame_key) == (None, 4, None, None)


POSITIONED = JsonFields(latitude="lat", longitude="lon", accuracy="acc")


@pytest.mark.parametrize(
    ("fields", "payload", "fix"),
    [
        (POSITIONED, {"lat": 51.5, "lon": -0.12, "acc": 8}, (51.5, -0.12, 8.0)),
        (POSITIONED, {"lat": 51.5, "lon": -0.12}, (51.5, -0.12, UNKNOWN_ACCURACY_M)),
        (POSITIONED, {"lat": 51.5, "lon": -0.12, "acc": None}, (51.5, -0.12, 100.0)),
        (POSITIONED, {"lat": "51.5", "lon": "-0.12", "acc": "8.5"}, (51.5, -0.12, 8.5)),
        (POSITIONED, {"lat": -90, "lon": 180, "acc": 0.5}, (-90.0, 180.0, 0.5)),
        (POSITIONED, {"lat": 0, "lon": 0}, (0.0, 0.0, 100.0)),
        (POSITIONED, {}, None),
        (POSITIONED, {"lat": None, "lon": None}, None),
        (JsonFields(latitude="lat", longitude="lon"), {"lat": 1, "lon": 2, "acc": 5}, (1, 2, 100)),
        (JsonFields(latitude="lat"), {"lat": 1, "lon": 2}, None),  # no longitude field: none
        (JsonFields(), {"lat": 1, "lon": 2}, None),
        (
            NESTED,
            {"dev": {"id": "a"}, "pos": {"lat": 48.85, "lon": 2.35, "acc": 12}},
            (48.85, 2.35, 12.0),
        ),
        (NESTED, {"dev": {"id": "a"}, "pos": {"lat": 48.85, "lon": 2.35}}, (48.85, 2.35, 100.0)),
    ],
)
def test_json_position(
    fields: JsonFields, payload: dict[str, Any], fix: tuple[float, float, float] | None
) -> None:
    payload = {"id": "a", **payload}
    r = one(json_adapter(fields).read("t", dumps(payload)))
    assert r.fix == fix
    assert r.gesture is None  # a position alone is no press


def test_json_press_with_position() -> None:
    fields = JsonFields(latitude="lat", longitude="lon", counter="n")
    payload = {"id": "pendant-7", "gesture": "SOS", "n": 2, "lat": 1.5, "lon": 2.5}
    r = one(json_adapter(fields).read("t", dumps(payload)))
    assert (r.gesture, r.dedup_key, r.fix) == ("single", "json:pendant-7:c2", (1.5, 2.5, 100.0))


@pytest.mark.parametrize(
    "payload",
    [
        {"lat": 90.01, "lon": 0},
        {"lat": -91, "lon": 0},
        {"lat": 0, "lon": 180.5},
        {"lat": 0, "lon": -181},
        {"lat": 1, "lon": 2, "acc": 0},
        {"lat": 1, "lon": 2, "acc": -5},
        {"lat": 1, "lon": 2, "acc": "inf"},
        {"lat": "nan", "lon": 2},
        {"lat": 1, "lon": 2, "acc": "nan"},
        {"lat": 1},  # half a position
        {"lon": 2},
        {"lat": "north", "lon": 2},
        {"lat": [1], "lon": 2},
        {"lat": {"deg": 1}, "lon": 2},
        {"lat": 1, "lon": 2, "acc": "good"},
        {"lat": True, "lon": False},  # booleans are no coordinates
        {"lat": 1, "lon": 2, "acc": True},
    ],
)
def test_json_bad_position(payload: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        json_adapter(POSITIONED).read("t", dumps({"id": "a", "gesture": "single", **payload}))


@pytest.mark.parametrize(
    ("payload", "battery"),
    [
        ({"power": {"pct": 64}}, 64),
        ({"power": {"pct": 0}}, 0),
        ({"power": {"pct": 100}}, 100),
        ({"power": {"pct": 101}}, None),
        ({"power": {"pct": -1}}, None),
        ({"power": {"pct": "64"}}, None),
        ({}, None),
    ],
)
def test_json_battery(payload: dict[str, Any], battery: int | None) -> None:
    r = one(json_adapter(NESTED).read("t", dumps({"dev": {"id": "a"}, **payload})))
    assert r.battery_pct == battery


def test_json_detail_names_topic_and_payload() -> None:
    r = one(json_adapter().read("alarms/in", dumps({"id": "a", "gesture": "single"})))
    assert r.detail.startswith("json on alarms/in: ") and '"id": "a"' in r.detail

"""What the fleet status carries, and what it never does, from a status full of secrets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway.config.models import StatusMqttSettings
from gateway.mqtt_status import (
    COALESCE_S,
    FLEET_COUNTERS,
    StatusPublisher,
    offline_payload,
    status_payload,
)
from gateway.status import InputHealth, StatusModel

RESPONDER_WORDS = "Responder: Mrs Nomsa Dlamini at 12 Long Street is safe, gate code 4471"
REFUSAL = "403 customer 1002 (Nomsa Dlamini) has no active subscription"
NEIGHBOUR_DETAIL = "zigbee2mqtt neighbours_button at 14 Long Street"


def sensitive_status() -> StatusModel:
    status = StatusModel(devices=3)
    status.set_uplink("down", "AURA unreachable: timed out")
    status.pending_alarms = 2
    status.open_callouts = {"inc-bbb": "Responder Dispatched", "inc-aaa": "created"}
    status.callout_events = {"inc-bbb": {"count": 3, "last": RESPONDER_WORDS}}
    status.failed_incidents = {"inc-ccc": REFUSAL}
    status.inputs["receiver"] = InputHealth(
        connected=False, state="lost", last_frame_age_s=42.5, frames_ok=9, error="no frame"
    )
    status.inputs["broker"] = InputHealth(connected=True, state="ok", last_frame_age_s=0.3)
    status.device_seen("sos_button_2", available=False, battery_pct=11, low=True)
    status.device_seen("00a1b2c3", tamper=True, battery_pct=80)
    status.device_seen("00a1b2c4", available=True)
    status.unknown_device("neighbours_button", "mqtt:broker", press=True, detail=NEIGHBOUR_DETAIL)
    status.journal = {"used_bytes": 4096, "disk_bytes": 8192, "fill_pct": 12.5}
    for name in (*FLEET_COUNTERS, "frames_ok", "presses_attached"):
        status.count(name, 3)
    return status


def leaves(value: Any, keys: list[str] | None = None) -> tuple[list[str], list[Any]]:
    """Every key and every leaf value, however deep."""
    keys = [] if keys is None else keys
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            keys.append(key)
            found += leaves(item, keys)[1]
    elif isinstance(value, list):
        for item in value:
            found += leaves(item, keys)[1]
    else:
        found.append(value)
    return keys, found


def test_payload_carries_the_health_a_fleet_watches() -> None:
    payload = status_payload(sensitive_status(), "shop-cpt-01", now=1_700_000_000.0)
    assert payload["state"] == "online"
    assert payload["gateway"] == "shop-cpt-01"
    assert payload["published_wall"] == 1_700_000_000.0
    assert payload["summary"].startswith("uplink down, 2 queued, 3 devices, 2 open callouts")
    assert "1 UNDELIVERABLE" in payload["summary"]
    assert "receiver lost" in payload["summary"]
    assert payload["uplink"] == {"state": "down", "error": "AURA unreachable: timed out"}
    assert payload["pending_alarms"] == 2
    assert payload["open_callouts"] == [
        {"incident": "inc-aaa", "stage": "created"},
        {"incident": "inc-bbb", "stage": "Responder Dispatched"},
    ]
    assert payload["undeliverable"] == 1
    assert payload["inputs"] == {
        "broker": {"state": "ok", "error": None, "last_frame_age_s": 0.3},
        "receiver": {"state": "lost", "error": "no frame", "last_frame_age_s": 42.5},
    }
    assert payload["devices_configured"] == 3
    assert payload["devices_silent"] == ["sos_button_2"]
    assert payload["devices_battery_low"] == ["sos_button_2"]
    assert payload["devices_tampered"] == ["00a1b2c3"]
    assert payload["unknown_devices"] == 1
    assert payload["journal_fill_pct"] == 12.5
    assert payload["counters"] == dict.fromkeys(FLEET_COUNTERS, 3)
    # It goes out as JSON: everything in it must survive the trip unchanged.
    assert json.loads(json.dumps(payload)) == payload


def test_payload_never_carries_personal_data_or_free_text() -> None:
    payload = status_payload(sensitive_status(), "shop-cpt-01")
    text = json.dumps(payload)
    keys, values = leaves(payload)
    # A responder's words, AURA's refusal text and an unknown device's message: left out.
    for words in (RESPONDER_WORDS, REFUSAL, NEIGHBOUR_DETAIL, "Dlamini", "Long Street", "4471"):
        assert words not in text
    assert "neighbours_button" not in text  # an unknown device is a count, not an id
    assert not [k for k in keys if "customer" in k or k in ("last", "detail", "label")]
    assert not [k for k in keys if k in ("latitude", "longitude", "lat", "lon", "location")]
    assert 1002 not in values
    # Only the fleet's counters, not the technician's full set.
    assert "frames_ok" not in payload["counters"]
    assert "presses_attached" not in payload["counters"]


def test_empty_status_is_a_complete_payload() -> None:
    payload = status_payload(StatusModel(), "gw")
    assert payload["open_callouts"] == []
    assert payload["inputs"] == {}
    assert payload["devices_silent"] == []
    assert payload["journal_fill_pct"] is None
    assert payload["counters"] == dict.fromkeys(FLEET_COUNTERS, 0)
    assert payload["summary"] == "starting, 0 queued, 0 devices, 0 open callouts"


def test_offline_payload_names_the_gateway_and_why() -> None:
    assert offline_payload("gw", "stopped") == {
        "state": "offline",
        "gateway": "gw",
        "reason": "stopped",
    }


# --------------------------------------------------------------------------- the publisher


class FakeLink:
    """Stands in for the broker connection: connected, recording what is published."""

    def __init__(self) -> None:
        self.name = "status"
        self.client = None  # no paho client: a stop has nobody to say goodbye to
        self.sent: list[tuple[str, dict[str, Any], bool]] = []
        self.published = asyncio.Event()

    async def run(self) -> None:
        await asyncio.Event().wait()  # connected until cancelled

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.sent.append((topic, json.loads(payload), retain))
        self.published.set()
        return True


def publisher(
    status: StatusModel, interval_s: float = 3600, name: str = "gw-7"
) -> tuple[StatusPublisher, FakeLink]:
    config = SimpleNamespace(
        gateway=SimpleNamespace(gateway=SimpleNamespace(name=name), inputs=[]),
        credentials=SimpleNamespace(mqtt_passwords={}),
        path=Path("/etc/aura-gateway/gateway.toml"),
    )
    settings = StatusMqttSettings(interval_s=interval_s)
    pub = StatusPublisher(settings, status, config)  # type: ignore[arg-type]
    link = FakeLink()
    pub.link = link  # type: ignore[assignment]
    return pub, link


async def next_publish(link: FakeLink, within_s: float = 2.0) -> None:
    link.published.clear()
    await asyncio.wait_for(link.published.wait(), within_s)


async def test_a_burst_of_changes_is_one_message_and_the_next_waits_its_turn() -> None:
    status = StatusModel()
    pub, link = publisher(status)
    assert pub.topic == "aura-gateway/gw-7/status"
    task = asyncio.create_task(pub.run())
    try:
        for n in range(100):  # one press touches several parts within a millisecond
            status.pending_alarms = n
            status.changed()
        await next_publish(link)
        assert len(link.sent) == 1
        assert link.sent[0][0] == "aura-gateway/gw-7/status"
        assert link.sent[0][1]["pending_alarms"] == 99 and link.sent[0][2] is True
        # More changes right away: held back, then sent together once the pause is over.
        started = time.monotonic()
        for n in range(100, 200):
            status.pending_alarms = n
            status.changed()
        await next_publish(link)
        assert time.monotonic() - started >= COALESCE_S * 0.8
        assert len(link.sent) == 2 and link.sent[1][1]["pending_alarms"] == 199
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unchanged_status_is_republished_every_interval() -> None:
    status = StatusModel()
    pub, link = publisher(status, interval_s=1)
    task = asyncio.create_task(pub.run())
    try:
        await next_publish(link, 2.0)  # the first, without any change
        started = time.monotonic()
        await next_publish(link, 2.0)
        assert 0.8 <= time.monotonic() - started <= 1.5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_gateway_name_with_topic_characters_stays_one_level_of_a_valid_topic() -> None:
    # paho raises on a wildcard in a publish topic: that must not end the daemon.
    pub, _link = publisher(StatusModel(), name="shop/+#1")
    assert pub.topic == "aura-gateway/shop___1/status"
    assert status_payload(StatusModel(), "shop/+#1")["gateway"] == "shop/+#1"

"""Device supervision through the real daemon: a button that stops checking in is silent
(status file, log, `aura-gateway devices`), a heartbeat recovers it, and a silence survives
a power cut until the button speaks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import SIM_DEVICE_KEYS
from gateway.sandbox import AuraSandbox
from tests.mosquitto_service import Mosquitto

from .conftest import DaemonRunner
from .test_mqtt_input import DEVICES as MQTT_DEVICES
from .test_mqtt_input import RTL_BUTTON, Z2M_BUTTON, Gateway

DESK = 0x00A1B2C4
DESK_ID = "00a1b2c4"
SHOP_ID = "00c0ffee"  # not supervised: never silent


def devices_file(path: Path, interval_s: float, missed: int = 2) -> Path:
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "beacon-desk": {
                        "raise_gestures": ["single"],
                        "checkin_interval_s": interval_s,
                        "missed_checkins": missed,
                    },
                    "shop-button": {"raise_gestures": ["single"]},
                },
                "devices": [
                    {
                        "id": DESK_ID,
                        "type": "beacon-desk",
                        "label": "Desk button, checks in",
                        "route": "customer",
                        "customer_id": 1003,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    },
                    {
                        "id": SHOP_ID,
                        "type": "shop-button",
                        "label": "Shop till",
                        "route": "site",
                        "site_ref": "SHOP-CPT-001",
                    },
                ],
            }
        )
    )
    return path


def configure(runner: DaemonRunner, tmp_path: Path, interval_s: float) -> Path:
    keys = {dev: SIM_DEVICE_KEYS[dev] for dev in (DESK_ID, SHOP_ID)}
    return runner.write_config(
        devices_file=devices_file(tmp_path / "devices.toml", interval_s), device_keys=keys
    )


def desk(status: dict[str, Any]) -> dict[str, Any]:
    return status.get("devices_seen", {}).get(DESK_ID) or {}


def devices_cli(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", "devices", *extra, "--config", str(config_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def cli_rows(config_path: Path) -> dict[str, dict[str, Any]]:
    done = devices_cli(config_path, "--json")
    assert done.returncode == 0, done.stderr
    return {row["id"]: row for row in json.loads(done.stdout)["devices"]}


def test_silent_button_is_reported_and_a_heartbeat_recovers_it(
    daemon_runner: DaemonRunner, receiver: SimulatedReceiver, tmp_path: Path
) -> None:
    config_path = configure(daemon_runner, tmp_path, interval_s=0.5)  # silent after 1 s
    daemon = daemon_runner.start()
    silent = daemon.wait_event("device_silent", 5)
    assert silent["device"] == DESK_ID
    status = daemon_runner.wait_status(lambda s: desk(s).get("silent") is True, 5)
    assert "not heard since the gateway started" in desk(status)["silent_reason"]
    assert "1 device silent" in status["summary"]

    rows = cli_rows(config_path)
    assert rows[DESK_ID]["silent"] is True and rows[DESK_ID]["silent_reason"]
    assert rows[DESK_ID]["route"] == "customer 1003"
    assert rows[SHOP_ID]["silent"] is False  # not supervised
    human = devices_cli(config_path)
    assert human.returncode == 0, human.stderr
    assert "SILENT" in human.stdout and "Shop till" in human.stdout

    receiver.device_status(DESK, battery_pct=77)  # the button's heartbeat
    recovered = daemon.wait_event("device_recovered", 5)
    assert recovered["device"] == DESK_ID
    # Nothing more from it: after two missed check-ins it is silent again, said again.
    again = daemon.wait_event("device_silent", 5)
    assert "no check-in for" in again["reason"]
    status = daemon_runner.wait_status(lambda s: desk(s).get("silent") is True, 5)
    assert desk(status)["battery_pct"] == 77 and desk(status)["last_seen_wall"] is not None


def test_silence_survives_a_power_cut_until_the_button_speaks(
    daemon_runner: DaemonRunner, receiver: SimulatedReceiver, tmp_path: Path
) -> None:
    configure(daemon_runner, tmp_path, interval_s=0.5)
    daemon = daemon_runner.start()
    daemon_runner.wait_status(lambda s: desk(s).get("silent") is True, 5)
    daemon.kill()  # SIGKILL: nothing runs on the way down

    # Back with a long interval, so no timer can explain a silence after the restart.
    config_path = configure(daemon_runner, tmp_path, interval_s=60)
    restarted = daemon_runner.start()
    still = restarted.wait_event("device_still_silent", 1)
    assert still["device"] == DESK_ID
    status = daemon_runner.wait_status(
        lambda s: s["pid"] == restarted.proc.pid and desk(s).get("silent") is True, 5
    )
    reason = desk(status)["silent_reason"]
    assert reason.startswith("silent since before the restart: not heard since the gateway")
    assert cli_rows(config_path)[DESK_ID]["silent"] is True

    receiver.device_status(DESK)
    restarted.wait_event("device_recovered", 5)
    status = daemon_runner.wait_status(lambda s: desk(s).get("silent") is False, 5)
    assert "device silent" not in status["summary"]
    assert cli_rows(config_path)[DESK_ID]["silent"] is False
    assert restarted.stop() == 0


def z2m(status: dict[str, Any]) -> dict[str, Any]:
    return status.get("devices_seen", {}).get(Z2M_BUTTON) or {}


@pytest.fixture
def mqtt_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Mosquitto]]:
    """The daemon on a real mosquitto, as in test_mqtt_input (no radio receiver)."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        with AuraSandbox() as sandbox:
            gw = Gateway(tmp_path, sandbox, broker)
            try:
                yield gw, broker
            finally:
                for daemon in gw.processes:
                    daemon.stop()
    finally:
        broker.stop()


def test_mqtt_heartbeats_and_availability_drive_supervision(
    mqtt_gateway: tuple[Gateway, Mosquitto],
) -> None:
    """An rtl_433 heartbeat is a check-in; zigbee2mqtt availability offline is silent at
    once (its type is not even supervised by time) and online recovers it."""
    gateway, broker = mqtt_gateway
    gateway.configure()
    devices = dict(MQTT_DEVICES)
    devices["device_types"] = {
        "zigbee-sos": MQTT_DEVICES["device_types"]["zigbee-sos"],
        "honeywell-pendant": {
            **MQTT_DEVICES["device_types"]["honeywell-pendant"],
            "press_when": {"alarm": 1},  # a heartbeat is never a press anyway
            "checkin_interval_s": 0.5,
            "missed_checkins": 2,
        },
    }
    (gateway.workdir / "devices.toml").write_text(tomli_w.dumps(devices))
    daemon = gateway.start()
    silent = daemon.wait_event("device_silent", 5)
    assert silent["device"] == RTL_BUTTON
    radio = broker.client("rtl433")
    heartbeat = {"model": "Honeywell-Security", "id": 73942, "channel": 10, "event": 4}
    radio.publish("rtl_433/pi/events", json.dumps({**heartbeat, "heartbeat": 1, "alarm": 0}))
    assert daemon.wait_event("device_recovered", 5)["device"] == RTL_BUTTON

    bridge = broker.client("z2m-bridge")
    bridge.publish(f"zigbee2mqtt/{Z2M_BUTTON}/availability", '{"state":"offline"}', retain=True)
    offline = daemon.wait_event("device_silent", 5)
    while offline["device"] != Z2M_BUTTON:  # the rtl button may go silent again meanwhile
        offline = daemon.wait_event("device_silent", 5)
    assert "unavailable" in offline["reason"]
    status = gateway.wait_status(lambda s: z2m(s).get("silent") is True, 5)
    assert z2m(status)["available"] is False
    bridge.publish(f"zigbee2mqtt/{Z2M_BUTTON}/availability", '{"state":"online"}', retain=True)
    recovered = daemon.wait_event("device_recovered", 5)
    while recovered["device"] != Z2M_BUTTON:
        recovered = daemon.wait_event("device_recovered", 5)
    gateway.wait_status(lambda s: z2m(s).get("silent") is False, 5)
    radio.close()
    bridge.close()

"""The gateway's status on a fleet broker, watched by a second client, as an operator would:
retained, current after a press, "offline" by its Last Will after SIGKILL and by its own
word after SIGTERM; never a credential or a customer's data. Real mosquitto (with a
password), the real daemon process, the AURA sandbox."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w

from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox, SandboxSeed
from tests.mosquitto_service import PASSWORD, USER, Mosquitto, TestClient

GATEWAY = "sim-gateway"  # [gateway] name in config/gateway.sim.toml
TOPIC = f"aura-gateway/{GATEWAY}/status"
FLEET_TOPIC = "aura-gateway/+/status"  # what an operator of many gateways subscribes to
PRESSED, SILENT = "sos_button_1", "sos_button_2"
LABEL_NAME = "Dlamini"  # a person's name in a device label: never on the fleet broker
GATEWAY_POSITION = (-33.9249, 18.4241)  # config/gateway.sim.toml: sent for a live press
DEVICES: dict[str, Any] = {
    "device_types": {
        "zigbee-sos": {"raise_gestures": ["single"], "actions": {"emergency": "single"}},
    },
    "devices": [
        {
            "id": PRESSED,
            "type": "zigbee-sos",
            "label": f"Bedside button, Mrs N. {LABEL_NAME}",
            "auth": "network",
            "route": "customer",
            "customer_id": 1001,
            "response_type_id": 1,
            "location": {"policy": "live"},  # no fix of its own: the gateway's position
        },
        {
            "id": SILENT,
            "type": "zigbee-sos",
            "label": f"Kitchen button, Mr {LABEL_NAME}",
            "auth": "network",
            "route": "customer",
            "customer_id": 1003,
            "response_type_id": 1,
            "location": {"policy": "fixed", "predefined_location_id": 501},
        },
    ],
}
FAST_AURA = {
    "poll_interval_s": 1.0,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 1.0,
    "timeouts": {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 1.0},
}
PRESS = json.dumps({"action": "emergency", "battery": 87, "linkquality": 120})


def body(message: mqtt.MQTTMessage) -> dict[str, Any]:
    return json.loads(message.payload)


def state_is(state: str, reason: str | None = None) -> Callable[[mqtt.MQTTMessage], bool]:
    def match(message: mqtt.MQTTMessage) -> bool:
        data = body(message)
        return data.get("state") == state and (reason is None or data.get("reason") == reason)

    return match


class Fleet:
    """One gateway with an MQTT button input and its status on the same (password) broker,
    and the operator's clients watching it."""

    def __init__(self, workdir: Path, sandbox: AuraSandbox, broker: Mosquitto) -> None:
        self.workdir = workdir
        self.sandbox = sandbox
        self.broker = broker
        self.daemons: list[DaemonProcess] = []
        self.clients: list[TestClient] = []
        devices = workdir / "devices.toml"
        devices.write_text(tomli_w.dumps(DEVICES))
        broker_settings = {
            "host": "127.0.0.1",
            "port": broker.port,
            "username": USER,
            "connect_timeout_s": 2.0,
            "reconnect_max_s": 1.0,
        }
        buttons = {
            "type": "mqtt",
            "name": "broker",
            **broker_settings,
            "subscriptions": [{"topic": "zigbee2mqtt/#", "adapter": "zigbee2mqtt"}],
        }
        path = write_sim_config(
            workdir,
            base_url=sandbox.base_url,
            port_path=str(workdir / "no-receiver"),
            aura=FAST_AURA,
            devices_file=devices,
            extra_inputs=[buttons],
            # interval_s long: every message the test waits for is sent because the status
            # changed, not because a timer happened to fire.
            status_mqtt={**broker_settings, "interval_s": 3600},
            mqtt_passwords={"broker": PASSWORD, "status": PASSWORD},
        )
        data = tomllib.loads(path.read_text())
        data["inputs"] = [i for i in data["inputs"] if i["type"] != "serial"]  # no receiver
        path.write_text(tomli_w.dumps(data))
        self.config_path = path

    def start(self) -> DaemonProcess:
        daemon = DaemonProcess(self.config_path, echo=lambda _line: None)
        self.daemons.append(daemon)
        daemon.wait_event("ready", 20)
        return daemon

    def watcher(self, client_id: str) -> TestClient:
        client = self.broker.client(client_id)
        self.clients.append(client)
        client.subscribe(FLEET_TOPIC)
        return client

    def retained_now(self, client_id: str) -> dict[str, Any]:
        """What an operator who subscribes now is handed by the broker."""
        fresh = self.watcher(client_id)
        return body(fresh.wait_for(lambda m: m.retain and m.topic == TOPIC, 5))

    def published(self) -> list[mqtt.MQTTMessage]:
        return [m for c in self.clients for m in c.messages]

    def logs(self) -> str:
        return "\n".join(line for d in self.daemons for line in d.history)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for daemon in self.daemons:
            daemon.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    broker = Mosquitto(tmp_path / "broker", password=True).start()
    try:
        with AuraSandbox() as sandbox:
            fleet = Fleet(tmp_path, sandbox, broker)
            try:
                yield fleet
            finally:
                fleet.close()
    finally:
        broker.stop()


def assert_nothing_private(messages: list[mqtt.MQTTMessage]) -> None:
    """No credential, customer id, device label or coordinate in anything published."""
    assert messages
    seed = SandboxSeed()
    for message in messages:
        text = message.payload.decode()
        for secret in (PASSWORD, seed.client_secret, seed.client_id, LABEL_NAME):
            assert secret not in text, text
        keys: list[str] = []
        values: list[Any] = []

        def walk(value: Any, keys: list[str] = keys, values: list[Any] = values) -> None:
            if isinstance(value, dict):
                keys.extend(value)
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            else:
                values.append(value)

        walk(json.loads(text))
        assert not [k for k in keys if "customer" in k or k in ("label", "last", "detail")]
        assert not [k for k in keys if k in ("latitude", "longitude", "location")]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        assert 1001 not in numbers and 1003 not in numbers, text
        for coordinate in GATEWAY_POSITION:
            assert not [v for v in numbers if abs(v - coordinate) < 0.01], text


def test_retained_status_follows_a_callout_and_says_stopped_on_sigterm(fleet: Fleet) -> None:
    monitor = fleet.watcher("fleet-monitor")
    daemon = fleet.start()
    online = body(monitor.wait_for(lambda m: m.topic == TOPIC and state_is("online")(m)))
    assert online["gateway"] == GATEWAY
    assert "online" in online["summary"] or "starting" in online["summary"]
    assert online["inputs"]["broker"]["state"] in ("starting", "ok")

    # An operator who starts watching later is handed the current status at once.
    late = fleet.retained_now("late-monitor")
    assert late["state"] == "online" and late["summary"]

    bridge = fleet.broker.client("z2m-bridge")
    fleet.clients.append(bridge)
    bridge.publish(f"zigbee2mqtt/{SILENT}/availability", json.dumps({"state": "offline"}))
    bridge.publish("zigbee2mqtt/neighbours_button", PRESS)
    bridge.publish(f"zigbee2mqtt/{PRESSED}", PRESS)
    raised = fleet.sandbox.wait_for(
        lambda reqs: any(r.path.endswith("/customers/1001/callouts") for r in reqs), 10
    )
    assert raised, fleet.logs()
    create = next(r for r in fleet.sandbox.requests() if r.path.endswith("/1001/callouts"))
    assert create.callout_id is not None
    assert "-33.92" in json.dumps(create.body)  # AURA got a position; the fleet must not

    def one_callout(message: mqtt.MQTTMessage) -> bool:
        data = body(message)
        return len(data.get("open_callouts", [])) == 1 and data["devices_silent"] == [SILENT]

    status = body(monitor.wait_for(one_callout))
    assert "1 open callout" in status["summary"]
    assert status["unknown_devices"] == 1
    assert status["counters"]["presses_raised"] == 1

    # AURA's stage moves on: the fleet sees it without waiting for the (hour-long) timer.
    fleet.sandbox.set_status(create.callout_id, "Responder Dispatched")
    dispatched = body(
        monitor.wait_for(
            lambda m: (
                [c["stage"] for c in body(m).get("open_callouts", [])] == ["Responder Dispatched"]
            )
        )
    )
    assert dispatched["state"] == "online"

    assert daemon.stop() == 0, fleet.logs()
    stopped = body(monitor.wait_for(state_is("offline", "stopped"), 5))
    assert stopped["gateway"] == GATEWAY
    assert "event=status_offline_sent" in fleet.logs()
    # The goodbye is what stays: a clean disconnect drops the will, so no "connection lost"
    # replaced it, and an operator who looks now sees a stopped gateway.
    assert fleet.retained_now("after-stop") == stopped
    assert not [m for m in monitor.messages if body(m).get("reason") == "connection lost"]
    assert_nothing_private(fleet.published())


def test_sigkill_leaves_the_last_will_retained_until_the_gateway_is_back(fleet: Fleet) -> None:
    monitor = fleet.watcher("fleet-monitor")
    daemon = fleet.start()
    monitor.wait_for(state_is("online"))

    daemon.kill()  # a power cut: nothing runs in the daemon, the broker speaks for it
    will = body(monitor.wait_for(state_is("offline", "connection lost"), 5))
    assert will == {"state": "offline", "gateway": GATEWAY, "reason": "connection lost"}
    assert fleet.retained_now("after-kill") == will

    # Back again: its first message replaces the will for everyone.
    before = {id(m) for m in monitor.messages}
    fleet.start()
    back = monitor.wait_for(lambda m: id(m) not in before and state_is("online")(m))
    assert body(back)["gateway"] == GATEWAY
    assert fleet.retained_now("after-restart")["state"] == "online"
    assert_nothing_private(fleet.published())

"""Buttons on a real mosquitto, through the real daemon process, to the AURA sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox
from gateway.statusfile import read_status
from tests.mosquitto_service import PASSWORD, USER, Certs, Mosquitto, make_certs

DATA = Path(__file__).resolve().parents[1] / "data" / "rtl_433"
Z2M_BUTTON = "sos_button_1"
RTL_BUTTON = "rtl433:honeywell-security:10:73942"
SHOP_SITE, CLINIC_SITE = "SHOP-CPT-001", "CLINIC-JHB-7"

DEVICES: dict[str, Any] = {
    "device_types": {
        "zigbee-sos": {"raise_gestures": ["single"], "actions": {"emergency": "single"}},
        # A 345 MHz pendant: every transmission that is not a heartbeat is a press.
        "honeywell-pendant": {"raise_gestures": ["single"], "press_when": {}},
    },
    "devices": [
        {
            "id": Z2M_BUTTON,
            "type": "zigbee-sos",
            "auth": "network",
            "route": "site",
            "site_ref": SHOP_SITE,
            "predefined_location_id": 501,
        },
        {
            "id": RTL_BUTTON,
            "type": "honeywell-pendant",
            "auth": "none",
            "route": "site",
            "site_ref": CLINIC_SITE,
            "predefined_location_id": 502,
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


def site_creates(requests: list[Any], ref: str) -> list[Any]:
    return [
        r
        for r in requests
        if r.method == "POST" and r.path.endswith(f"/externalRef/{ref}/callouts")
    ]


def raised(sandbox: AuraSandbox, ref: str, count: int = 1, timeout: float = 10) -> bool:
    """The sandbox saw exactly ``count`` creates for the site within the timeout."""
    return sandbox.wait_for(lambda reqs: len(site_creates(reqs, ref)) == count, timeout)


class Gateway:
    """The daemon configured with an MQTT input on the test's broker (no serial receiver)."""

    def __init__(self, workdir: Path, sandbox: AuraSandbox, broker: Mosquitto) -> None:
        self.workdir = workdir
        self.sandbox = sandbox
        self.broker = broker
        self.processes: list[DaemonProcess] = []

    def configure(
        self, *, tls: dict[str, Any] | None = None, login: bool = True, password: str = PASSWORD
    ) -> Path:
        devices = self.workdir / "devices.toml"
        devices.write_text(tomli_w.dumps(DEVICES))
        mqtt: dict[str, Any] = {
            "type": "mqtt",
            "name": "broker",
            "host": "127.0.0.1",
            "port": self.broker.tls_port if tls else self.broker.port,
            "connect_timeout_s": 2.0,
            "reconnect_max_s": 1.0,
            "subscriptions": [
                {"topic": "zigbee2mqtt/#", "adapter": "zigbee2mqtt"},
                {"topic": "rtl_433/+/events", "adapter": "rtl_433"},
            ],
        }
        if self.broker.password and login:
            mqtt["username"] = USER
        if tls:
            mqtt["tls"] = tls
        path = write_sim_config(
            self.workdir,
            base_url=self.sandbox.base_url,
            port_path=str(self.workdir / "no-receiver"),
            aura=FAST_AURA,
            devices_file=devices,
            extra_inputs=[mqtt],
            mqtt_passwords={"broker": password} if self.broker.password else None,
        )
        # This gateway has no radio receiver: only the broker.
        data = _toml(path)
        data["inputs"] = [i for i in data["inputs"] if i["type"] != "serial"]
        path.write_text(tomli_w.dumps(data))
        return path

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(self.workdir / "gateway.toml", echo=lambda _line: None)
        self.processes.append(daemon)
        if wait_ready:
            daemon.wait_event("ready", 20)
        return daemon

    def status(self) -> dict[str, Any]:
        return read_status(self.workdir / "status.json")

    def wait_status(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                data = self.status()
            except (FileNotFoundError, ValueError):
                data = {}
            if data and predicate(data):
                return data
            time.sleep(0.1)
        raise AssertionError(f"status never matched within {timeout} s; last: {data}")

    def logs(self) -> str:
        return "\n".join(line for d in self.processes for line in d.history)


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker").start()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, broker: Mosquitto) -> Iterator[Gateway]:
    with AuraSandbox() as sandbox:
        gw = Gateway(tmp_path, sandbox, broker)
        yield gw
        for daemon in gw.processes:
            daemon.stop()


def counter(status: dict[str, Any], name: str) -> int:
    return int(status.get("counters", {}).get(name, 0))


def test_zigbee_emergency_raises_one_callout_and_its_retained_copy_never_another(
    gateway: Gateway, broker: Mosquitto
) -> None:
    gateway.configure()
    gateway.start()
    button = broker.client("z2m-bridge")
    # Published retained (as a misconfigured bridge would): live now, retained later.
    button.publish(f"zigbee2mqtt/{Z2M_BUTTON}", PRESS, retain=True)
    assert raised(gateway.sandbox, SHOP_SITE)
    # Stored as raised before the callout ends: else the restart would send it again.
    gateway.wait_status(lambda s: len(s["open_callouts"]) == 1, 10)
    callout = site_creates(gateway.sandbox.requests(), SHOP_SITE)[0].callout_id
    assert callout is not None
    # The emergency is over; a phantom would now raise a second callout.
    gateway.sandbox.close_callout(callout)
    gateway.wait_status(lambda s: not s["open_callouts"], 15)
    gateway.processes[-1].stop()
    gateway.start()
    # On resubscribing the broker replays the retained press: seen, counted, not raised.
    gateway.wait_status(lambda s: counter(s, "mqtt_retained_presses_ignored") >= 1, 10)
    time.sleep(1.0)  # room for a wrong raise to reach the sandbox
    assert len(site_creates(gateway.sandbox.requests(), SHOP_SITE)) == 1, gateway.logs()
    button.close()


def test_press_published_while_the_gateway_is_stopped_is_raised_after_it_starts(
    gateway: Gateway, broker: Mosquitto
) -> None:
    gateway.configure()
    gateway.start()  # the broker learns the gateway's persistent session
    gateway.processes[-1].stop()
    button = broker.client("z2m-bridge")
    button.publish(f"zigbee2mqtt/{Z2M_BUTTON}", PRESS)
    time.sleep(0.3)
    assert site_creates(gateway.sandbox.requests(), SHOP_SITE) == []
    gateway.start()
    assert raised(gateway.sandbox, SHOP_SITE), gateway.logs()
    button.close()


def test_rtl433_repeats_are_one_press_and_a_different_transmission_is_another(
    gateway: Gateway, broker: Mosquitto
) -> None:
    gateway.configure()
    gateway.start()
    radio = broker.client("rtl433")
    lines = (DATA / "honeywell-2gig-dw10-event160.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for line in lines:  # one transmission, printed six times by rtl_433
        radio.publish("rtl_433/pi/events", line)
    assert raised(gateway.sandbox, CLINIC_SITE)
    first = gateway.wait_status(lambda s: counter(s, "presses_repeat") == 5, 10)
    assert counter(first, "presses_raised") == 1
    time.sleep(1.0)
    # A second transmission a second later, with different content (the pendant's alarm
    # bit set this time): a second press. Its customer's callout is open, so it is
    # recorded there ("pressed again"), never a second callout.
    second = [json.dumps({**json.loads(line), "alarm": 1}) for line in lines]
    for line in second:
        radio.publish("rtl_433/pi/events", line)
    status = gateway.wait_status(lambda s: counter(s, "presses_attached") == 1, 10)
    assert counter(status, "presses_raised") == 1
    assert counter(status, "presses_repeat") == 10
    assert len(site_creates(gateway.sandbox.requests(), CLINIC_SITE)) == 1
    seen = status["devices_seen"][RTL_BUTTON]
    assert seen["spoofable"] is True and seen["battery_low"] is False
    radio.close()


def test_unknown_device_is_counted_and_shown_never_raised(
    gateway: Gateway, broker: Mosquitto
) -> None:
    gateway.configure()
    gateway.start()
    stranger = broker.client("z2m-bridge")
    stranger.publish("zigbee2mqtt/neighbours_button", PRESS)
    status = gateway.wait_status(lambda s: "neighbours_button" in s.get("unknown_devices", {}))
    assert status["unknown_devices"]["neighbours_button"]["presses"] == 1
    time.sleep(0.5)
    assert [r for r in gateway.sandbox.requests() if r.path.endswith("/callouts")] == []
    stranger.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def secured_broker(tmp_path: Path, certs: Certs) -> Iterator[tuple[Mosquitto, Certs]]:
    server = Mosquitto(tmp_path / "secured", password=True, certs=certs).start()
    yield server, certs
    server.stop()


def _stays_up(daemon: DaemonProcess, gateway: Gateway, seconds: float) -> None:
    time.sleep(seconds)
    assert daemon.proc.poll() is None, gateway.logs()


def test_wrong_password_is_a_clear_status_not_a_crash_loop(
    tmp_path: Path, secured_broker: tuple[Mosquitto, Certs]
) -> None:
    broker, certs = secured_broker
    with AuraSandbox() as sandbox:
        gw = Gateway(tmp_path, sandbox, broker)
        gw.configure(password="not-the-password", tls={"ca_file": str(certs.ca)})
        daemon = gw.start()
        try:
            status = gw.wait_status(lambda s: s["inputs"]["broker"]["state"] == "refused")
            assert "refused" in status["inputs"]["broker"]["error"].lower()
            assert "not-the-password" not in json.dumps(status)
            assert "broker refused" in status["summary"] or "refused" in status["summary"]
            _stays_up(daemon, gw, 2.0)
            # Refused logins are retried slowly (reconnect_max_s), not hammered.
            attempts = gw.logs().count("event=mqtt_refused")
            assert attempts == 1, gw.logs()  # logged once per change, not per attempt
            assert "not-the-password" not in gw.logs()
        finally:
            daemon.stop()


def test_wrong_ca_is_a_clear_status_not_a_crash_loop(
    tmp_path: Path, secured_broker: tuple[Mosquitto, Certs]
) -> None:
    broker, certs = secured_broker
    with AuraSandbox() as sandbox:
        gw = Gateway(tmp_path, sandbox, broker)
        gw.configure(tls={"ca_file": str(certs.other_ca)})
        daemon = gw.start()
        try:
            status = gw.wait_status(lambda s: s["inputs"]["broker"]["state"] == "tls_error")
            assert "certificate" in status["inputs"]["broker"]["error"]
            _stays_up(daemon, gw, 2.0)
        finally:
            daemon.stop()


def test_right_password_and_ca_connect_over_tls(
    tmp_path: Path, secured_broker: tuple[Mosquitto, Certs]
) -> None:
    broker, certs = secured_broker
    with AuraSandbox() as sandbox:
        gw = Gateway(tmp_path, sandbox, broker)
        gw.configure(tls={"ca_file": str(certs.ca)})
        daemon = gw.start()
        try:
            gw.wait_status(lambda s: s["inputs"]["broker"]["state"] == "ok")
            button = broker.client("z2m-bridge")
            button.publish(f"zigbee2mqtt/{Z2M_BUTTON}", PRESS)
            assert raised(sandbox, SHOP_SITE)
            button.close()
        finally:
            daemon.stop()

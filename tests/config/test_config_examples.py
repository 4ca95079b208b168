"""The example configs in config/ load, and say what the README and the demo rely on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config, summarize
from gateway.config.checks import SPOOFABLE
from gateway.config.models import CustomerDevice, FixedLocation, LiveLocation, SiteDevice
from gateway.demo import SIM_DEVICE_KEYS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SIM_DIR = "/tmp/aura-gateway-sim"
PLACEHOLDER_KEY = bytes(16)


def _load_example(tmp_path: Path) -> Config:
    for name in ("gateway", "devices", "credentials"):
        shutil.copy(CONFIG_DIR / f"{name}.example.toml", tmp_path / f"{name}.toml")
    # Git stores the file 0644; the technician's chmod 600 is part of the install.
    os.chmod(tmp_path / "credentials.toml", 0o600)
    return load_config(tmp_path / "gateway.toml")


def _load_sim(tmp_path: Path) -> Config:
    # The demo's runtime folder is moved into tmp_path so the test never touches a real demo.
    text = (CONFIG_DIR / "gateway.sim.toml").read_text()
    assert SIM_DIR in text
    (tmp_path / "gateway.sim.toml").write_text(text.replace(SIM_DIR, str(tmp_path / "sim")))
    shutil.copy(CONFIG_DIR / "devices.sim.toml", tmp_path)
    (tmp_path / "sim").mkdir()
    # As the demo writes it: the sandbox's client and the simulated buttons' keys.
    keys = "".join(f'{dev} = "{key}"\n' for dev, key in SIM_DEVICE_KEYS.items())
    credentials = tmp_path / "sim" / "credentials.toml"
    credentials.write_text(
        '[aura]\nclient_id = "sandbox-client"\nclient_secret = "s"\n\n[device_keys]\n' + keys
    )
    os.chmod(credentials, 0o600)
    return load_config(tmp_path / "gateway.sim.toml")


def test_every_example_file_is_covered() -> None:
    # A new example in config/ needs a test here.
    assert sorted(p.name for p in CONFIG_DIR.glob("*.toml")) == [
        "credentials.example.toml",
        "devices.example.toml",
        "devices.sim.toml",
        "gateway.example.toml",
        "gateway.sim.toml",
    ]


def test_production_example_loads(tmp_path: Path) -> None:
    config = _load_example(tmp_path)
    # The fixed-code button and the rtl_433 pendant show the warning a technician will see.
    assert [(w.file, w.key, w.message) for w in config.warnings] == [
        (tmp_path / "devices.toml", "devices[4].auth", SPOOFABLE),
        (tmp_path / "devices.toml", "devices[6].auth", SPOOFABLE),
    ]
    kinds = [i.type for i in config.gateway.inputs]
    assert kinds == ["serial", "mqtt", "gpsd"]
    assert config.gateway.status_mqtt is not None
    assert str(config.gateway.aura.base_url) == "https://staging-panic.aura.services/"
    assert config.gateway.inputs[0].port == "/dev/serial/by-id/usb-AURA_Receiver-if00"
    assert config.journal_path == Path("/var/lib/aura-gateway/journal.sqlite")
    assert config.status_path == Path("/run/aura-gateway/status.json")
    receiver = config.gateway.inputs[0]
    assert (receiver.watchdog_s, receiver.repeat_window_s) == (30, 5)
    assert config.devices_path == tmp_path / "devices.toml"
    assert config.credentials_path == tmp_path / "credentials.toml"
    routes = [d.route for d in config.devices.devices]
    assert sorted(set(routes)) == ["customer", "device", "site"]
    policies = {type(d.location) for d in config.devices.devices if isinstance(d, CustomerDevice)}
    assert policies == {FixedLocation, LiveLocation}
    live = next(
        d
        for d in config.devices.devices
        if isinstance(d, CustomerDevice) and isinstance(d.location, LiveLocation)
    )
    assert config.device_type(live).has_gps


def test_production_example_keys(tmp_path: Path) -> None:
    config = _load_example(tmp_path)
    auth = {d.id: d.auth for d in config.devices.devices}
    assert list(auth.values()) == [
        "hmac",
        "hmac",
        "hmac",
        "hmac",
        "none",
        "network",
        "none",
        "hmac",
    ]
    fixed_code = config.device("1a2b3c80")
    assert isinstance(fixed_code, SiteDevice) and fixed_code.auth == "none"
    # A key for every authenticated button and none for the fixed-code one. Each is the
    # all-zero placeholder: a real key is never committed.
    assert {dev: config.device_key(dev) for dev in auth} == {
        dev: (PLACEHOLDER_KEY if mode == "hmac" else None) for dev, mode in auth.items()
    }
    assert set(config.credentials.device_keys) == {d for d, m in auth.items() if m == "hmac"}


def test_production_example_summary(tmp_path: Path) -> None:
    config = _load_example(tmp_path)
    text = summarize(config)
    for device in config.devices.devices:
        assert device.id in text
    assert "https://staging-panic.aura.services" in text
    assert "8 (by route: customer 4, device 1, site 3;" in text
    assert "REPLACE-WITH" not in text
    assert "0" * 32 not in text
    assert text.count("none (spoofable)") == 2
    assert "2 warning(s):" in text


def test_credentials_example_as_shipped_is_refused(tmp_path: Path) -> None:
    # Guards the install step in config/README.md: forgetting chmod 600 is caught.
    for name in ("gateway", "devices", "credentials"):
        shutil.copy(CONFIG_DIR / f"{name}.example.toml", tmp_path / f"{name}.toml")
    os.chmod(tmp_path / "credentials.toml", 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644 .* chmod 600 "):
        load_config(tmp_path / "gateway.toml")


def test_sim_config_loads(tmp_path: Path) -> None:
    config = _load_sim(tmp_path)
    assert config.warnings == []  # every simulated button authenticates
    assert str(config.gateway.aura.base_url) == "http://127.0.0.1:8765/"
    assert config.gateway.aura.poll_interval_s == 2
    assert config.gateway.inputs[0].port == str(tmp_path / "sim" / "receiver")
    assert config.journal_path == tmp_path / "sim" / "journal.sqlite"
    assert config.status_path == tmp_path / "sim" / "status.json"
    assert config.gateway.inputs[0].watchdog_s == 30
    assert config.credentials_path == tmp_path / "sim" / "credentials.toml"
    assert config.devices_path == tmp_path / "devices.sim.toml"
    position = config.gateway.gateway.position
    assert position is not None
    assert (position.latitude, position.longitude) == (-33.9249, 18.4241)
    types = config.devices.device_types
    assert types["pendant-gps"].raise_gestures == ["single", "long"]
    assert types["pendant-gps"].has_gps
    assert types["desk-button"].raise_gestures == ["single"]
    assert not types["desk-button"].has_gps
    assert types["shop-button"].raise_gestures == ["single", "long"]


def test_sim_devices_match_the_demo(tmp_path: Path) -> None:
    config = _load_sim(tmp_path)
    assert [d.id for d in config.devices.devices] == [
        "00a1b2c3",
        "00a1b2c4",
        "00c0ffee",
        "00bad001",
    ]
    for device in config.devices.devices:
        assert int(device.id, 16) < 2**32 and len(device.id) == 8

    pendant = config.device("00A1B2C3")
    assert isinstance(pendant, CustomerDevice)
    assert (pendant.customer_id, pendant.response_type_id) == (1001, 1)
    assert isinstance(pendant.location, LiveLocation)
    assert config.device_type(pendant).has_gps

    desk = config.device("00a1b2c4")
    assert isinstance(desk, CustomerDevice)
    assert desk.customer_id == 1003
    assert desk.location == FixedLocation(policy="fixed", predefined_location_id=501)

    shop = config.device("00c0ffee")
    assert isinstance(shop, SiteDevice)
    assert shop.site_ref == "SHOP-CPT-001"

    unsubscribed = config.device("00bad001")
    assert isinstance(unsubscribed, CustomerDevice)
    assert unsubscribed.customer_id == 1002


def test_sim_devices_have_the_demo_keys(tmp_path: Path) -> None:
    config = _load_sim(tmp_path)
    assert [d.auth for d in config.devices.devices] == ["hmac"] * 4
    assert sorted(SIM_DEVICE_KEYS) == sorted(d.id for d in config.devices.devices)
    for device in config.devices.devices:
        assert config.device_key(device.id) == bytes.fromhex(SIM_DEVICE_KEYS[device.id])


def test_sim_config_points_at_the_demo_paths() -> None:
    # The demo writes and opens these exact paths.
    text = (CONFIG_DIR / "gateway.sim.toml").read_text()
    for value in (
        'base_url = "http://127.0.0.1:8765"',
        f'port = "{SIM_DIR}/receiver"',
        f'journal_path = "{SIM_DIR}/journal.sqlite"',
        f'status_path = "{SIM_DIR}/status.json"',
        f'credentials_file = "{SIM_DIR}/credentials.toml"',
        'devices_file = "devices.sim.toml"',
    ):
        assert value in text


def test_sim_summary(tmp_path: Path) -> None:
    text = summarize(_load_sim(tmp_path))
    for device_id in ("00a1b2c3", "00a1b2c4", "00c0ffee", "00bad001"):
        assert device_id in text
    assert "SHOP-CPT-001" in text
    assert "customer 1002" in text
    assert "http://127.0.0.1:8765" in text
    assert "spoofable" not in text
    for key in SIM_DEVICE_KEYS.values():
        assert key not in text

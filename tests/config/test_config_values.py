"""Values written in the files reach the loaded config, and paths resolve as documented."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from gateway.config import (
    Config,
    ConfigError,
    ConfigProblem,
    load_config,
    load_devices,
    summarize,
)
from gateway.config.checks import SITE_WITHOUT_ID, SPOOFABLE
from gateway.config.models import (
    AuraPaths,
    AuraSettings,
    GatewayPosition,
    GatewaySection,
    SerialInputConfig,
    Timeouts,
)

# Every value differs from its model default, so a key that is parsed but dropped shows.
NON_DEFAULT_GATEWAY = """\
[gateway]
name = "gw-under-test"
devices_file = "sub/buttons.toml"
credentials_file = "../secret/aura.toml"
journal_path = "state/journal.sqlite"
status_path = "run/status.json"
control_path = "run/control.sock"
journal_max_mb = 16
late_alarm_after_s = 90
log_level = "DEBUG"
max_fix_age_s = 42.5

[gateway.position]
latitude = -33.9249
longitude = 18.4241
accuracy = 12

[aura]
base_url = "https://staging-panic.aura.services"
api_prefix = "/panic-api/v9"
poll_interval_s = 7
token_refresh_margin_s = 120
backoff_initial_s = 1.5
backoff_max_s = 45
reconnect_max_s = 2.5

[aura.timeouts]
connect = 1.25
read = 20
write = 21
pool = 2.5

[aura.paths]
update_location_and_return = "/callouts/{callout_id}/where"
resolution_report = "/callouts/{callout_id}/outcome"

[[inputs]]
type = "serial"
name = "rx-left"
port = "/dev/ttyAMA0"
baudrate = 57600
watchdog_s = 45
repeat_window_s = 2.5
ack_timeout_s = 0.25
reopen_backoff_max_s = 5
"""

DEVICES = """\
[device_types.pendant]
raise_gestures = ["double", "hold"]
has_gps = true

[[devices]]
id = "00AbCdEf"
type = "pendant"
label = "Front desk"
route = "customer"
customer_id = 1001
response_type_id = 3
callout_classification_id = 4
location = { policy = "live" }

[[devices]]
id = "00000002"
type = "pendant"
route = "site"
site_ref = "SITE-9"
response_type_id = 2
installer_identifier = "installer-7"
predefined_location_id = 77

[[devices]]
id = "00000003"
type = "pendant"
route = "device"
aura_device_id = 26217939
device_type_id = 5
raise_message_type = 9
"""

# Fake keys, one per device: ids in another case than devices.toml, a 16- and a 32-byte key.
KEY_16 = "000102030405060708090a0b0c0d0e0f"
KEY_32 = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
CREDENTIALS = f"""\
[aura]
client_id = "id"
client_secret = "secret"

[device_keys]
00ABCDEF = "{KEY_16}"
00000002 = "{KEY_32}"
"00000003" = "{KEY_16}"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """gateway.toml in etc/, devices in etc/sub/, credentials in secret/: all relative."""
    etc = tmp_path / "etc"
    (etc / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (etc / "gateway.toml").write_text(NON_DEFAULT_GATEWAY)
    (etc / "sub" / "buttons.toml").write_text(DEVICES)
    (tmp_path / "secret" / "aura.toml").write_text(CREDENTIALS)
    os.chmod(tmp_path / "secret" / "aura.toml", 0o600)
    return etc / "gateway.toml"


def test_non_default_values_reach_the_model(tree: Path) -> None:
    config = load_config(tree)
    gw, aura, (inp,) = config.gateway.gateway, config.gateway.aura, config.gateway.inputs
    assert (gw.name, gw.log_level, gw.max_fix_age_s) == ("gw-under-test", "DEBUG", 42.5)
    assert gw.position is not None
    assert (gw.position.latitude, gw.position.longitude, gw.position.accuracy) == (
        -33.9249,
        18.4241,
        12,
    )
    assert str(aura.base_url) == "https://staging-panic.aura.services/"
    assert aura.api_prefix == "/panic-api/v9"
    assert aura.poll_interval_s == 7
    assert aura.token_refresh_margin_s == 120
    assert (aura.backoff_initial_s, aura.backoff_max_s) == (1.5, 45)
    assert aura.reconnect_max_s == 2.5
    assert aura.timeouts == Timeouts(connect=1.25, read=20, write=21, pool=2.5)
    assert aura.paths.update_location_and_return == "/callouts/{callout_id}/where"
    assert aura.paths.resolution_report == "/callouts/{callout_id}/outcome"
    assert inp == SerialInputConfig(
        type="serial",
        name="rx-left",
        port="/dev/ttyAMA0",
        baudrate=57600,
        watchdog_s=45,
        repeat_window_s=2.5,
        ack_timeout_s=0.25,
        reopen_backoff_max_s=5,
    )
    assert config.devices.device_types["pendant"].raise_gestures == ["double", "hold"]
    assert config.credentials.aura.client_id.get_secret_value() == "id"
    assert config.status_path == tree.parent / "run" / "status.json"


def test_defaults_of_the_newer_settings(write_config) -> None:
    config = load_config(write_config())
    (inp,) = config.gateway.inputs
    assert (inp.watchdog_s, inp.repeat_window_s) == (30, 5)
    assert config.status_path == Path("/run/aura-gateway/status.json")
    assert config.gateway.gateway.status_path == config.status_path
    assert [d.auth for d in config.devices.devices] == ["hmac"]


def test_every_setting_is_exercised() -> None:
    # When a field is added to the models, add it to NON_DEFAULT_GATEWAY above.
    written = set()
    for line in NON_DEFAULT_GATEWAY.splitlines():
        if "=" in line:
            written.add(line.split("=")[0].strip())
    for model in (
        GatewaySection,
        GatewayPosition,
        AuraSettings,
        Timeouts,
        AuraPaths,
        SerialInputConfig,
    ):
        assert set(model.model_fields) - {"position", "timeouts", "paths"} <= written, model


def test_relative_paths_resolve_against_gateway_toml(tree: Path, monkeypatch) -> None:
    monkeypatch.chdir("/")  # the working directory must not matter
    config = load_config(tree)
    root = tree.parent.parent
    assert config.path == tree
    assert config.devices_path == root / "etc" / "sub" / "buttons.toml"
    assert config.credentials_path == root / "secret" / "aura.toml"
    assert config.journal_path == root / "etc" / "state" / "journal.sqlite"
    assert config.status_path == root / "etc" / "run" / "status.json"
    assert config.control_path == root / "etc" / "run" / "control.sock"
    assert config.gateway.gateway.journal_max_mb == 16
    assert config.gateway.gateway.late_alarm_after_s == 90
    # The model carries the same resolved paths.
    assert config.gateway.gateway.journal_path == config.journal_path
    assert config.gateway.gateway.status_path == config.status_path
    assert config.gateway.gateway.devices_file == config.devices_path
    assert config.gateway.gateway.credentials_file == config.credentials_path


def test_relative_gateway_path_is_made_absolute(tree: Path, monkeypatch) -> None:
    monkeypatch.chdir(tree.parent.parent)
    config = load_config("etc/gateway.toml")
    assert config.path == tree
    assert config.journal_path.is_absolute()


def test_device_lookup_ignores_case(tree: Path) -> None:
    config = load_config(tree)
    device = config.device("00ABCDEF")
    assert device is not None and device.id == "00abcdef"
    assert config.device("00abcdef") is device
    assert config.device("ffffffff") is None
    assert config.device_type(device).has_gps


def test_device_keys(tree: Path) -> None:
    config = load_config(tree)
    key_16, key_32 = bytes.fromhex(KEY_16), bytes.fromhex(KEY_32)
    assert (len(key_16), len(key_32)) == (16, 32)
    # "00ABCDEF" in the credentials file, "00AbCdEf" in devices.toml: ids ignore case.
    assert config.device_key("00abcdef") == key_16
    assert config.device_key("00ABCDEF") == key_16
    assert config.device_key("00000002") == key_32
    assert config.device_key("00000003") == key_16
    assert config.device_key("ffffffff") is None


def test_key_ids_ignore_case(write_config, minimal) -> None:
    devices = minimal["devices"].replace('id = "00000001"', 'id = "00a1b2c3"')
    credentials = minimal["credentials"].replace('00000001 = "', '00A1B2C3 = "')
    config = load_config(write_config(devices=devices, credentials=credentials))
    assert own_warnings(config) == []
    assert config.device_key("00a1b2c3") == bytes(range(16))
    assert config.device_key("00A1B2C3") == bytes(range(16))


def test_key_with_upper_case_hex_digits(write_config, minimal) -> None:
    credentials = minimal["credentials"].replace("0a0b0c0d0e0f", "0A0B0C0D0E0F")
    assert "0A0B0C0D0E0F" in credentials
    config = load_config(write_config(credentials=credentials))
    assert config.device_key("00000001") == bytes(range(16))


def test_device_route_values(tree: Path) -> None:
    config = load_config(tree)
    customer, site, event = config.devices.devices
    assert customer.model_dump(exclude={"location"}) == {
        "id": "00abcdef",
        "type": "pendant",
        "label": "Front desk",
        "auth": "hmac",
        "checkin_interval_s": None,
        "travels_with_gateway": False,
        "route": "customer",
        "customer_id": 1001,
        "response_type_id": 3,
        "callout_classification_id": 4,
        "predefined_location_id": None,
    }
    assert site.model_dump() == {
        "id": "00000002",
        "type": "pendant",
        "label": "",
        "auth": "hmac",
        "checkin_interval_s": None,
        "travels_with_gateway": False,
        "route": "site",
        "site_ref": "SITE-9",
        "response_type_id": 2,
        "callout_classification_id": None,
        "installer_identifier": "installer-7",
        "predefined_location_id": 77,
    }
    assert (event.route, event.aura_device_id, event.device_type_id) == ("device", 26217939, 5)
    assert event.raise_message_type == 9


def test_summary_lists_the_essentials(tree: Path) -> None:
    text = summarize(load_config(tree))
    assert "gw-under-test" in text
    assert "https://staging-panic.aura.services  api prefix /panic-api/v9" in text
    assert "rx-left: serial /dev/ttyAMA0 at 57600 baud" in text
    assert "state/journal.sqlite" in text
    assert f"status file  {tree.parent / 'run' / 'status.json'}" in text
    assert "3 (by route: customer 1, device 1, site 1; by type: pendant 3)" in text
    assert "00abcdef  pendant  customer  customer 1001" in text
    assert "hmac" in text
    assert "spoofable" not in text
    assert "site SITE-9" in text


# --------------------------------------------------------------------------- warnings


def own_warnings(config: Config) -> list[ConfigProblem]:
    """The warnings a test is about: the minimal config's site button has no Fixed
    Location id, which has its own test below."""
    return [w for w in config.warnings if w.message != SITE_WITHOUT_ID]


def test_site_without_fixed_location_id_is_a_warning(write_config) -> None:
    config = load_config(write_config())
    [warning] = [w for w in config.warnings if w.message == SITE_WITHOUT_ID]
    assert str(warning).startswith("devices.toml:8 devices[0].site_ref: warning: no predefined")


def test_no_devices_is_a_warning(write_config) -> None:
    config = load_config(write_config(devices="[device_types.button]\n"))
    assert [str(w) for w in config.warnings] == [
        "devices.toml devices: warning: no devices configured: presses from every button "
        "will be ignored"
    ]
    assert "1 warning(s):" in summarize(config)


def test_live_gps_device_without_any_fallback_is_refused(write_config) -> None:
    # AURA takes no customer callout without a location: a press before the first fix
    # would be undeliverable, so the gap is closed at check-config time.
    devices = """\
[device_types.pendant]
has_gps = true

[[devices]]
id = "00000001"
type = "pendant"
route = "customer"
customer_id = 1
response_type_id = 1
location = { policy = "live" }
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(devices=devices))
    assert str(caught.value) == (
        "devices.toml:10 devices[0].location: no fallback location: AURA needs a location on "
        "every customer callout, so a press before this device's first fix (after a boot, "
        "indoors) could not be delivered; set fallback_location_id in the location policy or "
        "[gateway.position] in gateway.toml"
    )


def test_live_gps_device_with_a_fallback_site_is_fine(write_config) -> None:
    devices = """\
[device_types.pendant]
has_gps = true

[[devices]]
id = "00000001"
type = "pendant"
route = "customer"
customer_id = 1
response_type_id = 1
location = { policy = "live", fallback_location_id = 9 }
"""
    config = load_config(write_config(devices=devices))
    assert own_warnings(config) == []


def test_live_device_without_gps_is_fine_with_a_gateway_position(write_config, minimal) -> None:
    gateway = minimal["gateway"] + "\n[gateway.position]\nlatitude = 1\nlongitude = 2\n"
    devices = minimal["devices"] + (
        '\n[[devices]]\nid = "2"\ntype = "button"\nroute = "customer"\ncustomer_id = 1\n'
        'response_type_id = 1\nlocation = { policy = "live" }\n'
    )
    credentials = minimal["credentials"] + f'2 = "{KEY_16}"\n'
    config = load_config(write_config(gateway=gateway, devices=devices, credentials=credentials))
    assert own_warnings(config) == []


def test_unauthenticated_button_is_a_warning(write_config, minimal) -> None:
    # auth = "none" needs no key, and loads; check-config says it is spoofable.
    devices = minimal["devices"] + 'auth = "none"\n'
    credentials = minimal["credentials"].split("[device_keys]")[0]
    config = load_config(write_config(devices=devices, credentials=credentials))
    (device,) = config.devices.devices
    assert device.auth == "none"
    assert config.device_key(device.id) is None
    assert own_warnings(config) == [
        ConfigProblem(config.devices_path, 9, "devices[0].auth", SPOOFABLE, "warning")
    ]
    assert str(own_warnings(config)[0]) == (
        "devices.toml:9 devices[0].auth: warning: auth = 'none': this button has no "
        "authentication, so anyone with a radio can replay or forge its press (spoofable); "
        "use an authenticated model where possible"
    )
    text = summarize(config)
    assert "none (spoofable)" in text
    assert "2 warning(s):" in text  # this one and the site's missing Fixed Location id


def test_unauthenticated_button_with_a_key_is_still_a_warning(write_config, minimal) -> None:
    config = load_config(write_config(devices=minimal["devices"] + 'auth = "none"\n'))
    assert [(w.key, w.message) for w in own_warnings(config)] == [("devices[0].auth", SPOOFABLE)]


# --------------------------------------------------------------------------- reload


def test_load_devices_for_reload(tree: Path) -> None:
    config = load_config(tree)
    config.devices_path.write_text(DEVICES.replace('"00AbCdEf"', '"00000099"'))
    devices = load_devices(config.devices_path, config.gateway)
    reloaded = dataclasses.replace(config, devices=devices)
    assert reloaded.device("00000099") is not None
    assert reloaded.device("00abcdef") is None
    assert config.device("00abcdef") is not None  # the running config is untouched


def test_load_devices_refuses_with_every_error(tree: Path) -> None:
    config = load_config(tree)
    broken = DEVICES.replace('type = "pendant"\nlabel', 'type = "pendnat"\nlabel')
    broken = broken.replace("customer_id = 1001", "customer_id = 0")
    config.devices_path.write_text(broken)
    with pytest.raises(ConfigError) as caught:
        load_devices(config.devices_path, config.gateway)
    assert str(caught.value).splitlines() == [
        "buttons.toml:7 devices[0].type: unknown device type 'pendnat' (known: pendant)",
        "buttons.toml:10 devices[0].customer_id: Input should be greater than 0",
    ]


def test_load_devices_without_gateway_position_checks_live_devices(write_config) -> None:
    devices = """\
[device_types.button]

[[devices]]
id = "00000001"
type = "button"
route = "customer"
customer_id = 1
response_type_id = 1
location.policy = "live"
"""
    config = load_config(write_config())
    config.devices_path.write_text(devices)
    with pytest.raises(ConfigError, match=r"^devices.toml:9 devices\[0\].location: live location"):
        load_devices(config.devices_path, config.gateway)


def test_load_devices_warnings(write_config, caplog) -> None:
    config = load_config(write_config())
    config.devices_path.write_text("[device_types.button]\n")
    collected: list[ConfigProblem] = []
    assert load_devices(config.devices_path, config.gateway, warnings=collected).devices == []
    assert [w.key for w in collected] == ["devices"]
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        load_devices(config.devices_path, config.gateway)
    assert "devices.toml devices: warning: no devices configured" in caplog.text


def test_load_devices_missing_file(tmp_path: Path, write_config) -> None:
    config = load_config(write_config())
    with pytest.raises(ConfigError) as caught:
        load_devices(tmp_path / "gone.toml", config.gateway)
    assert str(caught.value) == f"gone.toml: file not found: {tmp_path / 'gone.toml'}"

"""Every folder in tests/config/invalid/ is one refused config with its exact messages.

Each case is copied to a temporary folder (credentials.toml made 0600 unless the case is
about its mode) and loaded; str(ConfigError) must be exactly the expected lines, in order:
all problems of all three files in one run. ``{dir}`` stands for the case's folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

INVALID = Path(__file__).parent / "invalid"

BOTH = (
    "predefined_location_id conflicts with the location policy: AURA accepts live coordinates "
    'or predefinedLocationId, never both; use location = { policy = "fixed", '
    'predefined_location_id = ... } for a fixed site or location = { policy = "live" }'
)

NO_KEY = (
    "no key for device '{id}': add it under [device_keys] in the credentials file, or set "
    'auth = "none" for a fixed-code button (spoofable)'
)

CASES: dict[str, list[str]] = {
    "unknown_key_in_aura": [
        "gateway.toml:7 aura.poll_intervall_s: unknown key (typo? did you mean 'poll_interval_s'?)",
        "gateway.toml:8 aura.retry: unknown key (typo?)",
    ],
    "wrong_type": [
        "gateway.toml:4 gateway.max_fix_age_s: "
        "Input should be a valid number, unable to parse string as a number",
        "gateway.toml:10 aura.timeouts.connect: Input should be a valid number",
        "gateway.toml:15 inputs[0].baudrate: "
        "Input should be a valid integer, got a number with a fractional part",
    ],
    # devices.toml does not parse; credentials.toml is still checked.
    "toml_syntax": [
        "devices.toml:7: TOML syntax error: Invalid value (column 9)",
        "credentials.toml:1 aura.client_secret: Field required",
    ],
    # A missing key points at the header of the table that lacks it.
    "missing_device_field": [
        "devices.toml:10 devices[1].customer_id: Field required",
        "devices.toml:15 devices[1].location.predefined_location_id: Field required",
        "devices.toml:17 devices[2].id: Field required",
    ],
    "unknown_device_type": [
        "devices.toml:10 devices[0].type: unknown device type 'buton' (known: pendant, button)",
    ],
    "duplicate_device_id": [
        "devices.toml:18 devices[2].id: duplicate device id '00c0ffee': already used by "
        "devices[0] at devices.toml:6 (ids are compared ignoring case)",
    ],
    "live_and_fixed_location": [
        f"devices.toml:12 devices[0].predefined_location_id: {BOTH}",
        f"devices.toml:20 devices[1].location.predefined_location_id: {BOTH}",
    ],
    # devices[1] has GPS: only a warning, which does not refuse the config.
    "live_without_gps": [
        "devices.toml:15 devices[0].location: live location needs a live source (device "
        "type has_gps = true, or travels_with_gateway = true with a gpsd input) or a fallback "
        "(fallback_location_id in the location policy, or [gateway.position] in gateway.toml)",
        "devices.toml:24 devices[1].location: no fallback location: AURA needs a location on "
        "every customer callout, so a press before this device's first fix (after a boot, "
        "indoors) could not be delivered; set fallback_location_id in the location policy or "
        "[gateway.position] in gateway.toml",
    ],
    "unknown_route": [
        "devices.toml:7 devices[0].route: "
        "route must be one of 'customer', 'site', 'device' (got 'cutomer')",
        "devices.toml:10 devices[1].route: "
        "Field required: route must be one of 'customer', 'site', 'device'",
    ],
    "credentials_mode_0644": [
        "credentials.toml: mode 0644 lets group/others access the AURA secret; "
        "refusing to use it: run chmod 600 {dir}/credentials.toml",
    ],
    "credentials_missing": [
        "gateway.toml:4 gateway.credentials_file: credentials file not found: "
        "{dir}/secret/aura.toml",
    ],
    "credentials_is_directory": [
        "credentials.toml: {dir}/credentials.toml is a directory, not a file",
    ],
    "devices_file_missing": [
        "gateway.toml:4 gateway.devices_file: devices file not found: {dir}/buttons.toml",
    ],
    "devices_file_default_missing": [
        "gateway.toml gateway.devices_file: devices file not found: {dir}/devices.toml "
        "(devices_file is not set in [gateway], so the default 'devices.toml' was assumed)",
    ],
    "negative_customer_id": [
        "devices.toml:8 devices[0].customer_id: Input should be greater than 0",
        "devices.toml:9 devices[0].response_type_id: Input should be greater than 0",
    ],
    "bad_base_url": [
        "gateway.toml:6 aura.base_url: Input should be a valid URL, relative URL without a base",
    ],
    "base_url_with_path": [
        "gateway.toml:6 aura.base_url: must be the host only, like 'https://panic.aura.services'; "
        "the path '/panic-api/v2' belongs in api_prefix",
    ],
    # An authenticated button (auth = "hmac", the default) needs its key; the message is on
    # the device's id line. The auth = "none" device is only a warning.
    "device_key_missing": [
        f"devices.toml:13 devices[1].id: {NO_KEY.format(id='00a1b2c4')}",
        f"devices.toml:28 devices[3].id: {NO_KEY.format(id='00a1b2c6')}",
    ],
    # Schema errors in gateway.toml do not stop the checks of the two other files.
    "several_files": [
        "gateway.toml:2 gateway.name: String should have at least 1 character",
        "gateway.toml:4 gateway.log_level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        "gateway.toml:6 aura.base_url: Field required",
        "gateway.toml:7 aura.api_prefix: "
        "must start with '/' and not end with '/', e.g. '/panic-api/v2'",
        "gateway.toml:10 inputs[0].type: "
        "type must be one of 'serial', 'mqtt', 'gpsd' (got 'zwave')",
        "devices.toml:2 device_types.button.raise_gestures[1]: "
        "Input should be 'single', 'double', 'long' or 'hold'",
        "devices.toml:6 devices[0].type: unknown device type 'pendant' (known: button)",
        "devices.toml:8 devices[0].customer_id: Input should be greater than 0",
        "devices.toml:13 devices[1].id: String should match pattern '^[A-Za-z0-9._:-]+$'",
        "devices.toml:17 devices[1].colour: unknown key (typo?)",
        "credentials.toml:3 aura.client_secret: must not be empty",
    ],
}


def _load_case(name: str, tmp_path: Path) -> ConfigError:
    case = tmp_path / name
    shutil.copytree(INVALID / name, case)
    credentials = case / "credentials.toml"
    if credentials.is_file():
        # Git keeps 0644; the mode case checks exactly that.
        os.chmod(credentials, 0o644 if name == "credentials_mode_0644" else 0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(case / "gateway.toml")
    return caught.value


def test_every_case_folder_has_expectations() -> None:
    assert sorted(p.name for p in INVALID.iterdir() if p.is_dir()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_case(name: str, tmp_path: Path) -> None:
    err = _load_case(name, tmp_path)
    expected = [line.replace("{dir}", str(tmp_path / name)) for line in CASES[name]]
    assert str(err).splitlines() == expected
    assert [str(p) for p in err.problems] == expected
    assert all(p.severity == "error" for p in err.problems)
    # Never chained to a pydantic error: its input values could hold the secret.
    assert err.__cause__ is None
    assert err.__context__ is None


def test_problem_fields_of_a_case(tmp_path: Path) -> None:
    err = _load_case("duplicate_device_id", tmp_path)
    (problem,) = err.problems
    assert problem.file == tmp_path / "duplicate_device_id" / "devices.toml"
    assert problem.line == 18
    assert problem.key == "devices[2].id"


def test_gateway_syntax_error_stops_before_the_other_files(write_config, minimal) -> None:
    path = write_config(gateway='[gateway]\nname = "unclosed\n', devices=None, credentials=None)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        "gateway.toml:2: TOML syntax error: Illegal character '\\n' (column 17)"
    )


def test_syntax_error_at_end_of_file(write_config, minimal) -> None:
    path = write_config(devices=minimal["devices"] + "\nextra = [1,\n  2,\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # tomllib reports the end of the document: the last line is the best place to look.
    assert str(caught.value) == "devices.toml:11: TOML syntax error: Invalid value (at end of file)"


def test_gateway_toml_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert str(caught.value) == f"nope.toml: file not found: {tmp_path / 'nope.toml'}"


def test_missing_aura_table(write_config) -> None:
    path = write_config(gateway='[[inputs]]\ntype = "serial"\nport = "/dev/null"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "gateway.toml aura: Field required"


def test_two_serial_inputs_with_one_name(write_config, minimal) -> None:
    second = '\n[[inputs]]\ntype = "serial"\nport = "/dev/ttyS1"\n'
    path = write_config(gateway=minimal["gateway"] + second)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        "gateway.toml:12 inputs[1].name: duplicate input name 'receiver', already used by "
        "inputs[0]; give each input its own name"
    )


def test_backoff_initial_above_max(write_config, minimal) -> None:
    gateway = minimal["gateway"].replace(
        'base_url = "http://127.0.0.1:8765"\n',
        'base_url = "http://127.0.0.1:8765"\nbackoff_initial_s = 40\nbackoff_max_s = 20\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(gateway=gateway))
    assert str(caught.value) == (
        "gateway.toml:7 aura.backoff_initial_s: backoff_initial_s (40) is above backoff_max_s (20)"
    )


def test_duplicate_check_still_runs_when_an_entry_is_invalid(write_config, minimal) -> None:
    devices = minimal["devices"] + (
        '\n[[devices]]\nid = "00000001"\ntype = "nope"\nroute = "site"\nsite_ref = ""\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(devices=devices))
    assert str(caught.value).splitlines() == [
        "devices.toml:11 devices[1].id: duplicate device id '00000001': already used by "
        "devices[0] at devices.toml:5 (ids are compared ignoring case)",
        "devices.toml:12 devices[1].type: unknown device type 'nope' (known: button)",
        "devices.toml:14 devices[1].site_ref: String should have at least 1 character",
    ]


def test_missing_key_without_a_device_keys_table(write_config, minimal) -> None:
    credentials = minimal["credentials"].split("[device_keys]")[0]
    assert "00000001" not in credentials
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(credentials=credentials))
    assert str(caught.value) == f"devices.toml:5 devices[0].id: {NO_KEY.format(id='00000001')}"


def test_missing_key_is_reported_with_the_other_errors(write_config, minimal) -> None:
    # A key for another device does not count; the gateway.toml error comes first.
    credentials = minimal["credentials"].replace("00000001 =", "00000002 =")
    with pytest.raises(ConfigError) as caught:
        load_config(
            write_config(
                gateway=minimal["gateway"].replace('name = "test"', 'name = ""'),
                credentials=credentials,
            )
        )
    assert str(caught.value).splitlines() == [
        "gateway.toml:2 gateway.name: String should have at least 1 character",
        f"devices.toml:5 devices[0].id: {NO_KEY.format(id='00000001')}",
    ]


def test_auth_must_be_a_known_kind(write_config, minimal) -> None:
    devices = minimal["devices"] + 'auth = "fixed-code"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(devices=devices))
    assert str(caught.value) == (
        "devices.toml:9 devices[0].auth: Input should be 'hmac', 'network' or 'none'"
    )

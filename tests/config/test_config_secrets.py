"""The AURA secret never leaves the credentials file (DESIGN.md invariant 9)."""

from __future__ import annotations

import traceback

import pytest

from gateway.config import ConfigError, load_config, summarize

SECRET = "Zx9-very-distinctive-SECRET-4711"
CLIENT_ID = "client-id-distinctive-0815"
# A button key (fake, but distinctive); the loader stores it in lower case.
DEVICE_KEY = "0BADC0DE5EC2E7000BADC0DE5EC2E700"
KEYS = f'\n[device_keys]\n00000001 = "{DEVICE_KEY}"\n'
CREDENTIALS = f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}"\n' + KEYS


def _all_text(err: ConfigError) -> str:
    """Everything a log or a crash could show of the error."""
    shown = "".join(traceback.format_exception(err))
    return "\n".join([str(err), repr(err), shown, *(repr(p) for p in err.problems)])


def test_secret_not_in_summary_or_repr(write_config) -> None:
    config = load_config(write_config(credentials=CREDENTIALS))
    assert config.credentials.aura.client_secret.get_secret_value() == SECRET
    assert config.device_key("00000001") == bytes.fromhex(DEVICE_KEY)
    for text in (summarize(config), repr(config), str(config), repr(config.credentials)):
        assert SECRET not in text
        assert CLIENT_ID not in text
        assert DEVICE_KEY not in text
        assert DEVICE_KEY.lower() not in text


@pytest.mark.parametrize(
    "credentials",
    [
        # A schema error right beside the secret, and the secret as a wrong-typed value.
        f'[aura]\nclient_id = 42\nclient_secret = "{SECRET}"\nclient_secert = "{SECRET}"\n',
        f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = ["{SECRET}"]\n',
        f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = {{ value = "{SECRET}" }}\n',
        f'client_secret = "{SECRET}"\n',
    ],
)
def test_secret_not_in_schema_errors(write_config, credentials: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(credentials=credentials))
    text = _all_text(caught.value)
    assert "credentials.toml" in text
    assert SECRET not in text
    assert CLIENT_ID not in text


def test_schema_error_messages_of_the_credentials_file(write_config) -> None:
    credentials = (
        f'[aura]\nclient_id = 42\nclient_secret = "{SECRET}"\nclient_secert = "{SECRET}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(credentials=credentials))
    assert str(caught.value).splitlines() == [
        "credentials.toml:2 aura.client_id: Input should be a valid string",
        "credentials.toml:4 aura.client_secert: unknown key (typo? did you mean 'client_secret'?)",
    ]


def test_secret_not_in_syntax_errors(write_config) -> None:
    # tomllib quotes the offending character; for credentials that is cut off.
    credentials = f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}\x07"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(credentials=credentials))
    expected = "credentials.toml:3: TOML syntax error: Illegal character (column 50)"
    assert str(caught.value) == expected
    assert SECRET not in _all_text(caught.value)


def test_secret_not_in_errors_of_other_files(write_config, minimal) -> None:
    # A config refused for other reasons still reads and validates the credentials.
    with pytest.raises(ConfigError) as caught:
        load_config(
            write_config(
                gateway=minimal["gateway"].replace('name = "test"', "name = 3"),
                credentials=CREDENTIALS,
            )
        )
    assert str(caught.value) == "gateway.toml:2 gateway.name: Input should be a valid string"
    assert SECRET not in _all_text(caught.value)


def test_base_url_with_user_info_is_refused_without_echo(write_config, minimal) -> None:
    gateway = minimal["gateway"].replace(
        "http://127.0.0.1:8765", f"https://user:{SECRET}@staging-panic.aura.services"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(gateway=gateway))
    assert str(caught.value) == (
        "gateway.toml:6 aura.base_url: must not contain a user name or password; "
        "AURA credentials go in the credentials file"
    )
    assert SECRET not in _all_text(caught.value)


def test_mode_is_checked_before_reading(write_config) -> None:
    # Group-readable and broken: only the mode is reported, the content is never parsed.
    path = write_config(credentials=f"client_secret = {SECRET}\n", credentials_mode=0o640)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.message.startswith("mode 0640 lets group/others access the AURA secret")
    assert SECRET not in _all_text(caught.value)


# --------------------------------------------------------------------------- button keys

# Keys as a technician might mistype them; each distinctive so an echo would show.
BAD_HEX = "0badc0de5ec2e7000badc0de5ec2e7zz"  # 32 characters, the last two not hex
SHORT = "0badc0de5ec2e7000badc0de5ec2e7"  # 15 bytes
LONG = "0badc0de5ec2e7000badc0de5ec2e7000badc0de"  # 20 bytes
NOT_HEX = "must be hex digits (32 or 64 of them)"


def _key_error(write_config, key_lines: str) -> ConfigError:
    credentials = f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(credentials=credentials + "\n[device_keys]\n" + key_lines))
    return caught.value


def _assert_not_shown(err: ConfigError, *keys: str) -> None:
    text = _all_text(err)
    for key in (*keys, SECRET, CLIENT_ID):
        assert key not in text
        assert key.lower() not in text
    # Never chained to the pydantic error, whose input values hold the key.
    assert err.__cause__ is None
    assert err.__context__ is None


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (BAD_HEX, NOT_HEX),
        (f"{DEVICE_KEY[:16]} not hex {DEVICE_KEY[16:]}", NOT_HEX),
        ("", "must be 16 or 32 bytes (32 or 64 hex digits), got 0 bytes"),
        (SHORT, "must be 16 or 32 bytes (32 or 64 hex digits), got 15 bytes"),
        (LONG, "must be 16 or 32 bytes (32 or 64 hex digits), got 20 bytes"),
    ],
)
def test_bad_key_is_refused_without_echo(write_config, key: str, message: str) -> None:
    err = _key_error(write_config, f'00000001 = "{key}"\n')
    (problem,) = err.problems
    assert problem.file is not None and problem.file.name == "credentials.toml"
    assert problem.message == message
    if key:
        _assert_not_shown(err, key)


def test_bad_key_messages_name_the_key(write_config) -> None:
    err = _key_error(write_config, f'00000001 = "{BAD_HEX}"\n')
    assert str(err) == f"credentials.toml:6 device_keys.00000001: {NOT_HEX}"
    err = _key_error(write_config, f'00000001 = "{SHORT}"\n')
    assert str(err) == (
        "credentials.toml:6 device_keys.00000001: "
        "must be 16 or 32 bytes (32 or 64 hex digits), got 15 bytes"
    )


def test_every_bad_key_is_reported(write_config) -> None:
    err = _key_error(
        write_config, f'00000001 = "{BAD_HEX}"\n00000002 = "{DEVICE_KEY}"\n00000003 = "{LONG}"\n'
    )
    assert str(err).splitlines() == [
        f"credentials.toml:6 device_keys.00000001: {NOT_HEX}",
        "credentials.toml:8 device_keys.00000003: "
        "must be 16 or 32 bytes (32 or 64 hex digits), got 20 bytes",
    ]


@pytest.mark.parametrize(
    "key_lines",
    [
        # Several bad keys, a good one among them, and keys of the wrong type.
        f'00000001 = "{BAD_HEX}"\n00000002 = "{DEVICE_KEY}"\n00000003 = "{LONG}"\n',
        f'00000001 = ["{DEVICE_KEY}"]\n',
        f'00000001 = {{ key = "{DEVICE_KEY}" }}\n',
        f'00000001 = "{DEVICE_KEY}"\n00000001 = "{LONG}"\n',  # TOML error: key defined twice
    ],
)
def test_keys_not_in_any_error(write_config, key_lines: str) -> None:
    err = _key_error(write_config, key_lines)
    assert all(p.file is not None and p.file.name == "credentials.toml" for p in err.problems)
    _assert_not_shown(err, DEVICE_KEY, BAD_HEX, LONG)


def test_keys_not_in_errors_of_other_files(write_config, minimal) -> None:
    # Valid keys, a config refused elsewhere: the loaded credentials must not leak into it.
    with pytest.raises(ConfigError) as caught:
        load_config(
            write_config(
                devices=minimal["devices"].replace('type = "button"', 'type = "buton"'),
                credentials=CREDENTIALS,
            )
        )
    assert str(caught.value) == (
        "devices.toml:6 devices[0].type: unknown device type 'buton' (known: button)"
    )
    _assert_not_shown(caught.value, DEVICE_KEY)

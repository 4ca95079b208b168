"""The AURA secret never leaves the credentials file (DESIGN.md invariant 9)."""

from __future__ import annotations

import traceback

import pytest

from gateway.config import ConfigError, load_config, summarize

SECRET = "Zx9-very-distinctive-SECRET-4711"
CLIENT_ID = "client-id-distinctive-0815"
CREDENTIALS = f'[aura]\nclient_id = "{CLIENT_ID}"\nclient_secret = "{SECRET}"\n'


def _all_text(err: ConfigError) -> str:
    """Everything a log or a crash could show of the error."""
    shown = "".join(traceback.format_exception(err))
    return "\n".join([str(err), repr(err), shown, *(repr(p) for p in err.problems)])


def test_secret_not_in_summary_or_repr(write_config) -> None:
    config = load_config(write_config(credentials=CREDENTIALS))
    assert config.credentials.aura.client_secret.get_secret_value() == SECRET
    for text in (summarize(config), repr(config), str(config)):
        assert SECRET not in text
        assert CLIENT_ID not in text


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

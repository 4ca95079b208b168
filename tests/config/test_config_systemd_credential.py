"""Under systemd the credentials come from $CREDENTIALS_DIRECTORY/aura-credentials
(``LoadCredential=`` in the unit); run by hand, from credentials_file as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.config.loader import SYSTEMD_CREDENTIAL

from .conftest import MINIMAL_CREDENTIALS, WriteConfig

HANDED_OVER = MINIMAL_CREDENTIALS.replace("test-client", "client-from-systemd")


def _credential(tmp_path: Path, mode: int = 0o400, text: str = HANDED_OVER) -> Path:
    folder = tmp_path / "credentials"
    folder.mkdir()
    path = folder / SYSTEMD_CREDENTIAL
    path.write_text(text)
    path.chmod(mode)
    return folder


def test_the_systemd_credential_wins_over_the_file(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = write_config()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(_credential(tmp_path)))
    config = load_config(gateway)
    assert config.credentials.aura.client_id.get_secret_value() == "client-from-systemd"
    assert config.credentials_path == tmp_path / "credentials" / SYSTEMD_CREDENTIAL


def test_the_configured_file_may_be_absent_or_unreadable_then(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service user cannot read root's /etc/aura-gateway/credentials.toml: no need."""
    gateway = write_config(credentials=None)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(_credential(tmp_path)))
    assert load_config(gateway).device_key("00000001") is not None


def test_no_mode_check_for_systemds_copy(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd made it, for this service only; its mode is systemd's business."""
    gateway = write_config(credentials=None)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(_credential(tmp_path, 0o440)))
    load_config(gateway)


def test_errors_in_the_credential_are_reported_against_it(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = write_config()
    folder = _credential(tmp_path, text='[aura]\nclient_id = "x"\n')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    with pytest.raises(ConfigError) as err:
        load_config(gateway)
    assert f"{SYSTEMD_CREDENTIAL}:" in str(err.value)
    assert "client_secret" in str(err.value)


def test_without_the_credential_the_file_and_its_mode_check_are_back(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = write_config(credentials_mode=0o644)
    empty = tmp_path / "other-credentials"
    empty.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(empty))  # another service's name only
    with pytest.raises(ConfigError, match="mode 0644"):
        load_config(gateway)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="mode 0644"):
        load_config(gateway)

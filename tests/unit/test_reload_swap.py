"""The reload's swap (gateway/reload.py) on real config files, with stand-ins for the parts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, load_config
from gateway.reload import Reloader
from gateway.status import StatusModel
from tests.config.conftest import MINIMAL_CREDENTIALS, MINIMAL_DEVICES, MINIMAL_GATEWAY

SECOND = """
[[devices]]
id = "00000002"
type = "button"
route = "site"
site_ref = "SITE-2"
auth = "none"
"""


class Part:
    def __init__(self, config: Config) -> None:
        self.config = self.gateway = config
        self.reloaded: list[Config] = []

    def reload(self, config: Config) -> None:
        self.reloaded.append(config)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "gateway.toml").write_text(MINIMAL_GATEWAY)
    (tmp_path / "devices.toml").write_text(MINIMAL_DEVICES)
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(MINIMAL_CREDENTIALS)
    os.chmod(credentials, 0o600)
    return tmp_path


def _reloader(config: Config) -> tuple[Reloader, Part, Part, Part, StatusModel, list[str]]:
    engine, serial, watch = Part(config), Part(config), Part(config)
    status = StatusModel(devices=len(config.devices.devices))
    told: list[str] = []
    reloader = Reloader(
        config,
        engine=engine,
        inputs=[serial],
        device_watch=watch,
        status=status,
        notify=lambda s: told.append(s),
    )
    return reloader, engine, serial, watch, status, told


async def test_refused_reload_keeps_everything_and_says_why(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(files / "gateway.toml")
    reloader, engine, serial, watch, status, told = _reloader(config)
    (files / "devices.toml").write_text(MINIMAL_DEVICES.replace('route = "site"', 'route = "x"'))
    with caplog.at_level(logging.INFO, logger="gateway.reload"):
        assert await reloader.reload() is False
    assert engine.config is serial.gateway is reloader.config is config
    assert watch.reloaded == []
    assert status.config_error is not None and "devices.toml:7 devices[0].route" in (
        status.config_error
    )
    assert "config error (reload refused)" in status.summary()
    assert told[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert told[-1].startswith("READY=1\nSTATUS=reload refused, running config kept: ")
    [refused] = [r.getMessage() for r in caplog.records if "reload_refused" in r.getMessage()]
    assert "devices.toml:7 devices[0].route:" in refused


async def test_accepted_reload_swaps_one_config_everywhere(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(files / "gateway.toml")
    reloader, engine, serial, watch, status, told = _reloader(config)
    status.config_error = "an earlier refusal"
    (files / "devices.toml").write_text(MINIMAL_DEVICES + SECOND)
    with caplog.at_level(logging.INFO, logger="gateway.reload"):
        assert await reloader.reload() is True
    new = reloader.config
    assert new is engine.config is serial.gateway is watch.reloaded[0]
    assert new.device("00000002") is not None and config.device("00000002") is None
    assert new.path == config.path and new.gateway == config.gateway
    assert status.devices == 2 and status.config_error is None
    assert told[-1].startswith("READY=1\nSTATUS=")
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "event=reload_done devices=2 added=[00000002] removed=[] changed=[]" in m for m in messages
    )
    assert not any("reload_needs_restart" in m for m in messages)


async def test_what_needs_a_restart_is_said_and_not_applied(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(files / "gateway.toml")
    reloader, engine, *_ = _reloader(config)
    (files / "gateway.toml").write_text(MINIMAL_GATEWAY.replace('name = "test"', 'name = "new"'))
    credentials = files / "credentials.toml"
    credentials.write_text(MINIMAL_CREDENTIALS.replace("test-secret", "rotated-secret-9931"))
    with caplog.at_level(logging.INFO, logger="gateway.reload"):
        assert await reloader.reload() is True
    running: Any = engine.config
    assert running.gateway.gateway.name == "test"
    assert running.credentials.aura.client_secret.get_secret_value() == "test-secret"
    messages = [r.getMessage() for r in caplog.records]
    assert any("reload_needs_restart" in m and "changed=[gateway]" in m for m in messages)
    assert any("reload_needs_restart" in m and "changed=[aura]" in m for m in messages)
    assert not any("rotated-secret-9931" in m for m in messages)

"""Fixtures for the config tests: write the three files into a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

MINIMAL_GATEWAY = """\
[gateway]
name = "test"
journal_path = "journal.sqlite"

[aura]
base_url = "http://127.0.0.1:8765"

[[inputs]]
type = "serial"
port = "/dev/null"
"""

MINIMAL_DEVICES = """\
[device_types.button]
raise_gestures = ["single"]

[[devices]]
id = "00000001"
type = "button"
route = "site"
site_ref = "SITE-1"
"""

# Obviously fake button key (bytes 00..0f): the loader wants one for every hmac device.
TEST_KEY = "000102030405060708090a0b0c0d0e0f"

# [device_keys] comes last so a test can append a key line for a device it adds.
MINIMAL_CREDENTIALS = f"""\
[aura]
client_id = "test-client"
client_secret = "test-secret"

[device_keys]
00000001 = "{TEST_KEY}"
"""

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write gateway.toml, devices.toml and credentials.toml (0600); return gateway.toml.

    Pass None for a file to leave it out.
    """

    def write(
        gateway: str = MINIMAL_GATEWAY,
        devices: str | None = MINIMAL_DEVICES,
        credentials: str | None = MINIMAL_CREDENTIALS,
        *,
        credentials_mode: int = 0o600,
    ) -> Path:
        (tmp_path / "gateway.toml").write_text(gateway)
        if devices is not None:
            (tmp_path / "devices.toml").write_text(devices)
        if credentials is not None:
            path = tmp_path / "credentials.toml"
            path.write_text(credentials)
            os.chmod(path, credentials_mode)
        return tmp_path / "gateway.toml"

    return write


@pytest.fixture
def minimal() -> dict[str, str]:
    """The smallest valid texts of the three files, to vary in a test."""
    return {
        "gateway": MINIMAL_GATEWAY,
        "devices": MINIMAL_DEVICES,
        "credentials": MINIMAL_CREDENTIALS,
    }

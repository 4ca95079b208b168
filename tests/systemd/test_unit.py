"""The systemd unit, its tmpfiles entry and the installed copy, checked by systemd's tools.

``systemd-analyze verify`` parses the unit as systemd would and warns (rc 0 all the same)
about every unknown key or bad value, so its stderr must be empty; it also checks that
ExecStart exists, so it runs on a copy pointing at this venv's ``aura-gateway``.
``systemd-analyze security --offline=yes`` scores the sandboxing: exposure at most 2.0.
Both work without systemd as PID 1 (TESTBED.md §5). A missing systemd-analyze fails the
test under CI and skips it elsewhere (``apt install systemd``; dev.sh installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.loader import SYSTEMD_CREDENTIAL
from gateway.install import Installer

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "aura-gateway.service"
SHIPPED_EXEC = "/opt/aura-gateway/venv/bin/aura-gateway"
MAX_EXPOSURE = 2.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt install systemd"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _venv_executable() -> Path:
    exe = Path(sys.executable).with_name("aura-gateway")
    assert exe.exists(), f"{exe}: install the project into the venv (pip install -e .)"
    return exe


def _unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit under its own name, ExecStart pointing at an existing executable."""
    text = UNIT.read_text() if text is None else text
    assert SHIPPED_EXEC in text
    copy = tmp_path / "aura-gateway.service"
    copy.write_text(text.replace(SHIPPED_EXEC, str(_venv_executable())))
    return copy


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze"), "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _security(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=yes", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _settings(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys repeat: DeviceAllow=, ...)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_verify_is_silent(tmp_path: Path) -> None:
    result = _verify(_unit_copy(tmp_path))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_verify_would_see_a_typo(tmp_path: Path) -> None:
    """The check above can fail: systemd only warns about a misspelt key (rc 0)."""
    typo = UNIT.read_text().replace("WatchdogSec=30", "WatchdogSecs=30")
    result = _verify(_unit_copy(tmp_path, typo))
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_security_exposure_at_most_two(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path)
    result = _security(unit)
    assert result.returncode == 0, result.stderr
    found = re.search(
        r"Overall exposure level for aura-gateway\.service: (\d+\.\d+)", result.stdout
    )
    assert found, result.stdout[-500:]
    assert float(found[1]) <= MAX_EXPOSURE, result.stdout
    # The same bound as systemd's own gate (0-100 scale), as a CI job would use it.
    assert _security(unit, f"--threshold={int(MAX_EXPOSURE * 10)}").returncode == 0


def test_the_unit_says_what_the_daemon_relies_on() -> None:
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"] == [f"{SHIPPED_EXEC} run --config /etc/aura-gateway/gateway.toml"]
    assert s["User"] == ["aura-gateway"] and s["Group"] == ["aura-gateway"]
    assert set(s["SupplementaryGroups"][0].split()) == {"dialout", "gpio"}
    assert s["StateDirectory"] == s["RuntimeDirectory"] == s["ConfigurationDirectory"]
    # The credential name the loader looks for in $CREDENTIALS_DIRECTORY.
    assert s["LoadCredential"] == [f"{SYSTEMD_CREDENTIAL}:/etc/aura-gateway/credentials.toml"]
    assert s["ProtectSystem"] == ["strict"] and s["ProtectClock"] == ["yes"]
    assert s["CapabilityBoundingSet"] == [""] and s["DevicePolicy"] == ["closed"]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-gpiochip rw"} <= set(s["DeviceAllow"])


def test_the_installed_unit_verifies_too(tmp_path: Path) -> None:
    """What `aura-gateway install --prefix P` writes: ExecStart under P, still silent."""
    prefix = tmp_path / "opt"
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "bin" / "aura-gateway").symlink_to(_venv_executable())
    text = Installer(prefix=prefix).unit_text()
    assert f"ExecStart={prefix}/venv/bin/aura-gateway run" in text
    assert f"Documentation=file://{prefix}/README.md" in text
    unit = tmp_path / "aura-gateway.service"
    unit.write_text(text)
    result = _verify(unit)
    assert (result.returncode, result.stderr) == (0, "")


def test_tmpfiles_entry_applies(tmp_path: Path) -> None:
    """systemd-tmpfiles --root: the secret's mode is fixed, the state dir is the user's."""
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles changes owners: run as root (CI does)")
    root = tmp_path
    (root / "etc" / "tmpfiles.d").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("aura-gateway:x:999:999::/nonexistent:/usr/sbin/nologin\n")
    (root / "etc" / "group").write_text("aura-gateway:x:999:\n")
    shutil.copy(
        REPO / "systemd" / "aura-gateway.tmpfiles", root / "etc/tmpfiles.d/aura-gateway.conf"
    )
    secret = root / "etc" / "aura-gateway" / "credentials.toml"
    secret.parent.mkdir()
    secret.write_text("[aura]\n")
    secret.chmod(0o644)
    result = subprocess.run(
        [_tool("systemd-tmpfiles"), "--create", f"--root={root}", "aura-gateway.conf"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert secret.stat().st_mode & 0o777 == 0o600
    state = (root / "var" / "lib" / "aura-gateway").stat()
    assert (state.st_mode & 0o777, state.st_uid) == (0o700, 999)

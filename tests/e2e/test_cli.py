"""The technician's check-config, as a command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomli_w

from gateway.demo import SIM_DEVICE_KEYS

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def sim_copy(tmp_path: Path) -> Path:
    shutil.copy(REPO_CONFIG / "devices.sim.toml", tmp_path / "devices.sim.toml")
    gateway = (REPO_CONFIG / "gateway.sim.toml").read_text()
    gateway = gateway.replace("/tmp/aura-gateway-sim/credentials.toml", "credentials.toml")
    (tmp_path / "gateway.toml").write_text(gateway)
    creds = tmp_path / "credentials.toml"
    creds.write_text(
        tomli_w.dumps(
            {
                "aura": {"client_id": "id", "client_secret": "never-printed-secret"},
                "device_keys": SIM_DEVICE_KEYS,
            }
        )
    )
    creds.chmod(0o600)
    return tmp_path / "gateway.toml"


def test_good_config_prints_a_summary_and_exits_0(tmp_path: Path) -> None:
    result = check_config(sim_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "00a1b2c3" in result.stdout and "SHOP-CPT-001" in result.stdout
    assert "never-printed-secret" not in result.stdout + result.stderr
    assert all(key not in result.stdout for key in SIM_DEVICE_KEYS.values())


def test_bad_config_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    gateway = sim_copy(tmp_path)
    devices = tmp_path / "devices.sim.toml"
    text = devices.read_text()
    text = text.replace(
        'type = "desk-button"\nlabel = "Desk button', 'type = "desk-buton"\nlabel = "Desk button'
    )
    text = text.replace("customer_id = 1001", "customer_id = -5")
    devices.write_text(text)
    (tmp_path / "credentials.toml").chmod(0o644)
    result = check_config(gateway)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("devices.sim.toml:") and "devices[0].customer_id" in line for line in lines
    )
    assert any("devices[1].type: unknown device type 'desk-buton'" in line for line in lines)
    assert any("mode 0644" in line and "chmod 600" in line for line in lines)
    assert "never-printed-secret" not in result.stdout + result.stderr

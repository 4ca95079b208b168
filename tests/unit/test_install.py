"""`aura-gateway install`: the dry run says everything and changes nothing; a real run into
a --root folder lays the files out with the right modes and never overwrites a config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.install import Installer

REPO = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["install", *args])
    return code, capsys.readouterr().out


def test_dry_run_lists_every_step_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, "--dry-run", "--prefix", "/opt/gw", "--root", str(tmp_path))
    assert code == 0
    assert list(tmp_path.iterdir()) == []
    for expected in (
        "useradd --system --user-group --no-create-home --home-dir /nonexistent "
        "--shell /usr/sbin/nologin",
        "would create /etc/aura-gateway/ (mode 0755, root)",
        "would write /etc/aura-gateway/credentials.toml (mode 0600, root)",
        "would create /var/lib/aura-gateway/ (mode 0700, aura-gateway)",
        "would run python3 -m venv /opt/gw/venv",
        "would write /etc/systemd/system/aura-gateway.service",
        "would write /etc/udev/rules.d/99-aura-gateway-receiver.rules",
        "would write /etc/udev/rules.d/99-aura-gateway-gpio.rules",
        "would write /etc/tmpfiles.d/aura-gateway.conf",
        "would run systemctl daemon-reload",
        "Nothing was changed (--dry-run)",
        "sudo systemctl enable --now aura-gateway",
        "/opt/gw/venv/bin/aura-gateway check-config",
    ):
        assert expected in out, expected


def test_dry_run_on_this_machine_needs_no_root(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--dry-run")
    assert code == 0 and "/opt/aura-gateway/venv" in out


def test_install_into_a_root_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "image"
    mine = root / "etc" / "aura-gateway" / "gateway.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# the technician's own\n")

    code, out = _run(capsys, "--prefix", "/opt/gw", "--root", str(root))
    assert code == 0, out
    assert mine.read_text() == "# the technician's own\n"  # never overwritten
    assert "keep /etc/aura-gateway/gateway.toml (exists; never overwritten)" in out
    assert "skipped under --root: run systemctl daemon-reload" in out

    def mode(path: str) -> int:
        return (root / path).stat().st_mode & 0o777

    assert mode("etc/aura-gateway/credentials.toml") == 0o600
    assert mode("etc/aura-gateway/devices.toml") == 0o644
    assert mode("var/lib/aura-gateway") == 0o700
    unit = (root / "etc/systemd/system/aura-gateway.service").read_text()
    assert "ExecStart=/opt/gw/venv/bin/aura-gateway run --config" in unit
    assert "/opt/aura-gateway" not in unit
    for rules in ("receiver", "leds", "gpio"):
        assert (root / f"etc/udev/rules.d/99-aura-gateway-{rules}.rules").is_file()
    tmpfiles = (root / "etc/tmpfiles.d/aura-gateway.conf").read_text()
    assert tmpfiles == (REPO / "systemd/aura-gateway.tmpfiles").read_text()
    assert (root / "opt/gw/README.md").read_text() == (REPO / "README.md").read_text()
    example = (REPO / "config/credentials.example.toml").read_text()
    assert (root / "etc/aura-gateway/credentials.toml").read_text() == example

    # Again: nothing left to write, the edited receiver rule is kept.
    receiver = root / "etc/udev/rules.d/99-aura-gateway-receiver.rules"
    receiver.write_text("# ids filled in\n")
    code, out = _run(capsys, "--prefix", "/opt/gw", "--root", str(root))
    assert code == 0
    assert " write " not in out and " update " not in out, out
    assert receiver.read_text() == "# ids filled in\n"


def test_the_unit_follows_the_prefix() -> None:
    text = Installer(prefix=Path("/srv/agw")).unit_text()
    assert "ExecStart=/srv/agw/venv/bin/aura-gateway run" in text
    assert "Documentation=file:///srv/agw/README.md" in text


def test_relative_prefix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "--dry-run", "--prefix", "opt"]) == 2

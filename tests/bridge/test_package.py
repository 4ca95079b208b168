"""The package's public surface (STYLE.md item 15: an __all__ guard)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import firmware_bridge


def test_all_names_resolve_and_are_unique() -> None:
    assert len(firmware_bridge.__all__) == len(set(firmware_bridge.__all__))
    for name in firmware_bridge.__all__:
        assert getattr(firmware_bridge, name) is not None, name


def test_importing_the_package_does_not_import_pyserial() -> None:
    # The link (pyserial, asyncio) loads on first use, so the codec and the simulator
    # work on a machine without pyserial.
    code = (
        "import sys, firmware_bridge\n"
        "firmware_bridge.Press, firmware_bridge.SimulatedReceiver\n"
        "assert 'serial' not in sys.modules and 'asyncio' not in sys.modules\n"
        "firmware_bridge.ReceiverLink\n"
        "assert 'serial_asyncio_fast' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_protocol_md_ships_in_the_package() -> None:
    text = resources.files("firmware_bridge").joinpath("PROTOCOL.md").read_text("utf-8")
    assert "```vectors" in text

"""Fixtures for the firmware_bridge tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.sim import SimulatedReceiver

from .helpers import TEST_RESEND_S


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedReceiver]:
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=TEST_RESEND_S
    ) as receiver:
        yield receiver

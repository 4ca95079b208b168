"""The abort window through the real daemon: a cancel inside it means nothing reaches
AURA; without one the alarm goes when the window ends, even across a SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

BUTTON = 0x00A0B0C0
KEY = "1e" * 16
WINDOW_S = 1.5


def creates(requests: list[Any]) -> list[Any]:
    return [r for r in requests if r.method == "POST" and r.path.endswith("/callouts")]


def configure(daemon_runner: DaemonRunner, tmp_path: Path) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "lone-worker": {
                        "raise_gestures": ["single"],
                        "cancel_gestures": ["hold"],
                        "abort_window_s": WINDOW_S,
                    }
                },
                "devices": [
                    {
                        "id": f"{BUTTON:08x}",
                        "type": "lone-worker",
                        "route": "customer",
                        "customer_id": 1001,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                ],
            }
        )
    )
    daemon_runner.write_config(devices_file=devices, device_keys={f"{BUTTON:08x}": KEY})


def test_cancel_inside_the_abort_window_sends_nothing_and_no_cancel_sends_the_alarm(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, tmp_path: Path
) -> None:
    configure(daemon_runner, tmp_path)
    daemon_runner.receiver.close()
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, keys={BUTTON: bytes.fromhex(KEY)}
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        assert receiver.wait_acked(receiver.press(BUTTON), 5)  # stored, acked, held
        receiver.press(BUTTON, gesture="hold")  # "I am fine"
        daemon.wait_event("alarm_withdrawn", 5)
        time.sleep(WINDOW_S + 0.5)
        assert creates(sandbox.requests()) == []

        pressed = time.monotonic()
        receiver.press(BUTTON)
        assert sandbox.wait_for(lambda reqs: len(creates(reqs)) == 1, 10)
        # Not before the window: the person had the chance to cancel.
        assert time.monotonic() - pressed >= WINDOW_S - 0.1


def test_an_alarm_held_in_its_abort_window_survives_a_kill(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, tmp_path: Path
) -> None:
    configure(daemon_runner, tmp_path)
    daemon_runner.receiver.close()
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, keys={BUTTON: bytes.fromhex(KEY)}
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        assert receiver.wait_acked(receiver.press(BUTTON), 5)
        daemon.kill()  # inside the window: held in the journal, nothing sent
        assert creates(sandbox.requests()) == []
        daemon_runner.start()
        assert sandbox.wait_for(lambda reqs: len(creates(reqs)) == 1, 10)
        time.sleep(0.5)
        assert len(creates(sandbox.requests())) == 1

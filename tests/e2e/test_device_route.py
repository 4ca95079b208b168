"""A button onboarded with AURA as a device: every interaction is a deviceEvent with the
message_type codes agreed for its device type (raise, location, health, cancel)."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

BUTTON = 0x00D0D0D0
KEY = "0f" * 16
CODES = {"raise": 1, "location": 2, "cancel": 3, "health": 4}


def device_events(sandbox: AuraSandbox) -> list[int]:
    return [
        r.body["message_type"]
        for r in sandbox.requests()
        if r.path.endswith("/deviceEvent") and isinstance(r.body, dict) and r.status == 200
    ]


def test_device_route_raises_moves_reports_health_and_cancels_by_its_codes(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "tracker": {
                        "raise_gestures": ["single"],
                        "cancel_gestures": ["hold"],
                        "has_gps": True,
                    }
                },
                "devices": [
                    {
                        "id": f"{BUTTON:08x}",
                        "type": "tracker",
                        "route": "device",
                        "aura_device_id": 26217939,  # the sandbox links it to customer 1003
                        "device_type_id": 5,
                        "raise_message_type": CODES["raise"],
                        "location_message_type": CODES["location"],
                        "cancel_message_type": CODES["cancel"],
                        "health_message_type": CODES["health"],
                    }
                ],
            }
        )
    )
    daemon_runner.write_config(devices_file=devices, device_keys={f"{BUTTON:08x}": KEY})
    daemon_runner.receiver.close()
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, keys={BUTTON: bytes.fromhex(KEY)}
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        assert receiver.wait_acked(receiver.send_fix(BUTTON, -26.0919, 28.084, accuracy_m=70), 5)
        receiver.press(BUTTON)
        raised = daemon.wait_event("callout_raised", 15)
        assert raised["route"] == "device"
        [create] = [r for r in sandbox.requests() if r.path.endswith("/deviceEvent")]
        assert create.body == {
            "device_id": 26217939,
            "device_type_id": 5,
            "message_type": CODES["raise"],
            "location": {"latitude": -26.0919, "longitude": 28.084, "accuracy": 70.0},
        }
        daemon.wait_event("location_sent", 10)
        receiver.device_status(BUTTON, battery_pct=9, battery_low=True)
        daemon.wait_event("health_sent", 10)
        receiver.press(BUTTON, gesture="hold")
        daemon.wait_event("callout_cancelled", 15)
    assert device_events(sandbox)[0] == CODES["raise"]
    assert {CODES["location"], CODES["health"], CODES["cancel"]} <= set(device_events(sandbox))
    assert device_events(sandbox).index(CODES["cancel"]) > 0  # after the raise

"""``systemctl reload`` (SIGHUP) through the real daemon: the device registry, all or nothing.

A broken devices file is refused with file and line, and everything runs on as before:
the old buttons raise, the open incident goes on. A good one is live at once: a new
button (with a new key in credentials.toml) raises, a removed one is an unknown device,
and the incident opened before the reload still collects its button's presses.
"""

from __future__ import annotations

import signal
from pathlib import Path

from firmware_bridge.auth import press_tag
from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import REPO_CONFIG, SIM_DEVICE_KEYS
from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner
from .test_press_to_callout import creates, press_with_fix

PENDANT = 0x00A1B2C3  # customer 1001, live location
DESK = 0x00A1B2C4  # customer 1003, fixed location 501
SHOP = 0x00C0FFEE  # site SHOP-CPT-001
CLINIC = 0x00C0FFE1  # new in the reloaded file: site CLINIC-JHB-7
CLINIC_KEY = "51a7e0c3b9d24f6e8a1b2c3d4e5f60aa"

CLINIC_ENTRY = """
[[devices]]
id = "00c0ffe1"
type = "shop-button"
label = "Clinic reception"
route = "site"
site_ref = "CLINIC-JHB-7"
predefined_location_id = 502
"""


def _registry(tmp_path: Path) -> tuple[Path, str]:
    text = (REPO_CONFIG / "devices.sim.toml").read_text()
    path = tmp_path / "devices.toml"
    path.write_text(text)
    return path, text


def _line_of(text: str, needle: str, after: str) -> int:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(i for i in range(start, len(lines)) if lines[i].startswith(needle)) + 1


def _hup(daemon_runner: DaemonRunner) -> None:
    daemon_runner.processes[-1].proc.send_signal(signal.SIGHUP)


def test_broken_devices_file_is_refused_with_file_and_line_and_nothing_changes(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    tmp_path: Path,
) -> None:
    devices, text = _registry(tmp_path)
    daemon_runner.write_config(devices_file=devices)
    daemon = daemon_runner.start()
    press_with_fix(receiver)
    raised = daemon.wait_event("callout_raised", 10)

    # A typo in the desk button's entry: customer_id must be positive.
    broken = text.replace("customer_id = 1003", "customer_id = -1003")
    devices.write_text(broken)
    line = _line_of(broken, "customer_id = -1003", 'id = "00a1b2c4"')
    _hup(daemon_runner)
    refused = daemon.wait_event("reload_refused", 5)
    assert refused["problems"] == "1" and str(devices) in refused["files"]
    problem = f"devices.toml:{line} devices[1].customer_id:"
    assert any(problem in entry for entry in daemon.history), daemon.history[-10:]
    status = daemon_runner.wait_status(lambda s: s.get("config_error") is not None, 3)
    assert "reload refused" in status["summary"]
    assert status["devices_configured"] == 4

    # The running registry stays: the desk button (customer 1003 as before) raises...
    receiver.press(DESK)
    desk = daemon.wait_event("callout_raised", 10)
    assert desk["incident"] != raised["incident"]
    paths = sorted(r.path for r in creates(sandbox))
    assert paths == [
        "/panic-api/v2/customers/1001/callouts",
        "/panic-api/v2/customers/1003/callouts",
    ]
    # ... and the incident open before the reload still takes its button's presses.
    receiver.press(PENDANT, gesture="long")
    attached = daemon.wait_event("press_attached", 5)
    assert attached["incident"] == raised["incident"]
    assert len(creates(sandbox)) == 2


def test_good_devices_file_is_live_at_once_and_open_incidents_go_on(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    tmp_path: Path,
) -> None:
    devices, text = _registry(tmp_path)
    daemon_runner.write_config(devices_file=devices)
    daemon = daemon_runner.start()
    press_with_fix(receiver)
    raised = daemon.wait_event("callout_raised", 10)

    # The desk button is taken out, a clinic button comes in with its own new key.
    start = text.index("# A desk button")
    end = text.index("# A shop button")
    devices.write_text(text[:start] + text[end:] + CLINIC_ENTRY)
    daemon_runner.write_config(
        devices_file=devices, device_keys={**SIM_DEVICE_KEYS, "00c0ffe1": CLINIC_KEY}
    )
    _hup(daemon_runner)
    done = daemon.wait_event("reload_done", 5)
    assert done["devices"] == "4"
    assert done["added"] == "[00c0ffe1]" and done["removed"] == "[00a1b2c4]"
    daemon_runner.wait_status(lambda s: s["devices_configured"] == 4, 3)

    # The new button raises (its key came with the reload).
    tag = press_tag(bytes.fromhex(CLINIC_KEY), CLINIC, 1, "single", 95)
    seq = receiver.press(CLINIC, counter=1, tag=tag)
    clinic = daemon.wait_event("callout_raised", 10)
    assert receiver.wait_acked(seq, 5)
    assert creates(sandbox)[-1].path.endswith("/externalRef/CLINIC-JHB-7/callouts")
    assert clinic["incident"] != raised["incident"]

    # The removed one is an unknown device now: acknowledged, recorded, never raised.
    seq = receiver.press(DESK)
    ignored = daemon.wait_event("press_ignored", 5)
    assert ignored["device"] == "00a1b2c4" and "unknown device" in ignored["reason"]
    assert receiver.wait_acked(seq, 5)

    # The pendant's incident, opened under the old registry, goes on.
    receiver.press(PENDANT, gesture="long")
    attached = daemon.wait_event("press_attached", 5)
    assert attached["incident"] == raised["incident"]
    customer_creates = [r for r in creates(sandbox) if "/customers/" in r.path]
    assert [r.path for r in customer_creates] == ["/panic-api/v2/customers/1001/callouts"]
    assert daemon.stop() == 0

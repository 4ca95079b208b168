"""The callout's life after the raise, as the technician and the control room see it."""

from __future__ import annotations

import json
import subprocess
import sys

from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

DESK = 0x00A1B2C4  # customer 1003, fixed location


def cli(runner: DaemonRunner, *args: str) -> subprocess.CompletedProcess[str]:
    assert runner.config_path is not None
    return subprocess.run(
        [sys.executable, "-m", "gateway", "incidents", "--config", str(runner.config_path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_pressed_again_is_told_to_the_control_room_and_shown_in_status(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK)
    raised = daemon.wait_event("callout_raised", 15)
    receiver.press(DESK)
    daemon.wait_event("note_sent", 10)
    [callout] = sandbox.callouts()
    assert callout["id"] == int(raised["callout"])
    assert len(callout["events"]) == 1 and "pressed again" in callout["events"][0]
    status = daemon_runner.wait_status(
        lambda s: s.get("callout_events", {}).get(raised["incident"], {}).get("count") == 1, 10
    )
    assert "pressed again" in status["callout_events"][raised["incident"]]["last"]


def test_after_the_end_report_and_map_are_kept_and_the_callout_can_be_rated(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK)
    raised = daemon.wait_event("callout_raised", 15)
    incident, callout = raised["incident"], int(raised["callout"])
    refused = cli(daemon_runner, "rate", incident, "5")
    assert refused.returncode == 1 and "once it closed" in refused.stderr
    sandbox.set_status(callout, "Responder On Scene")
    daemon.wait_event("callout_stage", 10)
    sandbox.close_callout(callout)
    daemon.wait_event("report_kept", 15)
    shown = cli(daemon_runner, "--json", "show", incident)
    assert shown.returncode == 0, shown.stderr
    [record] = json.loads(shown.stdout)
    assert record["state"] == "closed" and record["callout_id"] == callout
    assert record["report"]["report"]["calloutId"] == callout
    assert record["report"]["map"]["url"].endswith(f"/map/{callout}.png")
    human = cli(daemon_runner, "show", incident)
    assert f"callout    {callout}" in human.stdout
    rated = cli(daemon_runner, "rate", incident, "4", "quick", "and", "kind")
    assert rated.returncode == 0, rated.stderr
    [after] = sandbox.callouts()
    assert after["rating"]["rating"] == 4 and after["rating"]["details"] == "quick and kind"
    listing = cli(daemon_runner, "list")
    assert incident in listing.stdout and "closed" in listing.stdout

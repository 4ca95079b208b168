"""The receiver link through the real daemon: authentication, replays, repeats, unplug,
and the receiver watchdog, as a technician and an alarm operator would see them."""

from __future__ import annotations

import time
from pathlib import Path

import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox, RecordedRequest

from .conftest import DaemonRunner

PENDANT = 0x00A1B2C3  # customer 1001, live location
DESK = 0x00A1B2C4  # customer 1003, fixed location


def creates(sandbox: AuraSandbox) -> list[RecordedRequest]:
    return [r for r in sandbox.requests() if r.method == "POST" and r.path.endswith("/callouts")]


def counters(runner: DaemonRunner) -> dict[str, int]:
    return runner.status()["counters"]


def test_wrong_key_is_rejected_counted_and_never_raised(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    seq = receiver.press(DESK, tag=b"\x00" * 8)  # a forged press: right device, wrong key
    rejected = daemon.wait_event("frame_rejected", 10)
    assert rejected["reason"] == "bad_tag"
    daemon_runner.wait_status(lambda s: s["counters"].get("auth_failures") == 1, 10)
    # NAK "rejected" ends the receiver's resends: the frame is not sent again and again.
    time.sleep(1.0)
    assert seq not in receiver.acked()
    assert creates(sandbox) == []
    # The genuine button still works.
    receiver.press(DESK)
    daemon.wait_event("callout_raised", 15)
    assert len(creates(sandbox)) == 1


def test_replayed_transmission_and_old_counter_are_rejected(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon_runner.write_config(serial={"repeat_window_s": 1.0})
    daemon = daemon_runner.start()
    receiver.press(DESK, counter=10)
    daemon.wait_event("callout_raised", 15)
    time.sleep(1.5)  # past the repeat window: the same transmission now is a recording
    receiver.press(DESK, counter=10)
    replay = daemon.wait_event("press_replay", 10)
    assert replay["counter"] == "10"
    receiver.press(DESK, counter=7)  # never seen, but older than the last accepted
    daemon.wait_event("press_replay", 10)
    status = daemon_runner.wait_status(lambda s: s["counters"].get("replays") == 2, 10)
    assert status["counters"].get("presses_replay") == 2
    assert len(creates(sandbox)) == 1


def test_replay_protection_survives_a_restart(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK, counter=20)
    daemon.wait_event("callout_raised", 15)
    sandbox.close_callout(creates(sandbox)[0].callout_id or 880001)
    daemon.wait_event("callout_closed", 10)
    daemon.stop()
    restarted = daemon_runner.start()
    receiver.press(DESK, counter=19)
    restarted.wait_event("press_replay", 10)
    assert len(creates(sandbox)) == 1


def test_unknown_device_is_counted_and_never_raised(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(0x0BADF00D)
    daemon.wait_event("press_ignored", 10)
    daemon_runner.wait_status(lambda s: s["counters"].get("unknown_devices") == 1, 10)
    assert creates(sandbox) == []


def test_radio_repeats_of_one_transmission_raise_one_callout(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    assert receiver.wait_pinged(10)  # bytes written before the port opens are flushed
    receiver.press(DESK, repeats=6)  # rtl_433 shows six copies of one transmission
    daemon.wait_event("callout_raised", 15)
    daemon_runner.wait_status(lambda s: s["counters"].get("presses_repeat", 0) >= 1, 10)
    assert len(creates(sandbox)) == 1


def test_two_presses_50ms_apart_make_one_incident_with_both_recorded(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    first = receiver.press(DESK)
    time.sleep(0.05)
    second = receiver.press(DESK)
    stored = daemon.wait_event("press_stored", 10)
    attached = daemon.wait_event("press_attached", 10)
    assert attached["incident"] == stored["incident"]
    assert receiver.wait_acked(first, 5) and receiver.wait_acked(second, 5)
    daemon.wait_event("callout_raised", 15)
    time.sleep(1.0)
    assert len(creates(sandbox)) == 1


def burst_devices(path: Path, n: int) -> dict[str, str]:
    """n desk buttons, each its own subscribed customer, with keys."""
    ids = [f"{0x20000000 + i:08x}" for i in range(n)]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"desk-button": {"raise_gestures": ["single"]}},
                "devices": [
                    {
                        "id": dev,
                        "type": "desk-button",
                        "route": "customer",
                        "customer_id": 1001 if i == 0 else 1003,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                    for i, dev in enumerate(ids[:2])
                ]
                + [
                    {
                        "id": dev,
                        "type": "desk-button",
                        "route": "site",
                        "site_ref": "SHOP-CPT-001" if i % 2 else "CLINIC-JHB-7",
                    }
                    for i, dev in enumerate(ids[2:])
                ],
            }
        )
    )
    return {dev: f"{i:02x}" * 16 for i, dev in enumerate(ids)}


def test_unplug_mid_burst_then_replug_raises_every_press_once(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, tmp_path: Path
) -> None:
    keys = burst_devices(tmp_path / "burst.toml", 4)
    daemon_runner.write_config(devices_file=tmp_path / "burst.toml", device_keys=keys)
    sim_keys = {int(dev, 16): bytes.fromhex(key) for dev, key in keys.items()}
    daemon_runner.receiver.close()  # this test's buttons have their own keys
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, keys=sim_keys
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        devices = sorted(sim_keys)
        sent = []
        for i, dev in enumerate(devices):
            sent.append(receiver.press(dev))
            if i == 1:
                receiver.unplug()  # the USB cable comes out in the middle of the burst
            time.sleep(0.1)
        time.sleep(5.0)
        receiver.replug()
        for seq in sent:
            assert receiver.wait_acked(seq, 20), f"press seq {seq} never acknowledged"
        for _ in devices:
            daemon.wait_event("callout_raised", 20)
    # Four buttons: two customers and two sites, one callout each, none twice.
    assert len(sandbox.callouts()) == 4
    assert len({(r.path) for r in creates(sandbox) if r.status in (200, 201)}) == 4


def test_silent_receiver_is_lost_and_recovers(daemon_runner: DaemonRunner, tmp_path: Path) -> None:
    daemon_runner.write_config(serial={"watchdog_s": 1.0})
    daemon_runner.receiver.close()  # this receiver sends heartbeats
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, heartbeat_interval_s=0.2
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        daemon_runner.wait_status(lambda s: s["inputs"]["receiver"]["state"] == "ok", 10)
        receiver.silence(True)  # the receiver's firmware hangs: the port stays open
        lost = daemon_runner.wait_status(lambda s: s["inputs"]["receiver"]["state"] == "lost", 10)
        assert "receiver lost" in lost["summary"]
        daemon.wait_event("receiver_lost", 5)
        receiver.silence(False)
        daemon_runner.wait_status(lambda s: s["inputs"]["receiver"]["state"] == "ok", 10)
        daemon.wait_event("receiver_ok", 5)


def test_receiver_that_announces_itself_gets_the_time(
    daemon_runner: DaemonRunner, receiver: SimulatedReceiver
) -> None:
    from gateway.clock import clock_synchronised

    daemon_runner.start()
    before = time.time()
    assert receiver.wait_acked(receiver.hello(), 10)
    deadline = time.monotonic() + 5
    while not receiver.time_syncs() and time.monotonic() < deadline:
        time.sleep(0.05)
    _, unix_ms, trusted = receiver.time_syncs()[-1]
    assert abs(unix_ms / 1000 - before) < 5
    assert trusted is clock_synchronised()


def test_status_command_shows_the_link_counters(
    daemon_runner: DaemonRunner, receiver: SimulatedReceiver
) -> None:
    import json
    import subprocess
    import sys

    daemon_runner.start()
    receiver.press(DESK, tag=b"\x01" * 8)
    daemon_runner.wait_status(lambda s: s["counters"].get("auth_failures") == 1, 10)
    assert daemon_runner.config_path is not None
    cmd = [sys.executable, "-m", "gateway", "status", "--config", str(daemon_runner.config_path)]
    human = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("running: ")
    assert "auth_failures 1" in human.stdout
    assert "input receiver: ok" in human.stdout
    machine = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=30)
    data = json.loads(machine.stdout)
    assert data["counters"]["auth_failures"] == 1
    assert data["inputs"]["receiver"]["counters"]["frames_ok"] >= 1
    assert "sandbox-secret" not in machine.stdout

"""A press on the pty becomes exactly one AURA callout, through the real daemon process.

Each scenario drives the simulated receiver on a real pty, runs ``aura-gateway run`` as a
child process and asserts what the AURA sandbox saw.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from firmware_bridge.frames import Press
from firmware_bridge.sim import SimulatedReceiver
from gateway.sandbox import AuraSandbox, RecordedRequest

from .conftest import DaemonRunner

PENDANT = 0x00A1B2C3  # devices.sim.toml: customer 1001, response type 1, live location
DESK = 0x00A1B2C4  # customer 1003, fixed predefined location 501
LAT, LON = -33.92490, 18.42410


def creates(sandbox: AuraSandbox) -> list[RecordedRequest]:
    return [
        r
        for r in sandbox.requests()
        if r.method == "POST" and r.path.endswith("/callouts") and r.status is not None
    ]


def create_attempts(sandbox: AuraSandbox) -> list[RecordedRequest]:
    return [r for r in sandbox.requests() if r.method == "POST" and r.path.endswith("/callouts")]


def press_with_fix(receiver: SimulatedReceiver, device: int = PENDANT) -> int:
    fix = receiver.send_fix(device, LAT, LON, accuracy_m=8)
    assert receiver.wait_acked(fix, 10), "the daemon never acked the fix"
    return receiver.press(device, gesture="single")


def test_press_raises_one_callout_and_follows_it_until_closed(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    seq = press_with_fix(receiver)

    raised = daemon.wait_event("callout_raised", 15)
    assert receiver.wait_acked(seq, 5)
    [create] = creates(sandbox)
    assert create.path == "/panic-api/v2/customers/1001/callouts"
    assert create.body == {
        "responseTypeId": 1,
        "location": {"latitude": LAT, "longitude": LON, "accuracy": 8.0},
    }
    callout_id = int(raised["callout"])
    assert [c["id"] for c in sandbox.callouts()] == [callout_id]

    # Following: the poll is update-location-and-return with the fresh fix.
    daemon.wait_event("location_sent", 10)
    sandbox.set_status(callout_id, "Responder Dispatched")
    stage = daemon.wait_event("callout_stage", 10)
    assert stage["stage"] == "'Responder Dispatched'"

    sandbox.close_callout(callout_id)
    daemon.wait_event("callout_closed", 10)
    follow_paths = {f"/panic-api/v2/callouts/{callout_id}/location/callout"}
    answered_285 = [r for r in sandbox.requests() if r.path in follow_paths and r.status == 285]
    assert answered_285, "the gateway should have learnt of the close through HTTP 285"

    # After 285 the gateway stops streaming for that callout.
    receiver.send_fix(PENDANT, LAT + 0.001, LON, accuracy_m=5)
    time.sleep(3.0)  # three poll intervals of the test config
    requests = sandbox.requests()
    closed_at = next(i for i, r in enumerate(requests) if r.status == 285)
    later = [r.path for r in requests[closed_at + 1 :] if str(callout_id) in r.path]
    # Only the resolution report and the map, fetched once: no location, no poll.
    assert sorted(later) == sorted(
        f"/panic-api/v2/callouts/{callout_id}/{what}" for what in ("maps", "report")
    )


def test_fixed_location_device_sends_predefined_location_only(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK, gesture="single")
    daemon.wait_event("callout_raised", 15)
    [create] = creates(sandbox)
    assert create.path == "/panic-api/v2/customers/1003/callouts"
    assert create.body == {"responseTypeId": 1, "predefinedLocationId": 501}


def test_second_press_while_open_adds_to_the_incident(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    first = press_with_fix(receiver)
    daemon.wait_event("callout_raised", 15)
    second = receiver.press(PENDANT, gesture="long")
    attached = daemon.wait_event("press_attached", 10)
    assert receiver.wait_acked(first, 5) and receiver.wait_acked(second, 5)
    assert len(creates(sandbox)) == 1
    assert attached["device"] == f"{PENDANT:08x}"


def test_kill_after_commit_before_request_raises_exactly_once(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    sandbox.set_fault("down")  # no request can leave: the press is only in the journal
    daemon = daemon_runner.start()
    seq = press_with_fix(receiver)
    daemon.wait_event("press_stored", 10)
    assert receiver.wait_acked(seq, 5), "a stored press is acked to the receiver"
    daemon.kill()
    assert create_attempts(sandbox) == []

    sandbox.clear_fault()
    restarted = daemon_runner.start()
    restarted.wait_event("callout_raised", 15)
    assert len(sandbox.callouts()) == 1
    assert len(creates(sandbox)) == 1


def test_kill_after_request_reached_aura_before_reply_stored(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    # AURA creates the callout but the reply never comes back before the kill.
    sandbox.set_fault("stall", path_regex=r"/callouts$")
    daemon = daemon_runner.start()
    press_with_fix(receiver)
    assert sandbox.wait_for(lambda reqs: any(r.path.endswith("/callouts") for r in reqs), 10)
    assert len(sandbox.callouts()) == 1
    daemon.kill()

    sandbox.clear_fault()
    restarted = daemon_runner.start()
    reattached = restarted.wait_event("callout_reattached", 15)
    [callout] = sandbox.callouts()
    assert int(reattached["callout"]) == callout["id"]
    # ... and it is followed like any other callout, until AURA closes it.
    restarted.wait_event("location_sent", 10)
    sandbox.close_callout(callout["id"])
    restarted.wait_event("callout_closed", 10)
    assert len(sandbox.callouts()) == 1


def test_press_during_20s_outage_is_raised_when_aura_returns(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    sandbox.set_fault("down")
    seq = press_with_fix(receiver)
    daemon.wait_event("press_stored", 10)
    assert receiver.wait_acked(seq, 5)
    daemon.wait_event("raise_retry", 10)
    time.sleep(20)
    assert create_attempts(sandbox) == []
    before = len(sandbox.requests())

    sandbox.clear_fault()
    raised = daemon.wait_event("callout_raised", 15)
    after = [r for r in sandbox.requests()[before:] if not r.path.endswith("/oauth/token")]
    # Nothing waits in front of the alarm: it is the first request after the outage.
    assert after[0].path == "/panic-api/v2/customers/1001/callouts"
    assert float(raised["delay_s"]) >= 20
    assert len(sandbox.callouts()) == 1


def test_garbage_and_truncated_frames_are_counted_and_skipped(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    # pyserial flushes input when it opens the port: wait until the link is up.
    assert receiver.wait_acked(receiver.hello(), 10)
    receiver.send_raw(b"\x13\x37garbage on the line\x00")
    whole = Press(
        seq=999,
        device_id=PENDANT,
        counter=77,
        gesture="single",
        battery_pct=90,
        rssi_dbm=-70,
        flags=0,
        tag=b"",
    ).to_bytes()
    receiver.send_raw(whole[: len(whole) // 2])  # truncated: the rest never comes
    receiver.send_raw(b"\x00")
    seq = press_with_fix(receiver)
    skipped = daemon.wait_event("frames_skipped", 10)
    assert int(skipped["bad"]) >= 2
    daemon.wait_event("callout_raised", 15)
    assert receiver.wait_acked(seq, 5)
    assert len(creates(sandbox)) == 1


def test_unknown_device_is_logged_and_never_raises(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    seq = receiver.press(0x0BADF00D, gesture="single")
    ignored = daemon.wait_event("press_ignored", 10)
    assert ignored["device"] == "0badf00d"
    assert "unknown device" in ignored["reason"]
    assert receiver.wait_acked(seq, 5), "recorded, so acked: the receiver stops resending"
    time.sleep(1.0)
    assert create_attempts(sandbox) == []


def test_daemon_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(
        '[aura]\nbase_url = "http://127.0.0.1:9"\npoll_intervall_s = 5\n'
        '[[inputs]]\ntype = "serial"\nport = "/dev/null"\n'
    )
    (tmp_path / "devices.toml").write_text("")
    creds = tmp_path / "credentials.toml"
    creds.write_text('[aura]\nclient_id = "a"\nclient_secret = "b"\n')
    creds.chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(tmp_path / "gateway.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "gateway.toml:3 aura.poll_intervall_s" in result.stderr


SHOP = 0x00C0FFEE  # site route, SHOP-CPT-001


def test_press_right_after_aura_closed_the_callout_is_raised_again(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK)
    first = int(daemon.wait_event("callout_raised", 15)["callout"])
    sandbox.close_callout(first)
    # Pressed again before the gateway has polled: it may first be attached to the old
    # incident, but it must end as a callout of its own, never as a silent attach.
    receiver.press(DESK)
    second = daemon.wait_event("callout_raised", 15)
    assert int(second["callout"]) != first
    assert sorted(c["id"] for c in sandbox.callouts()) == [first, int(second["callout"])]


def test_one_alarm_aura_keeps_failing_does_not_hold_up_the_next(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    sandbox.set_fault("error", status=500, path_regex=r"/customers/1003/callouts$")
    daemon = daemon_runner.start()
    receiver.press(DESK)  # customer 1003: AURA answers 500, again and again
    daemon.wait_event("raise_retry", 10)
    receiver.press(SHOP)  # the shop's alarm must not wait behind it
    shop = daemon.wait_event("callout_raised", 15)
    assert shop["route"] == "site"
    sandbox.clear_fault()
    desk = daemon.wait_event("callout_raised", 15)
    assert desk["route"] == "customer"
    assert len(sandbox.callouts()) == 2


def test_aura_closing_with_an_unknown_status_word_is_noticed(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    daemon = daemon_runner.start()
    receiver.press(DESK)  # fixed location: followed by reads, which never answer 285
    callout = int(daemon.wait_event("callout_raised", 15)["callout"])
    sandbox.close_callout(callout)
    sandbox.set_status(callout, "Resolved")  # free text AURA might use for "over"
    assert [c["status"] for c in sandbox.callouts()] == ["Resolved"]
    closed = daemon.wait_event("callout_closed", 15)
    assert int(closed["callout"]) == callout
    assert "no longer among AURA's active callouts" in closed["why"]

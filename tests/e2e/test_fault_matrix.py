"""One scenario per class of AURA fault, through the real daemon process and the sandbox.

Each test presses a button on the simulated receiver, makes AURA misbehave in one way,
and checks what a person relying on the button and the technician at the box would see:
the requests AURA received (paths, order, answers), the incident in the journal
(``aura-gateway incidents show``), the status file, the log events and the button's LED.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from firmware_bridge.frames import IndicationState
from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, DemoFailed
from gateway.sandbox import AuraSandbox, RecordedRequest, SandboxSeed

from .conftest import DaemonRunner

PENDANT = 0x00A1B2C3  # devices.sim.toml: customer 1001, live location
DESK = 0x00A1B2C4  # customer 1003, fixed location 501
SHOP = 0x00C0FFEE  # site route, SHOP-CPT-001
NO_SUBSCRIPTION = 0x00BAD001  # customer 1002: the sandbox has no subscription for it (403)
LAT, LON = -33.92490, 18.42410

API = "/panic-api/v2"
TOKEN = f"{API}/oauth/token"
ACTIVE = f"{API}/callouts/activeCallouts"
PENDANT_CREATE = f"{API}/customers/1001/callouts"
NO_SUBSCRIPTION_CREATE = f"{API}/customers/1002/callouts"
DESK_CREATE = f"{API}/customers/1003/callouts"
SHOP_CREATE = f"{API}/predefinedLocations/externalRef/SHOP-CPT-001/callouts"


# ----------------------------------------------------------------------------- helpers


def configure(
    runner: DaemonRunner,
    *,
    gateway: dict[str, Any] | None = None,
    fallback: dict[str, Any] | None = None,
    devices_file: Path | None = None,
    device_keys: dict[str, str] | None = None,
    **aura: Any,
) -> Path:
    """The test config plus this test's own control socket and extra sections.

    A receiver watchdog of 2 s makes the daemon rewrite its status file every 0.5 s, so
    status checks see a change quickly (the simulated receiver sends no heartbeats, so the
    status also says "receiver lost": harmless here).
    """
    path = runner.write_config(
        serial={"watchdog_s": 2.0}, devices_file=devices_file, device_keys=device_keys, **aura
    )
    data = tomllib.loads(path.read_text())
    data["gateway"]["control_path"] = str(runner.workdir / "control.sock")
    data["gateway"].update(gateway or {})
    if fallback is not None:
        data["fallback"] = fallback
    path.write_text(tomli_w.dumps(data))
    return path


def incidents_cli(config: Path, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``aura-gateway incidents --config CONFIG [--json] ACTION ...``, as a technician runs it."""
    # --config and --json belong to "incidents" and must come before the action.
    options = ["--config", str(config), *(["--json"] if action == "show" else [])]
    return subprocess.run(
        [sys.executable, "-m", "gateway", "incidents", *options, action, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def show(config: Path, incident: str) -> dict[str, Any]:
    result = incidents_cli(config, "show", incident)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    return row


def wait_incident(
    config: Path, incident: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Read the incident with the technician's command until the predicate holds."""
    deadline = time.monotonic() + timeout
    while True:
        row = show(config, incident)
        if predicate(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"incident never matched within {timeout} s; last: {row}")
        time.sleep(0.2)


def wait_any(daemon: DaemonProcess, names: tuple[str, ...], timeout: float) -> tuple[str, dict]:
    """The next of several log events, whichever comes first."""
    deadline = time.monotonic() + timeout
    while True:
        for name in names:
            with contextlib.suppress(DemoFailed):
                return name, daemon.wait_event(name, 0.1)
        if time.monotonic() > deadline:
            raise AssertionError(f"none of {names} within {timeout} s")


def log_lines(daemon: DaemonProcess, event: str) -> list[str]:
    return [line for line in daemon.history if f"event={event} " in line + " "]


def is_create(r: RecordedRequest) -> bool:
    return r.method == "POST" and r.path.endswith("/callouts")


def creates(sandbox: AuraSandbox, path: str | None = None) -> list[RecordedRequest]:
    """Create attempts AURA received, in the order they arrived."""
    found = [r for r in sandbox.requests() if is_create(r) and (path is None or r.path == path)]
    return sorted(found, key=lambda r: r.arrived_ns)


def trace(requests: list[RecordedRequest]) -> list[tuple[str, str, int | None]]:
    """(method, path, status) in order of arrival, for assertions and failure messages."""
    return [(r.method, r.path, r.status) for r in sorted(requests, key=lambda r: r.arrived_ns)]


def press_with_fix(receiver: SimulatedReceiver, device: int = PENDANT, lat: float = LAT) -> int:
    fix = receiver.send_fix(device, lat, LON, accuracy_m=8)
    assert receiver.wait_acked(fix, 10), "the daemon never acked the fix"
    return receiver.press(device, gesture="single")


def indication_states(receiver: SimulatedReceiver, device: int) -> list[IndicationState]:
    return [IndicationState(s) for _, dev, s in receiver.indications() if dev == device]


@contextlib.contextmanager
def own_receiver(runner: DaemonRunner, keys: dict[str, str]) -> Iterator[SimulatedReceiver]:
    """Replace the fixture's receiver with one that knows this test's buttons' keys."""
    runner.receiver.close()
    sim_keys = {int(dev, 16): bytes.fromhex(key) for dev, key in keys.items()}
    with SimulatedReceiver(
        link_path=runner.workdir / "receiver", resend_interval_s=0.3, keys=sim_keys
    ) as receiver:
        runner.receiver = receiver
        yield receiver


# ------------------------------------------------------------------ connection-level


def test_connection_refused_during_a_press_then_recovery_raises_once(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    config = configure(daemon_runner)
    daemon = daemon_runner.start()
    sandbox.set_fault("down")
    seq = receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    assert receiver.wait_acked(seq, 5), "a stored press is acked even with AURA down"
    assert daemon.wait_event("raise_retry", 10)["incident"] == incident
    daemon_runner.wait_status(
        lambda s: s["uplink"]["state"] == "down" and s["pending_alarms"] == 1, 10
    )
    waiting = wait_incident(config, incident, lambda r: r["state"] == "pending", 10)
    assert waiting["callout_id"] is None
    assert creates(sandbox) == []

    sandbox.clear_fault()
    raised = daemon.wait_event("callout_raised", 15)
    assert raised["incident"] == incident
    assert trace(creates(sandbox)) == [("POST", DESK_CREATE, 201)]
    [callout] = sandbox.callouts()
    assert callout["id"] == int(raised["callout"])
    opened = show(config, incident)
    assert (opened["state"], opened["callout_id"]) == ("open", callout["id"])
    daemon_runner.wait_status(
        lambda s: s["uplink"]["state"] == "up" and incident in s["open_callouts"], 10
    )
    assert IndicationState.HELP_ON_THE_WAY in indication_states(receiver, DESK)


@pytest.mark.parametrize("mode", ["slow", "stall"])
def test_timed_out_create_is_looked_up_before_it_is_sent_again(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver, mode: str
) -> None:
    """The create times out (read timeout 2 s). ``slow``: AURA takes 3 s to process it;
    ``stall``: AURA processed it at once but its answer never comes. Either way it may
    have reached AURA: the retry reads the active callouts first. One callout."""
    config = configure(daemon_runner)
    sandbox.set_fault(mode, delay_s=3.0, count=1, path_regex=r"/customers/1003/callouts$")
    daemon = daemon_runner.start()
    receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    assert daemon.wait_event("raise_retry", 10)["incident"] == incident
    assert "timeout" in log_lines(daemon, "raise_retry")[0]
    how, event = wait_any(daemon, ("callout_raised", "callout_reattached"), 15)
    assert event["incident"] == incident
    if mode == "stall":
        assert how == "callout_reattached", "AURA had the callout: it must be re-attached"

    def first_create_recorded(reqs: list[RecordedRequest]) -> bool:
        looked = [r.arrived_ns for r in reqs if r.path == ACTIVE]
        return bool(looked) and any(is_create(r) and r.arrived_ns < min(looked) for r in reqs)

    # The timed-out create is recorded when AURA has processed it (up to 3 s later).
    assert sandbox.wait_for(first_create_recorded, 10), trace(sandbox.requests())
    [callout] = sandbox.callouts()
    assert callout["id"] == int(event["callout"])
    attempts = creates(sandbox)
    after_first = [
        r for r in sandbox.requests() if r.arrived_ns > attempts[0].arrived_ns and r.path != TOKEN
    ]
    assert trace(after_first)[0] == ("GET", ACTIVE, 200), trace(sandbox.requests())
    # Every create AURA answered named the same callout: the retry made no second one.
    assert {r.callout_id for r in attempts} == {callout["id"]}
    opened = show(config, incident)
    assert (opened["state"], opened["callout_id"]) == ("open", callout["id"])


def test_timed_out_site_create_leaves_one_open_callout_even_if_aura_does_not_dedupe(
    tmp_path: Path, receiver: SimulatedReceiver, request: pytest.FixtureRequest
) -> None:
    with AuraSandbox(SandboxSeed(site_returns_existing=False)) as sandbox:
        runner = DaemonRunner(tmp_path, sandbox, receiver)
        try:
            configure(runner)
            sandbox.set_fault(
                "slow", delay_s=3.0, count=1, path_regex=r"/externalRef/SHOP-CPT-001/callouts$"
            )
            daemon = runner.start()
            receiver.press(SHOP)
            wait_any(daemon, ("callout_raised", "callout_reattached"), 15)

            def settled(reqs: list[RecordedRequest]) -> bool:
                # AURA has processed the timed-out create (sent before the retry's look at
                # the active callouts, it is recorded only then), and two follower rounds
                # have passed since. Only ``reqs`` here: the sandbox holds its lock.
                sent = [r for r in reqs if r.path == SHOP_CREATE]
                looked = [r.arrived_ns for r in reqs if r.path == ACTIVE]
                if not looked or not any(r.arrived_ns < min(looked) for r in sent):
                    return False
                last = max(r.seq for r in sent)
                return sum(1 for r in reqs if r.path == ACTIVE and r.seq > last) >= 2

            assert sandbox.wait_for(settled, 15), trace(sandbox.requests())
            still_open = [c["id"] for c in sandbox.callouts() if not c["closed"]]
            assert len(still_open) == 1, f"one press, open callouts at AURA: {still_open}"
        finally:
            runner.close()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(runner.logs())


def test_dns_failure_keeps_the_alarm_until_aura_can_be_found(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    # .invalid never resolves (RFC 6761): a DNS failure with nothing leaving the machine.
    late = {"late_alarm_after_s": 1.0}  # so this short outage already counts as late
    config = configure(
        daemon_runner,
        gateway=late,
        base_url=f"http://aura-gateway-test.invalid:{sandbox.port}",
    )
    daemon = daemon_runner.start()
    seq = receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    assert receiver.wait_acked(seq, 5)
    for _ in range(3):
        assert daemon.wait_event("raise_retry", 10)["incident"] == incident
    status = daemon_runner.wait_status(lambda s: s["uplink"]["state"] == "down", 10)
    assert status["pending_alarms"] == 1
    waiting = wait_incident(config, incident, lambda r: r["state"] == "pending", 10)
    assert waiting["callout_id"] is None
    assert [p["decision"] for p in waiting["presses"]] == ["raise"]
    assert sandbox.requests() == []

    # The technician fixes the host name and restarts: the stored alarm goes out, once.
    daemon.stop()
    configure(daemon_runner, gateway=late)
    restarted = daemon_runner.start()
    raised = restarted.wait_event("callout_raised", 15)
    assert raised["incident"] == incident
    assert trace(creates(sandbox)) == [("POST", DESK_CREATE, 201)]
    assert len(sandbox.callouts()) == 1
    # Invariant 5: late, so the control room is told when it was pressed and why.
    assert restarted.wait_event("note_sent", 10)["incident"] == incident
    [callout] = sandbox.callouts()
    [note] = callout["events"]
    assert "Panic button pressed at" in note and "late" in note, note


# ------------------------------------------------------------- AURA answers an error


@pytest.mark.parametrize(("status", "count"), [(503, 3), (502, 2)])
def test_5xx_to_the_create_is_retried_into_one_callout(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    status: int,
    count: int,
) -> None:
    config = configure(daemon_runner)
    sandbox.set_fault("error", status=status, count=count, path_regex=r"/customers/1003/callouts$")
    daemon = daemon_runner.start()
    receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    for _ in range(count):
        assert daemon.wait_event("raise_retry", 10)["incident"] == incident
    raised = daemon.wait_event("callout_raised", 15)
    assert raised["incident"] == incident
    statuses = [r.status for r in creates(sandbox, DESK_CREATE)]
    assert statuses == [status] * count + [201]
    [callout] = sandbox.callouts()
    assert callout["id"] == int(raised["callout"])
    assert show(config, incident)["state"] == "open"


def test_429_retry_after_is_honoured_before_the_next_create(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    configure(daemon_runner)
    sandbox.set_fault("rate_limit", retry_after=2, count=1, path_regex=r"/customers/1003/callouts$")
    daemon = daemon_runner.start()
    receiver.press(DESK)
    daemon.wait_event("raise_retry", 10)
    daemon.wait_event("callout_raised", 15)
    limited, accepted = creates(sandbox, DESK_CREATE)
    assert (limited.status, accepted.status) == (429, 201)
    gap_s = (accepted.arrived_ns - limited.arrived_ns) / 1e9
    assert gap_s >= 2.0 - 0.05, f"the retry came {gap_s:.3f} s after a Retry-After: 2"
    assert gap_s < 3.5, f"the retry waited {gap_s:.3f} s, far longer than AURA asked"
    assert len(sandbox.callouts()) == 1


def test_401_once_to_the_create_fetches_a_new_token_and_retries_at_once(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    configure(daemon_runner)
    daemon = daemon_runner.start()
    sandbox.wait_for(lambda reqs: any(r.path == TOKEN for r in reqs), 10)  # warm token
    sandbox.set_fault("error", status=401, count=1, path_regex=r"/customers/1003/callouts$")
    start = len(sandbox.requests())
    receiver.press(DESK)
    daemon.wait_event("callout_raised", 15)
    assert trace(sandbox.requests()[start:])[:3] == [
        ("POST", DESK_CREATE, 401),
        ("POST", TOKEN, 200),
        ("POST", DESK_CREATE, 201),
    ]
    assert log_lines(daemon, "raise_retry") == [], "one 401 is handled inside one attempt"
    assert len(sandbox.callouts()) == 1


def test_repeated_401_shows_unauthorized_and_keeps_the_alarm_queued(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    config = configure(daemon_runner)
    daemon = daemon_runner.start()
    sandbox.set_fault("error", status=401, path_regex=r"/customers/1003/callouts$")
    receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    for _ in range(2):
        assert daemon.wait_event("raise_retry", 10)["incident"] == incident
    status = daemon_runner.wait_status(lambda s: s["uplink"]["state"] == "unauthorized", 10)
    assert status["pending_alarms"] == 1
    assert "credentials refused" in status["summary"]
    assert "401" in (status["uplink"]["error"] or "")
    assert "sandbox-secret" not in json.dumps(status)
    assert show(config, incident)["state"] in ("pending", "sending")
    # Each attempt: the create refused, a fresh token, the create refused again.
    refused = creates(sandbox, DESK_CREATE)
    assert len(refused) >= 4 and {r.status for r in refused} == {401}
    assert sandbox.callouts() == []

    sandbox.clear_fault()
    raised = daemon.wait_event("callout_raised", 15)
    assert raised["incident"] == incident
    daemon_runner.wait_status(lambda s: s["uplink"]["state"] == "up", 10)
    assert len(sandbox.callouts()) == 1


# -------------------------------------------------------- AURA refuses the alarm (4xx)


def test_403_fails_loudly_runs_the_fallback_and_stays_until_acknowledged(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    out = daemon_runner.workdir / "fallback.out"
    config = configure(
        daemon_runner,
        fallback={
            "command": [
                "/bin/sh",
                "-c",
                f'echo "$AURA_INCIDENT $AURA_DEVICE $AURA_REASON" > {out}',
            ]
        },
    )
    daemon = daemon_runner.start()
    receiver.press(NO_SUBSCRIPTION)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    failed = daemon.wait_event("alarm_undeliverable", 15)
    assert (failed["incident"], failed["status"]) == (incident, "403")
    [line] = log_lines(daemon, "alarm_undeliverable")
    assert line.startswith("CRITICAL ")
    ran = daemon.wait_event("fallback_ran", 10)
    assert (ran["incident"], ran["rc"]) == (incident, "0")
    reason = out.read_text().strip()
    assert reason.startswith(f"{incident} 00bad001 ")
    assert "403" in reason and "Customer has no active subscription" in reason

    row = show(config, incident)
    assert row["state"] == "failed"
    assert "Customer has no active subscription" in row["last_error"]
    status = daemon_runner.wait_status(lambda s: incident in s["undeliverable"], 10)
    assert "Customer has no active subscription" in status["undeliverable"][incident]
    assert "UNDELIVERABLE" in status["summary"]
    assert IndicationState.DELIVERY_FAILING in indication_states(receiver, NO_SUBSCRIPTION)

    # The queue moves on, and the refused alarm is not sent again behind it.
    receiver.press(DESK)
    daemon.wait_event("callout_raised", 15)
    assert trace(creates(sandbox, NO_SUBSCRIPTION_CREATE)) == [
        ("POST", NO_SUBSCRIPTION_CREATE, 403)
    ]

    # It stays UNDELIVERABLE across a restart (a power cut does not clear the warning)...
    daemon.stop()
    restarted = daemon_runner.start()
    pid = restarted.proc.pid
    daemon_runner.wait_status(lambda s: s["pid"] == pid and incident in s["undeliverable"], 10)
    human = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"UNDELIVERABLE: {incident}: " in human.stdout, human.stdout

    # ... until the technician acknowledges it.
    acked = incidents_cli(config, "ack", incident)
    assert acked.returncode == 0, acked.stderr
    assert incident in acked.stdout
    daemon_runner.wait_status(lambda s: s["undeliverable"] == {}, 10)
    assert show(config, incident)["acknowledged_wall"] is not None
    assert len(creates(sandbox, NO_SUBSCRIPTION_CREATE)) == 1, "never retried, not even on restart"


REFUSED_CUSTOMER = "30000404"  # customer 9999: AURA does not know it (404)
REFUSED_SITE = "30000400"  # site ref AURA has no fixed location for (400)


def refused_devices(path: Path) -> dict[str, str]:
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"desk-button": {"raise_gestures": ["single"]}},
                "devices": [
                    {
                        "id": REFUSED_CUSTOMER,
                        "type": "desk-button",
                        "route": "customer",
                        "customer_id": 9999,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    },
                    {
                        "id": REFUSED_SITE,
                        "type": "desk-button",
                        "route": "site",
                        "site_ref": "NO-SUCH-SITE",
                    },
                ],
            }
        )
    )
    return {REFUSED_CUSTOMER: "a1" * 16, REFUSED_SITE: "b2" * 16}


@pytest.mark.parametrize(
    ("device", "path", "status", "message"),
    [
        (REFUSED_CUSTOMER, f"{API}/customers/9999/callouts", 404, "Customer 9999 not found"),
        (
            REFUSED_SITE,
            f"{API}/predefinedLocations/externalRef/NO-SUCH-SITE/callouts",
            400,
            "No fixed location with externalReferenceId",
        ),
    ],
    ids=["404-unknown-customer", "400-unknown-site"],
)
def test_404_and_400_to_the_create_fail_without_retry(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    tmp_path: Path,
    device: str,
    path: str,
    status: int,
    message: str,
) -> None:
    keys = refused_devices(tmp_path / "refused.toml")
    config = configure(daemon_runner, devices_file=tmp_path / "refused.toml", device_keys=keys)
    with own_receiver(daemon_runner, keys) as receiver:
        daemon = daemon_runner.start()
        receiver.press(int(device, 16))
        incident = daemon.wait_event("press_stored", 10)["incident"]
        failed = daemon.wait_event("alarm_undeliverable", 15)
        assert (failed["incident"], failed["status"]) == (incident, str(status))
        # No [fallback] command in this config: that is said loudly too.
        daemon.wait_event("fallback_missing", 10)
        [missing] = log_lines(daemon, "fallback_missing")
        assert missing.startswith("CRITICAL ") and f"incident={incident}" in missing
        row = show(config, incident)
        assert row["state"] == "failed" and message in row["last_error"]
        daemon_runner.wait_status(lambda s: incident in s["undeliverable"], 10)
        # A second press of the same button is a new alarm, tried once again: the
        # refused one is never retried blindly on its own.
        receiver.press(int(device, 16))
        second = daemon.wait_event("alarm_undeliverable", 15)
        assert second["incident"] != incident
    assert trace(creates(sandbox)) == [("POST", path, status)] * 2


# --------------------------------------------------------------------------- cancel


def test_cancel_from_the_technician_reaches_aura_after_the_create(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    config = configure(daemon_runner)
    daemon = daemon_runner.start()
    receiver.press(DESK)
    raised = daemon.wait_event("callout_raised", 15)
    incident, callout_id = raised["incident"], int(raised["callout"])

    result = incidents_cli(config, "cancel", incident, "--notes", "false alarm, test press")
    assert result.returncode == 0, result.stderr
    assert "cancel queued for AURA" in result.stdout
    cancelled = daemon.wait_event("callout_cancelled", 10)
    assert (cancelled["incident"], int(cancelled["callout"])) == (incident, callout_id)

    paths = [p for _, p, _ in trace(sandbox.requests())]
    cancel_path = f"{API}/callouts/{callout_id}/cancel"
    assert paths.index(cancel_path) > paths.index(DESK_CREATE)
    assert paths.count(cancel_path) == 1
    [callout] = sandbox.callouts()
    assert callout["closed"] and callout["cancelledWith"] == "integration"
    assert [r["notes"] for r in callout["exceptionReasons"]] == ["false alarm, test press"]
    assert show(config, incident)["state"] == "cancelled"
    daemon_runner.wait_status(lambda s: incident not in s["open_callouts"], 10)


def test_cancel_while_aura_is_down_before_the_raise_left_sends_nothing(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    # Longer backoff: the cancel lands between two attempts, not during one.
    config = configure(daemon_runner, backoff_initial_s=2.0, backoff_max_s=4.0)
    daemon = daemon_runner.start()
    sandbox.set_fault("down")
    receiver.press(DESK)
    incident = daemon.wait_event("press_stored", 10)["incident"]
    daemon.wait_event("raise_retry", 10)
    wait_incident(config, incident, lambda r: r["state"] == "pending", 10)

    result = incidents_cli(config, "cancel", incident, "--notes", "pressed by mistake")
    assert result.returncode == 0, result.stderr
    assert "cancelled here" in result.stdout
    assert show(config, incident)["state"] == "cancelled"

    sandbox.clear_fault()
    # Another alarm after recovery: had the cancelled raise still been queued, it would
    # have gone first (alarms are strictly ordered).
    receiver.press(SHOP)
    daemon.wait_event("callout_raised", 15)
    assert trace(creates(sandbox)) == [("POST", SHOP_CREATE, 201)]
    assert [c["externalReferenceId"] for c in sandbox.callouts()] == ["SHOP-CPT-001"]
    assert show(config, incident)["state"] == "cancelled"


# ------------------------------------------------------------- token expiry mid-callout


def refused_then_retried(
    reqs: list[RecordedRequest], start: int, path: str | None = None
) -> tuple[RecordedRequest, RecordedRequest, RecordedRequest] | None:
    """The first request after ``start`` answered 401 (on ``path`` if given), the token
    request after it, and the same request sent again after that; None until all three."""
    later = reqs[start:]
    refused_at = next(
        (
            i
            for i, r in enumerate(later)
            if r.status == 401 and r.path != TOKEN and path in (None, r.path)
        ),
        None,
    )
    if refused_at is None:
        return None
    refused = later[refused_at]
    token = next((r for r in later[refused_at + 1 :] if r.path == TOKEN), None)
    if token is None:
        return None
    again = next(
        (
            r
            for r in later[refused_at + 1 :]
            if (r.method, r.path) == (refused.method, refused.path)
            and r.arrived_ns > token.arrived_ns
        ),
        None,
    )
    return None if again is None else (refused, token, again)


def test_token_expiry_while_following_a_live_callout_loses_no_update(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, receiver: SimulatedReceiver
) -> None:
    configure(daemon_runner)
    daemon = daemon_runner.start()
    press_with_fix(receiver)
    callout_id = int(daemon.wait_event("callout_raised", 15)["callout"])
    daemon.wait_event("location_sent", 10)
    location = f"{API}/callouts/{callout_id}/location/callout"

    def callout() -> dict[str, Any]:
        [found] = [c for c in sandbox.callouts() if c["id"] == callout_id]
        return found

    def wait_position(lat: float) -> None:
        deadline = time.monotonic() + 10
        while abs(float((callout()["lastLocationUpdate"] or {}).get("latitude", 0)) - lat) > 1e-6:
            assert time.monotonic() < deadline, f"position {lat} never reached AURA"
            daemon.wait_event("location_sent", 5)

    # 1. AURA expires every token while the callout is followed; the pendant moves on.
    before = callout()["locationUpdates"]
    start = len(sandbox.requests())
    sandbox.expire_tokens()
    moved = receiver.send_fix(PENDANT, LAT + 0.001, LON, accuracy_m=5)
    assert receiver.wait_acked(moved, 5)
    assert sandbox.wait_for(lambda reqs: refused_then_retried(reqs, start) is not None, 10)
    found = refused_then_retried(sandbox.requests(), start)
    assert found is not None
    refused, _token, again = found
    assert again.status == 200 and again.body == refused.body, trace(sandbox.requests()[start:])
    wait_position(LAT + 0.001)
    assert callout()["locationUpdates"] > before

    # 2. The next location update itself is answered 401: new token, the same update again.
    start = len(sandbox.requests())
    sandbox.set_fault("error", status=401, count=1, path_regex=r"/location/callout$")
    moved = receiver.send_fix(PENDANT, LAT + 0.002, LON, accuracy_m=5)
    assert receiver.wait_acked(moved, 5)
    assert sandbox.wait_for(
        lambda reqs: refused_then_retried(reqs, start, location) is not None, 10
    )
    found = refused_then_retried(sandbox.requests(), start, location)
    assert found is not None
    refused, token, again = found
    assert token.status == 200
    assert again.status == 200 and again.body == refused.body, "the same update, retried"
    wait_position(LAT + 0.002)
    # No location update was left refused: each 401 was followed by its retry.
    assert all(
        refused_then_retried(sandbox.requests(), r.seq - 1, r.path) is not None
        for r in sandbox.requests()
        if r.path == location and r.status == 401
    )

    # Another customer's press right after still raises.
    start = len(sandbox.requests())
    receiver.press(DESK)
    raised = daemon.wait_event("callout_raised", 15)
    assert raised["route"] == "customer"
    assert [r.status for r in sandbox.requests()[start:] if r.path == DESK_CREATE] == [201]
    assert len(sandbox.callouts()) == 2

"""The AURA sandbox as a client sees it: real HTTP over loopback with httpx."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.sandbox import (
    FIRST_CALLOUT_ID,
    AuraSandbox,
    RecordedRequest,
    SandboxControl,
    SandboxSeed,
)

SECRET = "sandbox-secret"
LIVE = {"responseTypeId": 1, "location": {"latitude": -33.92, "longitude": 18.42, "accuracy": 8}}
DEVICE_RAISE = {"device_id": 26217939, "device_type_id": 5, "message_type": 1}


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., AuraSandbox]]:
    started: list[AuraSandbox] = []

    def make(seed: SandboxSeed | None = None) -> AuraSandbox:
        sandbox = AuraSandbox(seed).start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., AuraSandbox]) -> AuraSandbox:
    return make_sandbox()


@pytest.fixture
def client(sandbox: AuraSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        yield http


@pytest.fixture
def auth(client: httpx.Client) -> dict[str, str]:
    return _auth(client)


@pytest.fixture
def control(sandbox: AuraSandbox) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.control_url, timeout=2.0) as ctl:
        yield ctl


def _auth(client: httpx.Client) -> dict[str, str]:
    body = {"clientId": "sandbox-client", "clientSecret": SECRET}
    data = client.post("/oauth/token", json=body).json()
    return {"Authorization": f"Bearer {data.get('accessToken') or data['access_token']}"}


def _create(client: httpx.Client, auth: dict[str, str], customer: int = 1001) -> httpx.Response:
    return client.post(f"/customers/{customer}/callouts", json=LIVE, headers=auth)


# ------------------------------------------------------------------------------ tokens


def test_token_new_style_is_a_jwt_with_exp(client: httpx.Client) -> None:
    response = client.post(
        "/oauth/token", json={"clientId": "sandbox-client", "clientSecret": SECRET}
    )
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"accessToken", "tokenType", "expiresIn"}
    assert data["tokenType"] == "Bearer" and data["expiresIn"] == 3600
    payload = data["accessToken"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert 3590 < claims["exp"] - time.time() <= 3600


def test_token_old_style(make_sandbox: Callable[..., AuraSandbox]) -> None:
    sandbox = make_sandbox(SandboxSeed(token_style="old", token_lifetime_s=120))
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        data = http.post(
            "/oauth/token", json={"clientId": "sandbox-client", "clientSecret": SECRET}
        ).json()
        assert set(data) == {"access_token", "token_type", "expires_in"}
        assert data["expires_in"] == 120
        headers = {"Authorization": f"Bearer {data['access_token']}"}
        assert http.get("/callouts/activeCallouts", headers=headers).status_code == 200


def test_token_request_errors(client: httpx.Client) -> None:
    assert client.post("/oauth/token", json={"clientId": "sandbox-client"}).status_code == 400
    wrong = client.post("/oauth/token", json={"clientId": "sandbox-client", "clientSecret": "x"})
    assert wrong.status_code == 401
    assert "message" in wrong.json()


def test_bearer_required_and_expiry(sandbox: AuraSandbox, client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": "Basic abc"}):
        response = client.get("/callouts/activeCallouts", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthorized"}
    auth = _auth(client)
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 200
    sandbox.expire_tokens()
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 401
    assert client.get("/callouts/activeCallouts", headers=_auth(client)).status_code == 200


def test_token_lifetime_runs_out(make_sandbox: Callable[..., AuraSandbox]) -> None:
    sandbox = make_sandbox(SandboxSeed(token_lifetime_s=0.05))
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        auth = _auth(http)
        time.sleep(0.1)  # the lifetime itself is what is under test
        assert http.get("/callouts/activeCallouts", headers=auth).status_code == 401


# ------------------------------------------------------------------- customer callouts


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**LIVE, "predefinedLocationId": 501}, "mutually exclusive"),
        ({"responseTypeId": 1}, "location or predefinedLocationId"),
        ({"location": LIVE["location"]}, "responseTypeId"),
        ({"responseTypeId": 1, "location": {"latitude": 91, "longitude": 0}}, "latitude"),
        ({"responseTypeId": 1, "location": {"latitude": 0}}, "longitude"),
        ({"responseTypeId": "1", "predefinedLocationId": 501}, "responseTypeId"),
        ({"responseTypeId": 1, "predefinedLocationId": 999}, "999"),
    ],
)
def test_create_validation(
    client: httpx.Client, auth: dict[str, str], body: dict[str, Any], needle: str
) -> None:
    response = client.post("/customers/1001/callouts", json=body, headers=auth)
    assert response.status_code == 400
    assert needle in response.json()["message"]


def test_malformed_json_is_400(client: httpx.Client, auth: dict[str, str]) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = client.post("/customers/1001/callouts", content=b"{nope", headers=headers)
    assert response.status_code == 400
    assert "message" in response.json()


def test_unknown_customer_and_no_subscription(client: httpx.Client, auth: dict[str, str]) -> None:
    assert _create(client, auth, customer=9999).status_code == 404
    response = _create(client, auth, customer=1002)
    assert response.status_code == 403
    assert response.json() == {"message": "Customer has no active subscription"}


def test_second_create_returns_the_active_callout(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    first = _create(client, auth)
    assert first.status_code == 201
    callout = first.json()["callout"]
    assert callout["id"] == FIRST_CALLOUT_ID
    assert callout["customerId"] == 1001 and callout["predefinedLocationId"] is None
    assert callout["status"] == "created"
    assert (callout["latitude"], callout["longitude"]) == (-33.92, 18.42)
    assert callout["url"] == f"{sandbox.base_url}/track/{FIRST_CALLOUT_ID}"
    assert client.get(callout["url"]).status_code == 200  # the tracking link opens

    second = _create(client, auth)
    assert second.status_code == 200
    assert second.json()["callout"]["id"] == callout["id"]
    assert len(sandbox.callouts()) == 1


def test_predefined_location_callout(client: httpx.Client, auth: dict[str, str]) -> None:
    body = {"responseTypeId": 2, "predefinedLocationId": 502}
    response = client.post("/customers/1003/callouts", json=body, headers=auth)
    assert response.status_code == 201
    assert response.json()["callout"]["predefinedLocationId"] == 502


# ------------------------------------------------------------- site and device routes


def test_site_callouts(client: httpx.Client, auth: dict[str, str]) -> None:
    unknown = client.post("/predefinedLocations/externalRef/NOPE-1/callouts", json={}, headers=auth)
    assert unknown.status_code == 400
    assert "NOPE-1" in unknown.json()["message"]

    path = "/predefinedLocations/externalRef/SHOP-CPT-001/callouts"
    first = client.post(path, json={"installerIdentifier": "inst-9"}, headers=auth)
    assert first.status_code == 201
    data = first.json()
    assert data["externalReferenceId"] == "SHOP-CPT-001"
    assert data["installerIdentifier"] == "inst-9"
    assert data["callout"]["predefinedLocationId"] == 501
    assert data["callout"]["customerId"] is None
    again = client.post(path, headers=auth)  # no body at all is fine too
    assert again.status_code == 200
    assert again.json()["callout"]["id"] == data["callout"]["id"]


def test_site_without_idempotency(make_sandbox: Callable[..., AuraSandbox]) -> None:
    sandbox = make_sandbox(SandboxSeed(site_returns_existing=False))
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        auth = _auth(http)
        path = "/predefinedLocations/externalRef/CLINIC-JHB-7/callouts"
        ids = [http.post(path, json={}, headers=auth).json()["callout"]["id"] for _ in range(2)]
    assert ids[0] != ids[1]


def test_device_event(sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]) -> None:
    body = {**DEVICE_RAISE, "location": {"latitude": -26.09, "longitude": 28.08, "accuracy": 70}}
    response = client.post("/deviceEvent", json=body, headers=auth)
    assert response.status_code == 200
    data = response.json()
    assert data["input"] == body
    event = data["resolvedAuraEvent"]
    assert event["eventTypes"] == "NEW_CALLOUT"
    assert event["eventResponse"]["deviceId"] == 26217939
    callout_id = event["eventResponse"]["calloutId"]
    assert sandbox.callouts()[0]["customerId"] == 1003

    again = client.post("/deviceEvent", json=DEVICE_RAISE, headers=auth).json()
    assert again["resolvedAuraEvent"]["eventResponse"]["calloutId"] == callout_id
    other = client.post("/deviceEvent", json={**DEVICE_RAISE, "message_type": 7}, headers=auth)
    assert other.json()["resolvedAuraEvent"]["eventTypes"] == "UNHANDLED"
    unknown = client.post("/deviceEvent", json={**DEVICE_RAISE, "device_id": 1}, headers=auth)
    assert unknown.status_code == 400


# ---------------------------------------------------------------- following a callout


def test_location_updates_and_285_after_close(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    fix = {"latitude": -33.93, "longitude": 18.43, "accuracy": 5}
    response = client.post(f"/callouts/{callout_id}/location", json=fix, headers=auth)
    assert response.status_code == 200
    assert response.json() == {"message": "Request completed successfully."}
    bad = client.post(f"/callouts/{callout_id}/location", json={"latitude": 1}, headers=auth)
    assert bad.status_code == 400
    missing = client.post("/callouts/1/location", json=fix, headers=auth)
    assert missing.status_code == 404
    assert sandbox.callouts()[0]["locationUpdates"] == 1

    sandbox.close_callout(callout_id)
    closed = client.post(f"/callouts/{callout_id}/location", json=fix, headers=auth)
    assert closed.status_code == 285
    assert closed.json()["callout"]["id"] == callout_id
    assert closed.json()["callout"]["status"] == "Closed"
    assert sandbox.callouts()[0]["locationUpdates"] == 1


def test_update_and_return_callout(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    path = f"/callouts/{callout_id}/location/callout"
    fix = {"latitude": -33.5, "longitude": 18.5, "calloutId": 123}  # calloutId is ignored
    sandbox.set_status(callout_id, "Responder Dispatched")
    response = client.post(path, json=fix, headers=auth)
    assert response.status_code == 200
    callout = response.json()["callout"]
    assert callout["id"] == callout_id
    assert callout["status"] == "Responder Dispatched"
    assert callout["location"]["latitude"] == -33.5
    assert callout["incidentInformation"][0]["dispatchedAt"] is not None

    sandbox.close_callout(callout_id)
    closed = client.post(path, json=fix, headers=auth)
    assert closed.status_code == 285
    assert closed.json()["callout"]["status"] == "Closed"
    assert client.post("/callouts/1/location/callout", json=fix, headers=auth).status_code == 404


def test_get_cancel_and_active_callouts(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    a = _create(client, auth, 1001).json()["callout"]["id"]
    b = _create(client, auth, 1003).json()["callout"]["id"]
    got = client.get(f"/callouts/{a}", headers=auth)
    assert got.status_code == 200
    nested = got.json()["callout"]
    assert nested["incidentInformation"] == []
    assert set(nested["location"]) == {"latitude", "longitude", "accuracy", "updatedAt"}
    assert client.get("/callouts/1", headers=auth).status_code == 404

    cancelled = client.post(f"/callouts/{b}/cancel", json={"safeCode": "1234"}, headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["callout"]["status"] == "Cancelled"
    sandbox.close_callout(a)
    sandbox.set_status(a, "Closed")
    assert client.get("/callouts/activeCallouts", headers=auth).json() == []
    assert {c["id"] for c in sandbox.callouts() if c["closed"]} == {a, b}
    assert client.post("/callouts/1/cancel", json={}, headers=auth).status_code == 404


def test_active_callouts_lists_open_ones(client: httpx.Client, auth: dict[str, str]) -> None:
    a = _create(client, auth, 1001).json()["callout"]["id"]
    b = _create(client, auth, 1003).json()["callout"]["id"]
    client.post(f"/callouts/{a}/cancel", headers=auth)
    active = client.get("/callouts/activeCallouts", headers=auth).json()
    assert [c["id"] for c in active] == [b]


def test_callout_events(client: httpx.Client, auth: dict[str, str]) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    path = f"/callouts/{callout_id}/events"
    old = client.post(path, json={"message": "pressed 14 min ago"}, headers=auth)
    new = client.post(path, json={"source": "customer", "event": "help"}, headers=auth)
    assert old.status_code == new.status_code == 201
    assert old.json()["calloutEvent"]["calloutId"] == callout_id
    assert client.post(path, json={"text": "x"}, headers=auth).status_code == 400
    events = client.get(path, headers=auth).json()
    assert [e["message"] for e in events] == ["pressed 14 min ago", "help"]


def test_unknown_routes_are_404(client: httpx.Client, auth: dict[str, str]) -> None:
    for method, path in (("GET", "/nothing"), ("DELETE", "/callouts/1"), ("GET", "/oauth/token")):
        response = client.request(method, path, headers=auth)
        assert response.status_code == 404
        assert response.json() == {"message": "Not found"}


# -------------------------------------------------------------------------- faults


def test_down_refuses_then_recovers_on_same_port(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str], control: SandboxControl
) -> None:
    port = sandbox.port
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 200  # kept alive
    sandbox.set_fault("down")
    with pytest.raises(httpx.ConnectError):
        client.get("/callouts/activeCallouts", headers=auth)
    assert control.health()  # the control port still answers
    assert control.requests()[-1]["status"] == 200  # refused attempts are not recorded
    control.clear_fault()
    assert sandbox.port == port
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 200


def test_error_fault_leaves_state_alone(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("error", status=503)
    response = _create(client, auth)
    assert response.status_code == 503
    assert "message" in response.json()
    assert sandbox.callouts() == []
    assert sandbox.requests()[-1].status == 503


def test_rate_limit_with_retry_after(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("rate_limit", retry_after=2)
    response = _create(client, auth)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    sandbox.set_fault("rate_limit", retry_after=0.5)
    assert _create(client, auth).headers["Retry-After"] == "0.5"


def test_slow_adds_delay(sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]) -> None:
    sandbox.set_fault("slow", delay_s=0.2)
    started = time.monotonic()
    assert _create(client, auth).status_code == 201
    assert time.monotonic() - started >= 0.2


def test_drop_reply_processes_but_does_not_answer(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("drop_reply", count=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(client, auth)
    assert len(sandbox.callouts()) == 1
    assert sandbox.requests()[-1].status is None
    retry = _create(client, auth)  # the retry finds the callout the lost reply was about
    assert retry.status_code == 200
    assert retry.json()["callout"]["id"] == sandbox.callouts()[0]["id"]


def test_stall_holds_reply_until_cleared(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("stall")
    with pytest.raises(httpx.ReadTimeout):
        client.post("/customers/1001/callouts", json=LIVE, headers=auth, timeout=0.3)
    assert len(sandbox.callouts()) == 1
    sandbox.clear_fault()
    assert _create(client, auth).status_code == 200


def test_stall_with_delay_then_disconnect(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("stall", delay_s=0.1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _create(client, auth)


def test_stop_releases_stalled_handlers(make_sandbox: Callable[..., AuraSandbox]) -> None:
    sandbox = make_sandbox()
    errors: list[BaseException] = []
    with httpx.Client(base_url=sandbox.api_url, timeout=5.0) as http:
        auth = _auth(http)
        sandbox.set_fault("stall")

        def stalled_call() -> None:
            try:
                _create(http, auth)
            except httpx.HTTPError as exc:
                errors.append(exc)

        caller = threading.Thread(target=stalled_call)
        caller.start()
        assert sandbox.wait_for(lambda reqs: any(r.status is None for r in reqs), timeout=2)
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 1.0
        caller.join(2)
    assert not caller.is_alive()
    assert len(errors) == 1


def test_count_limits_the_fault(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    sandbox.set_fault("error", status=502, count=2)
    codes = [_create(client, auth).status_code for _ in range(3)]
    assert codes == [502, 502, 201]
    assert sandbox.fault is None


def test_path_regex_filters(sandbox: AuraSandbox, client: httpx.Client) -> None:
    sandbox.set_fault("error", status=500, path_regex=r"/location$")
    auth = _auth(client)  # not faulted
    callout_id = _create(client, auth).json()["callout"]["id"]
    fix = {"latitude": 1.0, "longitude": 2.0}
    assert (
        client.post(f"/callouts/{callout_id}/location", json=fix, headers=auth).status_code == 500
    )
    path = f"/callouts/{callout_id}/location/callout"
    assert client.post(path, json=fix, headers=auth).status_code == 200


def test_bad_fault_arguments(sandbox: AuraSandbox, control: SandboxControl) -> None:
    with pytest.raises(ValueError):
        sandbox.set_fault("explode")
    with pytest.raises(ValueError):
        control.set_fault("error", count=0)
    with pytest.raises(ValueError):
        control.set_fault("error", path_regex="(")
    assert control.fault() is None


# ------------------------------------------------------------ control and the record


def test_control_client_mirrors_the_python_api(
    sandbox: AuraSandbox, client: httpx.Client, control: SandboxControl
) -> None:
    auth = _auth(client)
    callout_id = _create(client, auth).json()["callout"]["id"]

    control.set_status(callout_id, "Responder On Scene")
    nested = client.get(f"/callouts/{callout_id}", headers=auth).json()["callout"]
    assert nested["status"] == "Responder On Scene"
    assert nested["incidentInformation"][0]["arrivedAt"] is not None

    control.set_fault("error", status=500, count=1)
    assert control.fault() is not None
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 500
    control.set_fault("rate_limit", retry_after=1)
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 429
    control.clear_fault()

    control.expire_tokens()
    assert client.get("/callouts/activeCallouts", headers=auth).status_code == 401

    control.close_callout(callout_id)
    (callout,) = control.callouts()
    assert callout["closed"] is True and callout["status"] == "Closed"
    with pytest.raises(KeyError):
        control.close_callout(1)
    with pytest.raises(KeyError):
        sandbox.set_status(1, "x")

    records = control.requests()
    assert [r["status"] for r in records[-3:]] == [500, 429, 401]
    assert control.requests(since=records[-2]["seq"]) == records[-1:]
    assert control.wait_for(lambda reqs: len(reqs) == len(records), timeout=1)
    assert not control.wait_for(lambda reqs: len(reqs) > len(records), timeout=0.1)


def test_record_redacts_and_orders(
    sandbox: AuraSandbox, client: httpx.Client, control: SandboxControl
) -> None:
    auth = _auth(client)
    token = auth["Authorization"].split()[1]
    callout_id = _create(client, auth).json()["callout"]["id"]
    client.post(f"/callouts/{callout_id}/location", json={"latitude": 1, "longitude": 2})

    records = sandbox.requests()
    assert [r.seq for r in records] == [1, 2, 3]
    arrivals = [r.arrived_ns for r in records]
    assert arrivals == sorted(arrivals) and len(set(arrivals)) == 3
    assert records[0].body == {"clientId": "sandbox-client", "clientSecret": "***"}
    assert records[0].authorized is True
    assert (records[1].status, records[1].callout_id, records[1].authorized) == (
        201,
        callout_id,
        True,
    )
    assert (records[2].status, records[2].callout_id, records[2].authorized) == (
        401,
        callout_id,
        False,
    )
    dumped = json.dumps(control.requests())
    assert SECRET not in dumped and token not in dumped
    assert arrivals[0] <= time.monotonic_ns()  # CLOCK_MONOTONIC, comparable across processes


def test_wait_for_wakes_on_new_requests(sandbox: AuraSandbox, client: httpx.Client) -> None:
    def later() -> None:
        with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as other:
            other.get("/callouts/activeCallouts")

    def saw_it(reqs: list[RecordedRequest]) -> bool:
        return any(r.path.endswith("/activeCallouts") for r in reqs)

    assert not sandbox.wait_for(saw_it, timeout=0.05)
    worker = threading.Thread(target=later)
    worker.start()
    assert sandbox.wait_for(saw_it, timeout=2)
    worker.join(2)


def test_loopback_only() -> None:
    with pytest.raises(ValueError):
        AuraSandbox(host="0.0.0.0")


def test_run_sandbox_serves_until_sigterm(tmp_path: Path) -> None:
    code = (
        "from gateway.sandbox import run_sandbox; raise SystemExit(run_sandbox('127.0.0.1', 0, 0))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"sandbox api (http://\S+) control (http://\S+)\n", line)
        assert match, line
        with SandboxControl(match.group(2), timeout=2.0) as ctl:
            assert ctl.health()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


# ------------------------------------------------------- after close: report, map, rating


def test_report_only_after_close(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    assert client.get("/callouts/1/report", headers=auth).status_code == 404
    early = client.get(f"/callouts/{callout_id}/report", headers=auth)
    assert early.status_code == 400
    assert early.json() == {"message": "Report available after the callout is closed"}

    sandbox.set_status(callout_id, "Responder Arrived On Scene")
    sandbox.close_callout(callout_id)
    response = client.get(f"/callouts/{callout_id}/report", headers=auth)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"message", "report"}
    report = data["report"]
    (view,) = sandbox.callouts()
    assert report["calloutId"] == callout_id and report["outcome"] == "Closed"
    assert (report["createdAt"], report["closedAt"]) == (view["createdAt"], view["closedAt"])
    assert isinstance(report["responseTimeSeconds"], int)  # a responder arrived
    assert isinstance(report["resolutionTimeSeconds"], int)
    assert report["resolutionTimeSeconds"] >= report["responseTimeSeconds"] >= 0


def test_report_of_a_cancelled_callout(client: httpx.Client, auth: dict[str, str]) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    client.post(f"/callouts/{callout_id}/cancel", json={}, headers=auth)
    report = client.get(f"/callouts/{callout_id}/report", headers=auth).json()["report"]
    assert report["outcome"] == "Cancelled"
    assert report["responseTimeSeconds"] is None  # nobody arrived
    assert report["resolutionTimeSeconds"] == 0


def test_map_only_after_close(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    assert client.get("/callouts/1/maps", headers=auth).status_code == 404
    early = client.get(f"/callouts/{callout_id}/maps", headers=auth)
    assert early.status_code == 400 and "closed" in early.json()["message"]
    sandbox.close_callout(callout_id)
    data = client.get(f"/callouts/{callout_id}/maps", headers=auth).json()
    assert data == {"url": f"{sandbox.base_url}/map/{callout_id}.png", "image": None}
    image = client.get(data["url"])  # the link opens, without a token, like the tracking link
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get("/map/1.png").status_code == 404


NEW_RATING = {"rating": 4, "additionalDetails": "quick", "customerAllowedToBeContacted": True}
OLD_RATING = {"rating": 2, "comment": "slow"}


def test_ratings_either_shape(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    early = client.post("/ratings", json={**NEW_RATING, "calloutId": callout_id}, headers=auth)
    assert early.status_code == 400 and "not closed" in early.json()["message"]
    unknown = client.post("/ratings", json={**NEW_RATING, "calloutId": 1}, headers=auth)
    assert unknown.status_code == 404
    sandbox.close_callout(callout_id)

    for body, needle in (
        ({"calloutId": callout_id}, "rating"),
        ({"calloutId": callout_id, "rating": 0}, "between 1 and 5"),
        ({"calloutId": callout_id, "rating": 6}, "between 1 and 5"),
        ({"calloutId": callout_id, "rating": "5"}, "rating"),
        ({"rating": 5}, "calloutId"),
        ({"calloutId": callout_id, "rating": 5, "comment": "a", "additionalDetails": "b"}, "not"),
    ):
        response = client.post("/ratings", json=body, headers=auth)
        assert response.status_code == 400, body
        assert needle in response.json()["message"]
    assert sandbox.callouts()[0]["rating"] is None

    new = client.post("/ratings", json={**NEW_RATING, "calloutId": callout_id}, headers=auth)
    assert new.status_code == 201
    result = new.json()["calloutRatingPostResult"]
    assert (result["calloutId"], result["rating"]) == (callout_id, 4)
    rating = sandbox.callouts()[0]["rating"]
    assert rating["rating"] == 4 and rating["details"] == "quick" and rating["shape"] == "new"
    assert rating["customerAllowedToBeContacted"] is True

    old = client.post("/ratings", json={**OLD_RATING, "calloutId": callout_id}, headers=auth)
    assert old.status_code == 201
    rating = sandbox.callouts()[0]["rating"]
    assert (rating["rating"], rating["details"], rating["shape"]) == (2, "slow", "old")


@pytest.mark.parametrize(("accepted", "refused"), [("new", OLD_RATING), ("old", NEW_RATING)])
def test_ratings_shape_flag_refuses_the_other_shape(
    make_sandbox: Callable[..., AuraSandbox], accepted: str, refused: dict[str, Any]
) -> None:
    sandbox = make_sandbox(SandboxSeed(ratings_shape=accepted))  # type: ignore[arg-type]
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        auth = _auth(http)
        callout_id = _create(http, auth).json()["callout"]["id"]
        sandbox.close_callout(callout_id)
        wanted = NEW_RATING if accepted == "new" else OLD_RATING
        no = http.post("/ratings", json={**refused, "calloutId": callout_id}, headers=auth)
        assert no.status_code == 400 and "Unknown field" in no.json()["message"]
        assert sandbox.callouts()[0]["rating"] is None
        yes = http.post("/ratings", json={**wanted, "calloutId": callout_id}, headers=auth)
        assert yes.status_code == 201
        # calloutId and rating alone fit either generation.
        bare = http.post("/ratings", json={"calloutId": callout_id, "rating": 3}, headers=auth)
        assert bare.status_code == 201
    assert sandbox.callouts()[0]["rating"]["rating"] == 3


@pytest.mark.parametrize(
    ("accepted", "ok", "refused"),
    [
        ("new", {"source": "customer", "event": "hi"}, {"message": "hi"}),
        ("old", {"message": "hi"}, {"source": "customer", "event": "hi"}),
    ],
)
def test_events_shape_flag_refuses_the_other_shape(
    make_sandbox: Callable[..., AuraSandbox],
    accepted: str,
    ok: dict[str, Any],
    refused: dict[str, Any],
) -> None:
    sandbox = make_sandbox(SandboxSeed(events_shape=accepted))  # type: ignore[arg-type]
    with httpx.Client(base_url=sandbox.api_url, timeout=2.0) as http:
        auth = _auth(http)
        path = f"/callouts/{_create(http, auth).json()['callout']['id']}/events"
        no = http.post(path, json=refused, headers=auth)
        assert no.status_code == 400 and "Body must carry" in no.json()["message"]
        assert http.post(path, json=ok, headers=auth).status_code == 201
    (view,) = sandbox.callouts()
    assert view["eventCount"] == 1 and view["events"] == ["hi"]


def test_bad_shape_flags_are_refused() -> None:
    with pytest.raises(ValueError):
        SandboxSeed(events_shape="newer")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SandboxSeed(ratings_shape="")  # type: ignore[arg-type]


def test_event_texts_in_the_control_view(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    path = f"/callouts/{callout_id}/events"
    client.post(path, json={"message": "first"}, headers=auth)
    client.post(path, json={"source": "customer", "event": "second"}, headers=auth)
    (view,) = sandbox.callouts()
    assert view["events"] == ["first", "second"] and view["eventCount"] == 2
    listed = client.get(path, headers=auth).json()
    assert [(e["event"]["message"], e["createdBy"]) for e in listed] == [
        ("first", "integration"),
        ("second", "customer"),
    ]


# ---------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("code", ["123", "12345", "12a4", "١٢٣٤", 1234, ""])
def test_cancel_with_a_malformed_safe_code_is_400(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str], code: object
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    response = client.post(f"/callouts/{callout_id}/cancel", json={"safeCode": code}, headers=auth)
    assert response.status_code == 400
    (view,) = sandbox.callouts()
    assert not view["closed"] and view["cancelledWith"] is None


def test_cancel_records_how_and_leaves_active_callouts(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    a = _create(client, auth, 1001).json()["callout"]["id"]
    b = _create(client, auth, 1003).json()["callout"]["id"]
    active = client.get("/callouts/activeCallouts", headers=auth).json()
    assert [c["id"] for c in active] == [a, b]

    assert client.post(f"/callouts/{a}/cancel", json={"safeCode": "0427"}, headers=auth).is_success
    assert [c["id"] for c in client.get("/callouts/activeCallouts", headers=auth).json()] == [b]
    assert client.post(f"/callouts/{b}/cancel", headers=auth).is_success
    assert client.get("/callouts/activeCallouts", headers=auth).json() == []
    # A repeated cancel (a lost reply retried) keeps how it was first cancelled.
    again = client.post(f"/callouts/{a}/cancel", json={}, headers=auth)
    assert again.status_code == 200 and again.json()["callout"]["status"] == "Cancelled"
    views = {c["id"]: c for c in sandbox.callouts()}
    assert views[a]["cancelledWith"] == "safeCode"
    assert views[b]["cancelledWith"] == "integration"
    # A new raise for the customer opens a new callout: the cancelled one is not active.
    assert _create(client, auth, 1001).json()["callout"]["id"] not in (a, b)


def test_a_controller_close_is_not_a_cancel(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    sandbox.close_callout(callout_id)
    assert sandbox.callouts()[0]["cancelledWith"] is None


# -------------------------------------------------------------------------- max_rate


def test_max_rate_leaves_the_record_and_state_alone(
    sandbox: AuraSandbox, client: httpx.Client, auth: dict[str, str]
) -> None:
    callout_id = _create(client, auth).json()["callout"]["id"]
    before_requests, before_callouts = sandbox.requests(), sandbox.callouts()
    sandbox.set_fault("error", status=503, count=1)  # not drawn by the measurement

    rate = sandbox.max_rate(seconds=0.2, connections=2)

    assert rate > 0
    assert sandbox.requests() == before_requests
    assert sandbox.callouts() == before_callouts
    faulted = client.get("/callouts/activeCallouts", headers=auth)
    assert faulted.status_code == 503  # the fault was still there for the next real request
    active = client.get("/callouts/activeCallouts", headers=auth).json()
    assert [c["id"] for c in active] == [callout_id]  # its own callout is never listed
    assert _create(client, auth, 1003).json()["callout"]["id"] == callout_id + 1


def test_max_rate_arguments_and_a_down_api(sandbox: AuraSandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.max_rate(seconds=0)
    with pytest.raises(ValueError):
        sandbox.max_rate(connections=0)
    sandbox.set_fault("down")
    with pytest.raises(RuntimeError):
        sandbox.max_rate(seconds=0.1, connections=1)
    sandbox.clear_fault()
    assert sandbox.max_rate(seconds=0.05, connections=1) > 0
    stopped = AuraSandbox()
    with pytest.raises(RuntimeError):
        stopped.max_rate()

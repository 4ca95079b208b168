"""The real AuraClient against a real AuraSandbox, over loopback HTTP, for a whole callout.

raise -> events -> cancel with a reason -> report -> map -> rating, once with a sandbox
that takes both doc generations' bodies and once with one that only takes the older
shapes, so the client's fallback and its memory of the working shape run for real.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from gateway.aura.client import AuraClient
from gateway.config.models import AuraCredentials, AuraSettings
from gateway.errors import CloudRejected
from gateway.sandbox import AuraSandbox, SandboxSeed

RAISE = {
    "route": "customer",
    "customer_id": 1001,
    "body": {
        "responseTypeId": 1,
        "location": {"latitude": -33.92, "longitude": 18.42, "accuracy": 8.0},
    },
}


@pytest.fixture(params=["both", "old"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[AuraSandbox]:
    seed = SandboxSeed(events_shape=request.param, ratings_shape=request.param)
    with AuraSandbox(seed) as aura:
        yield aura


def make_client(sandbox: AuraSandbox) -> AuraClient:
    return AuraClient(
        AuraSettings.model_validate({"base_url": sandbox.base_url}),
        AuraCredentials(
            client_id=SecretStr(sandbox.seed.client_id),
            client_secret=SecretStr(sandbox.seed.client_secret),
        ),
    )


async def test_whole_lifecycle(sandbox: AuraSandbox) -> None:
    old_only = sandbox.seed.events_shape == "old"
    client = make_client(sandbox)
    try:
        callout = await client.raise_callout(RAISE)
        cid = callout.id
        assert not callout.closed and callout.url == f"{sandbox.base_url}/track/{cid}"

        assert await client.send_event(cid, "pressed at the front desk")
        assert await client.send_event(cid, "second press")
        events = await client.events(cid)
        assert [e.text for e in events] == ["pressed at the front desk", "second press"]
        assert events[0].source == ("integration" if old_only else "customer")
        assert all(e.id is not None and e.created_at for e in events)

        with pytest.raises(CloudRejected) as early:
            await client.report(cid)  # only after close
        assert early.value.status == 400

        cancelled = await client.cancel(cid, safe_code="0427")
        assert cancelled.closed and cancelled.status == "Cancelled"
        assert await client.active_callouts() == []
        reasons = await client.exception_reasons(cid)
        assert (2, "False alarm triggered") in reasons
        await client.add_exception_reason(cid, 2, "pressed by mistake")

        report = await client.report(cid)
        assert report["calloutId"] == cid and report["outcome"] == "Cancelled"
        assert report["responseTimeSeconds"] is None
        assert isinstance(report["resolutionTimeSeconds"], int)

        assert await client.map(cid) == {
            "url": f"{sandbox.base_url}/map/{cid}.png",
            "image": None,
        }
        await client.rate(cid, 5, "fast and kind")
        await client.rate(cid, 4, "second thoughts")
    finally:
        await client.aclose()

    (view,) = sandbox.callouts()
    assert view["events"] == ["pressed at the front desk", "second press"]
    assert view["cancelledWith"] == "safeCode"
    assert view["exceptionReasons"] == [
        {"id": 2, "reason": "False alarm triggered", "notes": "pressed by mistake"}
    ]
    rating = view["rating"]
    assert (rating["rating"], rating["details"]) == (4, "second thoughts")
    assert rating["shape"] == ("old" if old_only else "new")
    if not old_only:
        assert rating["customerAllowedToBeContacted"] is False

    seen = [(r.method, r.path.removeprefix("/panic-api/v2"), r.status) for r in sandbox.requests()]
    events_path, ratings = f"/callouts/{cid}/events", "/ratings"
    # With only the older shapes: one refused newer body each, then the older one remembered.
    event_posts = [("POST", events_path, 400)] if old_only else []
    event_posts += [("POST", events_path, 201)] * 2
    rating_posts = [("POST", ratings, 400)] if old_only else []
    rating_posts += [("POST", ratings, 201)] * 2
    assert seen == [
        ("POST", "/oauth/token", 200),
        ("POST", "/customers/1001/callouts", 201),
        *event_posts,
        ("GET", events_path, 200),
        ("GET", f"/callouts/{cid}/report", 400),
        ("POST", f"/callouts/{cid}/cancel", 200),
        ("GET", "/callouts/activeCallouts", 200),
        ("GET", f"/callouts/{cid}/exceptionReasons", 200),
        ("POST", f"/callouts/{cid}/exceptionReasons", 200),
        ("GET", f"/callouts/{cid}/report", 200),
        ("GET", f"/callouts/{cid}/maps", 200),
        *rating_posts,
    ]
    bodies = {(r.method, r.path.removeprefix("/panic-api/v2")): r.body for r in sandbox.requests()}
    assert bodies[("POST", f"/callouts/{cid}/cancel")] == {"safeCode": "0427"}
    assert bodies[("POST", events_path)] == (
        {"message": "second press"} if old_only else {"source": "customer", "event": "second press"}
    )
    assert bodies[("POST", ratings)] == (
        {"calloutId": cid, "rating": 4, "comment": "second thoughts"}
        if old_only
        else {
            "calloutId": cid,
            "rating": 4,
            "additionalDetails": "second thoughts",
            "customerAllowedToBeContacted": False,
        }
    )


async def test_event_to_a_closed_callout_is_still_accepted_by_the_sandbox() -> None:
    """AURA documents 285 only for location updates; events after close are not refused."""
    with AuraSandbox() as sandbox:
        client = make_client(sandbox)
        try:
            cid = (await client.raise_callout(RAISE)).id
            sandbox.close_callout(cid)
            assert await client.send_event(cid, "after close") is True
            assert await client.update_location(cid, {"latitude": 1.0, "longitude": 2.0}) is False
        finally:
            await client.aclose()

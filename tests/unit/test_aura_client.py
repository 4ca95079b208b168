"""The AURA client against scripted answers in both documented shapes.

httpx.MockTransport plays AURA here so each doc-generation variant and each error class
can be pinned exactly; the sandbox tests and end-to-end tests cover the real HTTP path.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from gateway.aura.client import AuraClient
from gateway.config.models import AuraCredentials, AuraSettings
from gateway.errors import CloudMalformed, CloudRejected, CloudRetryable, CloudUnauthorized

SECRET = "s3cr3t-value-never-logged"
CUSTOMER_REQUEST = {
    "route": "customer",
    "customer_id": 1001,
    "body": {"responseTypeId": 1, "location": {"latitude": 1.0, "longitude": 2.0, "accuracy": 5.0}},
}


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], **settings: object
) -> AuraClient:
    return AuraClient(
        AuraSettings.model_validate({"base_url": "http://127.0.0.1:9", **settings}),
        AuraCredentials(client_id=SecretStr("cid"), client_secret=SecretStr(SECRET)),
        transport=httpx.MockTransport(handler),
    )


def token_new(lifetime: int = 3600) -> httpx.Response:
    return httpx.Response(
        200, json={"accessToken": "tok-new", "tokenType": "Bearer", "expiresIn": lifetime}
    )


def token_old() -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": "tok-old", "token_type": "Bearer", "expires_in": 3600}
    )


def callout(status: str = "created", **extra: object) -> dict[str, object]:
    return {
        "id": 880001,
        "customerId": 1001,
        "predefinedLocationId": None,
        "status": status,
        "url": "http://127.0.0.1:9/track/880001",
        **extra,
    }


@pytest.mark.parametrize("token", [token_new, token_old])
@pytest.mark.parametrize("wrapped", [True, False])
async def test_create_accepts_both_token_and_response_shapes(token, wrapped) -> None:  # type: ignore[no-untyped-def]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/oauth/token"):
            return token()
        body = {"message": "ok", "callout": callout()} if wrapped else callout()
        return httpx.Response(201, json=body)

    client = make_client(handler)
    result = await client.raise_callout(CUSTOMER_REQUEST)
    await client.aclose()
    assert result.id == 880001 and not result.closed
    assert result.url == "http://127.0.0.1:9/track/880001"
    create = seen[1]
    assert create.url.path == "/panic-api/v2/customers/1001/callouts"
    assert create.headers["Authorization"].startswith("Bearer tok-")
    assert json.loads(create.content) == CUSTOMER_REQUEST["body"]


async def test_token_is_reused_until_close_to_expiry() -> None:
    tokens = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal tokens
        if request.url.path.endswith("/oauth/token"):
            tokens += 1
            return token_new(lifetime=3600)
        return httpx.Response(200, json={"message": "ok", "callout": callout()})

    client = make_client(handler)
    for _ in range(5):
        await client.get_callout(880001)
    assert tokens == 1
    await client.aclose()


async def test_jwt_exp_claim_bounds_token_lifetime() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": time.time() + 30}).encode()).rstrip(b"=")
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{payload.decode()}.sig"
    tokens = 0
    now = [1000.0]

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal tokens
        if request.url.path.endswith("/oauth/token"):
            tokens += 1
            # Older docs called expiry "seconds since the epoch": the JWT claim wins.
            return httpx.Response(200, json={"accessToken": jwt, "expiresIn": 1e10})
        return httpx.Response(200, json={"message": "ok", "callout": callout()})

    client = AuraClient(
        AuraSettings.model_validate({"base_url": "http://127.0.0.1:9"}),
        AuraCredentials(client_id=SecretStr("cid"), client_secret=SecretStr(SECRET)),
        transport=httpx.MockTransport(handler),
        clock=lambda: now[0],
    )
    await client.get_callout(880001)
    await client.get_callout(880001)
    assert tokens == 1  # 30 s left: still good, even though the margin is 60 s
    now[0] += 16  # past half of its short life: refreshed before it can expire
    await client.get_callout(880001)
    assert tokens == 2
    await client.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, text="<html>gateway timeout</html>"),
        httpx.Response(204),
        httpx.Response(201, json={"message": "ok", "callout": {"id": "not-a-number"}}),
        httpx.Response(201, json=["unexpected"]),
        httpx.Response(201, json={"message": "accepted"}),
        httpx.Response(302, headers={"Location": "http://127.0.0.1:9/login"}),
    ],
)
async def test_unreadable_answers_are_retryable_never_a_crash(answer: httpx.Response) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return answer

    client = make_client(handler)
    with pytest.raises(CloudRetryable):
        await client.raise_callout(CUSTOMER_REQUEST)
    await client.aclose()


@pytest.mark.parametrize("body", [["a", "list"], {"accessToken": 42}, {"tokenType": "Bearer"}])
async def test_unreadable_token_answer_is_retryable(body: object) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    client = make_client(handler)
    with pytest.raises(CloudMalformed):
        await client.get_callout(880001)
    await client.aclose()


async def test_token_lifetime_in_an_unknown_format_still_works() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"accessToken": "t", "expiresIn": "1h"})
        return httpx.Response(200, json={"message": "ok", "callout": callout()})

    client = make_client(handler)
    assert (await client.get_callout(880001)).id == 880001
    await client.aclose()


async def test_error_body_is_never_echoed_beyond_its_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"input": {"clientSecret": SECRET}})

    client = make_client(handler)
    with pytest.raises(CloudUnauthorized) as info:
        await client.get_callout(1)
    assert SECRET not in str(info.value)
    await client.aclose()


async def test_401_fetches_a_new_token_once_then_retries() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        if calls.count(request.url.path) == 1:
            return httpx.Response(401, json={"message": "token expired"})
        return httpx.Response(201, json={"message": "ok", "callout": callout()})

    client = make_client(handler)
    assert (await client.raise_callout(CUSTOMER_REQUEST)).id == 880001
    assert calls.count("/panic-api/v2/oauth/token") == 2
    await client.aclose()


async def test_repeated_401_is_a_credentials_fault() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return httpx.Response(401, json={"message": "nope"})

    client = make_client(handler)
    with pytest.raises(CloudUnauthorized):
        await client.raise_callout(CUSTOMER_REQUEST)
    await client.aclose()


async def test_refused_credentials_never_echo_the_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "invalid client"})

    client = make_client(handler)
    with pytest.raises(CloudUnauthorized) as info:
        await client.raise_callout(CUSTOMER_REQUEST)
    assert SECRET not in str(info.value)
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (500, {}, CloudRetryable, None),
        (502, {}, CloudRetryable, None),
        (503, {}, CloudRetryable, None),
        (429, {"Retry-After": "7"}, CloudRetryable, 7.0),
        (429, {}, CloudRetryable, None),
        (400, {}, CloudRejected, None),
        (403, {}, CloudRejected, None),
        (404, {}, CloudRejected, None),
    ],
)
async def test_error_classes(status, headers, error, retry_after) -> None:  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return httpx.Response(status, headers=headers, json={"message": f"answer {status}"})

    client = make_client(handler)
    with pytest.raises(error) as info:
        await client.raise_callout(CUSTOMER_REQUEST)
    assert info.value.status == status
    assert f"answer {status}" in str(info.value)
    if retry_after is not None:
        assert info.value.retry_after == retry_after
    await client.aclose()


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("x"),
        httpx.RemoteProtocolError("dropped"),
    ],
)
async def test_transport_failures_are_retryable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        raise exc

    client = make_client(handler)
    with pytest.raises(CloudRetryable):
        await client.raise_callout(CUSTOMER_REQUEST)
    await client.aclose()


async def test_285_means_closed_even_though_it_is_2xx() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return httpx.Response(
            285, json={"message": "closed", "callout": callout("Responder Completed")}
        )

    client = make_client(handler)
    result = await client.update_location_and_return(880001, {"latitude": 1.0, "longitude": 2.0})
    assert result.closed
    assert await client.update_location(880001, {"latitude": 1.0, "longitude": 2.0}) is False
    await client.aclose()


@pytest.mark.parametrize("status", ["Closed", "CLOSED", "cancelled"])
async def test_closed_status_text_is_matched_case_insensitively(status: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return httpx.Response(200, json={"message": "ok", "callout": callout(status)})

    client = make_client(handler)
    assert (await client.get_callout(880001)).closed
    await client.aclose()


async def test_unknown_status_counts_as_open() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        return httpx.Response(200, json={"message": "ok", "callout": callout("Responder En Route")})

    client = make_client(handler)
    assert not (await client.get_callout(880001)).closed
    await client.aclose()


async def test_site_and_device_routes_use_their_paths() -> None:
    paths: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        if request.url.path.endswith("/deviceEvent"):
            return httpx.Response(
                200,
                json={
                    "message": "ok",
                    "resolvedAuraEvent": {
                        "eventTypes": "NEW_CALLOUT",
                        "eventResponse": {"calloutId": 992011},
                    },
                },
            )
        return httpx.Response(
            201, json={"message": "ok", "externalReferenceId": "S 1", "callout": callout()}
        )

    client = make_client(handler)
    site = await client.raise_callout({"route": "site", "site_ref": "S 1/A", "body": {}})
    device = await client.raise_callout({"route": "device", "body": {"device_id": 1}})
    await client.aclose()
    assert site.id == 880001 and device.id == 992011
    # A site reference is one path segment, whatever characters the technician used.
    assert paths[1] == b"/panic-api/v2/predefinedLocations/externalRef/S%201%2FA/callouts"
    assert paths[2] == b"/panic-api/v2/deviceEvent"


# ------------------------------------------------- events, cancel, reasons, after close


class Recorder:
    """A scripted AURA: answers per (method, path) from a list, and keeps every request."""

    def __init__(self, *answers: tuple[str, str, httpx.Response]) -> None:
        self.script = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return token_new()
        self.seen.append(request)
        for i, (method, path, response) in enumerate(self.script):
            if request.method == method and request.url.path == "/panic-api/v2" + path:
                del self.script[i]
                return response
        raise AssertionError(f"unexpected {request.method} {request.url.path}")

    def bodies(self) -> list[object]:
        return [json.loads(r.content) if r.content else None for r in self.seen]


EVENTS = "/callouts/880001/events"
RATINGS = "/ratings"
NEW_EVENT = {"source": "customer", "event": "pressed 14 min ago"}
OLD_EVENT = {"message": "pressed 14 min ago"}


async def test_send_event_sends_the_newer_shape() -> None:
    aura = Recorder(
        ("POST", EVENTS, httpx.Response(201, json={"calloutEvent": {}})),
        ("POST", EVENTS, httpx.Response(201, json={"calloutEvent": {}})),
    )
    client = make_client(aura)
    assert await client.send_event(880001, "pressed 14 min ago") is True
    assert await client.send_event(880001, "pressed 14 min ago") is True
    await client.aclose()
    assert aura.bodies() == [NEW_EVENT, NEW_EVENT]


async def test_send_event_falls_back_once_and_remembers_the_older_shape() -> None:
    aura = Recorder(
        ("POST", EVENTS, httpx.Response(400, json={"message": "source is not allowed"})),
        ("POST", EVENTS, httpx.Response(201, json={"id": 1, "message": "x"})),
        ("POST", EVENTS, httpx.Response(201, json={"id": 2, "message": "x"})),
    )
    client = make_client(aura)
    assert await client.send_event(880001, "pressed 14 min ago") is True
    assert await client.send_event(880001, "pressed 14 min ago") is True
    await client.aclose()
    # The newer shape once, then the older one for the rest of the client's life.
    assert aura.bodies() == [NEW_EVENT, OLD_EVENT, OLD_EVENT]


async def test_send_event_refused_in_both_shapes_is_rejected_and_not_remembered() -> None:
    aura = Recorder(
        ("POST", EVENTS, httpx.Response(400, json={"message": "bad"})),
        ("POST", EVENTS, httpx.Response(400, json={"message": "still bad"})),
        ("POST", EVENTS, httpx.Response(201, json={})),
    )
    client = make_client(aura)
    with pytest.raises(CloudRejected) as info:
        await client.send_event(880001, "x")
    assert info.value.status == 400 and "still bad" in str(info.value)
    assert await client.send_event(880001, "x") is True  # the newer shape again, first
    await client.aclose()
    assert [sorted(b) for b in aura.bodies()] == [  # type: ignore[arg-type]
        ["event", "source"],
        ["message"],
        ["event", "source"],
    ]


async def test_send_event_other_errors_do_not_fall_back() -> None:
    aura = Recorder(("POST", EVENTS, httpx.Response(404, json={"message": "no callout"})))
    client = make_client(aura)
    with pytest.raises(CloudRejected):
        await client.send_event(880001, "x")
    await client.aclose()
    assert len(aura.seen) == 1


async def test_send_event_to_a_closed_callout_returns_false(
    caplog: pytest.LogCaptureFixture,
) -> None:
    aura = Recorder(("POST", EVENTS, httpx.Response(285, json={"message": "Callout is closed"})))
    client = make_client(aura)
    with caplog.at_level("INFO", logger="gateway.aura.client"):
        assert await client.send_event(880001, "x") is False
    await client.aclose()
    assert len(aura.seen) == 1
    assert "callout_event_not_sent" in caplog.text


async def test_events_reads_both_item_shapes() -> None:
    items = [
        {  # newer: event is an object holding the message body
            "id": 7,
            "calloutId": 880001,
            "calloutEventTypeId": 1,
            "event": {"message": "on my way", "senderRole": "controller"},
            "createdBy": "controller",
            "createdAt": "2024-01-01T00:00:00Z",
        },
        {"id": 8, "calloutId": 880001, "message": "help", "createdAt": None},  # older
        {"id": 9, "event": "plain text", "source": "customer"},
        {"id": 10, "event": {"text": "via text"}},
        {"id": 11, "event": {"body": "via body"}},
        {"id": 12, "event": {"status": "Responder Dispatched"}, "createdBy": 42},
    ]
    aura = Recorder(
        ("GET", EVENTS, httpx.Response(200, json=items)),
        ("GET", EVENTS, httpx.Response(200, json={"calloutEvents": items[:1]})),
    )
    client = make_client(aura)
    events = await client.events(880001)
    wrapped = await client.events(880001)
    await client.aclose()
    assert [(e.id, e.text, e.source, e.created_at) for e in events] == [
        (7, "on my way", "controller", "2024-01-01T00:00:00Z"),
        (8, "help", None, None),
        (9, "plain text", "customer", None),
        (10, "via text", None, None),
        (11, "via body", None, None),
        (12, str({"status": "Responder Dispatched"}), "42", None),
    ]
    assert wrapped == events[:1]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"message": "ok"}),
        httpx.Response(200, json=[{"id": 1}]),
        httpx.Response(200, json=["text"]),
        httpx.Response(200, text="<html>"),
    ],
)
async def test_unreadable_events_are_malformed(answer: httpx.Response) -> None:
    client = make_client(Recorder(("GET", EVENTS, answer)))
    with pytest.raises(CloudMalformed):
        await client.events(880001)
    await client.aclose()


@pytest.mark.parametrize(("safe_code", "body"), [(None, {}), ("0427", {"safeCode": "0427"})])
async def test_cancel_with_and_without_a_safe_code(safe_code: str | None, body: object) -> None:
    answer = {"message": "Callout cancelled", "callout": callout("Cancelled")}
    aura = Recorder(("POST", "/callouts/880001/cancel", httpx.Response(200, json=answer)))
    client = make_client(aura)
    result = await client.cancel(880001, safe_code=safe_code)
    await client.aclose()
    assert result.id == 880001 and result.closed
    assert aura.bodies() == [body]


@pytest.mark.parametrize("bad", ["123", "12345", "12a4", " 1234", "1234\n", "١٢٣٤", "", 1234])
async def test_a_malformed_safe_code_never_reaches_aura(bad: object) -> None:
    aura = Recorder()
    client = make_client(aura)
    with pytest.raises(ValueError) as info:
        await client.cancel(880001, safe_code=bad)  # type: ignore[arg-type]
    await client.aclose()
    assert aura.seen == []  # no request at all, and certainly no other digits
    assert str(info.value) == "safe_code must be exactly 4 digits"  # the code is not echoed


async def test_cancel_rejected_is_not_retried() -> None:
    aura = Recorder(("POST", "/callouts/880001/cancel", httpx.Response(400, json={})))
    client = make_client(aura)
    with pytest.raises(CloudRejected):
        await client.cancel(880001, safe_code="1234")
    await client.aclose()
    assert aura.bodies() == [{"safeCode": "1234"}]


async def test_exception_reasons_list_and_add() -> None:
    reasons = [{"id": 1, "reason": "Customer unavailable at location"}, {"id": 2, "reason": "x"}]
    path = "/callouts/880001/exceptionReasons"
    aura = Recorder(
        ("GET", path, httpx.Response(200, json=reasons)),
        ("GET", path, httpx.Response(200, json={"exceptionReasons": reasons[:1]})),
        ("POST", path, httpx.Response(200, json={"id": 2, "reason": "x"})),
        ("POST", path, httpx.Response(200, json={})),
        ("GET", path, httpx.Response(200, json=[{"id": "one", "reason": "x"}])),
    )
    client = make_client(aura)
    assert await client.exception_reasons(880001) == [
        (1, "Customer unavailable at location"),
        (2, "x"),
    ]
    assert await client.exception_reasons(880001) == [(1, "Customer unavailable at location")]
    await client.add_exception_reason(880001, 2, "false alarm")
    await client.add_exception_reason(880001, None, None)
    with pytest.raises(CloudMalformed):
        await client.exception_reasons(880001)
    await client.aclose()
    assert aura.bodies()[2:4] == [{"exceptionReasonId": 2, "notes": "false alarm"}, {}]


NEW_RATING = {
    "calloutId": 880001,
    "rating": 4,
    "additionalDetails": "quick",
    "customerAllowedToBeContacted": False,
}
OLD_RATING = {"calloutId": 880001, "rating": 4, "comment": "quick"}


async def test_rate_sends_the_newer_shape() -> None:
    answer = httpx.Response(201, json={"calloutRatingPostResult": {"id": 1}})
    aura = Recorder(("POST", RATINGS, answer))
    client = make_client(aura)
    await client.rate(880001, 4, "quick")
    await client.aclose()
    assert aura.bodies() == [NEW_RATING]


async def test_rate_falls_back_once_and_remembers_the_older_shape() -> None:
    aura = Recorder(
        ("POST", RATINGS, httpx.Response(400, json={"message": "unknown field"})),
        ("POST", RATINGS, httpx.Response(201, json={"id": 1, "calloutId": 880001})),
        ("POST", RATINGS, httpx.Response(201, json={"id": 2, "calloutId": 880001})),
    )
    client = make_client(aura)
    await client.rate(880001, 4, "quick")
    await client.rate(880001, 4, "quick")
    await client.aclose()
    assert aura.bodies() == [NEW_RATING, OLD_RATING, OLD_RATING]


async def test_rate_without_comment_and_both_shapes_refused() -> None:
    aura = Recorder(
        ("POST", RATINGS, httpx.Response(400, json={"message": "Callout is not closed"})),
        ("POST", RATINGS, httpx.Response(400, json={"message": "Callout is not closed"})),
    )
    client = make_client(aura)
    with pytest.raises(CloudRejected) as info:
        await client.rate(880001, 5)
    await client.aclose()
    assert "not closed" in str(info.value)
    assert aura.bodies() == [
        {"calloutId": 880001, "rating": 5, "customerAllowedToBeContacted": False},
        {"calloutId": 880001, "rating": 5},
    ]


@pytest.mark.parametrize("score", [0, 6, -1, True, 3.0, "4", None])
async def test_rate_score_is_validated_before_any_request(score: object) -> None:
    aura = Recorder()
    client = make_client(aura)
    with pytest.raises(ValueError):
        await client.rate(880001, score)  # type: ignore[arg-type]
    await client.aclose()
    assert aura.seen == []


async def test_report_uses_the_configurable_path() -> None:
    report = {"calloutId": 880001, "outcome": "Closed", "resolutionTimeSeconds": 60}
    aura = Recorder(
        ("GET", "/callouts/880001/report", httpx.Response(200, json={"report": report})),
        ("GET", "/reports/880001", httpx.Response(200, json=report)),
    )
    client = make_client(aura)
    assert await client.report(880001) == report
    await client.aclose()
    other = make_client(aura, paths={"resolution_report": "/reports/{callout_id}"})
    assert await other.report(880001) == report  # a flat answer is the report itself
    await other.aclose()


@pytest.mark.parametrize("status", [400, 404])
async def test_report_before_close_is_rejected(status: int) -> None:
    body = {"message": "Report available after the callout is closed"}
    aura = Recorder(("GET", "/callouts/880001/report", httpx.Response(status, json=body)))
    client = make_client(aura)
    with pytest.raises(CloudRejected) as info:
        await client.report(880001)
    await client.aclose()
    assert info.value.status == status and "after the callout is closed" in str(info.value)


async def test_report_that_is_not_an_object_is_malformed() -> None:
    aura = Recorder(("GET", "/callouts/880001/report", httpx.Response(200, json=[1])))
    client = make_client(aura)
    with pytest.raises(CloudMalformed):
        await client.report(880001)
    await client.aclose()


async def test_map() -> None:
    maps = "/callouts/880001/maps"
    aura = Recorder(
        ("GET", maps, httpx.Response(200, json={"url": "http://x/m.png", "image": None})),
        ("GET", maps, httpx.Response(200, json={"map": {"url": None, "image": "aGk="}})),
        ("GET", maps, httpx.Response(200, json={"message": "ok"})),
        ("GET", maps, httpx.Response(200, json={"url": 5, "image": None})),
        ("GET", maps, httpx.Response(400, json={"message": "not closed"})),
    )
    client = make_client(aura)
    assert await client.map(880001) == {"url": "http://x/m.png", "image": None}
    assert await client.map(880001) == {"url": None, "image": "aGk="}
    for _ in range(2):
        with pytest.raises(CloudMalformed):
            await client.map(880001)
    with pytest.raises(CloudRejected):
        await client.map(880001)
    await client.aclose()


async def test_new_methods_renew_the_token_once_on_401() -> None:
    tokens = 0
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal tokens, calls
        if request.url.path.endswith("/oauth/token"):
            tokens += 1
            return token_new()
        calls += 1
        if calls == 1:
            return httpx.Response(401, json={"message": "expired"})
        return httpx.Response(201, json={})

    client = make_client(handler)
    assert await client.send_event(880001, "x") is True
    await client.aclose()
    assert (tokens, calls) == (2, 2)

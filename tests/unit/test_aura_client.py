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

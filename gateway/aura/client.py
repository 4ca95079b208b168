"""The AURA Panic API client: tokens, request building, error classes, HTTP 285.

The only module that touches httpx. Every httpx exception and every status code is
translated into the ``gateway.errors`` tree here, so callers decide by type alone.
Response shapes differ between AURA doc generations (../shared/aura-api.md §13): both
are accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.config.models import AuraCredentials, AuraSettings
from gateway.errors import CloudMalformed, CloudRejected, CloudRetryable, CloudUnauthorized

logger = logging.getLogger(__name__)

HTTP_CLOSED = 285  # AURA's custom "callout is closed" on location updates
# AURA's status is free text with mixed casing; anything else counts as still open.
CLOSED_STATUSES = frozenset({"closed", "callout closed", "cancelled", "canceled"})


@dataclass(frozen=True, slots=True)
class Callout:
    id: int
    status: str | None
    closed: bool
    url: str | None = None
    customer_id: int | None = None
    predefined_location_id: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], *, closed: bool = False) -> Callout:
        status = data.get("status")
        status_text = str(status) if status is not None else None
        is_closed = closed or (status_text or "").strip().lower() in CLOSED_STATUSES
        return cls(
            id=int(data["id"]),
            status=status_text,
            closed=is_closed,
            url=data.get("url"),
            customer_id=_int_or_none(data.get("customerId")),
            predefined_location_id=_int_or_none(data.get("predefinedLocationId")),
        )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _callout_of(payload: Any, *, closed: bool = False) -> Callout:
    """Newer docs wrap as ``{message, callout}``; older ones answer the flat callout."""
    try:
        if isinstance(payload, dict):
            inner = payload.get("callout")
            if isinstance(inner, dict) and "id" in inner:
                return Callout.from_json(inner, closed=closed)
            if "id" in payload:
                return Callout.from_json(payload, closed=closed)
            event = payload.get("resolvedAuraEvent")
            if isinstance(event, dict):
                response = event.get("eventResponse") or {}
                if isinstance(response, dict) and "calloutId" in response:
                    return Callout(id=int(response["calloutId"]), status=None, closed=closed)
    except (TypeError, ValueError) as exc:
        raise CloudMalformed(f"AURA answered a callout that cannot be read: {exc}") from exc
    raise CloudMalformed("AURA answered 2xx without a callout id")


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:  # JSONDecodeError, bad encoding
        raise CloudMalformed(
            f"{what}: HTTP {response.status_code} with a body that is not JSON"
        ) from exc


def _message(response: httpx.Response) -> str:
    """AURA's ``message`` only: never the rest of a body, which may echo what we sent."""
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase or "no message"
    if isinstance(data, dict):
        for key in ("message", "Error", "error"):
            if data.get(key):
                return str(data[key])[:500]
    return response.reason_phrase or "no message"


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim if the token is a JWT; the doc generations disagree on expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        exp = json.loads(base64.urlsafe_b64decode(padded)).get("exp")
        return float(exp) if exp is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


class AuraClient:
    """Async client for the callout path. Explicit timeouts on every request."""

    def __init__(
        self,
        settings: AuraSettings,
        credentials: AuraCredentials,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._clock = clock
        t = settings.timeouts
        self._http = httpx.AsyncClient(
            base_url=str(settings.base_url).rstrip("/") + settings.api_prefix,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            transport=transport,
            headers={"User-Agent": "aura-gateway/0.1"},
        )
        self._token: str | None = None
        self._refresh_at: float = 0.0
        self._token_lock = asyncio.Lock()  # one token request at a time, shared by all
        self.unauthorized_streak = 0
        # httpx's timeouts are per phase; this bounds a whole request (a slow-drip answer).
        self._deadline_s = t.connect + t.write + t.read + t.pool

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ token

    def invalidate_token(self) -> None:
        self._token = None

    async def _ensure_token(self) -> str:
        async with self._token_lock:
            return await self._fresh_token()

    async def _fresh_token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        body = {
            "clientId": self._credentials.client_id.get_secret_value(),
            "clientSecret": self._credentials.client_secret.get_secret_value(),
        }
        response = await self._send("POST", "/oauth/token", json_body=body, auth=False)
        if response.status_code in (400, 401, 403):
            raise CloudUnauthorized(
                f"AURA refused the client credentials ({response.status_code}): "
                f"{_message(response)}",
                status=response.status_code,
            )
        self._raise_for_status(response, "oauth/token")
        data = _json(response, "oauth/token")
        if not isinstance(data, dict):
            raise CloudMalformed("token response is not a JSON object")
        token = data.get("accessToken") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise CloudMalformed("token response carried no accessToken/access_token")
        lifetime = _seconds(data.get("expiresIn", data.get("expires_in")))
        now = self._clock()
        exp = _jwt_exp(token)
        if lifetime is not None and lifetime > 0:
            expires = now + lifetime
        elif exp is not None:
            expires = now + max(0.0, exp - time.time())
        else:
            expires = now + 300.0  # unknown lifetime: refresh soon rather than late
        if exp is not None:
            # The JWT's own claim wins over a body value that may be a lifetime or an epoch.
            expires = min(expires, now + max(0.0, exp - time.time()))
        # Refresh a margin before expiry, but never sooner than half-way through a short
        # lifetime: a margin longer than the lifetime would mean a new token per request.
        margin = min(self._settings.token_refresh_margin_s, (expires - now) / 2)
        self._token, self._refresh_at = token, expires - margin
        logger.info("event=token_refreshed lifetime_s=%.0f", expires - now)
        return token

    # ------------------------------------------------------------------ plumbing

    async def _send(
        self, method: str, path: str, *, json_body: Any = None, auth: bool = True
    ) -> httpx.Response:
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {await self._ensure_token()}"
        try:
            async with asyncio.timeout(self._deadline_s):
                return await self._http.request(method, path, json=json_body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise CloudRetryable(
                f"{method} {path}: {type(exc).__name__}: {exc}", maybe_delivered=False
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise CloudRetryable(f"{method} {path}: timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:  # transport, decoding, redirects: all transient here
            raise CloudRetryable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code < 300:
            return
        message = f"{what}: HTTP {code}: {_message(response)}"
        if code == 429:
            raise CloudRetryable(
                message, status=code, retry_after=_retry_after(response), maybe_delivered=False
            )
        if code >= 500 or code in (408, 425) or code < 200:
            raise CloudRetryable(message, status=code)
        if 300 <= code < 400:
            # AURA does not redirect; a proxy or captive portal on the uplink might.
            raise CloudRetryable(message, status=code)
        if code == 401:
            raise CloudUnauthorized(message, status=code)
        raise CloudRejected(message, status=code)

    async def _request(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        """One request with the documented 401 handling: new token once, then retry."""
        response = await self._send(method, path, json_body=json_body)
        if response.status_code == 401:
            self.invalidate_token()
            response = await self._send(method, path, json_body=json_body)
            if response.status_code == 401:
                self.unauthorized_streak += 1
        if response.status_code != 401:
            self.unauthorized_streak = 0
        return response

    # ------------------------------------------------------------------ callouts

    async def authenticate(self) -> None:
        """Have a valid token before a request whose every attempt is journalled."""
        await self._ensure_token()

    async def raise_callout(self, request: dict[str, Any]) -> Callout:
        """Send a create request frozen by the engine (route + body)."""
        route = request["route"]
        if route == "customer":
            path = f"/customers/{int(request['customer_id'])}/callouts"
        elif route == "site":
            path = f"/predefinedLocations/externalRef/{_path_part(request['site_ref'])}/callouts"
        elif route == "device":
            path = "/deviceEvent"
        else:
            raise CloudRejected(f"unknown route {route!r}")
        response = await self._request("POST", path, request["body"])
        self._raise_for_status(response, f"create {route} callout")
        return _callout_of(_json(response, f"create {route} callout"))

    async def update_location(self, callout_id: int, location: dict[str, float]) -> bool:
        """Location only. Returns False when AURA says the callout is closed (285)."""
        response = await self._request("POST", f"/callouts/{callout_id}/location", location)
        if response.status_code == HTTP_CLOSED:
            return False
        self._raise_for_status(response, "update location")
        return True

    async def update_location_and_return(
        self, callout_id: int, location: dict[str, float]
    ) -> Callout:
        """The poll while a live source moves: 285 means closed, stop streaming."""
        path = self._settings.paths.update_location_and_return.format(callout_id=callout_id)
        response = await self._request("POST", path, location)
        return self._callout_answer(response, callout_id, "update location and return")

    async def get_callout(self, callout_id: int) -> Callout:
        response = await self._request("GET", f"/callouts/{callout_id}")
        return self._callout_answer(response, callout_id, "get callout")

    async def active_callouts(self) -> list[Callout]:
        response = await self._request("GET", "/callouts/activeCallouts")
        self._raise_for_status(response, "active callouts")
        data = _json(response, "active callouts")
        items = data.get("callouts", data.get("data", [])) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise CloudMalformed("active callouts: not a list")
        out = []
        for item in items:
            if isinstance(item, dict) and "id" in item:
                try:
                    out.append(Callout.from_json(item))
                except (TypeError, ValueError) as exc:
                    raise CloudMalformed(f"active callouts: unreadable callout: {exc}") from exc
        return out

    def _callout_answer(self, response: httpx.Response, callout_id: int, what: str) -> Callout:
        if response.status_code == HTTP_CLOSED:
            try:
                return _callout_of(_json(response, what), closed=True)
            except CloudMalformed:
                return Callout(id=callout_id, status=None, closed=True)
        self._raise_for_status(response, what)
        return _callout_of(_json(response, what))


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # e.g. "1h": fall back to the JWT's exp or a short default


def _path_part(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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


@dataclass(frozen=True, slots=True)
class CalloutEvent:
    """One item of a callout's event stream (chat or note), in either doc shape."""

    id: int | None
    text: str
    source: str | None  # newer ``createdBy`` / sender role, older ``source``
    created_at: str | None

    @classmethod
    def from_json(cls, data: Any) -> CalloutEvent:
        if not isinstance(data, dict):
            raise CloudMalformed("callout events: an item is not a JSON object")
        event = data.get("event")
        if event is not None:
            text = _event_text(event)
        elif isinstance(data.get("message"), str):
            text = data["message"]
        else:
            raise CloudMalformed("callout events: an item has neither event nor message")
        source = next(
            (data[k] for k in ("source", "createdBy") if data.get(k) not in (None, "")), None
        )
        if source is None and isinstance(event, dict):
            source = event.get("senderRole") or event.get("source")
        created = data.get("createdAt")
        return cls(
            id=_int_or_none(data.get("id")),
            text=text,
            source=str(source) if source not in (None, "") else None,
            created_at=str(created) if created is not None else None,
        )


def _event_text(event: Any) -> str:
    """Newer items carry ``event`` as an object holding the message body (or a plain string)."""
    if isinstance(event, str):
        return event
    if isinstance(event, dict):
        for key in ("message", "text", "body"):
            if isinstance(event.get(key), str):
                return str(event[key])
    return str(event)


EventShape = Literal["new", "old"]
_SAFE_CODE = re.compile(r"[0-9]{4}")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request to AURA (``phase="request"``, before it is sent) or its outcome
    (``"response"``: a status, or the error that left none), for ``AuraClient.observers``
    (the audit trail, the metrics). ``body`` is unredacted: an observer redacts.

    ``error_class``: unreachable | timeout | transport | 5xx | 429 | unauthorized |
    rejected (another 4xx) | redirect, or None when AURA answered 2xx (285 included)."""

    phase: Literal["request", "response"]
    method: str
    path: str
    body: Any = None
    status: int | None = None
    elapsed_s: float | None = None
    error: str | None = None
    error_class: str | None = None


def status_class(code: int) -> str | None:
    """The error class of an HTTP status, as the metrics count them; None for success."""
    if 200 <= code < 300:
        return None
    if code == 429:
        return "429"
    if code >= 500 or code < 200:
        return "5xx"
    if code == 401:
        return "unauthorized"
    if code == 408:
        return "timeout"
    if code < 400:
        return "redirect"
    return "rejected"


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
        # Body shapes that differ between doc generations (aura-api.md §13): None until
        # AURA has accepted one, then that one for the rest of this client's life.
        self._event_shape: EventShape | None = None
        self._rating_shape: EventShape | None = None
        # Told of every request and its outcome (audit trail, metrics); none: no cost.
        self.observers: list[Callable[[Exchange], None]] = []

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
        if not self.observers:
            return await self._transfer(method, path, json_body, headers)
        self._tell(Exchange("request", method, path, json_body))
        started = time.monotonic()
        try:
            response = await self._transfer(method, path, json_body, headers)
        except CloudRetryable as exc:
            elapsed = time.monotonic() - started
            kind = _transport_class(exc.__cause__)
            self._tell(Exchange("response", method, path, None, None, elapsed, str(exc), kind))
            raise
        code, elapsed = response.status_code, time.monotonic() - started
        answer, kind = _answer_of(response), status_class(code)
        self._tell(Exchange("response", method, path, answer, code, elapsed, None, kind))
        return response

    def _tell(self, exchange: Exchange) -> None:
        for observer in self.observers:
            try:
                observer(exchange)
            except Exception:  # an observer's fault never fails a request
                logger.exception("event=aura_observer_fault")

    async def _transfer(
        self, method: str, path: str, json_body: Any, headers: dict[str, str]
    ) -> httpx.Response:
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

    async def device_event(
        self,
        device_id: int,
        device_type_id: int,
        message_type: int,
        location: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """A non-raise device event (location, cancel, health): AURA's template for the
        device type turns it into the action agreed at onboarding. Returns AURA's answer."""
        body: dict[str, Any] = {
            "device_id": device_id,
            "device_type_id": device_type_id,
            "message_type": message_type,
        }
        if location is not None:
            body["location"] = location
        response = await self._request("POST", "/deviceEvent", body)
        self._raise_for_status(response, f"device event {message_type}")
        answer = _json(response, f"device event {message_type}")
        return answer if isinstance(answer, dict) else {}

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

    # ------------------------------------------------------------ events, cancel, after close

    async def send_event(self, callout_id: int, text: str) -> bool:
        """A chat/note to the control room. True sent; False the callout is closed (285).

        The newer body ``{source, event}`` goes first; if AURA answers 400 the older
        ``{message}`` is tried once, and the shape that worked is kept from then on.
        """
        path = f"/callouts/{callout_id}/events"
        bodies: dict[EventShape, dict[str, Any]] = {
            "new": {"source": "customer", "event": text},
            "old": {"message": text},
        }
        response = await self._with_shape_fallback("_event_shape", path, bodies, "send event")
        if response.status_code == HTTP_CLOSED:
            logger.info("event=callout_event_not_sent reason=closed callout_id=%s", callout_id)
            return False
        return True

    async def events(self, callout_id: int) -> list[CalloutEvent]:
        response = await self._request("GET", f"/callouts/{callout_id}/events")
        self._raise_for_status(response, "callout events")
        items = _list_of(
            _json(response, "callout events"), "callout events", ("calloutEvents", "events")
        )
        return [CalloutEvent.from_json(item) for item in items]

    async def cancel(self, callout_id: int, *, safe_code: str | None = None) -> Callout:
        """Cancel: ``{}`` (integration) or ``{"safeCode": "1234"}`` (customer-verified).

        A wrong safe code may count as duress (aura-api.md §5.6), so a code that is not
        exactly four digits is refused here, before any request, and nothing is ever retried
        with other digits.
        """
        body: dict[str, Any] = {}
        if safe_code is not None:
            if not isinstance(safe_code, str) or not _SAFE_CODE.fullmatch(safe_code):
                raise ValueError("safe_code must be exactly 4 digits")  # never echo the code
            body["safeCode"] = safe_code
        response = await self._request("POST", f"/callouts/{callout_id}/cancel", body)
        return self._callout_answer(response, callout_id, "cancel callout")

    async def exception_reasons(self, callout_id: int) -> list[tuple[int, str]]:
        """The cancellation (exception) reasons AURA offers for this callout: ``(id, reason)``."""
        response = await self._request("GET", f"/callouts/{callout_id}/exceptionReasons")
        self._raise_for_status(response, "exception reasons")
        items = _list_of(
            _json(response, "exception reasons"), "exception reasons", ("exceptionReasons",)
        )
        out = []
        for item in items:
            reason = item.get("reason") if isinstance(item, dict) else None
            reason_id = _int_or_none(item.get("id")) if isinstance(item, dict) else None
            if reason_id is None or not isinstance(reason, str):
                raise CloudMalformed("exception reasons: an item without an id and a reason")
            out.append((reason_id, reason))
        return out

    async def add_exception_reason(
        self, callout_id: int, reason_id: int | None, notes: str | None
    ) -> None:
        """Attach a cancellation reason; both fields are optional and omitted when None."""
        body: dict[str, Any] = {}
        if reason_id is not None:
            body["exceptionReasonId"] = int(reason_id)
        if notes is not None:
            body["notes"] = notes
        response = await self._request("POST", f"/callouts/{callout_id}/exceptionReasons", body)
        self._raise_for_status(response, "add exception reason")

    async def rate(self, callout_id: int, score: int, comment: str | None = None) -> None:
        """Overall rating 1-5. Newer body first; on 400 the older one once, then remembered."""
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError("score must be an integer from 1 to 5")
        new: dict[str, Any] = {"calloutId": callout_id, "rating": score}
        old: dict[str, Any] = {"calloutId": callout_id, "rating": score}
        if comment is not None:
            new["additionalDetails"] = comment
            old["comment"] = comment
        new["customerAllowedToBeContacted"] = False
        await self._with_shape_fallback(
            "_rating_shape", "/ratings", {"new": new, "old": old}, "rate callout"
        )

    async def report(self, callout_id: int) -> dict[str, Any]:
        """The resolution report (only after close; a 4xx before close is CloudRejected).

        The path is not in the docs: ``aura.paths.resolution_report``. Returns the
        ``report`` object when the answer wraps one, else the answer itself.
        """
        path = self._settings.paths.resolution_report.format(callout_id=callout_id)
        response = await self._request("GET", path)
        self._raise_for_status(response, "resolution report")
        data = _json(response, "resolution report")
        if not isinstance(data, dict):
            raise CloudMalformed("resolution report: not a JSON object")
        inner = data.get("report")
        return inner if isinstance(inner, dict) else data

    async def map(self, callout_id: int) -> dict[str, Any]:
        """The static map: ``{"url": str | None, "image": str | None}``."""
        response = await self._request("GET", f"/callouts/{callout_id}/maps")
        self._raise_for_status(response, "callout map")
        data = _json(response, "callout map")
        if isinstance(data, dict) and not ({"url", "image"} & data.keys()):
            data = data.get("map", data.get("data"))
        if not isinstance(data, dict) or not ({"url", "image"} & data.keys()):
            raise CloudMalformed("callout map: no url or image")
        url, image = data.get("url"), data.get("image")
        if not all(v is None or isinstance(v, str) for v in (url, image)):
            raise CloudMalformed("callout map: url/image are not strings")
        return {"url": url, "image": image}

    async def _with_shape_fallback(
        self,
        memory: Literal["_event_shape", "_rating_shape"],
        path: str,
        bodies: dict[EventShape, dict[str, Any]],
        what: str,
    ) -> httpx.Response:
        """POST the remembered shape, or newer then (on 400) older once; 2xx answer back.

        A 285 (closed) is handed back as it is and teaches nothing about the shape.
        """
        known: EventShape | None = getattr(self, memory)
        order: tuple[EventShape, ...] = (known,) if known is not None else ("new", "old")
        for i, shape in enumerate(order):
            response = await self._request("POST", path, bodies[shape])
            if response.status_code == 400 and i + 1 < len(order):
                logger.info("event=aura_body_shape_refused what=%r shape=%s", what, shape)
                continue
            self._raise_for_status(response, what)
            if known is None and response.status_code != HTTP_CLOSED:
                setattr(self, memory, shape)
                if shape != "new":
                    logger.info("event=aura_body_shape what=%r shape=%s", what, shape)
            return response
        raise AssertionError("unreachable")  # the last shape always returns or raises

    def _callout_answer(self, response: httpx.Response, callout_id: int, what: str) -> Callout:
        if response.status_code == HTTP_CLOSED:
            try:
                return _callout_of(_json(response, what), closed=True)
            except CloudMalformed:
                return Callout(id=callout_id, status=None, closed=True)
        self._raise_for_status(response, what)
        return _callout_of(_json(response, what))


def _list_of(data: Any, what: str, keys: tuple[str, ...]) -> list[Any]:
    """A bare JSON list, or one wrapped under a known key (or ``data``)."""
    if isinstance(data, dict):
        data = next((data[k] for k in (*keys, "data") if k in data), None)
    if not isinstance(data, list):
        raise CloudMalformed(f"{what}: not a list")
    return data


def _transport_class(cause: BaseException | None) -> str:
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return "unreachable"
    if isinstance(cause, httpx.TimeoutException | TimeoutError):
        return "timeout"
    return "transport"


def _answer_of(response: httpx.Response) -> Any:
    """AURA's answer for an observer: the JSON, else the start of the text."""
    try:
        return response.json()
    except ValueError:
        return response.text[:500] if response.content else None


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

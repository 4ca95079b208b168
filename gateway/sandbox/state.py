"""State of the AURA sandbox: seed data, tokens, callouts, the fault in force and the record.

No sockets here. The HTTP layer in :mod:`gateway.sandbox.server` reads a request, asks
:class:`SandboxState` what to answer, and writes it. One lock (inside a Condition, so
``wait_for`` can sleep on it) guards everything; nothing sleeps or does I/O while holding it.

Behaviour follows ``shared/aura-api.md``; where that file is silent the newest doc generation
is followed and the choice is a :class:`SandboxSeed` field.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, Literal
from urllib.parse import unquote

API_PREFIX = "/panic-api/v2"
FIRST_CALLOUT_ID = 880001
# Callouts max_rate() drives: their own id range, never listed, never in the record.
BENCH_CALLOUT_ID = 990_000_001
HTTP_CALLOUT_CLOSED = 285  # AURA's custom "callout is closed" answer to location updates

# Body shapes of the doc generations (aura-api.md §13): which ones the sandbox accepts.
BodyShapes = Literal["new", "old", "both"]
_SHAPES: frozenset[str] = frozenset({"new", "old", "both"})
_SAFE_CODE = re.compile(r"[0-9]{4}")

FaultMode = Literal["down", "error", "rate_limit", "slow", "drop_reply", "stall"]
FAULT_MODES: frozenset[str] = frozenset(
    {"down", "error", "rate_limit", "slow", "drop_reply", "stall"}
)

# Sample reasons from the older reference (aura-api.md §5.6).
EXCEPTION_REASONS: tuple[dict[str, Any], ...] = (
    {"id": 1, "reason": "Customer unavailable at location"},
    {"id": 2, "reason": "False alarm triggered"},
    {"id": 3, "reason": "Technical malfunction detected"},
)


def _default_customers() -> dict[int, bool]:
    return {1001: True, 1002: False, 1003: True}


def _default_sites() -> dict[str, int]:
    return {"SHOP-CPT-001": 501, "CLINIC-JHB-7": 502}


def _default_devices() -> dict[int, int]:
    return {26217939: 1003}


@dataclass
class SandboxSeed:
    """What the sandbox knows before the first request (copied at construction)."""

    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    # customer id -> has an active subscription
    customers: dict[int, bool] = field(default_factory=_default_customers)
    # Fixed Location externalReferenceId -> its predefined location id
    sites: dict[str, int] = field(default_factory=_default_sites)
    # AURA device_id -> customer id
    devices: dict[int, int] = field(default_factory=_default_devices)
    token_lifetime_s: float = 3600
    # "new": accessToken/tokenType/expiresIn; "old": access_token/token_type/expires_in
    token_style: Literal["new", "old"] = "new"
    # The docs do not say whether site callouts are idempotent like customer callouts.
    site_returns_existing: bool = True
    # POST /callouts/{id}/events: "new" {source, event}, "old" {message}, or both accepted.
    # A refused shape answers 400, so a client's fallback can be exercised for real.
    events_shape: BodyShapes = "both"
    # POST /ratings: "new" additionalDetails/customerAllowedToBeContacted, "old" comment.
    ratings_shape: BodyShapes = "both"

    def __post_init__(self) -> None:
        for name in ("events_shape", "ratings_shape"):
            if getattr(self, name) not in _SHAPES:
                raise ValueError(f"{name} must be one of {sorted(_SHAPES)}")


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the sandbox saw it. Never holds the client secret or a token."""

    seq: int
    method: str
    path: str
    body: Any  # parsed JSON, raw text when not JSON, None when empty
    status: int | None  # None: processed but the reply was dropped or stalled
    arrived_ns: int  # time.monotonic_ns() right after the request line was read
    callout_id: int | None
    authorized: bool  # passed the auth the endpoint needs (bearer, or credentials for token)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fault:
    """A fault to inject into API requests; validated on construction."""

    mode: FaultMode
    status: int = 503
    retry_after: float | None = None
    delay_s: float = 0.0
    count: int | None = None
    path_regex: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {sorted(FAULT_MODES)}")
        if isinstance(self.status, bool) or not isinstance(self.status, int):
            raise ValueError("status must be an integer")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status code")
        if self.retry_after is not None and not (
            _is_number(self.retry_after) and self.retry_after >= 0
        ):
            raise ValueError("retry_after must be a number >= 0")
        if not (_is_number(self.delay_s) and self.delay_s >= 0):
            raise ValueError("delay_s must be a number >= 0")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise ValueError("count must be a positive integer or None")
        if self.path_regex is not None:
            try:
                re.compile(self.path_regex)
            except re.error as exc:
                raise ValueError(f"path_regex is not a valid regex: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultAction:
    """The fault one request drew; ``release`` ends a stall early (clear, new fault, stop)."""

    mode: FaultMode
    status: int
    retry_after: float | None
    delay_s: float
    release: threading.Event


@dataclass
class Reply:
    """What to answer. ``body`` is JSON-able, or a str sent as-is with ``content_type``."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    callout_id: int | None = None
    authorized: bool = False

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str) and not self.content_type.startswith("application/json"):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


class ApiError(Exception):
    """Ends a request with ``status`` and ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds_between(start: str, end: str | None) -> int | None:
    if end is None:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return max(0, math.floor(delta.total_seconds()))


def _png(width: int = 64, height: int = 64) -> bytes:
    """A plain grey PNG: the sandbox's stand-in for AURA's static callout map."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + b"\xc8" * width for _ in range(height))  # 8-bit greyscale
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


_MAP_PNG = _png()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Parse a request body strictly (no NaN/Infinity). Empty -> None. Raises ValueError."""
    if not raw.strip():
        return None
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


# ------------------------------------------------------------------------- validation


def _object(body: Any, *, optional: bool = False) -> dict[str, Any]:
    if body is None and optional:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def _int_field(obj: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer")
    return value


def _str_field(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    return value


def _coordinates(obj: dict[str, Any], where: str = "") -> tuple[float, float, float | None]:
    """latitude/longitude required and in range, accuracy optional and >= 0."""
    lat, lon, acc = obj.get("latitude"), obj.get("longitude"), obj.get("accuracy")
    if lat is None or lon is None:
        raise ApiError(400, f"{where}latitude and {where}longitude are required")
    for name, value, limit in (("latitude", lat, 90), ("longitude", lon, 180)):
        if not _is_number(value):
            raise ApiError(400, f"{where}{name} must be a number")
        if not -limit <= value <= limit:
            raise ApiError(400, f"{where}{name} must be between -{limit} and {limit}")
    if acc is not None and not (_is_number(acc) and acc >= 0):
        raise ApiError(400, f"{where}accuracy must be a number >= 0")
    return float(lat), float(lon), None if acc is None else float(acc)


# ---------------------------------------------------------------------------- callouts


@dataclass
class _Callout:
    id: int
    url: str
    customer_id: int | None
    predefined_location_id: int | None
    response_type_id: int | None
    classification_id: int | None
    latitude: float | None
    longitude: float | None
    accuracy: float | None
    created_at: str
    location_updated_at: str
    site_ref: str | None = None
    device_id: int | None = None
    installer_identifier: str | None = None
    status: str = "created"
    closed: bool = False
    closed_at: str | None = None
    outcome: str | None = None  # the status it closed with
    cancelled_with: Literal["safeCode", "integration"] | None = None
    rating: dict[str, Any] | None = None
    hidden: bool = False  # max_rate()'s own callout: not listed anywhere
    incident: dict[str, Any] | None = None
    location_history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    exception_reasons: list[dict[str, Any]] = field(default_factory=list)

    def flat(self) -> dict[str, Any]:
        """The creation / list shape."""
        return {
            "id": self.id,
            "customerId": self.customer_id,
            "predefinedLocationId": self.predefined_location_id,
            "status": self.status,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "accuracy": self.accuracy,
            "responseTypeId": self.response_type_id,
            "calloutClassificationId": self.classification_id,
            "createdAt": self.created_at,
            "url": self.url,
        }

    def nested(self) -> dict[str, Any]:
        """The read shape (get callout, update-and-return, cancel, 285 bodies)."""
        return {
            "id": self.id,
            "status": self.status,
            "customerId": self.customer_id,
            "predefinedLocationId": self.predefined_location_id,
            "responseTypeId": self.response_type_id,
            "calloutClassificationId": self.classification_id,
            "createdAt": self.created_at,
            "url": self.url,
            "incidentInformation": [dict(self.incident)] if self.incident else [],
            "location": {
                "latitude": self.latitude,
                "longitude": self.longitude,
                "accuracy": self.accuracy,
                "updatedAt": self.location_updated_at,
            },
        }

    def control_view(self) -> dict[str, Any]:
        """Flat shape plus what tests need to see and the API does not show."""
        return {
            **self.flat(),
            "closed": self.closed,
            "closedAt": self.closed_at,
            "externalReferenceId": self.site_ref,
            "deviceId": self.device_id,
            "installerIdentifier": self.installer_identifier,
            "locationUpdates": len(self.location_history),
            "lastLocationUpdate": dict(self.location_history[-1])
            if self.location_history
            else None,
            "eventCount": len(self.events),
            "events": [copy.deepcopy(e["message"]) for e in self.events],
            "exceptionReasons": [dict(r) for r in self.exception_reasons],
            "cancelledWith": self.cancelled_with,
            "rating": dict(self.rating) if self.rating else None,
        }

    def report(self) -> dict[str, Any]:
        """The resolution report (only after close): outcome, response and resolution times.

        Response time runs to the responder's arrival on scene (null if none arrived);
        resolution time to the close. The docs give neither the path nor the format.
        """
        arrived = self.incident.get("arrivedAt") if self.incident else None
        return {
            "calloutId": self.id,
            "outcome": self.outcome,
            "createdAt": self.created_at,
            "closedAt": self.closed_at,
            "responseTimeSeconds": _seconds_between(self.created_at, arrived),
            "resolutionTimeSeconds": _seconds_between(self.created_at, self.closed_at) or 0,
        }

    def set_status(self, status: str) -> None:
        """Free text, as on AURA; keywords also fill the incident timeline."""
        self.status = status
        words = status.lower()
        if self.incident is None and words != "created":
            self.incident = {
                "status": status,
                "responderName": "Sandbox Responder",
                "supplierName": "AURA Sandbox",
                "responseTypeId": self.response_type_id,
                "dispatchedAt": None,
                "arrivedAt": None,
                "completedAt": None,
            }
        if self.incident is None:
            return
        now = _now_iso()
        self.incident["status"] = status
        if "dispatch" in words or "acknowledg" in words:
            self.incident["dispatchedAt"] = self.incident["dispatchedAt"] or now
        if "scene" in words or "arriv" in words:
            self.incident["dispatchedAt"] = self.incident["dispatchedAt"] or now
            self.incident["arrivedAt"] = self.incident["arrivedAt"] or now
        if "complet" in words:
            self.incident["completedAt"] = self.incident["completedAt"] or now

    def close(self, status: str) -> None:
        self.status = status
        self.closed = True
        self.closed_at = self.closed_at or _now_iso()
        self.outcome = self.outcome or status


# ------------------------------------------------------------------------------ routes

_Route = tuple[str, re.Pattern[str], str, bool]  # method, path pattern, handler name, needs auth

_ROUTES: tuple[_Route, ...] = tuple(
    (method, re.compile(pattern), name, auth)
    for method, pattern, name, auth in (
        ("POST", r"/oauth/token", "token", False),
        ("POST", r"/customers/(?P<customer_id>\d+)/callouts", "customer_callout", True),
        (
            "POST",
            r"/predefinedLocations/externalRef/(?P<ref>[^/]+)/callouts",
            "site_callout",
            True,
        ),
        ("POST", r"/deviceEvent", "device_event", True),
        ("GET", r"/callouts/activeCallouts", "active_callouts", True),
        ("GET", r"/callouts/(?P<callout_id>\d+)", "get_callout", True),
        ("POST", r"/callouts/(?P<callout_id>\d+)/location", "location", True),
        ("POST", r"/callouts/(?P<callout_id>\d+)/location/callout", "location_callout", True),
        ("POST", r"/callouts/(?P<callout_id>\d+)/cancel", "cancel", True),
        ("POST", r"/callouts/(?P<callout_id>\d+)/events", "post_event", True),
        ("GET", r"/callouts/(?P<callout_id>\d+)/events", "list_events", True),
        ("GET", r"/callouts/(?P<callout_id>\d+)/exceptionReasons", "list_reasons", True),
        ("POST", r"/callouts/(?P<callout_id>\d+)/exceptionReasons", "post_reason", True),
        # The docs do not give the report's path; this is the gateway's configurable default.
        ("GET", r"/callouts/(?P<callout_id>\d+)/report", "report", True),
        ("GET", r"/callouts/(?P<callout_id>\d+)/maps", "maps", True),
        ("POST", r"/ratings", "rating", True),
    )
)

_TRACK = re.compile(r"/track/(?P<callout_id>\d+)")
_MAP_IMAGE = re.compile(r"/map/(?P<callout_id>\d+)\.png")
_ANY_CALLOUT_ID = re.compile(r"/callouts/(\d+)(?:/|$)")


def _match(method: str, path: str) -> tuple[str, dict[str, str], bool] | None:
    if (m := _TRACK.fullmatch(path)) and method == "GET":
        return "track", m.groupdict(), False
    if (m := _MAP_IMAGE.fullmatch(path)) and method == "GET":
        return "map_image", m.groupdict(), False
    if not path.startswith(API_PREFIX + "/"):
        return None
    rest = path[len(API_PREFIX) :]
    for route_method, pattern, name, auth in _ROUTES:
        if route_method == method and (m := pattern.fullmatch(rest)):
            return name, m.groupdict(), auth
    return None


def _callout_id_in(path: str) -> int | None:
    m = _ANY_CALLOUT_ID.search(path) or _TRACK.fullmatch(path) or _MAP_IMAGE.fullmatch(path)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------- state


class SandboxState:
    """Everything the sandbox remembers, behind one lock."""

    def __init__(self, seed: SandboxSeed) -> None:
        self.seed = seed
        self._customers = dict(seed.customers)
        self._sites = dict(seed.sites)
        self._devices = dict(seed.devices)
        self._cond = threading.Condition(threading.Lock())
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._callouts: dict[int, _Callout] = {}
        self._next_callout_id = FIRST_CALLOUT_ID
        self._next_bench_id = BENCH_CALLOUT_ID
        self._next_event_id = 1
        self._next_rating_id = 1
        self._records: list[RecordedRequest] = []
        self._fault: Fault | None = None
        self._fault_re: re.Pattern[str] | None = None
        self._fault_left: int | None = None
        self._release = threading.Event()
        self.public_url = "http://127.0.0.1:0"

    # ---------------------------------------------------------------- control side

    def set_fault(self, fault: Fault) -> None:
        """Replace the fault in force; requests stalled by the old one are let go."""
        with self._cond:
            self._release.set()
            self._release = threading.Event()
            self._fault = fault
            self._fault_re = re.compile(fault.path_regex) if fault.path_regex else None
            self._fault_left = fault.count

    def clear_fault(self) -> None:
        with self._cond:
            self._release.set()
            self._release = threading.Event()
            self._fault = self._fault_re = self._fault_left = None

    def release_stalls(self) -> None:
        with self._cond:
            self._release.set()

    @property
    def fault(self) -> Fault | None:
        with self._cond:
            return self._fault

    def set_status(self, callout_id: int, status: str) -> None:
        with self._cond:
            self._get(callout_id, KeyError).set_status(status)

    def close_callout(self, callout_id: int) -> None:
        with self._cond:
            self._get(callout_id, KeyError).close("Closed")

    def expire_tokens(self) -> None:
        with self._cond:
            self._tokens.clear()

    def requests(self, since: int = 0) -> list[RecordedRequest]:
        with self._cond:
            if since <= 0:
                return list(self._records)
            return [r for r in self._records if r.seq > since]

    def callouts(self) -> list[dict[str, Any]]:
        with self._cond:
            return [c.control_view() for c in self._callouts.values() if not c.hidden]

    def bench_open(self) -> tuple[int, str]:
        """A hidden callout and a token for max_rate(): neither recorded nor listed."""
        with self._cond:
            callout_id = self._next_bench_id
            self._next_bench_id += 1
            now = _now_iso()
            self._callouts[callout_id] = _Callout(
                id=callout_id,
                url=f"{self.public_url}/track/{callout_id}",
                customer_id=None,
                predefined_location_id=None,
                response_type_id=None,
                classification_id=None,
                latitude=None,
                longitude=None,
                accuracy=None,
                created_at=now,
                location_updated_at=now,
                hidden=True,
            )
            return callout_id, self._mint_token(self.seed.client_id)

    def bench_close(self, callout_id: int, token: str) -> None:
        with self._cond:
            self._callouts.pop(callout_id, None)
            self._tokens.pop(token, None)

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """Sleep on the Condition until ``predicate(records)`` holds; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(list(self._records)), timeout)

    # ------------------------------------------------------------------- API side

    def take_fault(self, path: str) -> FaultAction | None:
        """The fault this request draws, counting it against ``count``."""
        with self._cond:
            fault = self._fault
            if fault is None:
                return None
            if fault.mode != "down":  # down is the listener's business; count is ignored
                if self._fault_re is not None and not self._fault_re.search(path):
                    return None
                if self._fault_left is not None:
                    self._fault_left -= 1
                    if self._fault_left <= 0:
                        # Auto-clear, but do not release: this request still takes the fault.
                        self._fault = self._fault_re = self._fault_left = None
            return FaultAction(
                fault.mode, fault.status, fault.retry_after, fault.delay_s, self._release
            )

    def fault_reply(
        self,
        action: FaultAction,
        method: str,
        path: str,
        authorization: str | None,
        raw: bytes,
        arrived_ns: int,
    ) -> Reply:
        """Answer an ``error`` / ``rate_limit`` fault and record it; state is untouched."""
        headers: dict[str, str] = {}
        if action.retry_after is not None:
            value = action.retry_after
            headers["Retry-After"] = str(int(value)) if float(value).is_integer() else str(value)
        if action.mode == "rate_limit":
            status, message = 429, "Too Many Requests (sandbox fault)"
        else:
            status, message = action.status, f"Sandbox fault: HTTP {action.status}"
        with self._cond:
            reply = Reply(
                status,
                {"message": message},
                headers=headers,
                callout_id=_callout_id_in(path),
                authorized=self._token_ok(authorization),
            )
            self._record(method, path, raw, status, arrived_ns, reply)
        return reply

    def handle_api(
        self,
        method: str,
        path: str,
        authorization: str | None,
        raw: bytes,
        arrived_ns: int,
        *,
        reply_dropped: bool = False,
        record: bool = True,
    ) -> Reply:
        """Process one API request and record it (unless ``record`` is False), atomically."""
        with self._cond:
            try:
                reply = self._handle(method, path, authorization, raw)
            except ApiError as exc:
                reply = Reply(exc.status, {"message": exc.message})
                reply.callout_id = _callout_id_in(path)
                # A failed token request is never "authorized"; elsewhere the bearer decides.
                reply.authorized = not path.endswith("/oauth/token") and self._token_ok(
                    authorization
                )
            if reply.callout_id is None:
                reply.callout_id = _callout_id_in(path)
            if record:
                self._record(
                    method, path, raw, None if reply_dropped else reply.status, arrived_ns, reply
                )
            return reply

    def record_unprocessed(
        self, method: str, path: str, raw: bytes, status: int, arrived_ns: int
    ) -> None:
        """Record a request the HTTP layer refused before it reached the API (framing)."""
        with self._cond:
            self._record(
                method,
                path,
                raw,
                status,
                arrived_ns,
                Reply(status, None, callout_id=_callout_id_in(path)),
            )

    # ---------------------------------------------------------------- internals

    def _record(
        self,
        method: str,
        path: str,
        raw: bytes,
        status: int | None,
        arrived_ns: int,
        reply: Reply,
    ) -> None:
        try:
            body: Any = parse_json(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        else:
            body = copy.deepcopy(body)
            if path.endswith("/oauth/token") and isinstance(body, dict) and "clientSecret" in body:
                body["clientSecret"] = "***"
        self._records.append(
            RecordedRequest(
                seq=len(self._records) + 1,
                method=method,
                path=path,
                body=body,
                status=status,
                arrived_ns=arrived_ns,
                callout_id=reply.callout_id,
                authorized=reply.authorized,
            )
        )
        self._cond.notify_all()

    def _token_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        expires = self._tokens.get(token.strip())
        return expires is not None and time.monotonic() < expires

    def _get(self, callout_id: int, error: type[Exception] = ApiError) -> _Callout:
        callout = self._callouts.get(callout_id)
        if callout is None:
            if error is ApiError:
                raise ApiError(404, f"Callout {callout_id} not found")
            raise error(f"unknown callout {callout_id}")
        return callout

    def _handle(self, method: str, path: str, authorization: str | None, raw: bytes) -> Reply:
        matched = _match(method, path)
        if matched is None:
            raise ApiError(404, "Not found")
        name, params, needs_auth = matched
        authorized = self._token_ok(authorization)
        if needs_auth and not authorized:
            raise ApiError(401, "Unauthorized")
        try:
            body = parse_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Malformed JSON body: {exc}") from None
        reply: Reply = getattr(self, f"_api_{name}")(params, body)
        reply.authorized = reply.authorized or authorized
        return reply

    def _new_callout(self, **fields: Any) -> _Callout:
        callout_id = self._next_callout_id
        self._next_callout_id += 1
        now = _now_iso()
        callout = _Callout(
            id=callout_id,
            url=f"{self.public_url}/track/{callout_id}",
            created_at=now,
            location_updated_at=now,
            **fields,
        )
        self._callouts[callout_id] = callout
        return callout

    def _active(self, match: Callable[[_Callout], bool]) -> _Callout | None:
        return next((c for c in self._callouts.values() if not c.closed and match(c)), None)

    def _raise_for_customer(
        self,
        customer_id: int,
        *,
        location: tuple[float, float, float | None] | None,
        predefined: int | None,
        response_type: int | None,
        classification: int | None,
        device_id: int | None = None,
    ) -> tuple[_Callout, bool]:
        """The customer-callout rules shared with deviceEvent. Returns (callout, created)."""
        if customer_id not in self._customers:
            raise ApiError(404, f"Customer {customer_id} not found")
        if not self._customers[customer_id]:
            raise ApiError(403, "Customer has no active subscription")
        existing = self._active(lambda c: c.customer_id == customer_id)
        if existing is not None:
            return existing, False
        lat, lon, acc = location if location else (None, None, None)
        callout = self._new_callout(
            customer_id=customer_id,
            predefined_location_id=predefined,
            response_type_id=response_type,
            classification_id=classification,
            latitude=lat,
            longitude=lon,
            accuracy=acc,
            device_id=device_id,
        )
        return callout, True

    # ------------------------------------------------------------- API handlers

    def _api_token(self, _params: dict[str, str], body: Any) -> Reply:
        obj = _object(body)
        client_id, secret = obj.get("clientId"), obj.get("clientSecret")
        if not client_id or not secret:
            raise ApiError(400, "clientId and clientSecret are required")
        if not (
            isinstance(client_id, str)
            and isinstance(secret, str)
            and secrets.compare_digest(client_id, self.seed.client_id)
            and secrets.compare_digest(secret.encode(), self.seed.client_secret.encode())
        ):
            raise ApiError(401, "Invalid client credentials")
        token = self._mint_token(client_id)
        expires_in = max(0, math.floor(self.seed.token_lifetime_s))  # never promise more
        if self.seed.token_style == "old":
            data = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        else:
            data = {"accessToken": token, "tokenType": "Bearer", "expiresIn": expires_in}
        return Reply(200, data, authorized=True)

    def _mint_token(self, client_id: str) -> str:
        lifetime = float(self.seed.token_lifetime_s)
        now_mono, now_wall = time.monotonic(), time.time()
        # Drop expired tokens so a long benchmark does not grow the table.
        self._tokens = {t: e for t, e in self._tokens.items() if e > now_mono}
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": "aura-sandbox",
            "sub": client_id,
            "iat": int(now_wall),
            "exp": math.floor(now_wall + lifetime),
            "jti": secrets.token_hex(8),
        }
        token = ".".join(
            (
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(claims, separators=(",", ":")).encode()),
                _b64url(secrets.token_bytes(32)),  # not verifiable, and need not be
            )
        )
        self._tokens[token] = now_mono + lifetime
        return token

    def _api_customer_callout(self, params: dict[str, str], body: Any) -> Reply:
        obj = _object(body)
        response_type = _int_field(obj, "responseTypeId", required=True)
        classification = _int_field(obj, "calloutClassificationId", required=False)
        has_location = obj.get("location") is not None
        has_predefined = obj.get("predefinedLocationId") is not None
        if has_location and has_predefined:
            raise ApiError(400, "location and predefinedLocationId are mutually exclusive")
        if not has_location and not has_predefined:
            raise ApiError(400, "location or predefinedLocationId is required")
        location = None
        predefined = None
        if has_location:
            if not isinstance(obj["location"], dict):
                raise ApiError(400, "location must be an object")
            location = _coordinates(obj["location"], "location.")
        else:
            predefined = _int_field(obj, "predefinedLocationId", required=True)
            if predefined not in self._sites.values():
                raise ApiError(400, f"predefinedLocationId {predefined} not found")
        callout, created = self._raise_for_customer(
            int(params["customer_id"]),
            location=location,
            predefined=predefined,
            response_type=response_type,
            classification=classification,
        )
        message = (
            "Callout created successfully."
            if created
            else "Customer already has an active callout."
        )
        return Reply(
            201 if created else 200,
            {"message": message, "callout": callout.flat()},
            callout_id=callout.id,
        )

    def _api_site_callout(self, params: dict[str, str], body: Any) -> Reply:
        ref = unquote(params["ref"])
        obj = _object(body, optional=True)
        response_type = _int_field(obj, "responseTypeId", required=False)
        classification = _int_field(obj, "calloutClassificationId", required=False)
        installer = _str_field(obj, "installerIdentifier")
        if ref not in self._sites:
            raise ApiError(400, f"No fixed location with externalReferenceId {ref!r}")
        callout = (
            self._active(lambda c: c.site_ref == ref) if self.seed.site_returns_existing else None
        )
        created = callout is None
        if callout is None:
            callout = self._new_callout(
                customer_id=None,
                predefined_location_id=self._sites[ref],
                response_type_id=response_type,
                classification_id=classification,
                latitude=None,
                longitude=None,
                accuracy=None,
                site_ref=ref,
                installer_identifier=installer,
            )
        message = (
            "Callout created successfully."
            if created
            else "Fixed location already has an active callout."
        )
        return Reply(
            201 if created else 200,
            {
                "message": message,
                "installerIdentifier": installer,
                "externalReferenceId": ref,
                "callout": callout.flat(),
            },
            callout_id=callout.id,
        )

    def _api_device_event(self, _params: dict[str, str], body: Any) -> Reply:
        obj = _object(body)
        device_id = _int_field(obj, "device_id", required=True)
        _int_field(obj, "device_type_id", required=True)
        message_type = _int_field(obj, "message_type", required=True)
        location = None
        if obj.get("location") is not None:
            if not isinstance(obj["location"], dict):
                raise ApiError(400, "location must be an object")
            location = _coordinates(obj["location"], "location.")
        assert device_id is not None  # required=True
        if device_id not in self._devices:
            raise ApiError(400, f"Unknown device_id {device_id}")
        if message_type != 1:
            # Other message types are agreed per template at onboarding (aura-api.md §16.6).
            return Reply(
                200,
                {
                    "message": "Event successfully processed",
                    "input": obj,
                    "resolvedAuraEvent": {
                        "eventTypes": "UNHANDLED",
                        "eventResponse": {"deviceId": device_id},
                    },
                },
            )
        callout, _created = self._raise_for_customer(
            self._devices[device_id],
            location=location,
            predefined=None,
            response_type=None,
            classification=None,
            device_id=device_id,
        )
        return Reply(
            200,
            {
                "message": "Event successfully processed",
                "input": obj,
                "resolvedAuraEvent": {
                    "eventTypes": "NEW_CALLOUT",
                    "eventResponse": {"calloutId": callout.id, "deviceId": device_id},
                },
            },
            callout_id=callout.id,
        )

    def _api_active_callouts(self, _params: dict[str, str], _body: Any) -> Reply:
        # Cancelled callouts are closed, so they drop out here at once.
        return Reply(
            200, [c.flat() for c in self._callouts.values() if not c.closed and not c.hidden]
        )

    def _api_get_callout(self, params: dict[str, str], _body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        return Reply(
            200, {"message": "Request completed successfully.", "callout": callout.nested()}
        )

    def _update_location(self, params: dict[str, str], body: Any) -> _Callout | Reply:
        """Shared by both location endpoints: the 285 Reply when closed, else the callout."""
        callout = self._get(int(params["callout_id"]))
        lat, lon, acc = _coordinates(_object(body))
        if callout.closed:
            return Reply(
                HTTP_CALLOUT_CLOSED, {"message": "Callout is closed", "callout": callout.nested()}
            )
        now = _now_iso()
        callout.latitude, callout.longitude, callout.accuracy = lat, lon, acc
        callout.location_updated_at = now
        callout.location_history.append(
            {"latitude": lat, "longitude": lon, "accuracy": acc, "at": now}
        )
        return callout

    def _api_location(self, params: dict[str, str], body: Any) -> Reply:
        result = self._update_location(params, body)
        if isinstance(result, Reply):
            return result
        return Reply(200, {"message": "Request completed successfully."})

    def _api_location_callout(self, params: dict[str, str], body: Any) -> Reply:
        # A calloutId in the body is deprecated and ignored: the path wins.
        result = self._update_location(params, body)
        if isinstance(result, Reply):
            return result
        return Reply(
            200, {"message": "Request completed successfully.", "callout": result.nested()}
        )

    def _api_cancel(self, params: dict[str, str], body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        safe_code = _str_field(_object(body, optional=True), "safeCode")
        # The last four digits of the registered mobile (aura-api.md §5.6); what AURA does
        # with a wrong but well-formed code is undocumented, so any four digits pass here.
        if safe_code is not None and not _SAFE_CODE.fullmatch(safe_code):
            raise ApiError(400, "safeCode must be exactly 4 digits")
        if callout.closed:  # idempotent: a retried cancel after a lost reply succeeds
            return Reply(200, {"message": "Callout already closed", "callout": callout.nested()})
        callout.close("Cancelled")
        callout.cancelled_with = "integration" if safe_code is None else "safeCode"
        return Reply(200, {"message": "Callout cancelled", "callout": callout.nested()})

    def _api_post_event(self, params: dict[str, str], body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        obj = _object(body)
        accepted = self.seed.events_shape
        is_new = isinstance(obj.get("source"), str) and obj.get("event") not in (None, "")
        is_old = isinstance(obj.get("message"), str) and bool(obj["message"])
        text: Any
        if is_new and accepted != "old":
            source, text = obj["source"], obj["event"]
        elif is_old and accepted != "new":
            source, text = "integration", obj["message"]
        else:
            wanted = {
                "new": "source and event",
                "old": "message",
                "both": "message, or source and event",
            }[accepted]
            raise ApiError(400, f"Body must carry {wanted}")
        now = _now_iso()
        event = {
            "id": self._next_event_id,
            "calloutId": callout.id,
            "calloutEventTypeId": 1,
            "event": {"message": text, "senderRole": source},
            "message": text,  # older response shape
            "source": source,
            "createdBy": source,
            "createdAt": now,
            "updatedAt": now,
        }
        self._next_event_id += 1
        callout.events.append(event)
        return Reply(201, {"calloutEvent": copy.deepcopy(event), "calloutEventTags": []})

    def _api_list_events(self, params: dict[str, str], _body: Any) -> Reply:
        return Reply(200, copy.deepcopy(self._get(int(params["callout_id"])).events))

    def _api_list_reasons(self, params: dict[str, str], _body: Any) -> Reply:
        self._get(int(params["callout_id"]))
        return Reply(200, [dict(r) for r in EXCEPTION_REASONS])

    def _api_post_reason(self, params: dict[str, str], body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        obj = _object(body, optional=True)
        reason_id = _int_field(obj, "exceptionReasonId", required=False)
        notes = _str_field(obj, "notes")
        reason = None
        if reason_id is not None:
            reason = next((r["reason"] for r in EXCEPTION_REASONS if r["id"] == reason_id), None)
            if reason is None:
                raise ApiError(400, f"Unknown exceptionReasonId {reason_id}")
        entry = {"id": reason_id, "reason": reason, "notes": notes}
        callout.exception_reasons.append(entry)
        return Reply(200, dict(entry))

    def _api_report(self, params: dict[str, str], _body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        if not callout.closed:
            raise ApiError(400, "Report available after the callout is closed")
        return Reply(
            200, {"message": "Request completed successfully.", "report": callout.report()}
        )

    def _api_maps(self, params: dict[str, str], _body: Any) -> Reply:
        callout = self._get(int(params["callout_id"]))
        if not callout.closed:  # the lifecycle guide: map only after close
            raise ApiError(400, "Map available after the callout is closed")
        return Reply(200, {"url": f"{self.public_url}/map/{callout.id}.png", "image": None})

    def _api_rating(self, _params: dict[str, str], body: Any) -> Reply:
        obj = _object(body)
        new_keys = {"additionalDetails", "customerAllowedToBeContacted"} & obj.keys()
        old_keys = {"comment"} & obj.keys()
        if new_keys and old_keys:
            raise ApiError(400, "Use either additionalDetails or comment, not both")
        shape = "old" if old_keys else "new"  # calloutId + rating alone fit both
        accepted = self.seed.ratings_shape
        if accepted != "both" and (new_keys if accepted == "old" else old_keys):
            refused = sorted(new_keys or old_keys)
            raise ApiError(400, f"Unknown field(s): {', '.join(refused)}")
        callout_id = _int_field(obj, "calloutId", required=True)
        rating = _int_field(obj, "rating", required=True)
        assert callout_id is not None and rating is not None  # required=True
        if not 1 <= rating <= 5:
            raise ApiError(400, "rating must be between 1 and 5")
        details = _str_field(obj, "comment" if shape == "old" else "additionalDetails")
        contact = obj.get("customerAllowedToBeContacted")
        if contact is not None and not isinstance(contact, bool):
            raise ApiError(400, "customerAllowedToBeContacted must be a boolean")
        callout = self._get(callout_id)
        if not callout.closed:
            raise ApiError(400, "Callout is not closed")
        stored = {
            "id": self._next_rating_id,
            "calloutId": callout.id,
            "rating": rating,
            "details": details,
            "customerAllowedToBeContacted": contact,
            "shape": shape,
            "createdAt": _now_iso(),
        }
        self._next_rating_id += 1
        callout.rating = stored  # a later rating replaces an earlier one
        result = {
            "id": stored["id"],
            "calloutId": callout.id,
            "rating": rating,
            "additionalDetails": details,
            "customerAllowedToBeContacted": bool(contact),
            "createdAt": stored["createdAt"],
        }
        return Reply(201, {"calloutRatingPostResult": result}, callout_id=callout.id)

    def _api_map_image(self, params: dict[str, str], _body: Any) -> Reply:
        """The image behind a map's ``url``, so the link opens."""
        self._get(int(params["callout_id"]))
        return Reply(200, _MAP_PNG, content_type="image/png", authorized=True)

    def _api_track(self, params: dict[str, str], _body: Any) -> Reply:
        """The hosted tracking link from the callout's ``url``, so the demo can open it."""
        callout = self._get(int(params["callout_id"]))
        text = (
            "<!doctype html><title>AURA sandbox callout</title>"
            f"<h1>Callout {callout.id}</h1><p>Status: {escape(callout.status)}</p>"
        )
        return Reply(200, text, content_type="text/html; charset=utf-8", authorized=True)

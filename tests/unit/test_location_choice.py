"""Where a raise says the emergency is: the engine's location choice, table-driven.

Policy, best first: the button's own fresh fix; else the gateway's gpsd fix for a device
that travels with the gateway; else the device's fixed site (fallback_location_id); else
the gateway's surveyed [gateway.position]; else the last known (stale) fix of the button or
the gateway, with a note; else nothing, with a note. A fixed policy and the site route never
send coordinates. AURA takes live coordinates or predefinedLocationId, never both.

The last two steps are reached on the device route only (deviceEvent, where AURA's location
is optional). A customer callout needs a location, so load_config refuses a live customer
device with neither fallback_location_id nor [gateway.position] (NO_FALLBACK_POSITION,
LIVE_NEEDS_POSITION): every live customer row has a fallback, which comes before any stale
fix, and test_customer_live_device_without_fallback_is_refused covers the refusal.

Every case builds its own devices.toml and gateway.toml (from the repo's sim files) and
drives the engine with an injected monotonic clock: no sleeps, no wall clock.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.config import Config, ConfigError, load_config
from gateway.config.checks import LIVE_NEEDS_POSITION, NO_FALLBACK_POSITION
from gateway.engine import Engine, LocationChoice, Raise, build_raise_request
from gateway.signals import BOOT_ID, GATEWAY_FIX, Fix, Press, Stamp

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
SECOND = 1_000_000_000
NOW = 5_000 * SECOND
MAX_AGE = 60  # max_fix_age_s of the sim gateway.toml, kept unless a case sets its own
DEV = "00a1b2c3"
DEVICE_KEY = "0f" * 16
OTHER_BOOT = f"{BOOT_ID}-previous-boot"  # any boot id but this one

Coords = tuple[float, float, float]
OWN: Coords = (-33.9100, 18.4100, 7.0)  # the button's own GPS
GW: Coords = (-33.9500, 18.4500, 12.0)  # the gateway's gpsd
POSITION: Coords = (-33.9249, 18.4241, 25.0)  # [gateway.position] in gateway.sim.toml

FALLBACK_ID = 9001
FIXED_ID = 501
SITE_REF = "SHOP-1"


def s(seconds: float) -> int:
    return int(seconds * SECOND)


class Clock:
    """The injected monotonic clock, in ns; tests move it by hand."""

    def __init__(self, ns: int = NOW) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


# --------------------------------------------------------------------------- fixes


def own(ago_ns: int, *, age_s: float = 0.0, boot_id: str = BOOT_ID, device_id: str = DEV) -> Fix:
    """A fix from the button, received ``ago_ns`` before NOW and ``age_s`` old on arrival."""
    lat, lon, acc = OWN
    stamp = Stamp(mono_ns=NOW - ago_ns, wall=0.0, boot_id=boot_id)
    return Fix("test", device_id, lat, lon, acc, age_s, stamp)


def gw(ago_ns: int, *, boot_id: str = BOOT_ID) -> Fix:
    """The gateway's own gpsd fix, received ``ago_ns`` before NOW."""
    lat, lon, acc = GW
    return Fix("gpsd", GATEWAY_FIX, lat, lon, acc, 0.0, Stamp(NOW - ago_ns, 0.0, boot_id))


# --------------------------------------------------------------------------- devices


def live(fallback: int | None = None, *, travels: bool = False, **extra: Any) -> dict[str, Any]:
    location: dict[str, Any] = {"policy": "live"}
    if fallback is not None:
        location["fallback_location_id"] = fallback
    return {
        "route": "customer",
        "customer_id": 1001,
        "response_type_id": 1,
        "location": location,
        "travels_with_gateway": travels,
        **extra,
    }


def fixed(*, travels: bool = False) -> dict[str, Any]:
    return {
        "route": "customer",
        "customer_id": 1003,
        "response_type_id": 1,
        "location": {"policy": "fixed", "predefined_location_id": FIXED_ID},
        "travels_with_gateway": travels,
    }


def site() -> dict[str, Any]:
    return {
        "route": "site",
        "site_ref": SITE_REF,
        "response_type_id": 2,
        "predefined_location_id": 7314,
    }


def event(*, travels: bool = False) -> dict[str, Any]:
    return {
        "route": "device",
        "aura_device_id": 880001,
        "device_type_id": 12,
        "travels_with_gateway": travels,
    }


# --------------------------------------------------------------------------- bodies


def coords(c: Coords) -> dict[str, float]:
    return {"latitude": c[0], "longitude": c[1], "accuracy": c[2]}


def at(c: Coords, **extra: Any) -> dict[str, Any]:
    """A customer body with live coordinates."""
    return {"responseTypeId": 1, **extra, "location": coords(c)}


def fixed_site(pid: int) -> dict[str, Any]:
    """A customer body with a Fixed Location."""
    return {"responseTypeId": 1, "predefinedLocationId": pid}


SITE_BODY: dict[str, Any] = {"responseTypeId": 2}
EVENT_BODY: dict[str, Any] = {"device_id": 880001, "device_type_id": 12, "message_type": 1}


def event_at(c: Coords) -> dict[str, Any]:
    """A deviceEvent body with a location."""
    return {**EVENT_BODY, "location": coords(c)}


# --------------------------------------------------------------------------- reasons, notes

FALLBACK = f"no fresh live fix: fixed location {FALLBACK_ID} (device fallback)"
SURVEYED = "no fresh live fix: gateway's surveyed position"
LAST_BUTTON = "no fresh live fix: button's last known fix"
LAST_GATEWAY = "no fresh live fix: gateway GPS's last known fix"
NOTHING = "no location known"
FIXED = f"fixed location {FIXED_ID} (device policy)"
SITE = f"fixed site {SITE_REF} (site route)"

NOTE_SURVEYED = "the location given is the gateway's installed position"
NOTE_LAST_BUTTON = "the button's last known position, which may be out of date"
NOTE_LAST_GATEWAY = "the gateway GPS's last known position, which may be out of date"
NOTE_NOTHING = "No position was known for this button when it was pressed"


def fresh(source: str, age_s: int, acc_m: int) -> str:
    return f"fresh {source} fix ({age_s} s old, ±{acc_m} m)"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    device: dict[str, Any]  # the [[devices]] entry without id and type
    reason: str  # LocationChoice.reason, recorded on the incident as location_reason
    body: dict[str, Any]  # the create request's body, exactly
    note: str | None = None  # a phrase the control-room note contains; None: no note
    live: str | None = None  # Engine.live_fix(device) source now, or None
    has_gps: bool = True  # of the device's type
    position: bool = False  # [gateway.position] configured
    max_fix_age_s: float = MAX_AGE
    fixes: tuple[Fix, ...] = ()
    gateway_lost: bool = False  # gpsd said "no fix" after the fixes were applied


CASES: list[Case] = [
    # Every live customer row has a fallback (fallback_location_id or [gateway.position]):
    # load_config refuses one without (see test_customer_live_device_without_fallback_is_
    # refused). A fresh fix comes before either fallback.
    # ---- 1. the button's own fresh fix
    Case(
        "own-fresh",
        live(),
        fresh("device", 5, 7),
        at(OWN),
        live="device",
        position=True,
        fixes=(own(s(5)),),
    ),
    Case(
        "own-fresh-with-classification",
        live(FALLBACK_ID, callout_classification_id=3),
        fresh("device", 5, 7),
        at(OWN, calloutClassificationId=3),
        live="device",
        fixes=(own(s(5)),),
    ),
    Case(
        "own-at-exactly-max-age-is-fresh",
        live(),
        fresh("device", 60, 7),
        at(OWN),
        live="device",
        position=True,
        fixes=(own(s(MAX_AGE)),),
    ),
    Case(
        "own-1ns-past-max-age-is-stale",
        live(),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        position=True,
        fixes=(own(s(MAX_AGE) + 1),),
    ),
    Case(
        "own-custom-max-age-at-boundary",
        live(),
        fresh("device", 10, 7),
        at(OWN),
        live="device",
        position=True,
        max_fix_age_s=10,
        fixes=(own(s(10)),),
    ),
    Case(
        "own-custom-max-age-1ns-past",
        live(),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        position=True,
        max_fix_age_s=10,
        fixes=(own(s(10) + 1),),
    ),
    Case(
        "own-reported-age-counts-fresh",
        live(FALLBACK_ID),
        fresh("device", 59, 7),
        at(OWN),
        live="device",
        fixes=(own(0, age_s=59),),
    ),
    Case(
        "own-reported-age-plus-delay-at-max-age",
        live(FALLBACK_ID),
        fresh("device", 60, 7),
        at(OWN),
        live="device",
        fixes=(own(s(30), age_s=30),),
    ),
    Case(
        "own-reported-age-makes-new-arrival-stale",
        live(FALLBACK_ID),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(own(0, age_s=61),),
    ),
    Case(
        "own-from-another-boot-is-never-fresh",
        live(FALLBACK_ID),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(own(0, boot_id=OTHER_BOOT),),
    ),
    Case(
        "own-preferred-over-fresher-gateway",
        live(travels=True),
        fresh("device", 20, 7),
        at(OWN),
        live="device",
        position=True,
        fixes=(own(s(20)), gw(s(1))),
    ),
    # ---- 2. the gateway's gpsd fix (travels_with_gateway)
    Case(
        "stale-own-then-fresh-gateway",
        live(FALLBACK_ID, travels=True),
        fresh("gateway GPS", 2, 12),
        at(GW),
        live="gateway GPS",
        fixes=(own(s(61)), gw(s(2))),
    ),
    Case(
        "gateway-fresh-for-button-without-gps",
        live(travels=True),
        fresh("gateway GPS", 3, 12),
        at(GW),
        live="gateway GPS",
        has_gps=False,
        position=True,
        fixes=(gw(s(3)),),
    ),
    Case(
        "gateway-at-exactly-max-age-is-fresh",
        live(FALLBACK_ID, travels=True),
        fresh("gateway GPS", 60, 12),
        at(GW),
        live="gateway GPS",
        has_gps=False,
        fixes=(gw(s(MAX_AGE)),),
    ),
    Case(
        "gateway-1ns-past-max-age-is-stale",
        live(FALLBACK_ID, travels=True),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        has_gps=False,
        fixes=(gw(s(MAX_AGE) + 1),),
    ),
    Case(
        "gateway-from-another-boot-is-never-fresh",
        live(travels=True),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        has_gps=False,
        position=True,
        fixes=(gw(0, boot_id=OTHER_BOOT),),
    ),
    Case(
        "gateway-fix-lost-then-fallback",
        live(FALLBACK_ID, travels=True),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        has_gps=False,
        fixes=(gw(s(1)),),
        gateway_lost=True,
    ),
    Case(
        "gateway-fix-ignored-when-not-travelling",
        live(FALLBACK_ID),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(gw(s(1)),),
    ),
    Case(
        "no-gps-type-ignores-fix-under-its-id",
        live(),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        has_gps=False,
        position=True,
        fixes=(own(s(1)),),
    ),
    # ---- 3. the device's fallback Fixed Location
    Case("fallback-without-any-fix", live(FALLBACK_ID), FALLBACK, fixed_site(FALLBACK_ID)),
    Case(
        "fallback-before-gateway-position",
        live(FALLBACK_ID),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        position=True,
    ),
    Case(
        "fallback-before-stale-own",
        live(FALLBACK_ID),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(own(s(120)),),
    ),
    Case(
        "fallback-before-stale-gateway",
        live(FALLBACK_ID, travels=True),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        has_gps=False,
        fixes=(gw(s(120)),),
    ),
    Case(
        "fallback-before-stale-own-and-gateway",
        live(FALLBACK_ID, travels=True),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(own(s(300)), gw(s(100))),
    ),
    Case(
        "fallback-after-gateway-fix-lost-before-stale-own",
        live(FALLBACK_ID, travels=True),
        FALLBACK,
        fixed_site(FALLBACK_ID),
        fixes=(own(s(200)), gw(s(100))),
        gateway_lost=True,
    ),
    # ---- 4. the gateway's surveyed position
    Case("position-without-any-fix", live(), SURVEYED, at(POSITION), NOTE_SURVEYED, position=True),
    Case(
        "position-before-stale-own",
        live(),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        position=True,
        fixes=(own(s(120)),),
    ),
    Case(
        "position-before-stale-gateway",
        live(travels=True),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        has_gps=False,
        position=True,
        fixes=(gw(s(120)),),
    ),
    Case(
        "position-before-stale-own-and-gateway",
        live(travels=True),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        position=True,
        fixes=(own(s(300)), gw(s(100))),
    ),
    Case(
        "position-before-fix-from-another-boot",
        live(),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        position=True,
        fixes=(own(0, boot_id=OTHER_BOOT),),
    ),
    Case(
        "position-after-gateway-fix-lost",
        live(travels=True),
        SURVEYED,
        at(POSITION),
        NOTE_SURVEYED,
        has_gps=False,
        position=True,
        fixes=(gw(s(1)),),
        gateway_lost=True,
    ),
    # The last known fix and "no location known" are not reachable for a live customer
    # device: it always has one of the fallbacks above. See the device route below.
    # ---- fixed policy: predefinedLocationId always
    Case(
        "fixed-ignores-fresh-own",
        fixed(),
        FIXED,
        fixed_site(FIXED_ID),
        live="device",
        fixes=(own(s(1)),),
    ),
    Case(
        "fixed-ignores-fresh-gateway",
        fixed(travels=True),
        FIXED,
        fixed_site(FIXED_ID),
        live="gateway GPS",
        has_gps=False,
        fixes=(gw(s(1)),),
    ),
    Case("fixed-without-fix", fixed(), FIXED, fixed_site(FIXED_ID), has_gps=False),
    Case("fixed-ignores-position", fixed(), FIXED, fixed_site(FIXED_ID), position=True),
    # ---- site route: no location in the body at all
    Case("site-without-fix", site(), SITE, SITE_BODY, has_gps=False),
    Case("site-ignores-fresh-own", site(), SITE, SITE_BODY, live="device", fixes=(own(s(1)),)),
    Case("site-ignores-position", site(), SITE, SITE_BODY, position=True),
    # ---- device route (deviceEvent): location only when one was chosen. Location is
    # optional there, so no fallback is required and every step of the policy is reachable.
    Case(
        "event-fresh-own",
        event(),
        fresh("device", 5, 7),
        event_at(OWN),
        live="device",
        fixes=(own(s(5)),),
    ),
    Case(
        "event-fresh-gateway",
        event(travels=True),
        fresh("gateway GPS", 2, 12),
        event_at(GW),
        live="gateway GPS",
        has_gps=False,
        fixes=(gw(s(2)),),
    ),
    Case(
        "event-gateway-position-is-sent",
        event(),
        SURVEYED,
        event_at(POSITION),
        NOTE_SURVEYED,
        position=True,
    ),
    Case(
        "event-position-before-stale-own",
        event(),
        SURVEYED,
        event_at(POSITION),
        NOTE_SURVEYED,
        position=True,
        fixes=(own(s(120)),),
    ),
    # ---- device route: the last known (stale) fix, with a note. Not a live fix, yet sent
    # as the event's location (best information).
    Case(
        "event-stale-own-is-sent-as-last-known",
        event(),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(s(61)),),
    ),
    Case(
        "event-last-known-own",
        event(),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(s(120)),),
    ),
    Case(
        "event-last-known-gateway",
        event(travels=True),
        LAST_GATEWAY,
        event_at(GW),
        NOTE_LAST_GATEWAY,
        has_gps=False,
        fixes=(gw(s(120)),),
    ),
    Case(
        "event-last-known-newer-gateway-wins",
        event(travels=True),
        LAST_GATEWAY,
        event_at(GW),
        NOTE_LAST_GATEWAY,
        fixes=(own(s(300)), gw(s(100))),
    ),
    Case(
        "event-last-known-newer-own-wins",
        event(travels=True),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(s(100)), gw(s(300))),
    ),
    Case(
        "event-last-known-this-boot-beats-another-boot",
        event(travels=True),
        LAST_GATEWAY,
        event_at(GW),
        NOTE_LAST_GATEWAY,
        fixes=(own(0, boot_id=OTHER_BOOT), gw(s(300))),
    ),
    Case(
        "event-last-known-from-another-boot-when-nothing-else",
        event(),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(0, boot_id=OTHER_BOOT),),
    ),
    Case(
        "event-last-known-ignores-gateway-when-not-travelling",
        event(),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(s(300)), gw(s(100))),
    ),
    Case(
        "event-last-known-after-gateway-fix-lost",
        event(travels=True),
        LAST_BUTTON,
        event_at(OWN),
        NOTE_LAST_BUTTON,
        fixes=(own(s(200)), gw(s(100))),
        gateway_lost=True,
    ),
    Case(
        "event-last-known-no-gps-type-ignores-fix-under-its-id",
        event(travels=True),
        LAST_GATEWAY,
        event_at(GW),
        NOTE_LAST_GATEWAY,
        has_gps=False,
        fixes=(own(s(1)), gw(s(120))),
    ),
    # ---- device route: nothing known, still raises, with a note and no location
    Case("event-nothing-known", event(), NOTHING, EVENT_BODY, NOTE_NOTHING),
    Case(
        "event-nothing-known-no-gps-type-travelling",
        event(travels=True),
        NOTHING,
        EVENT_BODY,
        NOTE_NOTHING,
        has_gps=False,
        fixes=(own(s(1)),),
    ),
    Case(
        "event-nothing-known-after-gateway-fix-lost",
        event(travels=True),
        NOTHING,
        EVENT_BODY,
        NOTE_NOTHING,
        has_gps=False,
        fixes=(gw(s(1)),),
        gateway_lost=True,
    ),
]


# --------------------------------------------------------------------------- set-up


def make_config(
    tmp_path: Path,
    device: dict[str, Any],
    *,
    has_gps: bool,
    position: bool,
    max_fix_age_s: float = MAX_AGE,
) -> Config:
    """The sim gateway.toml with this case's position and max age, and a devices.toml
    holding one device of a type with or without GPS."""
    gateway = tomllib.loads((REPO_CONFIG / "gateway.sim.toml").read_text())
    section = gateway["gateway"]
    section["devices_file"] = "devices.toml"
    section["credentials_file"] = str(tmp_path / "credentials.toml")
    section["max_fix_age_s"] = max_fix_age_s
    if not position:
        del section["position"]
    (tmp_path / "gateway.toml").write_text(tomli_w.dumps(gateway))
    devices = {
        "device_types": {"button": {"raise_gestures": ["single"], "has_gps": has_gps}},
        "devices": [{"id": DEV, "type": "button", **device}],
    }
    (tmp_path / "devices.toml").write_text(tomli_w.dumps(devices))
    creds = tmp_path / "credentials.toml"
    creds.write_text(
        tomli_w.dumps(
            {"aura": {"client_id": "c", "client_secret": "s"}, "device_keys": {DEV: DEVICE_KEY}}
        )
    )
    creds.chmod(0o600)
    return load_config(tmp_path / "gateway.toml")


MakeConfig = Callable[..., Config]


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> MakeConfig:
    """make_config, loaded once per distinct set-up: rows share them, which keeps this fast
    (the engine never changes its Config)."""
    cache: dict[str, Config] = {}

    def get(device: dict[str, Any], **kwargs: Any) -> Config:
        key = json.dumps([device, kwargs], sort_keys=True)
        if key not in cache:
            cache[key] = make_config(tmp_path_factory.mktemp("cfg"), device, **kwargs)
        return cache[key]

    return get


def engine_for(configs: MakeConfig, case: Case, clock: Clock) -> Engine:
    config = configs(
        case.device,
        has_gps=case.has_gps,
        position=case.position,
        max_fix_age_s=case.max_fix_age_s,
    )
    engine = Engine(config, clock_ns=clock)
    for fix in case.fixes:
        engine.apply_fix(fix)
    if case.gateway_lost:
        engine.gateway_fix_lost()
    return engine


def press(counter: int = 1) -> Press:
    return Press(
        source="test",
        device_id=DEV,
        gesture="single",
        dedup_key=f"{DEV}:{counter}",
        counter=counter,
        stamp=Stamp(mono_ns=NOW, wall=0.0),
    )


def raise_now(engine: Engine) -> Raise:
    decision = engine.decide(press())
    assert isinstance(decision, Raise), decision
    return decision


def no_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine must read only the injected clock."""

    def forbidden() -> float:
        raise AssertionError("the engine read the system monotonic clock")

    monkeypatch.setattr(time, "monotonic", forbidden)
    monkeypatch.setattr(time, "monotonic_ns", forbidden)


def one_location_kind(body: dict[str, Any]) -> None:
    """AURA takes live coordinates or predefinedLocationId, never both."""
    assert not ("location" in body and "predefinedLocationId" in body), body


# --------------------------------------------------------------------------- tests


def test_the_table_has_unique_ids() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_table_covers_every_branch() -> None:
    """Each step of the policy has rows on the routes where it is reachable: the last known
    fix and "no location known" on the device route only, a fallback before a stale fix on
    the customer route."""
    by_route: dict[str, set[str]] = {}
    for c in CASES:
        reason = "fresh" if c.reason.startswith("fresh") else c.reason
        by_route.setdefault(c.device["route"], set()).add(reason)
    assert by_route["device"] >= {"fresh", SURVEYED, LAST_BUTTON, LAST_GATEWAY, NOTHING}
    assert by_route["customer"] == {"fresh", FALLBACK, SURVEYED, FIXED}
    assert by_route["site"] == {SITE}
    # A fallback is chosen over a stale fix of the button and of the gateway.
    stale_first = {
        (c.reason, f.device_id)
        for c in CASES
        if c.device["route"] == "customer" and c.reason in (FALLBACK, SURVEYED)
        for f in c.fixes
    }
    assert {(r, d) for r in (FALLBACK, SURVEYED) for d in (DEV, GATEWAY_FIX)} <= stale_first


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_location_choice(configs: MakeConfig, monkeypatch: pytest.MonkeyPatch, case: Case) -> None:
    clock = Clock()
    engine = engine_for(configs, case, clock)
    device = engine.config.device(DEV)
    assert device is not None
    no_system_clock(monkeypatch)

    incident = raise_now(engine).incident
    assert incident.device_id == DEV
    assert incident.route == case.device["route"]
    assert incident.location_reason == case.reason
    assert incident.request["body"] == case.body
    one_location_kind(incident.request["body"])
    if case.note is None:
        assert incident.note is None
    else:
        assert incident.note is not None and case.note in incident.note

    # decide is choose_location + build_raise_request, frozen at press time.
    choice = engine.choose_location(device)
    assert isinstance(choice, LocationChoice)
    assert (choice.reason, choice.note) == (incident.location_reason, incident.note)
    assert choice.location is None or choice.predefined_location_id is None
    assert build_raise_request(device, choice) == incident.request

    found = engine.live_fix(device)
    assert (found[1] if found else None) == case.live
    if found is not None and case.reason.startswith("fresh"):
        assert incident.request["body"]["location"] == coords(
            (found[0].latitude, found[0].longitude, found[0].accuracy_m)
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_request_envelope(configs: MakeConfig, case: Case) -> None:
    """Each route's request around the body; the site route never carries a location."""
    request = raise_now(engine_for(configs, case, Clock())).incident.request
    route = case.device["route"]
    if route == "customer":
        assert request == {
            "route": "customer",
            "customer_id": case.device["customer_id"],
            "body": case.body,
        }
    elif route == "site":
        assert request == {
            "route": "site",
            "site_ref": SITE_REF,
            "predefined_location_id": 7314,
            "body": case.body,
        }
        assert "location" not in request["body"]
        assert "predefinedLocationId" not in request["body"]
    else:
        assert request == {"route": "device", "body": case.body}


CUSTOMER_CASES = [c for c in CASES if c.device["route"] == "customer"]


@pytest.mark.parametrize("case", CUSTOMER_CASES, ids=[c.id for c in CUSTOMER_CASES])
def test_customer_raise_is_acceptable_to_aura(configs: MakeConfig, case: Case) -> None:
    """A customer callout needs exactly one of live coordinates or predefinedLocationId:
    AURA (and the sandbox, gateway/sandbox/state.py) answers 400 "location or
    predefinedLocationId is required" to one with neither or a null location."""
    body = raise_now(engine_for(configs, case, Clock())).incident.request["body"]
    has_location = isinstance(body.get("location"), dict)
    has_predefined = isinstance(body.get("predefinedLocationId"), int)
    assert has_location != has_predefined, body


@pytest.mark.parametrize(
    ("source", "device", "has_gps", "fix"),
    [
        ("device", live(), True, own(0)),
        ("gateway GPS", live(travels=True), False, gw(0)),
    ],
    ids=["own-fix", "gateway-fix"],
)
def test_live_fix_ends_once_stale(
    configs: MakeConfig, source: str, device: dict[str, Any], has_gps: bool, fix: Fix
) -> None:
    """live_fix is what an open callout's location updates follow: it stops at max age."""
    clock = Clock()
    engine = Engine(configs(device, has_gps=has_gps, position=True), clock_ns=clock)
    engine.apply_fix(fix)
    dev = engine.config.device(DEV)
    assert dev is not None

    assert engine.live_fix(dev) == (fix, source)
    clock.ns = NOW + s(MAX_AGE)
    assert engine.live_fix(dev) == (fix, source)
    reason = raise_now(engine).incident.location_reason
    assert reason == fresh(source, 60, int(fix.accuracy_m))

    clock.ns += 1
    assert engine.live_fix(dev) is None
    assert engine.fresh_fix(fix.device_id) is None
    incident = raise_now(engine).incident
    assert incident.location_reason == SURVEYED
    assert incident.request["body"]["location"] == coords(POSITION)


def test_gateway_fix_lost_and_regained(configs: MakeConfig) -> None:
    clock = Clock()
    engine = Engine(
        configs(live(FALLBACK_ID, travels=True), has_gps=False, position=False), clock_ns=clock
    )
    dev = engine.config.device(DEV)
    assert dev is not None
    engine.apply_fix(gw(s(1)))
    assert raise_now(engine).incident.request["body"] == at(GW)

    engine.gateway_fix_lost()
    assert engine.live_fix(dev) is None
    assert raise_now(engine).incident.request["body"] == fixed_site(FALLBACK_ID)

    clock.ns += s(5)
    engine.apply_fix(Fix("gpsd", GATEWAY_FIX, *GW, 0.0, Stamp(clock.ns, 0.0)))
    incident = raise_now(engine).incident
    assert incident.location_reason == fresh("gateway GPS", 0, 12)
    assert incident.request["body"] == at(GW)


def test_fixes_passed_at_start_count_like_applied_ones(configs: MakeConfig) -> None:
    """The journal's fixes handed to the constructor after a restart of the daemon."""
    config = configs(live(travels=True), has_gps=True, position=True)
    engine = Engine(config, fixes=[own(s(100)), gw(s(10))], clock_ns=Clock())
    incident = raise_now(engine).incident
    assert incident.location_reason == fresh("gateway GPS", 10, 12)


def test_fix_reported_under_upper_case_id_is_the_device_fix(configs: MakeConfig) -> None:
    """Presses match device ids ignoring case (test_engine); fixes do too."""
    config = configs(live(FALLBACK_ID), has_gps=True, position=False)
    engine = Engine(config, clock_ns=Clock())
    engine.apply_fix(own(s(5), device_id=DEV.upper()))
    incident = raise_now(engine).incident
    assert incident.location_reason == fresh("device", 5, 7)
    assert incident.request["body"] == at(OWN)


def test_stale_fix_reported_under_upper_case_id_is_the_last_known(configs: MakeConfig) -> None:
    """The last known fix is found ignoring case too (device route, where it is reachable);
    a newer fix under the lower-case id replaces it."""
    config = configs(event(), has_gps=True, position=False)
    engine = Engine(config, clock_ns=Clock())
    engine.apply_fix(own(s(300), device_id=DEV.upper()))
    incident = raise_now(engine).incident
    assert incident.location_reason == LAST_BUTTON
    assert incident.request["body"] == event_at(OWN)

    engine.apply_fix(own(s(5)))
    dev = engine.config.device(DEV)
    assert dev is not None
    found = engine.live_fix(dev)
    assert found is not None and found[0].stamp.mono_ns == NOW - s(5)


# --------------------------------------------------------------------------- config refusal

BOTH_SOURCES = [(True, False), (False, True), (True, True)]
BOTH_SOURCE_IDS = ["has-gps", "travels-with-gateway", "has-gps-and-travels"]


@pytest.mark.parametrize(("has_gps", "travels"), BOTH_SOURCES, ids=BOTH_SOURCE_IDS)
def test_customer_live_device_without_fallback_is_refused(
    tmp_path: Path, has_gps: bool, travels: bool
) -> None:
    """A press before the first fix would have no location for AURA, which refuses a
    customer callout without one: such a device is a config error, not a raise-time one."""
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, live(travels=travels), has_gps=has_gps, position=False)
    problems = caught.value.problems
    assert [(p.key, p.message, p.severity) for p in problems] == [
        ("devices[0].location", NO_FALLBACK_POSITION, "error")
    ]
    assert problems[0].file is not None and problems[0].file.name == "devices.toml"


def test_customer_live_device_without_source_or_fallback_is_refused(tmp_path: Path) -> None:
    """No GPS, not travelling, no fallback: refused as before, with its own message."""
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, live(), has_gps=False, position=False)
    assert [(p.key, p.message) for p in caught.value.problems] == [
        ("devices[0].location", LIVE_NEEDS_POSITION)
    ]


@pytest.mark.parametrize(("has_gps", "travels"), BOTH_SOURCES, ids=BOTH_SOURCE_IDS)
@pytest.mark.parametrize(
    ("fallback", "position", "reason", "body"),
    [
        (FALLBACK_ID, False, FALLBACK, fixed_site(FALLBACK_ID)),
        (None, True, SURVEYED, at(POSITION)),
    ],
    ids=["fallback-location-id", "gateway-position"],
)
def test_customer_live_device_with_a_fallback_loads(
    tmp_path: Path,
    has_gps: bool,
    travels: bool,
    fallback: int | None,
    position: bool,
    reason: str,
    body: dict[str, Any],
) -> None:
    """The same device with either fallback loads, and a press before its first fix is a
    callout AURA accepts."""
    config = make_config(
        tmp_path, live(fallback, travels=travels), has_gps=has_gps, position=position
    )
    incident = raise_now(Engine(config, clock_ns=Clock())).incident
    assert incident.location_reason == reason
    assert incident.request["body"] == body

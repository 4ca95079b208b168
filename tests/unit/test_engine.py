"""The engine's decisions, with an injected monotonic clock and no I/O."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tomli_w

from gateway.config import Config, load_config
from gateway.demo import SIM_DEVICE_KEYS
from gateway.engine import Attach, Engine, Ignore, Raise
from gateway.signals import Fix, Press, Stamp

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
PENDANT, DESK, SHOP, NOSUB = "00a1b2c3", "00a1b2c4", "00c0ffee", "00bad001"
SECOND = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ns = 5_000 * SECOND

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def config(tmp_path: Path) -> Config:
    shutil.copy(REPO_CONFIG / "gateway.sim.toml", tmp_path / "gateway.toml")
    shutil.copy(REPO_CONFIG / "devices.sim.toml", tmp_path / "devices.sim.toml")
    text = (
        (tmp_path / "gateway.toml")
        .read_text()
        .replace("/tmp/aura-gateway-sim/credentials.toml", str(tmp_path / "credentials.toml"))
    )
    (tmp_path / "gateway.toml").write_text(text)
    creds = tmp_path / "credentials.toml"
    creds.write_text(
        tomli_w.dumps(
            {"aura": {"client_id": "c", "client_secret": "s"}, "device_keys": SIM_DEVICE_KEYS}
        )
    )
    creds.chmod(0o600)
    return load_config(tmp_path / "gateway.toml")


def press(device: str, gesture: str = "single", counter: int = 1, at: int | None = None) -> Press:
    # One press a second unless told otherwise: presses closer than the debounce are one.
    at = counter * SECOND if at is None else at
    return Press(
        source="test",
        device_id=device,
        gesture=gesture,  # type: ignore[arg-type]
        dedup_key=f"{device}:{counter}",
        counter=counter,
        stamp=Stamp(mono_ns=at, wall=0.0),
    )


def fix(device: str, at_ns: int, lat: float = -33.9, lon: float = 18.4, acc: float = 7) -> Fix:
    return Fix("test", device, lat, lon, acc, 0.0, Stamp(mono_ns=at_ns, wall=0.0))


def test_unknown_device_is_ignored_with_a_reason(config: Config) -> None:
    engine = Engine(config, clock_ns=Clock())
    decision = engine.decide(press("0badf00d"))
    assert isinstance(decision, Ignore)
    assert "unknown device 0badf00d" in decision.reason


def test_gesture_that_does_not_raise_is_ignored(config: Config) -> None:
    engine = Engine(config, clock_ns=Clock())
    decision = engine.decide(press(DESK, gesture="double"))
    assert isinstance(decision, Ignore)
    assert "does not raise" in decision.reason


def test_raise_then_attach_until_the_incident_ends(config: Config) -> None:
    engine = Engine(config, clock_ns=Clock())
    first = engine.decide(press(PENDANT))
    assert isinstance(first, Raise)
    assert first.incident.key == "customer:1001"
    # Not applied yet (as when the journal write failed): still a raise.
    assert isinstance(engine.decide(press(PENDANT, counter=2)), Raise)
    engine.apply(first)
    second = engine.decide(press(PENDANT, gesture="long", counter=2))
    assert isinstance(second, Attach) and second.incident_id == first.incident.id
    engine.incident_ended(first.incident.id)
    assert isinstance(engine.decide(press(PENDANT, counter=3)), Raise)


def test_fresh_device_fix_is_the_live_location(config: Config) -> None:
    clock = Clock()
    engine = Engine(config, clock_ns=clock)
    engine.apply_fix(fix(PENDANT, clock.ns - 5 * SECOND))
    decision = engine.decide(press(PENDANT))
    assert isinstance(decision, Raise)
    assert decision.incident.request["body"] == {
        "responseTypeId": 1,
        "location": {"latitude": -33.9, "longitude": 18.4, "accuracy": 7},
    }
    assert decision.incident.location_reason.startswith("fresh device fix")


def test_stale_fix_falls_back_to_the_gateway_position(config: Config) -> None:
    clock = Clock()
    engine = Engine(config, clock_ns=clock)
    engine.apply_fix(fix(PENDANT, clock.ns))
    clock.ns += 61 * SECOND  # max_fix_age_s = 60 in the sim config
    decision = engine.decide(press(PENDANT))
    assert isinstance(decision, Raise)
    assert decision.incident.request["body"]["location"] == {
        "latitude": -33.9249,
        "longitude": 18.4241,
        "accuracy": 25.0,
    }
    assert "gateway's surveyed position" in decision.incident.location_reason


def test_older_fix_never_replaces_a_newer_one(config: Config) -> None:
    clock = Clock()
    engine = Engine(config, clock_ns=clock)
    engine.apply_fix(fix(PENDANT, clock.ns, lat=1.0))
    engine.apply_fix(fix(PENDANT, clock.ns - SECOND, lat=2.0))
    current = engine.fresh_fix(PENDANT)
    assert current is not None and current.latitude == 1.0


def test_fixed_policy_sends_predefined_location_and_never_coordinates(config: Config) -> None:
    clock = Clock()
    engine = Engine(config, clock_ns=clock)
    engine.apply_fix(fix(DESK, clock.ns))
    decision = engine.decide(press(DESK))
    assert isinstance(decision, Raise)
    assert decision.incident.request == {
        "route": "customer",
        "customer_id": 1003,
        "body": {"responseTypeId": 1, "predefinedLocationId": 501},
    }


def test_site_route_request(config: Config) -> None:
    engine = Engine(config, clock_ns=Clock())
    decision = engine.decide(press(SHOP, gesture="long"))
    assert isinstance(decision, Raise)
    assert decision.incident.key == "site:SHOP-CPT-001"
    assert decision.incident.request["route"] == "site"
    assert decision.incident.request["site_ref"] == "SHOP-CPT-001"


def test_open_incidents_from_the_journal_are_respected_after_restart(config: Config) -> None:
    engine = Engine(config, open_incidents={"customer:1001": "inc-1"}, clock_ns=Clock())
    decision = engine.decide(press(PENDANT))
    assert isinstance(decision, Attach) and decision.incident_id == "inc-1"


def test_device_ids_match_case_insensitively(config: Config) -> None:
    engine = Engine(config, clock_ns=Clock())
    assert isinstance(engine.decide(press(PENDANT.upper())), Raise)

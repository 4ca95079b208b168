"""The status LEDs' vocabulary: which state a status shows, its patterns, the priority
order, and the README table that a technician learns it from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.leds.states import (
    BY_NAME,
    OFF,
    ON,
    STATES,
    Pattern,
    blink,
    led_state,
    readme_table,
    stage_of,
)
from gateway.status import DeviceHealth, InputHealth, StatusModel

README = Path(__file__).resolve().parents[2] / "README.md"


def healthy() -> StatusModel:
    status = StatusModel(devices=3, uplink="up")
    status.inputs["receiver"] = InputHealth(connected=True, state="ok")
    status.devices_seen["00a1b2c3"] = DeviceHealth(last_seen_wall=1.0)
    return status


def with_(**changes: object) -> Callable[[StatusModel], None]:
    def apply(status: StatusModel) -> None:
        for name, value in changes.items():
            setattr(status, name, value)

    return apply


def receiver(state: str) -> Callable[[StatusModel], None]:
    def apply(status: StatusModel) -> None:
        status.inputs["receiver"].state = state

    return apply


def silent(status: StatusModel) -> None:
    status.devices_seen["00a1b2c3"].silent = True


# situation -> (state, red, green, relay)
CASES: list[tuple[str, Callable[[StatusModel], None], str, Pattern, Pattern, bool]] = [
    ("all well", with_(), "healthy", OFF, ON, False),
    ("uplink never tried yet, idle", with_(uplink="unknown"), "healthy", OFF, ON, False),
    ("uplink down, nothing waiting", with_(uplink="down"), "healthy", OFF, ON, False),
    (
        "refused by AURA",
        with_(failed_incidents={"i1": "403 no subscription"}),
        "undeliverable",
        blink(100, 100),
        OFF,
        True,
    ),
    ("abort window open", with_(abort_windows=1), "abort_window", blink(500, 500), OFF, False),
    ("alarm going out", with_(pending_alarms=1), "sending", ON, OFF, False),
    ("first try at start", with_(pending_alarms=2, uplink="unknown"), "sending", ON, OFF, False),
    (
        "uplink down, alarm waiting",
        with_(pending_alarms=1, uplink="down"),
        "queued",
        blink(100, 1900),
        OFF,
        False,
    ),
    (
        "credentials refused, alarm waiting",
        with_(pending_alarms=1, uplink="unauthorized"),
        "queued",
        blink(100, 1900),
        OFF,
        False,
    ),
    (
        "callout created",
        with_(open_callouts={"i1": "created"}),
        "callout_open",
        ON,
        blink(1000, 1000),
        False,
    ),
    (
        "callout in a stage AURA has not told us about",
        with_(open_callouts={"i1": "Pending Review"}),
        "callout_open",
        ON,
        blink(1000, 1000),
        False,
    ),
    (
        "responder dispatched",
        with_(open_callouts={"i1": "Responder Dispatched"}),
        "responder_on_the_way",
        ON,
        blink(200, 200),
        False,
    ),
    (
        "responder on scene",
        with_(open_callouts={"i1": "Responder On Scene"}),
        "on_scene",
        ON,
        ON,
        False,
    ),
    (
        "two callouts: the one whose help is furthest away",
        with_(open_callouts={"i1": "Responder On Scene", "i2": "responder dispatched"}),
        "responder_on_the_way",
        ON,
        blink(200, 200),
        False,
    ),
    (
        "AURA says closed, the follower has not closed it yet",
        with_(open_callouts={"i1": "Closed"}),
        "healthy",
        OFF,
        ON,
        False,
    ),
    (
        "walk test",
        with_(walk_test={"scope": "all"}),
        "walk_test",
        OFF,
        blink(1900, 100),
        False,
    ),
    ("receiver lost", receiver("lost"), "inputs_lost", OFF, blink(100, 1900), False),
    ("receiver unplugged", receiver("disconnected"), "inputs_lost", OFF, blink(100, 1900), False),
    ("broker refuses the login", receiver("refused"), "inputs_lost", OFF, blink(100, 1900), False),
    ("input still starting", receiver("starting"), "healthy", OFF, ON, False),
    ("a button is silent", silent, "inputs_lost", OFF, blink(100, 1900), False),
    (
        "reload refused",
        with_(config_error="devices.toml:4 devices[0].customer_id: must be > 0"),
        "config_error",
        OFF,
        blink(1000, 1000),
        False,
    ),
]


@pytest.mark.parametrize(
    ("situation", "change", "name", "red", "green", "relay"), CASES, ids=[c[0] for c in CASES]
)
def test_each_situation_shows_its_state(
    situation: str,
    change: Callable[[StatusModel], None],
    name: str,
    red: Pattern,
    green: Pattern,
    relay: bool,
) -> None:
    status = healthy()
    change(status)
    state = led_state(status)
    assert (state.name, state.alarm, state.status, state.relay) == (name, red, green, relay)
    # The status file's form (what `aura-gateway status --json` reads) decides the same.
    assert led_state(status.to_dict()) == state


def everything_at_once() -> StatusModel:
    status = healthy()
    status.failed_incidents = {"i1": "403"}
    status.abort_windows = 1
    status.pending_alarms = 1
    status.open_callouts = {"i2": "created", "i3": "Responder Dispatched", "i4": "On Scene"}
    status.walk_test = {"scope": "all"}
    status.inputs["receiver"].state = "lost"
    status.config_error = "gateway.toml:3: bad"
    return status


# What makes each state true, taken away in priority order: each time the next state in
# the table shows. So the table's order is the priority order, and nothing is shadowed.
TAKE_AWAY: dict[str, Callable[[StatusModel], None]] = {
    "undeliverable": with_(failed_incidents={}),
    "abort_window": with_(abort_windows=0),
    "sending": with_(uplink="down"),
    "queued": with_(pending_alarms=0),
    "callout_open": lambda s: s.open_callouts.pop("i2"),
    "responder_on_the_way": lambda s: s.open_callouts.pop("i3"),
    "on_scene": lambda s: s.open_callouts.pop("i4"),
    "walk_test": with_(walk_test=None),
    "inputs_lost": receiver("ok"),
    "config_error": with_(config_error=None),
}


def test_priority_is_the_order_of_the_table() -> None:
    status = everything_at_once()
    seen = []
    while True:
        state = led_state(status, walk_test_press=False)
        seen.append(state.name)
        if state.name == "healthy":
            break
        TAKE_AWAY[state.name](status)
    expected = [s.name for s in STATES if s.name not in ("walk_test_press", "booting")]
    assert seen == expected


def test_walk_test_press_shows_only_during_a_walk_test() -> None:
    status = healthy()
    assert led_state(status, walk_test_press=True).name == "healthy"
    status.walk_test = {"scope": "all"}
    assert led_state(status, walk_test_press=True).name == "walk_test_press"
    assert led_state(status, walk_test_press=False).name == "walk_test"
    status.open_callouts = {"i1": "created"}  # a real alarm outranks the walk test
    assert led_state(status, walk_test_press=True).name == "callout_open"


def test_booting_until_ready_inputs_judged_only_once_ready() -> None:
    status = healthy()
    assert led_state(status, ready=False).name == "booting"
    status.inputs["receiver"].state = "disconnected"  # still being opened
    assert led_state(status, ready=False).name == "booting"
    assert led_state(status, ready=True).name == "inputs_lost"
    # What is known from the journal shows at once: a silence, a refused alarm.
    silent(status)
    assert led_state(status, ready=False).name == "inputs_lost"
    status.failed_incidents = {"i1": "403"}
    state = led_state(status, ready=False)
    assert state.name == "undeliverable" and state.relay


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("created", "callout_open"),
        ("Accepted", "callout_open"),
        (None, "callout_open"),
        ("Responder Dispatched", "responder_on_the_way"),
        ("ACKNOWLEDGED", "responder_on_the_way"),
        ("Responder en route", "responder_on_the_way"),
        ("Responder On Scene", "on_scene"),
        ("responder arrived", "on_scene"),
        ("Closed", "closed"),
        ("cancelled", "closed"),
    ],
)
def test_stage_words(text: str | None, stage: str) -> None:
    assert stage_of(text) == stage


def test_every_state_looks_different_and_only_undeliverable_switches_the_relay() -> None:
    looks = [(s.alarm, s.status, s.relay) for s in STATES]
    assert len(set(looks)) == len(STATES)
    assert [s.name for s in STATES if s.relay] == ["undeliverable"]
    # Kernel-timed: every pattern is steady or a plain on/off blink.
    for s in STATES:
        for pattern in (s.alarm, s.status):
            assert pattern.kind in ("on", "off", "blink")
    assert BY_NAME["healthy"].status == ON  # a healthy gateway blinks nothing


def test_a_blink_needs_both_times() -> None:
    with pytest.raises(ValueError):
        blink(0, 100)


def test_the_readme_table_is_the_table_in_the_code() -> None:
    assert readme_table() in README.read_text(), (
        "README.md's LED table differs from gateway/leds/states.py; paste this:\n" + readme_table()
    )

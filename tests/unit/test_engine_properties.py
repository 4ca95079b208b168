"""Property-based tests of the engine over random press sequences (hypothesis).

Sequences of presses from three buttons (A1 and A2 of customer 2001, B1 of customer 2002,
now and then a button not in the registry), with any gesture, measured hold times or
none, counters or none, gaps of 0 to 3 s, incident ends and late wake-ups of the
held-press task, are driven through ``decide`` / ``apply`` / ``expire`` as the daemon does
(the harness is ``Sim`` in test_engine_gestures.py).

- (a) on a type that decides every press at once (it raises on single, or its buttons
  tell a double themselves: compose_double off), with no abort window: every qualifying
  press raises when its customer has no open incident and attaches to the open one
  otherwise, so each open-incident period has exactly one raise;
- (b) sequences without a qualifying gesture never raise;
- (c) during a walk test of every device nothing raises;
- (d) the outcome never depends on the wall clock (the press stamps' or the system's);
- (e) with abort windows and double presses, a raise never comes before its window ends,
  and a withdrawn alarm never raises;
- (f) on a type whose buttons tell a double themselves (compose_double off), nothing waits
  for a second press: every press is decided when it comes, as the gesture the button
  reported (or measured), and two singles are never made a double.

Every run also keeps the invariants: one open incident per customer, attaches and cancels
name the open one, every held press is resolved exactly once, and a cancel gesture does
what a model of the cancel rules says from what is held and open before it.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.models import Gesture

from .test_engine_gestures import (
    A1,
    A2,
    ABORT,
    B1,
    CUSTOMER,
    DOUBLE,
    LONG,
    PENDANT,
    SINGLE,
    TOLD_CANCEL,
    TOLD_DOUBLE,
    TOLD_TYPES,
    UNKNOWN,
    End,
    MakeConfig,
    Out,
    P,
    Sim,
    Step,
    Tick,
    Walk,
    canonical,
    config_cache,
    s,
    tokens,
)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> MakeConfig:
    return config_cache(tmp_path_factory)


GESTURES: tuple[Gesture, ...] = ("single", "double", "long", "hold")
SETTINGS = settings(max_examples=200, deadline=None)
GAPS = (0.0, 0.01, 0.049, 0.05, 0.2, 0.5, 0.500000001, 0.6, 1.0, 2.0, 2.999, 3.0)
HELD = {"single": (0.0, 0.999), "long": (1.0, 2.999), "hold": (3.0, 10.0)}  # long_press_s 1
PRESSED_AGAIN = "raised before its abort window ended: pressed again"
FINAL = {"raise", "attach", "cancel", "ignore", "withdrawn", "double"}


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Spec:
    """One generated event, ``gap`` seconds after the previous one."""

    what: str  # press | end | tick
    gap: float
    dev: str = A1
    gesture: Gesture = "single"
    held: float | None = None
    counted: bool = False


def mix(n: int) -> int:
    """splitmix64's finaliser: every field of the event varies, whatever the size of the
    drawn integer (hypothesis favours small ones); mix(0) == 0."""
    mask = 2**64 - 1
    n = ((n ^ (n >> 30)) * 0xBF58476D1CE4E5B9) & mask
    n = ((n ^ (n >> 27)) * 0x94D049BB133111EB) & mask
    return n ^ (n >> 31)


def decode(allowed: Sequence[Gesture], devices: Sequence[str], n: int) -> Spec:
    """One event from one drawn integer (one draw per event keeps 200 examples fast; 0,
    where shrinking goes, is a plain single press of A1 right after the previous event).

    The gap is one of GAPS (the boundaries; two times in three) or any microsecond up to
    3 s; a press has an effective gesture from ``allowed``: reported as such, or measured
    (held_s in that gesture's range, at its edges or inside, whatever the source
    reported)."""
    n = mix(n)
    n, kind = divmod(n, 8)
    n, gap_i = divmod(n, 3 * len(GAPS))
    n, micros = divmod(n, 3_000_001)
    gap = GAPS[gap_i % len(GAPS)] if gap_i < 2 * len(GAPS) else micros / 1e6
    n, dev_i = divmod(n, len(devices))
    if kind == 5:
        return Spec("end", gap, (A1, B1)[dev_i % 2])
    if kind == 6:
        return Spec("tick", gap)
    n, gesture_i = divmod(n, len(allowed))
    n, how = divmod(n, 4)
    n, value = divmod(n, 1001)
    gesture = reported = allowed[gesture_i]
    held = None
    if gesture != "double" and how >= 2:
        lo, hi = HELD[gesture]
        held = lo + (hi - lo) * value / 1000 if how == 3 else (lo, hi)[value % 2]
        reported = GESTURES[value % len(GESTURES)]
    return Spec("press", gap, devices[dev_i], reported, held, counted=n % 2 == 1)


# Gestures drawn when any may come: singles most, so that doubles form.
ANY: tuple[Gesture, ...] = ("single", "single", "single", "double", "long", "hold")


def sequences(
    allowed: Sequence[Gesture] = ANY,
    devices: Sequence[str] = (A1, A1, A1, A1, A2, A2, B1, UNKNOWN),
    max_size: int = 20,
) -> st.SearchStrategy[list[Spec]]:
    event = st.integers(0, 2**64 - 1).map(partial(decode, allowed, devices))
    return st.lists(event, min_size=2, max_size=max_size)


def steps(specs: Sequence[Spec]) -> list[Step]:
    """The generated events at their times; counted presses number on per device."""
    out: list[Step] = []
    at = 0.0
    counters: dict[str, int] = {}
    for spec in specs:
        at += spec.gap
        if spec.what == "end":
            out.append(End(at, spec.dev))
        elif spec.what == "tick":
            out.append(Tick(at))
        else:
            counter = None
            if spec.counted:
                counter = counters[spec.dev] = counters.get(spec.dev, 0) + 1
            out.append(P(at, spec.dev, spec.gesture, spec.held, counter))
    return out


# --------------------------------------------------------------------------- invariants


def effective(sim: Sim, key: str) -> str:
    """The gesture a press was, as the button type classifies it."""
    press = sim.presses[key]
    if press.held_s is None:
        return press.gesture
    device = sim.config.device(press.device_id)
    assert device is not None
    long_s = sim.config.device_type(device).long_press_s
    slack = 1e-9  # 3 x long_press_s counts as hold whatever its floating-point error
    if press.held_s >= 3 * long_s - slack:
        return "hold"
    return "long" if press.held_s >= long_s - slack else "single"


def in_apply_order(outs: Sequence[Out]) -> Iterator[Out]:
    """The outcomes in the order the engine installs them: a decision's resolutions (the
    harness records them after it) before the decision itself."""
    i = 0
    while i < len(outs):
        head = outs[i]
        j = i + 1
        while j < len(outs) and outs[j].by is not None and outs[j].by == head.key:
            j += 1
        if head.resolution or head.key == "end":
            yield head
        else:
            yield from outs[i + 1 : j]
            yield head
        i = j


def resolved_by(outs: Sequence[Out], i: int) -> list[Out]:
    """The resolutions the decision ``outs[i]`` carried (recorded right after it)."""
    found = []
    for o in outs[i + 1 :]:
        if not (o.resolution and o.by == outs[i].key):
            break
        found.append(o)
    return found


DROPPED = ("contact bounce", "in the cooldown", "three or more quick presses")


def check_cancel_rule(sim: Sim) -> None:
    """A model of a cancel gesture (a press, or a double press it completes), decided on
    what is held and open for its customer before it. Every press of the customer still
    held for a possible double (other than the first half of this very double, resolved
    as 'double' by it and only so) is withdrawn by it, whatever else it does: it withdraws
    the customer's held raise too if one waits out its abort window; else it cancels the
    open incident if there is one; else, with presses withdrawn, it is a withdraw; else
    it is ignored. So a press before a cancel never raises after it. A gesture that is no
    cancel withdraws nothing."""
    open_: dict[str, str] = {}
    pattern: dict[str, set[str]] = defaultdict(set)  # held for a possible double
    abort: dict[str, set[str]] = defaultdict(set)  # held raises, in their abort window
    for i, o in enumerate(sim.outs):
        c = o.customer
        if o.key == "end":
            if c is not None and o.incident is not None:
                del open_[c]
            continue
        if c is None:
            continue
        if not o.resolution:
            mine = resolved_by(sim.outs, i)
            first_half = {r.key for r in mine if r.kind == "double"}
            withdrawn = {r.key: r for r in mine if r.kind == "withdrawn"}
            # Each press resolved once by a decision; a double's first half is its own.
            assert len(mine) == len({r.key for r in mine}), (o, mine)
            assert len(first_half) <= 1 and not first_half & withdrawn.keys(), (o, mine)
            gesture = "double" if first_half else effective(sim, o.key)
            device = sim.config.device(sim.presses[o.key].device_id)
            assert device is not None
            cancels_on = sim.config.device_type(device).cancel_gestures
            dropped = o.kind == "ignore" and o.reason.startswith(DROPPED)
            # (a single held for a possible double is decided only when its window ends)
            waits = o.kind == "hold" and o.pending is None
            if gesture not in cancels_on or dropped or waits or o.kind == "walk_test":
                assert not withdrawn and o.kind not in ("withdraw", "cancel"), o
            else:
                waiting = pattern[c] - first_half - {o.key}
                assert len(abort[c]) <= 1, abort[c]  # one held raise per customer
                # A held raise is released as soon as an incident of its customer opens.
                assert not (abort[c] and c in open_), (o, abort[c], open_)
                assert set(withdrawn) == abort[c] | waiting, (o, mine, abort[c], waiting)
                assert {r.key for r in mine} == first_half | set(withdrawn), (o, mine)
                by_waiting = f"{gesture} press from {device.id} withdraws the press it follows"
                for key in waiting:
                    assert withdrawn[key].reason == by_waiting, withdrawn[key]
                    assert withdrawn[key].incident is None and withdrawn[key].opened is None
                if abort[c]:
                    within = (
                        f"{gesture} press from {device.id} within the abort window: the "
                        "alarm is withdrawn, nothing was sent"
                    )
                    assert o.kind == "withdraw" and o.reason == within, o
                    [held] = abort[c]
                    assert withdrawn[held].reason == within, withdrawn[held]
                    assert withdrawn[held].opened is None
                elif c in open_:
                    assert o.kind == "cancel" and o.incident == open_[c], (o, mine)
                    assert o.reason == f"{gesture} press from {device.id} cancels {open_[c]}"
                elif waiting:
                    assert o.kind == "withdraw" and o.reason == by_waiting, (o, mine)
                else:
                    assert o.kind == "ignore", (o, mine)
                    assert o.reason == f"cancel gesture {gesture} with no open incident for {c}"
        # What this out changes (a decision before the resolutions it carries).
        if o.resolution:
            pattern[c].discard(o.key)
            abort[c].discard(o.key)
            if o.kind == "held_abort":
                abort[c].add(o.key)
        elif o.kind == "hold":
            (pattern if o.pending is None else abort)[c].add(o.key)
        if o.opened is not None:
            open_[c] = o.opened
        if o.kind == "cancel":
            del open_[c]


def check_invariants(sim: Sim) -> None:
    """One open incident per customer; attach and cancel name the open one; every held
    press is resolved, once, and only held presses are; nothing is held at the end; a
    cancel gesture follows ``check_cancel_rule``."""
    check_cancel_rule(sim)
    open_: dict[str, str] = {}
    held: set[str] = set()
    final: set[str] = set()
    for o in in_apply_order(sim.outs):
        if o.key == "end":
            if o.customer is not None and o.incident is not None:
                assert open_.get(o.customer) == o.incident
                del open_[o.customer]
            continue
        assert o.customer is not None or o.kind == "ignore", o
        if o.opened is not None:
            assert o.customer is not None
            assert o.customer not in open_, f"second incident for {o.customer}: {o}"
            open_[o.customer] = o.opened
            assert o.kind == "raise", o
        if o.kind in ("attach", "cancel"):
            assert o.customer is not None
            assert open_.get(o.customer) == o.incident, (o, open_)
        if o.kind == "cancel":
            assert o.customer is not None
            del open_[o.customer]
        if not o.resolution:
            assert o.key not in held | final
            if o.kind == "hold":
                held.add(o.key)
            continue
        assert o.key in held, f"resolution of a press never held: {o}"
        assert o.kind in FINAL | {"held_abort"}, o
        if o.kind in FINAL:
            held.discard(o.key)
            final.add(o.key)
    assert not held, f"still held at the end: {held}"
    assert sim.engine.next_deadline_ns() is None
    for customer in set(CUSTOMER.values()):
        assert sim.engine.open_incident(customer) == open_.get(customer)


def run(config_for: MakeConfig, dtype: dict[str, Any], specs: Sequence[Spec], **kw: Any) -> Sim:
    sim = Sim(config_for(dtype), **kw)
    sim.run(steps(specs))
    check_invariants(sim)
    return sim


def raised(sim: Sim) -> list[Out]:
    return [o for o in sim.outs if o.opened is not None or o.kind in ("raise", "attach", "cancel")]


# --------------------------------------------------------------------------- (a)

SINGLE_TYPES = [
    SINGLE,
    PENDANT,
    {"raise_gestures": ["single", "long", "hold"]},
    {"raise_gestures": ["single"], "cancel_gestures": ["long", "hold"], "debounce_s": 0.2},
]
# Types that tell a double themselves (compose_double off), with and without abort windows.
TOLD_TIMED_TYPES = [
    {**TOLD_CANCEL, "raise_gestures": ["single", "long"], "abort_window_s": 2.0},
    {**TOLD_DOUBLE, "cancel_gestures": ["hold"], "abort_window_s": 1.5},
]


@SETTINGS
@given(
    dtype=st.sampled_from(SINGLE_TYPES + TOLD_TYPES),
    specs=sequences(max_size=25),
    punctual=st.booleans(),
)
def test_a_qualifying_press_raises_once_per_open_incident(
    configs: MakeConfig,
    dtype: dict[str, Any],
    specs: list[Spec],
    punctual: bool,
) -> None:
    """A model of the rules decides every press independently: contact bounce (an
    uncounted press within debounce_s of the device's last real press) is ignored; a
    raising gesture raises when the customer has no open incident and attaches to it
    otherwise; a cancel gesture cancels the open one or is ignored."""
    sim = run(configs, dtype, specs, punctual=punctual)
    debounce = int(dtype.get("debounce_s", 0.05) * 1e9)
    raises_on = set(dtype.get("raise_gestures", ["single"]))
    cancels_on = set(dtype.get("cancel_gestures", []))
    open_: dict[str, str] = {}
    last: dict[str, int] = {}
    periods: dict[str, int] = {}
    for o in sim.outs:
        assert not o.resolution and o.kind != "hold", o  # nothing is ever held here
        if o.key == "end":
            if o.customer in open_:
                del open_[o.customer]
            continue
        press = sim.presses[o.key]
        if o.customer is None:
            assert o.kind == "ignore" and "not in the device registry" in o.reason
            continue
        now = press.stamp.mono_ns
        before = last.get(press.device_id)
        if press.counter is None and before is not None and now - before < debounce:
            assert o.kind == "ignore" and o.reason.startswith("contact bounce"), o
            continue
        last[press.device_id] = now
        gesture = effective(sim, o.key)
        current = open_.get(o.customer)
        if gesture in raises_on and current is None:
            assert o.kind == "raise", (o, tokens(sim.outs))
            assert o.opened is not None
            open_[o.customer] = o.opened
            periods[o.customer] = periods.get(o.customer, 0) + 1
        elif gesture in raises_on:
            assert o.kind == "attach" and o.incident == current, o
        elif gesture in cancels_on and current is not None:
            assert o.kind == "cancel" and o.incident == current, o
            del open_[o.customer]
        else:
            assert o.kind == "ignore", o
    # Exactly one raise per period: as many raises as periods the model opened.
    for customer in set(CUSTOMER.values()):
        ours = [o for o in sim.outs if o.kind == "raise" and o.customer == customer]
        assert len(ours) == periods.get(customer, 0)


# --------------------------------------------------------------------------- (b)

# (device type, the gestures that never qualify on it: a single is left out where two of
# them make a raising double, that is where the gateway composes doubles)
NON_QUALIFYING: list[tuple[dict[str, Any], tuple[Gesture, ...]]] = [
    (LONG, ("single", "double", "hold")),
    ({"raise_gestures": ["hold"]}, ("single", "double", "long")),
    ({"raise_gestures": ["hold"], "cancel_gestures": ["long"]}, ("single", "double", "long")),
    (DOUBLE, ("long", "hold")),
    (
        {"compose_double": True, "raise_gestures": ["double"], "abort_window_s": 2.0},
        ("long", "hold"),
    ),
    (
        {
            "compose_double": True,
            "raise_gestures": ["long"],
            "cancel_gestures": ["double"],
            "abort_window_s": 2.0,
        },
        ("single", "double", "hold"),
    ),
    ({"raise_gestures": ["long"], "double_window_s": 1.0}, ("single", "double", "hold")),
    (TOLD_DOUBLE, ("single", "long", "hold")),
    ({**TOLD_DOUBLE, "cancel_gestures": ["single"]}, ("single", "long", "hold")),
    ({**TOLD_DOUBLE, "abort_window_s": 2.0}, ("single", "long", "hold")),
]


@SETTINGS
@given(
    case=st.sampled_from(NON_QUALIFYING).flatmap(
        lambda case: st.tuples(st.just(case[0]), sequences(case[1]))
    ),
    punctual=st.booleans(),
)
def test_sequences_without_a_qualifying_gesture_never_raise(
    configs: MakeConfig,
    case: tuple[dict[str, Any], list[Spec]],
    punctual: bool,
) -> None:
    dtype, specs = case
    sim = run(configs, dtype, specs, punctual=punctual)
    assert raised(sim) == [], tokens(sim.outs)
    assert all(sim.engine.open_incident(c) is None for c in CUSTOMER.values())


# --------------------------------------------------------------------------- (c)

ALL_TYPES = [
    SINGLE,
    PENDANT,
    LONG,
    DOUBLE,
    ABORT,
    {
        "compose_double": True,
        "raise_gestures": ["single", "long"],
        "cancel_gestures": ["double"],
        "abort_window_s": 2.0,
    },
    {
        "compose_double": True,
        "raise_gestures": ["double"],
        "cancel_gestures": ["hold"],
        "abort_window_s": 1.5,
    },
    TOLD_CANCEL,
    *TOLD_TIMED_TYPES,
]


@SETTINGS
@given(dtype=st.sampled_from(ALL_TYPES), specs=sequences(), punctual=st.booleans())
def test_walk_test_of_every_device_never_raises(
    configs: MakeConfig,
    dtype: dict[str, Any],
    specs: list[Spec],
    punctual: bool,
) -> None:
    sim = Sim(configs(dtype), punctual=punctual)
    sim.run([Walk(0, None, 240), *steps(specs)])
    check_invariants(sim)
    assert raised(sim) == []
    for o in sim.outs:
        if o.key != "end":
            assert not o.resolution
            expected = "ignore" if sim.presses[o.key].device_id == UNKNOWN else "walk_test"
            assert o.kind == expected, o


# --------------------------------------------------------------------------- (d)


@contextmanager
def garbage_system_clock(seed: int) -> Iterator[None]:
    """Every system clock answers nonsense (different on every call): the engine must not
    read any of them."""
    rng = random.Random(seed)
    with (
        mock.patch.object(time, "time", lambda: rng.uniform(-1e12, 1e12)),
        mock.patch.object(time, "time_ns", lambda: rng.randrange(-(2**62), 2**62)),
        mock.patch.object(time, "monotonic", lambda: rng.uniform(-1e12, 1e12)),
        mock.patch.object(time, "monotonic_ns", lambda: rng.randrange(-(2**62), 2**62)),
    ):
        yield


# Wall clocks of the press stamps: 1970 (no RTC, no NTP yet), a trusted 2001, another 1970.
WALLS = ((0.0, False), (1_000_000_000.0, True), (12_345.678, False))


@SETTINGS
@given(dtype=st.sampled_from(ALL_TYPES), specs=sequences(), punctual=st.booleans())
def test_outcome_never_depends_on_the_wall_clock(
    configs: MakeConfig,
    dtype: dict[str, Any],
    specs: list[Spec],
    punctual: bool,
) -> None:
    config = configs(dtype)
    runs = []
    for i, (wall, trusted) in enumerate(WALLS):
        sim = Sim(config, wall=wall, trusted=trusted, punctual=punctual)
        with garbage_system_clock(i):
            sim.run(steps(specs))
        runs.append(canonical(sim.outs))
    assert runs[0] == runs[1] == runs[2]


# --------------------------------------------------------------------------- (e)

TIMED_TYPES = [
    ABORT,
    {
        "compose_double": True,
        "raise_gestures": ["single", "long"],
        "cancel_gestures": ["double"],
        "abort_window_s": 2.0,
    },
    {
        "compose_double": True,
        "raise_gestures": ["double"],
        "cancel_gestures": ["hold"],
        "abort_window_s": 1.5,
    },
    {"compose_double": True, "raise_gestures": ["single"], "cancel_gestures": ["double"]},
    {
        "compose_double": True,
        "raise_gestures": ["double"],
        "cancel_gestures": ["hold"],
        "double_window_s": 1.0,
    },
    DOUBLE,
    *TOLD_TIMED_TYPES,
]


@SETTINGS
@given(dtype=st.sampled_from(TIMED_TYPES), specs=sequences(), punctual=st.booleans())
def test_raises_wait_for_their_windows_and_withdrawn_alarms_never_raise(
    configs: MakeConfig,
    dtype: dict[str, Any],
    specs: list[Spec],
    punctual: bool,
) -> None:
    sim = run(configs, dtype, specs, punctual=punctual)
    abort = s(dtype.get("abort_window_s", 0.0))
    window = s(dtype.get("double_window_s", 0.5))
    raises_on = set(dtype.get("raise_gestures", ["single"]))
    composes = dtype.get("compose_double", False)
    uses_double = composes and "double" in raises_on | set(dtype.get("cancel_gestures", []))
    by_key = {o.key: o for o in sim.outs if not o.resolution and o.key != "end"}
    abort_since: dict[str, int] = {}  # held press -> when its abort window began
    withdrawn: dict[str, str | None] = {}  # withdrawn press -> the incident it would open
    for o in in_apply_order(sim.outs):
        if o.key == "end":
            continue
        assert o.key not in withdrawn, f"a withdrawn alarm came back: {o}"
        if not o.resolution:
            if o.kind == "hold" and o.pending is not None:  # waiting out its abort window
                assert abort > 0 and o.until_ns == o.t_ns + abort, o
                abort_since[o.key] = o.t_ns
            if o.kind == "hold" and o.pending is None:  # a single that may become a double
                assert uses_double and o.until_ns == o.t_ns + window, o
            if o.kind == "raise":
                assert abort == 0, f"raised without its abort window: {o}"
            if o.kind == "withdraw":  # a held raise, or presses waiting for a double
                assert [r for r in sim.outs if r.by == o.key and r.kind == "withdrawn"], o
            starts = o.kind == "raise" or o.pending is not None
            if (
                starts
                and uses_double
                and "double" in raises_on
                and effective(sim, o.key) != "double"
            ):
                double_of(sim, o, window)
            continue
        if o.kind == "held_abort":
            abort_since[o.key] = o.t_ns
            assert o.t_ns > by_key[o.key].t_ns + window  # its double window came first
        elif o.kind == "withdrawn":  # by a cancel gesture: a withdraw, or a cancel
            assert o.by is not None and by_key[o.by].kind in ("withdraw", "cancel"), o
            assert by_key[o.key].t_ns <= by_key[o.by].t_ns, o  # pressed before the cancel
            if o.key in abort_since:  # a held raise: only a withdraw takes it back
                assert by_key[o.by].kind == "withdraw", o
            withdrawn[o.key] = by_key[o.key].pending
            # (a daemon waking late lets a cancel in after the window)
            if punctual and o.key in abort_since:  # inside its abort window
                assert by_key[o.by].t_ns <= abort_since[o.key] + abort
            elif punctual:  # still waiting for a possible double
                assert by_key[o.by].t_ns <= by_key[o.key].t_ns + window
        elif o.kind == "raise" and o.reason.startswith(PRESSED_AGAIN):
            # Released by a raising press of the same customer: a press decided now, or a
            # held single of another button resolved in the same expiry.
            if o.by is not None:
                again = by_key[o.by]
            else:
                # (the engine lists the release just before the held single's own attach)
                again = sim.outs[sim.outs.index(o) + 1]
                assert again.resolution and again.by is None and again.t_ns == o.t_ns
                assert effective(sim, again.key) in raises_on
            assert abort > 0 and again.kind == "attach" and again.customer == o.customer
            assert again.incident == o.opened
            if punctual and o.by is not None:
                assert again.t_ns <= abort_since[o.key] + abort
        elif o.kind == "raise":  # its window ended
            if abort > 0:
                assert o.t_ns > abort_since[o.key] + abort, f"raised early: {o}"
            else:  # a single that did not become a double
                assert o.t_ns > by_key[o.key].t_ns + window, f"raised early: {o}"
                assert effective(sim, o.key) == "single" and "single" in raises_on
    opened = {o.opened for o in sim.outs if o.opened is not None}
    assert not opened & {p for p in withdrawn.values() if p is not None}


def double_of(sim: Sim, o: Out, window: int) -> None:
    """A raise on a single press of a type raising on double: it completed a double."""
    firsts = [r for r in sim.outs if r.by == o.key and r.kind == "double"]
    assert len(firsts) == 1, (o, tokens(sim.outs))
    first = sim.presses[firsts[0].key]
    assert first.device_id == sim.presses[o.key].device_id
    assert 0 <= o.t_ns - first.stamp.mono_ns <= window


@pytest.mark.parametrize("dtype", TIMED_TYPES, ids=str)
def test_timed_types_do_hold_presses(configs: MakeConfig, dtype: dict[str, Any]) -> None:
    """The properties above are not vacuous: a plain single or double press on each of
    these types is held (or raises at once only where nothing is waited for)."""
    sim = Sim(configs(dtype))
    sim.run([P(0), P(0.2), P(10), End(15), P(20, gesture="double")])
    assert "hold" in [o.kind for o in sim.outs]


# --------------------------------------------------------------------------- (f)


@SETTINGS
@given(
    dtype=st.sampled_from(TOLD_TYPES + TOLD_TIMED_TYPES),
    specs=sequences(),
    punctual=st.booleans(),
)
def test_a_type_that_tells_doubles_itself_never_waits_for_a_second_press(
    configs: MakeConfig,
    dtype: dict[str, Any],
    specs: list[Spec],
    punctual: bool,
) -> None:
    """Only an abort window holds a press; no single is merged into a double or starts a
    cooldown; every press is decided on the gesture it was."""
    sim = run(configs, dtype, specs, punctual=punctual)
    abort = s(dtype.get("abort_window_s", 0.0))
    raises_on = set(dtype.get("raise_gestures", ["single"]))
    cancels_on = set(dtype.get("cancel_gestures", []))
    for o in sim.outs:
        if o.key == "end":
            continue
        if o.resolution:  # only a raise held in its abort window is resolved later
            assert o.kind not in ("double", "held_abort"), o
            assert o.key in sim.presses and effective(sim, o.key) in raises_on, o
            continue
        assert not o.reason.startswith(("three or more quick presses", "in the cooldown")), o
        if o.kind == "hold":
            assert o.pending is not None and abort > 0 and o.until_ns == o.t_ns + abort, o
        if o.customer is None or o.reason.startswith("contact bounce"):
            assert o.kind == "ignore", o
            continue
        gesture = effective(sim, o.key)
        if gesture in raises_on:
            assert o.kind in ("raise", "attach", "hold"), o
        elif gesture in cancels_on:
            assert o.kind in ("cancel", "withdraw", "ignore"), o
        else:
            assert o.kind == "ignore" and "does not raise" in o.reason, o
        if o.kind in ("raise", "hold", "cancel", "withdraw"):
            assert o.reason.startswith(f"{gesture} press from {o.device} "), o


@pytest.mark.parametrize("dtype", TOLD_TYPES, ids=str)
def test_told_types_hold_nothing_even_for_quick_singles(
    configs: MakeConfig, dtype: dict[str, Any]
) -> None:
    """(f) is not vacuous: the same presses held on the type composing doubles are
    decided at once without it."""
    presses = [P(0), P(0.2), P(0.4, A2), P(1, gesture="double"), P(1.2)]
    told = Sim(configs(dtype)).run(presses)
    assert not [o for o in told if o.kind == "hold" or o.resolution], tokens(told)
    composed = Sim(configs({**dtype, "compose_double": True})).run(presses)
    assert "hold" in [o.kind for o in composed]

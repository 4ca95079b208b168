"""The engine's gesture rules, table-driven, with an injected monotonic clock.

Every row feeds a sequence of presses (and incident ends, walk tests) into ``decide`` and
``apply`` exactly as the daemon does after the journal commit, and calls ``expire`` when a
held press falls due (the clock moved to ``next_deadline_ns() + 1``, as ``run_held``
sleeps). What comes out is recorded as tokens: ``p2:raise`` is the decision on the second
press, ``p1=double`` says the held first press was resolved as the first half of a double.

The harness (``Sim``, ``Out``, the step types and the ``configs`` fixture) is shared with
tests/unit/test_engine_properties.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.config import Config, load_config
from gateway.config.models import DeviceType, Gesture
from gateway.engine import (
    Attach,
    Cancel,
    Decision,
    Engine,
    Hold,
    Ignore,
    Raise,
    WalkTest,
    incident_key,
)
from gateway.gestures import uses_double
from gateway.journal import Resolution, held_key
from gateway.signals import Press, Stamp

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
SECOND = 1_000_000_000
BASE = 5_000 * SECOND  # the monotonic clock at the start of every sequence
A1, A2, B1 = "0000a001", "0000a002", "0000b001"  # A1, A2: customer 2001; B1: customer 2002
UNKNOWN = "0badf00d"
CUSTOMER = {A1: "customer:2001", A2: "customer:2001", B1: "customer:2002"}
DEVICE_KEY = "0f" * 16

# Device types (the [device_types.button] table); defaults are the model's. A type with
# compose_double reports raw clicks: the gateway makes two quick singles a double.
SINGLE: dict[str, Any] = {}
DOUBLE: dict[str, Any] = {"compose_double": True, "raise_gestures": ["double"]}
# Buttons that tell single and double apart themselves (receiver firmware, most Zigbee
# buttons; compose_double off, the default): a "double" is what they report, never two
# singles of the gateway's making.
TOLD_CANCEL: dict[str, Any] = {"cancel_gestures": ["double"]}
TOLD_DOUBLE: dict[str, Any] = {"raise_gestures": ["double"]}
LONG: dict[str, Any] = {"raise_gestures": ["long"], "cancel_gestures": ["hold"]}
PENDANT: dict[str, Any] = {"raise_gestures": ["single", "long"], "cancel_gestures": ["hold"]}
ABORT: dict[str, Any] = {"cancel_gestures": ["hold"], "abort_window_s": 3.0}
ANY_HOLD: dict[str, Any] = {"raise_gestures": ["single", "long", "hold"]}


def s(seconds: float) -> int:
    return round(seconds * SECOND)


# --------------------------------------------------------------------------- config


def make_config(tmp: Path, dtype: dict[str, Any]) -> Config:
    """The sim gateway.toml and a devices.toml with three buttons of one type: A1 and A2
    belong to customer 2001, B1 to customer 2002 (fixed locations: no clock in them)."""
    gateway = tomllib.loads((REPO_CONFIG / "gateway.sim.toml").read_text())
    gateway["gateway"]["devices_file"] = "devices.toml"
    gateway["gateway"]["credentials_file"] = str(tmp / "credentials.toml")
    gateway["gateway"]["journal_path"] = str(tmp / "journal.sqlite")
    gateway["gateway"]["status_path"] = str(tmp / "status.json")
    (tmp / "gateway.toml").write_text(tomli_w.dumps(gateway))

    def device(dev: str, customer: int) -> dict[str, Any]:
        return {
            "id": dev,
            "type": "button",
            "route": "customer",
            "customer_id": customer,
            "response_type_id": 1,
            "location": {"policy": "fixed", "predefined_location_id": 501},
        }

    devices = {
        "device_types": {"button": dtype},
        "devices": [device(A1, 2001), device(A2, 2001), device(B1, 2002)],
    }
    (tmp / "devices.toml").write_text(tomli_w.dumps(devices))
    creds = tmp / "credentials.toml"
    keys = {A1: DEVICE_KEY, A2: DEVICE_KEY, B1: DEVICE_KEY}
    creds.write_text(
        tomli_w.dumps({"aura": {"client_id": "c", "client_secret": "s"}, "device_keys": keys})
    )
    creds.chmod(0o600)
    return load_config(tmp / "gateway.toml")


MakeConfig = Callable[[dict[str, Any]], Config]


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> MakeConfig:
    return config_cache(tmp_path_factory)


def config_cache(tmp_path_factory: pytest.TempPathFactory) -> MakeConfig:
    """make_config, loaded once per device-type set-up and shared (the engine never
    changes its Config)."""
    cache: dict[str, Config] = {}

    def get(dtype: dict[str, Any]) -> Config:
        key = json.dumps(dtype, sort_keys=True)
        if key not in cache:
            cache[key] = make_config(tmp_path_factory.mktemp("cfg"), dtype)
        return cache[key]

    return get


# --------------------------------------------------------------------------- harness


class Clock:
    """The injected monotonic clock, in ns; the harness moves it."""

    def __init__(self, ns: int = BASE) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


@dataclass(frozen=True)
class P:
    """A press ``at`` seconds into the sequence; ``counter``: the button numbered it."""

    at: float
    dev: str = A1
    gesture: Gesture = "single"
    held: float | None = None
    counter: int | None = None


@dataclass(frozen=True)
class End:
    """The open incident of ``dev``'s customer ends (the follower saw the callout close)."""

    at: float
    dev: str = A1


@dataclass(frozen=True)
class Walk:
    """A walk test starts (``dev`` None: every device)."""

    at: float
    dev: str | None = None
    minutes: float = 1.0


@dataclass(frozen=True)
class StopWalk:
    at: float


@dataclass(frozen=True)
class Tick:
    """The held-press task wakes (``expire`` at this moment, whatever is due)."""

    at: float


Step = P | End | Walk | StopWalk | Tick


@dataclass(frozen=True)
class Out:
    """One thing the engine said: a decision on a press, or a held press resolved."""

    t_ns: int
    key: str  # the press decided, or the held press resolved ("end" for an incident end)
    kind: str  # the decision's kind, or what the held press finally was
    reason: str
    resolution: bool = False
    by: str | None = None  # the press whose decision resolved it (None: at expiry)
    device: str | None = None
    customer: str | None = None  # the incident key
    opened: str | None = None  # the incident opened here
    incident: str | None = None  # the incident attached to, cancelled, or ended
    until_ns: int | None = None  # a hold's deadline
    pending: str | None = None  # the incident a held raise will open

    @property
    def token(self) -> str:
        if self.key == "end":
            return "end"
        return f"{self.key}{'=' if self.resolution else ':'}{self.kind}"

    @property
    def inc(self) -> str | None:
        return self.opened or self.incident


class Sim:
    """Drives an engine like the daemon: decide, (journal commit), apply; and expire held
    presses once their deadline has passed (``punctual``: at deadline + 1 ns, before any
    later press; else only at ``Tick`` steps and at the end, as a daemon that wakes late).
    ``wall``, ``trusted``: what the press stamps say of the wall clock."""

    def __init__(
        self,
        config: Config,
        *,
        wall: float = 0.0,
        trusted: bool = False,
        punctual: bool = True,
    ) -> None:
        self.config = config
        self.clock = Clock()
        self.engine = Engine(config, clock_ns=self.clock)
        self.wall = wall
        self.trusted = trusted
        self.punctual = punctual
        self.outs: list[Out] = []
        self.presses: dict[str, Press] = {}  # by name: p1, p2, ... (its dedup key here)
        self.names: dict[str, str] = {}  # held_key(press) -> its name

    def register(self, press: Press, name: str | None = None) -> str:
        """A press the engine will see, known by ``name`` (default: its dedup key) in the
        outcomes, however the engine names it when it is held (``held_key``)."""
        name = press.dedup_key if name is None else name
        assert name not in self.presses and held_key(press) not in self.names
        self.presses[name] = press
        self.names[held_key(press)] = name
        return name

    def name(self, key: str) -> str:
        """The press a resolution is about (its key must be the press's ``held_key``)."""
        return self.names[key]

    def named(self, resolutions: Iterable[Resolution]) -> list[tuple[str, str]]:
        return [(self.name(r.key), r.decision) for r in resolutions]

    def customer(self, dev: str) -> str | None:
        device = self.config.device(dev)
        return incident_key(device) if device is not None else None

    def advance(self, t_ns: int, *, punctual: bool | None = None) -> None:
        """Move the clock to ``t_ns``; if punctual, resolve every held press due before
        it first, each at its deadline + 1 ns."""
        if self.punctual if punctual is None else punctual:
            for _ in range(10_000):
                deadline = self.engine.next_deadline_ns()
                if deadline is None or deadline >= t_ns:
                    break
                self.clock.ns = max(self.clock.ns, deadline + 1)
                self.expire()
            else:  # pragma: no cover
                raise AssertionError("expire never settles")
        self.clock.ns = max(self.clock.ns, t_ns)

    def expire(self) -> None:
        for r in self.engine.expire(self.clock.ns):
            self._resolution(r, None)

    def flush(self) -> None:
        self.advance(2**62, punctual=True)

    def make_press(self, step: P) -> Press:
        key = f"p{len(self.presses) + 1}"
        return Press(
            source="test",
            device_id=step.dev,
            gesture=step.gesture,
            dedup_key=key,
            counter=step.counter,
            held_s=step.held,
            stamp=Stamp(mono_ns=self.clock.ns, wall=self.wall, wall_trusted=self.trusted),
        )

    def press(self, step: P) -> Decision:
        self.advance(BASE + s(step.at))
        press = self.make_press(step)
        self.register(press)
        return self.feed(press)

    def feed(self, press: Press) -> Decision:
        """Decide a registered press and apply the decision, as the daemon does."""
        decision = self.engine.decide(press)
        self.engine.apply(decision, press)
        self._decision(press, decision)
        return decision

    def end(self, dev: str) -> None:
        customer = self.customer(dev)
        open_id = self.engine.open_incident(customer) if customer else None
        if open_id is not None:
            self.engine.incident_ended(open_id)
        self.outs.append(Out(self.clock.ns, "end", "end", "", customer=customer, incident=open_id))

    def step(self, step: Step) -> None:
        if isinstance(step, P):
            self.press(step)
            return
        self.advance(BASE + s(step.at))
        if isinstance(step, End):
            self.end(step.dev)
        elif isinstance(step, Walk):
            self.engine.start_walk_test(step.dev, step.minutes, self.wall)
        elif isinstance(step, StopWalk):
            self.engine.stop_walk_test()
        else:
            self.expire()

    def run(self, steps: Iterable[Step], *, flush: bool = True) -> list[Out]:
        for step in steps:
            self.step(step)
        if flush:
            self.flush()
        return self.outs

    def _decision(self, press: Press, d: Decision) -> None:
        name = self.name(held_key(press))
        opened = d.incident.id if isinstance(d, Raise) else None
        incident = d.incident_id if isinstance(d, Attach | Cancel) else None
        until = d.until_ns if isinstance(d, Hold) else None
        pending = d.pending.id if isinstance(d, Hold) and d.pending is not None else None
        self.outs.append(
            Out(
                self.clock.ns,
                name,
                d.kind,
                d.reason,
                device=press.device_id,
                customer=self.customer(press.device_id),
                opened=opened,
                incident=incident,
                until_ns=until,
                pending=pending,
            )
        )
        for r in d.resolves:
            self._resolution(r, name)

    def _resolution(self, r: Resolution, by: str | None) -> None:
        name = self.name(r.key)
        held = self.presses[name]
        self.outs.append(
            Out(
                self.clock.ns,
                name,
                r.decision,
                r.reason,
                resolution=True,
                by=by,
                device=held.device_id,
                customer=self.customer(held.device_id),
                opened=r.new_incident.id if r.new_incident is not None else None,
                incident=r.incident_id,
            )
        )


def tokens(outs: Sequence[Out]) -> list[str]:
    return [o.token for o in outs]


def find(outs: Sequence[Out], token: str) -> Out:
    found = [o for o in outs if o.token == token]
    assert len(found) == 1, (token, tokens(outs))
    return found[0]


INCIDENT_ID = re.compile(r"inc-[0-9a-f]{12}")


def canonical(outs: Sequence[Out]) -> list[tuple[Any, ...]]:
    """The outcomes with generated incident ids replaced by their order of appearance."""
    names: dict[str, str] = {}

    def name(text: str | None) -> str | None:
        if text is None:
            return None
        return INCIDENT_ID.sub(lambda m: names.setdefault(m.group(), f"#{len(names)}"), text)

    return [
        (
            o.t_ns,
            o.token,
            name(o.reason),
            o.by,
            name(o.opened),
            name(o.incident),
            o.until_ns,
            name(o.pending),
        )
        for o in outs
    ]


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    id: str
    dtype: dict[str, Any]
    steps: tuple[Step, ...]
    tokens: tuple[str, ...]  # everything the engine said, in order (after a final flush)
    reasons: dict[str, str] = field(default_factory=dict)  # token -> phrase of its reason
    same: tuple[tuple[str, str], ...] = ()  # tokens about the same incident
    differ: tuple[tuple[str, str], ...] = ()  # tokens about different incidents
    at: dict[str, float] = field(default_factory=dict)  # token -> when it happened (s)
    open_after: tuple[str, ...] | None = None  # incident keys open at the end
    punctual: bool = True  # False: held presses expire only at Tick steps (a late wake)


CONTACT_BOUNCE = "contact bounce"
NOT_A_PATTERN = "three or more quick presses: not a pattern this button uses"
COOLDOWN = "in the cooldown after a meaningless pattern"
PRESSED_AGAIN = "pressed again within the abort window"
ABORT_RAISED = "abort window ended without a cancel: raised"
NOT_REGISTERED = f"unknown device {UNKNOWN}: not in the device registry"

ROWS: list[Row] = [
    # ---- single press
    Row(
        "single-raises-at-once-without-double",
        SINGLE,
        (P(0),),
        ("p1:raise",),
        {"p1:raise": "single press from 0000a001 raises for customer:2001"},
        at={"p1:raise": 0},
    ),
    Row(
        "other-gestures-do-not-raise-on-a-single-type",
        SINGLE,
        (P(0, gesture="double"), P(1, gesture="long"), P(2, gesture="hold")),
        ("p1:ignore", "p2:ignore", "p3:ignore"),
        {"p2:ignore": "gesture long does not raise for type button (raises on single)"},
        open_after=(),
    ),
    # ---- double press
    Row(
        "double-within-window-raises",
        DOUBLE,
        (P(0), P(0.3)),
        ("p1:hold", "p2:raise", "p1=double"),
        {
            "p1:hold": "waiting 0.5 s for a second one (double press)",
            "p2:raise": "double press from 0000a001 raises",
            "p1=double": "first press of a double press",
        },
        same=(("p2:raise", "p1=double"),),
        at={"p2:raise": 0.3},
    ),
    Row(
        "double-at-exactly-the-window-raises",
        DOUBLE,
        (P(0), P(0.5)),
        ("p1:hold", "p2:raise", "p1=double"),
    ),
    Row(
        "double-type-single-alone-expires-to-ignore",
        DOUBLE,
        (P(0),),
        ("p1:hold", "p1=ignore"),
        {"p1=ignore": "gesture single does not raise for type button (raises on double)"},
        at={"p1=ignore": 0.5 + 1e-9},
        open_after=(),
    ),
    Row(
        "double-type-singles-0.6s-apart-never-raise",
        DOUBLE,
        (P(0), P(0.6)),
        ("p1:hold", "p1=ignore", "p2:hold", "p2=ignore"),
        open_after=(),
    ),
    Row(
        "double-type-singles-1ns-past-the-window-never-raise",
        DOUBLE,
        (P(0), P(0.500000001)),
        ("p1:hold", "p1=ignore", "p2:hold", "p2=ignore"),
        open_after=(),
    ),
    Row(
        "late-wake-keeps-singles-apart",
        DOUBLE,
        (P(0), P(0.7), Tick(1.5)),
        ("p1:hold", "p2:hold", "p1=ignore", "p2=ignore"),
        at={"p1=ignore": 1.5, "p2=ignore": 1.5},
        punctual=False,
    ),
    Row(
        "late-wake-a-press-after-a-missed-deadline-still-starts-a-double",
        DOUBLE,
        (P(0), P(0.7), P(0.9), Tick(2)),
        ("p1:hold", "p2:hold", "p3:raise", "p2=double", "p1=ignore"),
        punctual=False,
    ),
    Row(
        "double-reported-by-the-source-raises-at-once",
        DOUBLE,
        (P(0, gesture="double"),),
        ("p1:raise",),
    ),
    Row(
        "double-presses-of-two-devices-do-not-combine",
        DOUBLE,
        (P(0, A1), P(0.2, A2)),
        ("p1:hold", "p2:hold", "p1=ignore", "p2=ignore"),
    ),
    Row(
        "single-raises-after-the-double-window-when-double-cancels",
        {"compose_double": True, "cancel_gestures": ["double"]},
        (P(0),),
        ("p1:hold", "p1=raise"),
        {"p1=raise": "single press from 0000a001 raises"},
        at={"p1=raise": 0.5 + 1e-9},
        open_after=("customer:2001",),
    ),
    # ---- double press told by the button (compose_double off): nothing is waited for
    Row(
        "told-double-type-single-raises-at-once-when-double-cancels",
        TOLD_CANCEL,
        (P(0),),
        ("p1:raise",),
        {"p1:raise": "single press from 0000a001 raises for customer:2001"},
        at={"p1:raise": 0},
        open_after=("customer:2001",),
    ),
    Row(
        # Two real presses, not a cancel: the second one attaches to the alarm.
        "told-double-type-two-quick-singles-raise-then-attach",
        TOLD_CANCEL,
        (P(0), P(0.2)),
        ("p1:raise", "p2:attach"),
        same=(("p1:raise", "p2:attach"),),
        at={"p1:raise": 0, "p2:attach": 0.2},
        open_after=("customer:2001",),
    ),
    Row(
        "told-double-type-two-quick-singles-of-two-devices-raise-then-attach",
        TOLD_CANCEL,
        (P(0, A1), P(0.2, A2), P(0.3, B1)),
        ("p1:raise", "p2:attach", "p3:raise"),
        same=(("p1:raise", "p2:attach"),),
        differ=(("p1:raise", "p3:raise"),),
    ),
    Row(
        "told-double-type-reported-double-cancels-at-once",
        TOLD_CANCEL,
        (P(0), P(0.3, gesture="double")),
        ("p1:raise", "p2:cancel"),
        {"p2:cancel": "double press from 0000a001 cancels inc-"},
        same=(("p1:raise", "p2:cancel"),),
        at={"p2:cancel": 0.3},
        open_after=(),
    ),
    Row(
        "told-double-type-reported-double-without-incident-is-ignored",
        TOLD_CANCEL,
        (P(0, gesture="double"),),
        ("p1:ignore",),
        {"p1:ignore": "cancel gesture double with no open incident for customer:2001"},
        open_after=(),
    ),
    Row(
        "told-double-type-single-is-ignored-at-once-when-double-raises",
        TOLD_DOUBLE,
        (P(0), P(0.2)),
        ("p1:ignore", "p2:ignore"),
        {"p2:ignore": "gesture single does not raise for type button (raises on double)"},
        at={"p1:ignore": 0, "p2:ignore": 0.2},
        open_after=(),
    ),
    Row(
        # Quick singles are no pattern of the gateway's here: no cooldown after them.
        "told-double-type-quick-singles-start-no-cooldown",
        TOLD_DOUBLE,
        (P(0), P(0.1), P(0.2), P(0.3, gesture="double")),
        ("p1:ignore", "p2:ignore", "p3:ignore", "p4:raise"),
        {"p4:raise": "double press from 0000a001 raises for customer:2001"},
        at={"p4:raise": 0.3},
    ),
    Row(
        "told-double-type-abort-window-starts-at-the-press",
        {**TOLD_CANCEL, "abort_window_s": 2.0},
        (P(0),),
        ("p1:hold", "p1=raise"),
        {"p1:hold": "single press from 0000a001 raises for customer:2001 after a 2 s abort"},
        at={"p1=raise": 2 + 1e-9},
    ),
    Row(
        "told-double-type-reported-double-withdraws-in-the-abort-window",
        {**TOLD_CANCEL, "abort_window_s": 2.0},
        (P(0), P(0.3, gesture="double")),
        ("p1:hold", "p2:withdraw", "p1=withdrawn"),
        {"p2:withdraw": "double press from 0000a001 within the abort window"},
        open_after=(),
    ),
    Row(
        # A second single is pressing again, not half of a cancel: the alarm goes now.
        "told-double-type-second-single-in-the-abort-window-sends-it",
        {**TOLD_CANCEL, "abort_window_s": 2.0},
        (P(0), P(0.3)),
        ("p1:hold", "p2:attach", "p1=raise"),
        {"p2:attach": PRESSED_AGAIN},
        same=(("p2:attach", "p1=raise"),),
        at={"p1=raise": 0.3},
        open_after=("customer:2001",),
    ),
    # ---- invalid pattern, cooldown
    Row(
        # The double raises at once (it is not held back to see whether a third press
        # follows); the third press is a pattern this button does not use: cooldown.
        "triple-click-then-cooldown-then-double-raises",
        DOUBLE,
        (
            P(0),
            P(0.2),
            End(0.3),
            P(0.4),
            P(1.0),
            P(2.3),
            P(2.5),
            P(2.8),
        ),
        (
            "p1:hold",
            "p2:raise",
            "p1=double",
            "end",
            "p3:ignore",
            "p4:ignore",
            "p5:ignore",
            "p6:hold",
            "p7:raise",
            "p6=double",
        ),
        {
            "p3:ignore": NOT_A_PATTERN,
            "p4:ignore": f"{COOLDOWN} (1.4 s left)",
            "p5:ignore": f"{COOLDOWN} (0.1 s left)",
        },
        differ=(("p2:raise", "p7:raise"),),
    ),
    Row(
        # The double cancels nothing (its first half is part of it, not a press it
        # withdraws); the third press is no pattern: cooldown; p5 is a single again.
        "triple-click-on-a-double-cancel-type-raises-nothing",
        {"compose_double": True, "cancel_gestures": ["double"]},
        (P(0), P(0.2), P(0.4), P(1.0), P(3.0)),
        ("p1:hold", "p2:ignore", "p1=double", "p3:ignore", "p4:ignore", "p5:hold", "p5=raise"),
        {
            "p2:ignore": "cancel gesture double with no open incident for customer:2001",
            "p1=double": "first press of a double press",
            "p3:ignore": NOT_A_PATTERN,
            "p4:ignore": COOLDOWN,
        },
        at={"p5=raise": 3.5 + 1e-9},
        open_after=("customer:2001",),
    ),
    Row(
        "cooldown-is-per-device",
        DOUBLE,
        (P(0), P(0.2), P(0.4), P(1.0, B1), P(1.2, B1)),
        ("p1:hold", "p2:raise", "p1=double", "p3:ignore", "p4:hold", "p5:raise", "p4=double"),
        differ=(("p2:raise", "p5:raise"),),
    ),
    Row(
        "custom-cooldown",
        {"compose_double": True, "raise_gestures": ["double"], "cooldown_s": 5.0},
        (P(0), P(0.2), P(0.4), P(5.3), P(5.41), P(5.6)),
        (
            "p1:hold",
            "p2:raise",
            "p1=double",
            "p3:ignore",
            "p4:ignore",
            "p5:hold",
            "p6:attach",
            "p5=double",
        ),
        {"p4:ignore": f"{COOLDOWN} (0.1 s left)"},
    ),
    # ---- debounce
    Row(
        "uncounted-press-20ms-later-is-contact-bounce",
        SINGLE,
        (P(0), P(0.02)),
        ("p1:raise", "p2:ignore"),
        {"p2:ignore": f"{CONTACT_BOUNCE}: 20 ms after the previous press"},
    ),
    Row(
        "uncounted-press-at-exactly-the-debounce-is-a-press",
        SINGLE,
        (P(0), P(0.05)),
        ("p1:raise", "p2:attach"),
    ),
    Row(
        "bounce-is-measured-from-the-last-real-press",
        SINGLE,
        (P(0), P(0.03), P(0.06)),
        ("p1:raise", "p2:ignore", "p3:attach"),
    ),
    Row(
        "counted-presses-are-never-debounced",
        SINGLE,
        (P(0, counter=1), P(0.02, counter=2), P(0.02, counter=3)),
        ("p1:raise", "p2:attach", "p3:attach"),
    ),
    Row(
        "bounce-during-a-double-window-leaves-the-single-waiting",
        DOUBLE,
        (P(0), P(0.01)),
        ("p1:hold", "p2:ignore", "p1=ignore"),
        {"p2:ignore": CONTACT_BOUNCE},
    ),
    Row(
        "counted-presses-10ms-apart-are-a-double",
        DOUBLE,
        (P(0, counter=1), P(0.01, counter=2)),
        ("p1:hold", "p2:raise", "p1=double"),
    ),
    Row(
        "debounce-is-per-device",
        SINGLE,
        (P(0, A1), P(0.01, A2)),
        ("p1:raise", "p2:attach"),
    ),
    Row(
        "debounce-off",
        {"debounce_s": 0.0},
        (P(0), P(0)),
        ("p1:raise", "p2:attach"),
    ),
    # ---- long press
    Row(
        "long-type-single-is-ignored-long-raises",
        LONG,
        (P(0), P(1, gesture="long")),
        ("p1:ignore", "p2:raise"),
        {
            "p1:ignore": "gesture single does not raise for type button (raises on long)",
            "p2:raise": "long press from 0000a001 raises",
        },
    ),
    Row(
        "long-type-held-for-long-press-s-raises",
        LONG,
        (P(0, held=0.99), P(1, held=1.0)),
        ("p1:ignore", "p2:raise"),
    ),
    Row(
        "measured-hold-overrides-the-reported-gesture",
        LONG,
        (P(0, gesture="long", held=0.2), P(1, gesture="single", held=1.5)),
        ("p1:ignore", "p2:raise"),
    ),
    # ---- abort window
    Row(
        "abort-window-no-cancel-raises-at-its-end",
        ABORT,
        (P(0),),
        ("p1:hold", "p1=raise"),
        {
            "p1:hold": "single press from 0000a001 raises for customer:2001 after a 3 s abort "
            "window",
            "p1=raise": ABORT_RAISED,
        },
        at={"p1=raise": 3 + 1e-9},
        open_after=("customer:2001",),
    ),
    Row(
        "abort-window-cancel-inside-withdraws",
        ABORT,
        (P(0), P(1, gesture="hold")),
        ("p1:hold", "p2:withdraw", "p1=withdrawn"),
        {
            "p2:withdraw": "hold press from 0000a001 within the abort window: the alarm is "
            "withdrawn, nothing was sent"
        },
        open_after=(),
    ),
    Row(
        "abort-window-cancel-at-its-last-instant-withdraws",
        ABORT,
        (P(0), P(3.0, gesture="hold")),
        ("p1:hold", "p2:withdraw", "p1=withdrawn"),
        open_after=(),
    ),
    Row(
        "abort-window-cancel-by-another-device-of-the-customer-withdraws",
        ABORT,
        (P(0), P(1, A2, gesture="hold")),
        ("p1:hold", "p2:withdraw", "p1=withdrawn"),
        open_after=(),
    ),
    Row(
        "abort-window-cancel-by-another-customer-does-not-withdraw",
        ABORT,
        (P(0), P(1, B1, gesture="hold")),
        ("p1:hold", "p2:ignore", "p1=raise"),
        {"p2:ignore": "cancel gesture hold with no open incident for customer:2002"},
    ),
    Row(
        "abort-window-cancel-after-it-cancels-the-incident",
        ABORT,
        (P(0), P(4, gesture="hold")),
        ("p1:hold", "p1=raise", "p2:cancel"),
        {"p2:cancel": "hold press from 0000a001 cancels inc-"},
        same=(("p1=raise", "p2:cancel"),),
        open_after=(),
    ),
    Row(
        "abort-window-pressed-again-raises-at-once",
        ABORT,
        (P(0), P(1)),
        ("p1:hold", "p2:attach", "p1=raise"),
        {
            "p2:attach": PRESSED_AGAIN,
            "p1=raise": "raised before its abort window ended: pressed again",
        },
        same=(("p2:attach", "p1=raise"),),
        at={"p1=raise": 1},
    ),
    Row(
        "abort-window-pressed-again-by-another-device-of-the-customer",
        ABORT,
        (P(0, A1), P(1, A2)),
        ("p1:hold", "p2:attach", "p1=raise"),
        same=(("p2:attach", "p1=raise"),),
    ),
    Row(
        "abort-window-is-per-customer",
        ABORT,
        (P(0, A1), P(1, B1)),
        ("p1:hold", "p2:hold", "p1=raise", "p2=raise"),
        differ=(("p1=raise", "p2=raise"),),
        at={"p1=raise": 3 + 1e-9, "p2=raise": 4 + 1e-9},
    ),
    Row(
        "abort-window-then-presses-attach",
        ABORT,
        (P(0), P(4), P(5, A2)),
        ("p1:hold", "p1=raise", "p2:attach", "p3:attach"),
        same=(("p1=raise", "p2:attach"), ("p1=raise", "p3:attach")),
    ),
    Row(
        "abort-window-after-a-double-window",
        {"compose_double": True, "cancel_gestures": ["double"], "abort_window_s": 2.0},
        (P(0), P(1), P(1.2)),
        ("p1:hold", "p1=held_abort", "p2:hold", "p3:withdraw", "p2=double", "p1=withdrawn"),
        open_after=(),
    ),
    Row(
        "abort-window-after-a-double-window-raises-without-cancel",
        {"compose_double": True, "cancel_gestures": ["double"], "abort_window_s": 2.0},
        (P(0),),
        ("p1:hold", "p1=held_abort", "p1=raise"),
        at={"p1=held_abort": 0.5 + 1e-9, "p1=raise": 2.5 + 2e-9},
    ),
    Row(
        "double-raise-with-abort-window",
        {
            "compose_double": True,
            "raise_gestures": ["double"],
            "cancel_gestures": ["hold"],
            "abort_window_s": 2.0,
        },
        (P(0), P(0.3), P(1, gesture="hold")),
        ("p1:hold", "p2:hold", "p1=double", "p3:withdraw", "p2=withdrawn"),
        open_after=(),
    ),
    # ---- open incident: one per customer
    Row(
        "presses-during-an-open-incident-attach",
        SINGLE,
        (P(0, A1), P(1, A1), P(2, A2), P(3, B1), P(4, B1)),
        ("p1:raise", "p2:attach", "p3:attach", "p4:raise", "p5:attach"),
        {"p2:attach": "customer:2001 already has open incident inc-"},
        same=(("p1:raise", "p2:attach"), ("p1:raise", "p3:attach"), ("p4:raise", "p5:attach")),
        differ=(("p1:raise", "p4:raise"),),
        open_after=("customer:2001", "customer:2002"),
    ),
    Row(
        "a-press-after-the-incident-ended-raises-anew",
        SINGLE,
        (P(0), End(1), P(2)),
        ("p1:raise", "end", "p2:raise"),
        differ=(("p1:raise", "p2:raise"),),
    ),
    Row(
        "ending-one-customer-leaves-the-other-open",
        SINGLE,
        (P(0, A1), P(1, B1), End(2, A2), P(3, B1), P(4, A1)),
        ("p1:raise", "p2:raise", "end", "p3:attach", "p4:raise"),
        same=(("p2:raise", "p3:attach"),),
    ),
    Row(
        "held-singles-of-one-customer-share-one-incident",
        {"compose_double": True, "cancel_gestures": ["double"]},
        (P(0, A1), P(0.1, A2)),
        ("p1:hold", "p2:hold", "p1=raise", "p2=attach"),
        same=(("p1=raise", "p2=attach"),),
    ),
    # ---- cancel gesture
    Row(
        "cancel-gesture-cancels-the-open-incident",
        PENDANT,
        (P(0), P(1, gesture="long"), P(2, gesture="hold")),
        ("p1:raise", "p2:attach", "p3:cancel"),
        {"p3:cancel": "hold press from 0000a001 cancels inc-"},
        same=(("p1:raise", "p3:cancel"),),
        open_after=(),
    ),
    Row(
        "cancel-gesture-from-another-device-of-the-customer",
        PENDANT,
        (P(0, A1), P(1, A2, gesture="hold")),
        ("p1:raise", "p2:cancel"),
        same=(("p1:raise", "p2:cancel"),),
    ),
    Row(
        "cancel-gesture-without-open-incident-is-ignored",
        PENDANT,
        (P(0, gesture="hold"),),
        ("p1:ignore",),
        {"p1:ignore": "cancel gesture hold with no open incident for customer:2001"},
        open_after=(),
    ),
    Row(
        "cancel-gesture-of-another-customer-cancels-nothing",
        PENDANT,
        (P(0, A1), P(1, B1, gesture="hold"), P(2, A1)),
        ("p1:raise", "p2:ignore", "p3:attach"),
    ),
    Row(
        "press-after-a-cancel-is-a-new-emergency",
        PENDANT,
        (P(0), P(1, gesture="hold"), P(2)),
        ("p1:raise", "p2:cancel", "p3:raise"),
        differ=(("p1:raise", "p3:raise"),),
    ),
    Row(
        "measured-hold-is-the-cancel-gesture",
        PENDANT,
        (P(0), P(5, gesture="single", held=3.0)),
        ("p1:raise", "p2:cancel"),
    ),
    # ---- unknown devices
    Row(
        "unknown-device-is-ignored-and-opens-nothing",
        SINGLE,
        (P(0, UNKNOWN), P(1, UNKNOWN, gesture="long")),
        ("p1:ignore", "p2:ignore"),
        {"p1:ignore": NOT_REGISTERED},
        open_after=(),
    ),
    Row(
        "unknown-device-is-ignored-during-an-open-incident",
        SINGLE,
        (P(0), P(1, UNKNOWN)),
        ("p1:raise", "p2:ignore"),
        {"p2:ignore": NOT_REGISTERED},
    ),
    Row(
        "unknown-device-during-a-walk-test-is-still-unknown",
        SINGLE,
        (Walk(0), P(1, UNKNOWN)),
        ("p1:ignore",),
        {"p1:ignore": NOT_REGISTERED},
    ),
    # ---- walk test
    Row(
        "walk-test-of-all-devices-never-raises-and-ends-by-itself",
        SINGLE,
        (Walk(0, None, 1), P(1, A1), P(2, B1), P(3, A2, gesture="long"), P(59.9), P(60)),
        ("p1:walk_test", "p2:walk_test", "p3:walk_test", "p4:walk_test", "p5:raise"),
        {"p1:walk_test": "walk test: single press from 0000a001 recorded, not raised"},
        open_after=("customer:2001",),
    ),
    Row(
        "walk-test-of-one-device-leaves-the-others-live",
        SINGLE,
        (Walk(0, A1, 5), P(1, A1), P(2, A2), P(3, A1)),
        ("p1:walk_test", "p2:raise", "p3:walk_test"),
    ),
    Row(
        "walk-test-holds-nothing-on-a-double-type",
        DOUBLE,
        (Walk(0), P(1), P(1.2), P(1.4)),
        ("p1:walk_test", "p2:walk_test", "p3:walk_test"),
        open_after=(),
    ),
    Row(
        "walk-test-with-abort-window-holds-nothing",
        ABORT,
        (Walk(0), P(1), P(2, gesture="hold")),
        ("p1:walk_test", "p2:walk_test"),
        open_after=(),
    ),
    Row(
        "walk-test-stopped-then-presses-raise",
        SINGLE,
        (Walk(0, None, 30), P(1), StopWalk(2), P(3)),
        ("p1:walk_test", "p2:raise"),
    ),
]


def test_the_table_has_unique_ids() -> None:
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_gesture_rules(configs: MakeConfig, row: Row) -> None:
    sim = Sim(configs(row.dtype), punctual=row.punctual)
    outs = sim.run(row.steps)
    assert tokens(outs) == list(row.tokens)
    for token, phrase in row.reasons.items():
        assert phrase in find(outs, token).reason, (token, find(outs, token).reason)
    for a, b in row.same:
        assert find(outs, a).inc is not None
        assert find(outs, a).inc == find(outs, b).inc, (a, b)
    for a, b in row.differ:
        assert None not in (find(outs, a).inc, find(outs, b).inc)
        assert find(outs, a).inc != find(outs, b).inc, (a, b)
    for token, at_s in row.at.items():
        assert find(outs, token).t_ns == BASE + s(at_s), token
    if row.open_after is not None:
        open_now = {k for k in CUSTOMER.values() if sim.engine.open_incident(k) is not None}
        assert open_now == set(row.open_after)
    # Whatever happened, nothing stays held once every deadline has passed.
    assert sim.engine.next_deadline_ns() is None


# --------------------------------------------------------------------------- held_s


@pytest.mark.parametrize(
    ("long_press_s", "held_s", "gesture"),
    [
        (1.0, 0.0, "single"),
        (1.0, 0.999, "single"),
        (1.0, 1.0, "long"),
        (1.0, 2.999, "long"),
        (1.0, 3.0, "hold"),
        (1.0, 30.0, "hold"),
        (2.0, 1.999, "single"),
        (2.0, 2.0, "long"),
        (2.0, 5.999, "long"),
        (2.0, 6.0, "hold"),
        (0.5, 0.499, "single"),
        (0.5, 0.5, "long"),
        (0.5, 1.5, "hold"),
        (0.8, 0.8, "long"),
        (0.8, 2.4, "hold"),  # 3 * 0.8 is 2.4000000000000004 in floating point
        (0.8, 2.39, "long"),
    ],
    ids=lambda v: str(v),
)
def test_held_seconds_classify_the_gesture(
    configs: MakeConfig, long_press_s: float, held_s: float, gesture: str
) -> None:
    """single below long_press_s, long from it, hold from three times it; whatever the
    source reported."""
    sim = Sim(configs({**ANY_HOLD, "long_press_s": long_press_s}))
    for i, reported in enumerate(("single", "long", "hold", "double")):
        sim.end(A1)  # each press raises afresh
        decision = sim.press(P(i, gesture=reported, held=held_s))  # type: ignore[arg-type]
        assert isinstance(decision, Raise), decision
        assert decision.reason.startswith(f"{gesture} press from {A1}"), decision.reason


# --------------------------------------------------------------------------- purity


def decisions_state(sim: Sim) -> tuple[Any, ...]:
    return (sim.engine.snapshot(), sim.engine.next_deadline_ns())


PURITY: dict[str, tuple[dict[str, Any], tuple[Step, ...], P, str]] = {
    "raise": (SINGLE, (), P(1), "raise"),
    "attach": (SINGLE, (P(0),), P(1), "attach"),
    "hold-pattern": (DOUBLE, (), P(1), "hold"),
    "double": (DOUBLE, (P(0.8),), P(1), "raise"),
    "cooldown": (DOUBLE, (P(0.4), P(0.6), P(0.8)), P(1), "ignore"),
    "bounce": (SINGLE, (P(0.99),), P(1), "ignore"),
    "hold-abort": (ABORT, (), P(1), "hold"),
    "pressed-again": (ABORT, (P(0),), P(1), "attach"),
    "withdraw": (ABORT, (P(0),), P(1, gesture="hold"), "withdraw"),
    "cancel": (PENDANT, (P(0),), P(1, gesture="hold"), "cancel"),
    "unknown": (SINGLE, (), P(1, UNKNOWN), "ignore"),
    "walk-test": (SINGLE, (Walk(0),), P(1), "walk_test"),
    "told-single": (TOLD_CANCEL, (P(0.8),), P(1), "attach"),
    "told-double": (TOLD_CANCEL, (P(0.8),), P(1, gesture="double"), "cancel"),
}


@pytest.mark.parametrize(("dtype", "before", "probe", "kind"), PURITY.values(), ids=PURITY.keys())
def test_decide_is_pure(
    configs: MakeConfig, dtype: dict[str, Any], before: tuple[Step, ...], probe: P, kind: str
) -> None:
    """Deciding changes nothing: the same press decided twice without ``apply`` (a
    journal write that failed, or a repeat the journal recognised) gets the same decision,
    apart from the id a new incident would get."""
    sim = Sim(configs(dtype))
    sim.run(before, flush=False)
    sim.clock.ns = BASE + s(probe.at)
    state = decisions_state(sim)
    press = sim.make_press(probe)
    first, second = sim.engine.decide(press), sim.engine.decide(press)
    assert first.kind == kind, first
    assert decisions_state(sim) == state
    assert without_ids(first) == without_ids(second)


def without_ids(decision: Decision) -> str:
    """The decision with generated incident ids named by their order of appearance."""
    names: dict[str, str] = {}
    return INCIDENT_ID.sub(lambda m: names.setdefault(m.group(), f"#{len(names)}"), repr(decision))


def test_the_same_transmission_twice_is_decided_twice_alike(configs: MakeConfig) -> None:
    """A repeat (same dedup key) is the journal's business: the engine, given the same
    press again before it was applied, answers the same; once applied, it is a new press
    (here: an attach to the incident the first one opened)."""
    sim = Sim(configs(SINGLE))
    press = sim.make_press(P(0))
    first = sim.engine.decide(press)
    again = sim.engine.decide(press)
    assert isinstance(first, Raise) and isinstance(again, Raise)
    assert first.reason == again.reason and first.track == again.track
    assert first.incident.request == again.incident.request
    sim.engine.apply(first, press)
    assert isinstance(sim.engine.decide(press), Ignore)  # 0 ns later: contact bounce
    counted = Press(**{**_fields(press), "counter": 7})
    later = sim.engine.decide(counted)
    assert isinstance(later, Attach) and later.incident_id == first.incident.id


def _fields(press: Press) -> dict[str, Any]:
    return {name: getattr(press, name) for name in Press.__dataclass_fields__}


# --------------------------------------------------------------------------- snapshot


def test_snapshot_restore_undoes_provisional_applies(configs: MakeConfig) -> None:
    sim = Sim(configs(ABORT))
    sim.run((P(0, A1), P(0.5, B1)), flush=False)  # both held in their abort windows
    before = sim.engine.snapshot()
    deadline = sim.engine.next_deadline_ns()
    assert deadline == BASE + s(3)

    # A press applied provisionally (as in a batch), then taken back.
    pressed_again = sim.make_press(P(1, A2))
    decision = sim.engine.decide(pressed_again)
    assert isinstance(decision, Attach)
    sim.engine.apply(decision, pressed_again)
    assert sim.engine.open_incident(CUSTOMER[A1]) == decision.incident_id
    sim.engine.restore(before)
    assert sim.engine.open_incident(CUSTOMER[A1]) is None
    assert sim.engine.next_deadline_ns() == deadline

    # Expiry applies provisionally too: restored, the same presses are due again alike.
    sim.clock.ns = BASE + s(10)
    before = sim.engine.snapshot()
    first = sim.engine.expire(sim.clock.ns)
    assert sim.named(first) == [("p1", "raise"), ("p2", "raise")]
    assert sim.engine.next_deadline_ns() is None
    assert sim.engine.open_incident(CUSTOMER[B1]) is not None
    sim.engine.restore(before)
    assert sim.engine.open_incident(CUSTOMER[A1]) is None
    assert sim.engine.open_incident(CUSTOMER[B1]) is None
    assert sim.engine.next_deadline_ns() == deadline
    again = sim.engine.expire(sim.clock.ns)
    assert again == first  # the pending incidents were fixed when the presses were held


def test_snapshot_restore_undoes_a_pattern_expiry(configs: MakeConfig) -> None:
    sim = Sim(configs(DOUBLE))
    sim.run((P(0),), flush=False)
    before = sim.engine.snapshot()
    sim.clock.ns = BASE + s(1)
    assert sim.named(sim.engine.expire(sim.clock.ns)) == [("p1", "ignore")]
    sim.engine.restore(before)
    assert sim.engine.snapshot() == before
    # Restored, the held single can still become a double (the resend is judged afresh).
    sim.clock.ns = BASE + s(0.4)
    d = sim.engine.decide(sim.make_press(P(0.4)))
    assert isinstance(d, Raise)
    assert sim.named(d.resolves) == [("p1", "double")]


# --------------------------------------------------------------------------- composing doubles


@pytest.mark.parametrize(
    ("dtype", "waits"),
    [
        ({}, False),
        (TOLD_DOUBLE, False),
        (TOLD_CANCEL, False),
        ({"raise_gestures": ["double"], "cancel_gestures": ["single"]}, False),
        ({"compose_double": True}, False),  # a double means nothing: no reason to wait
        ({"compose_double": True, "raise_gestures": ["single", "long"]}, False),
        ({"compose_double": True, "cancel_gestures": ["hold"]}, False),
        (DOUBLE, True),
        ({"compose_double": True, "cancel_gestures": ["double"]}, True),
        ({"compose_double": True, "raise_gestures": ["single", "double"]}, True),
    ],
    ids=str,
)
def test_singles_wait_only_where_the_gateway_composes_a_double_that_means_something(
    dtype: dict[str, Any], waits: bool
) -> None:
    model = DeviceType(**dtype)
    assert model.compose_double is dtype.get("compose_double", False)  # off by default
    assert uses_double(model) is waits


TOLD_TYPES = [
    TOLD_CANCEL,
    TOLD_DOUBLE,
    {"raise_gestures": ["double"], "cancel_gestures": ["single"]},
    {"raise_gestures": ["single", "double"], "cancel_gestures": ["hold"]},
]


@pytest.mark.parametrize("dtype", TOLD_TYPES, ids=str)
def test_a_type_that_tells_doubles_itself_holds_no_press(
    configs: MakeConfig, dtype: dict[str, Any]
) -> None:
    """Without compose_double every press is decided when it comes, as the gesture the
    button reported: nothing waits for a second press, no single is merged into a double,
    whatever the type does with a double. The same type composing doubles holds a single."""
    sim = Sim(configs(dtype))
    steps = ((0, "single"), (0.2, "single"), (0.4, "double"), (0.6, "single"), (0.7, "double"))
    for at, gesture in steps:
        decision = sim.press(P(at, gesture=gesture))  # type: ignore[arg-type]
        assert not isinstance(decision, Hold), decision
        assert decision.resolves == (), decision
        assert sim.engine.next_deadline_ns() is None
        assert sim.engine.snapshot().tracks[A1].pending_key is None
    raises = dtype.get("raise_gestures", ["single"])
    cancels = dtype.get("cancel_gestures", [])
    for (_, gesture), out in zip(steps, sim.outs, strict=True):
        assert not out.resolution
        if gesture in raises:
            assert out.kind in ("raise", "attach"), out
        elif gesture in cancels:
            assert out.kind in ("cancel", "ignore"), out
            assert out.kind == "ignore" or out.reason.startswith(f"{gesture} press from"), out
        else:
            assert out.kind == "ignore" and "does not raise" in out.reason, out
    composing = Sim(configs({**dtype, "compose_double": True}))
    assert isinstance(composing.press(P(0)), Hold)


# --------------------------------------------------------------------------- deadlines


def test_next_deadline_is_the_earliest_held_press(configs: MakeConfig) -> None:
    sim = Sim(
        configs({"compose_double": True, "raise_gestures": ["double"], "double_window_s": 0.8})
    )
    assert sim.engine.next_deadline_ns() is None
    sim.run((P(0, A1), P(0.3, B1)), flush=False)
    assert sim.engine.next_deadline_ns() == BASE + s(0.8)
    # Not due at its deadline, due 1 ns after it.
    assert sim.engine.expire(BASE + s(0.8)) == []
    resolved = sim.engine.expire(BASE + s(0.8) + 1)
    assert sim.named(resolved) == [("p1", "ignore")]
    assert sim.engine.next_deadline_ns() == BASE + s(1.1)


def test_late_expiry_resolves_in_the_order_held(configs: MakeConfig) -> None:
    """The daemon may wake late; several held presses then resolve in press order, and the
    first to raise opens the incident the others attach to."""
    sim = Sim(configs({"compose_double": True, "cancel_gestures": ["double"]}))
    sim.run((P(0, A1), P(0.2, B1), P(0.3, A2)), flush=False)
    sim.clock.ns = BASE + s(5)
    resolved = sim.engine.expire(sim.clock.ns)
    assert sim.named(resolved) == [
        ("p1", "raise"),
        ("p2", "raise"),
        ("p3", "attach"),
    ]
    assert resolved[0].new_incident is not None
    assert resolved[2].incident_id == resolved[0].new_incident.id


def test_press_after_a_missed_deadline_is_a_new_single(configs: MakeConfig) -> None:
    """A second press after the double window, before the daemon expired the first, is not
    a double: both stay singles."""
    sim = Sim(configs(DOUBLE))
    first = sim.make_press(P(0))
    sim.register(first)
    sim.engine.apply(sim.engine.decide(first), first)
    sim.clock.ns = BASE + s(0.7)
    second = sim.make_press(P(0.7))
    sim.register(second)
    d = sim.engine.decide(second)
    assert isinstance(d, Hold) and d.resolves == ()
    sim.engine.apply(d, second)
    sim.clock.ns = BASE + s(2)
    assert sim.named(sim.engine.expire(sim.clock.ns)) == [
        ("p1", "ignore"),
        ("p2", "ignore"),
    ]


# --------------------------------------------------------------------------- walk test


def test_walk_test_scope_follows_the_injected_clock(configs: MakeConfig) -> None:
    sim = Sim(configs(SINGLE))
    scope = sim.engine.start_walk_test(None, 2, wall=123.0)
    assert scope.until_ns == BASE + s(120) and scope.started_wall == 123.0
    assert sim.engine.walk_test_active() == scope
    sim.clock.ns = BASE + s(120) - 1
    assert sim.engine.walk_test_active() == scope
    assert isinstance(sim.engine.decide(sim.make_press(P(119))), WalkTest)
    sim.clock.ns = BASE + s(120)
    assert sim.engine.walk_test_active() is None
    assert isinstance(sim.engine.decide(sim.make_press(P(120))), Raise)


# --------------------------------------------------------------------------- adoption


def test_adopted_presses_continue_their_windows(configs: MakeConfig) -> None:
    """Held presses handed over from the journal at start (same boot): their windows go on,
    counted from the press, and they resolve as they would have. (p1's abort window began
    at its double window's end, 0.5 s; adopted, it is counted from the press, so it ends
    at 2 s instead of 2.5 s: the journal keeps no deadline.)"""
    config = configs({"compose_double": True, "cancel_gestures": ["double"], "abort_window_s": 2.0})
    old = Sim(config)
    old.run((P(0, A1),), flush=False)  # held: a double may follow
    old.advance(BASE + s(1))  # now waiting out its abort window
    old.run((P(1.5, B1),), flush=False)  # held: pattern
    held = [(old.presses["p1"], "held_abort"), (old.presses["p2"], "held_pattern")]

    engine = Engine(config, clock_ns=old.clock)
    engine.adopt_held(held)
    assert engine.next_deadline_ns() == BASE + s(2)
    resolved = engine.expire(BASE + s(2) + 1)
    assert old.named(resolved) == [("p1", "raise"), ("p2", "held_abort")]
    assert engine.open_incident(CUSTOMER[A1]) is not None
    assert engine.next_deadline_ns() == BASE + s(4) + 1


# --------------------------------------------------------------------------- cancel while waiting

# A single press on a type that also knows a double press waits out the double window
# before its abort window starts. A cancel gesture of the customer inside that first
# wait withdraws the waiting press: nothing is ever raised for it.
CANCEL_BEFORE_ABORT_WINDOW = {
    "compose_double": True,
    "raise_gestures": ["single"],
    "cancel_gestures": ["double", "long"],
    "double_window_s": 1.5,
    "abort_window_s": 5.0,
}
WITHDRAWS_IT = "long press from {} withdraws the press it follows"


@pytest.mark.parametrize("canceller", [A1, A2], ids=["same-device", "other-device"])
def test_cancel_inside_the_double_window_withdraws_the_alarm(
    configs: MakeConfig, canceller: str
) -> None:
    sim = Sim(configs(CANCEL_BEFORE_ABORT_WINDOW))
    outs = sim.run((P(0), P(1.2, canceller, gesture="long")))
    assert tokens(outs) == ["p1:hold", "p2:withdraw", "p1=withdrawn"]
    assert not [o for o in outs if o.opened], tokens(outs)
    assert find(outs, "p1=withdrawn").by == "p2"
    assert find(outs, "p2:withdraw").reason == WITHDRAWS_IT.format(canceller)
    assert find(outs, "p1=withdrawn").reason == WITHDRAWS_IT.format(canceller)
    assert sim.engine.open_incident(CUSTOMER[A1]) is None


def test_cancel_inside_the_double_window_withdraws_every_waiting_press(
    configs: MakeConfig,
) -> None:
    """Both buttons of the customer wait for a double; one cancel withdraws both."""
    sim = Sim(configs(CANCEL_BEFORE_ABORT_WINDOW))
    outs = sim.run((P(0, A1), P(0.5, A2), P(1, A1, gesture="long")))
    assert tokens(outs) == ["p1:hold", "p2:hold", "p3:withdraw", "p1=withdrawn", "p2=withdrawn"]
    assert not [o for o in outs if o.opened]


def test_cancel_of_another_customer_leaves_the_waiting_press(configs: MakeConfig) -> None:
    sim = Sim(configs(CANCEL_BEFORE_ABORT_WINDOW))
    outs = sim.run((P(0, A1), P(1.2, B1, gesture="long")))
    assert tokens(outs) == ["p1:hold", "p2:ignore", "p1=held_abort", "p1=raise"]
    assert find(outs, "p2:ignore").reason == (
        "cancel gesture long with no open incident for customer:2002"
    )
    assert find(outs, "p1=raise").t_ns == BASE + s(6.5) + 2


def test_cancel_after_the_double_window_withdraws_the_held_raise(configs: MakeConfig) -> None:
    """Past its double window the press waits out its abort window: the cancel withdraws
    it as a held raise (the abort-window rule), not as a waiting single."""
    sim = Sim(configs(CANCEL_BEFORE_ABORT_WINDOW))
    outs = sim.run((P(0), P(2, A2, gesture="long")))
    assert tokens(outs) == ["p1:hold", "p1=held_abort", "p2:withdraw", "p1=withdrawn"]
    assert "within the abort window" in find(outs, "p2:withdraw").reason


def test_resolutions_name_the_held_press_not_its_dedup_key(configs: MakeConfig) -> None:
    """Every resolution, hold and pending pattern is keyed by ``held_key``."""
    sim = Sim(configs(CANCEL_BEFORE_ABORT_WINDOW))
    sim.run((P(0),), flush=False)
    p1 = sim.presses["p1"]
    assert sim.engine.snapshot().tracks[A1].pending_key == held_key(p1)
    assert held_key(p1) == f"p1|{p1.stamp.boot_id}|{BASE}"
    sim.advance(BASE + s(1.2))
    cancel = sim.make_press(P(1.2, gesture="long"))
    decision = sim.engine.decide(cancel)
    assert [r.key for r in decision.resolves] == [held_key(p1)]
    sim.engine.apply(decision, cancel)
    assert sim.engine.snapshot().tracks[A1].pending_key is None
    assert sim.engine.next_deadline_ns() is None


# A cancel gesture covers every press of the customer before it: a press still held for
# a possible double when the cancel comes is withdrawn with it, whatever else the cancel
# does (cancel the open incident, withdraw the held raise of an abort window, or nothing
# more), so it never raises a fresh alarm after the cancel. The first half of a cancel
# double is no such press: it is part of the cancel and is resolved once, as 'double'.
WAITING = "{} press from 0000a001 withdraws the press it follows"
NOTHING_TO_CANCEL = "cancel gesture double with no open incident for customer:2001"


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ((), ["p1:hold", "p2:ignore", "p1=double"]),
        (
            (P(1, A2),),
            ["p1:hold", "p2:hold", "p3:withdraw", "p2=double", "p1=withdrawn"],
        ),
        (
            (P(1, B1),),
            ["p1:hold", "p2:hold", "p3:ignore", "p2=double", "p1=raise"],
        ),
        (
            (P(0, A2),),
            ["p1:hold", "p1=raise", "p2:hold", "p3:cancel", "p2=double"],
        ),
        (
            (P(0, A2), P(1, A2)),
            [
                *("p1:hold", "p1=raise", "p2:hold", "p3:hold"),
                *("p4:cancel", "p3=double", "p2=withdrawn"),
            ],
        ),
    ],
    ids=[
        "alone",
        "with-another-waiting",
        "other-customer-waiting",
        "incident-open",
        "incident-open-and-another-waiting",
    ],
)
def test_a_cancel_double_withdraws_only_the_presses_it_follows(
    configs: MakeConfig, before: tuple[P, ...], expected: list[str]
) -> None:
    """A1 double-presses (a cancel double) at 1.1 s and 1.2 s after the presses
    ``before``; the other presses of customer 2001 still waiting are withdrawn by it, its
    own first half is resolved as 'double' only."""
    sim = Sim(configs({"compose_double": True, "cancel_gestures": ["double"]}))
    n = len(before)
    outs = sim.run((*before, P(1.1), P(1.2)))
    assert tokens(outs) == expected
    first, double = f"p{n + 1}", f"p{n + 2}"
    decision = outs[expected.index(f"{first}=double") - 1]
    assert decision.key == double and not decision.resolution
    assert find(outs, f"{first}=double").by == double
    assert find(outs, f"{first}=double").incident == decision.incident
    withdrawn = [o for o in outs if o.kind == "withdrawn"]
    assert all(o.by == double and o.reason == WAITING.format("double") for o in withdrawn)
    if decision.kind == "withdraw":
        assert decision.reason == WAITING.format("double")
    if decision.kind == "ignore":
        assert decision.reason == NOTHING_TO_CANCEL
    if decision.kind == "cancel":
        assert decision.incident == find(outs, "p1=raise").opened
        assert decision.reason == f"double press from {A1} cancels {decision.incident}"
    # Nothing of customer 2001 raises after the cancel (and it has nothing open).
    after = outs[expected.index(f"{first}=double") :]
    assert not [o for o in after if o.opened and o.customer == CUSTOMER[A1]], tokens(outs)
    assert sim.engine.open_incident(CUSTOMER[A1]) is None


PRESS_BEFORE_CANCEL = {
    "incident-open": (
        {"compose_double": True, "cancel_gestures": ["double", "long"]},
        ["p1:hold", "p1=raise", "p2:hold", "p3:hold", "p4:cancel", "p2=withdrawn", "p3=raise"],
    ),
    "abort-window-running": (
        {"compose_double": True, "cancel_gestures": ["double", "long"], "abort_window_s": 3.0},
        [
            *("p1:hold", "p1=held_abort", "p2:hold", "p3:hold"),
            *("p4:withdraw", "p1=withdrawn", "p2=withdrawn", "p3=held_abort", "p3=raise"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("dtype", "expected"), PRESS_BEFORE_CANCEL.values(), ids=PRESS_BEFORE_CANCEL.keys()
)
def test_a_press_before_a_cancel_never_raises_after_it(
    configs: MakeConfig, dtype: dict[str, Any], expected: list[str]
) -> None:
    """p1 raises (or waits out its abort window); p2 (A2, the same customer) and p3 (B1,
    another one) wait for a double; p4 cancels: p2 goes with it, p3 is left alone."""
    sim = Sim(configs(dtype))
    outs = sim.run((P(0, A1), P(1, A2), P(1.1, B1), P(1.2, A1, gesture="long")))
    assert tokens(outs) == expected
    cancel = outs[4]
    assert cancel.key == "p4" and cancel.t_ns == BASE + s(1.2)
    assert find(outs, "p2=withdrawn").by == "p4"
    assert find(outs, "p2=withdrawn").reason == WAITING.format("long")
    if cancel.kind == "cancel":
        assert cancel.incident == find(outs, "p1=raise").opened
        assert cancel.reason == f"long press from {A1} cancels {cancel.incident}"
    else:
        held = "long press from 0000a001 within the abort window: the alarm is withdrawn"
        assert cancel.reason.startswith(held)
        assert find(outs, "p1=withdrawn").by == "p4"
        assert find(outs, "p1=withdrawn").reason.startswith(held)
    later = [o.customer for o in outs if o.opened and o.t_ns > cancel.t_ns]
    assert later == [CUSTOMER[B1]], tokens(outs)
    assert sim.engine.open_incident(CUSTOMER[A1]) is None
    assert sim.engine.open_incident(CUSTOMER[B1]) == find(outs, "p3=raise").opened


# --------------------------------------------------------------------------- shared dedup keys

# Buttons without a counter get a dedup key from their message content (zigbee2mqtt and
# rtl_433 digests, json without a counter field): every single press of such a button has
# the same key, and outside the input's repeat window (2 s for MQTT) the journal stores it
# as a new press. Held presses are named by ``held_key`` (dedup key, boot, monotonic time),
# so two of them held at once stay apart.
SAME_KEY = "z2m:0000a001:0123456789abcdef"
DOUBLE_CANCELS_AFTER_ABORT = {
    "compose_double": True,
    "cancel_gestures": ["double"],
    "abort_window_s": 5.0,
}


def test_presses_sharing_a_dedup_key_inside_an_abort_window(configs: MakeConfig) -> None:
    sim = Sim(configs(DOUBLE_CANCELS_AFTER_ABORT))

    def same_key(at: float, name: str) -> Press:
        sim.advance(BASE + s(at))
        press = Press("mqtt:z2m", A1, "single", SAME_KEY, stamp=Stamp(sim.clock.ns, 0.0))
        sim.register(press, name)
        sim.feed(press)
        return press

    first = same_key(0, "p1")  # held for its double window, then its abort window (5.5 s)
    second = same_key(3, "p2")  # pressed again: held for its double window too
    assert held_key(first) != held_key(second)
    assert sim.engine.next_deadline_ns() == BASE + s(3.5)  # both held, apart
    sim.flush()
    # The second press, a single once its double window ends, releases the first one's
    # held raise ("pressed again") and attaches to it.
    assert tokens(sim.outs) == ["p1:hold", "p1=held_abort", "p2:hold", "p1=raise", "p2=attach"]
    raised = find(sim.outs, "p1=raise")
    assert raised.reason == "raised before its abort window ended: pressed again"
    assert raised.opened is not None and find(sim.outs, "p2=attach").incident == raised.opened
    assert sim.engine.open_incident(CUSTOMER[A1]) == raised.opened
    assert sim.engine.next_deadline_ns() is None


def test_presses_sharing_a_dedup_key_and_a_double(configs: MakeConfig) -> None:
    """Two presses with one dedup key inside a double window are a double."""
    sim = Sim(configs(DOUBLE))
    for at, name in ((0, "p1"), (0.3, "p2")):
        sim.advance(BASE + s(at))
        press = Press("mqtt:z2m", A1, "single", SAME_KEY, stamp=Stamp(sim.clock.ns, 0.0))
        sim.register(press, name)
        sim.feed(press)
    sim.flush()
    assert tokens(sim.outs) == ["p1:hold", "p2:raise", "p1=double"]


# --------------------------------------------------------------------------- cancel order

# A type that raises on a double press and cancels on a single one: every single waits
# out the double window and is decided as a cancel when it ends (in ``expire``). By then
# the customer's other presses still waiting for a double were made after it: a double
# press made after the cancel is a new emergency and must still raise.
CANCEL_ON_SINGLE = {
    "compose_double": True,
    "raise_gestures": ["double"],
    "cancel_gestures": ["single"],
}


@pytest.mark.parametrize(
    ("dtype", "before", "expected"),
    [
        (
            CANCEL_ON_SINGLE,
            (),
            ["p1:hold", "p2:hold", "p1=ignore", "p3:raise", "p2=double"],
        ),
        (
            CANCEL_ON_SINGLE,
            (P(0, gesture="double"),),
            ["p1:raise", "p2:hold", "p3:hold", "p2=cancel", "p4:raise", "p3=double"],
        ),
        (
            {**CANCEL_ON_SINGLE, "abort_window_s": 3.0},
            (P(0, gesture="double"),),
            [
                *("p1:hold", "p2:hold", "p3:hold", "p1=withdrawn", "p2=withdraw"),
                *("p4:hold", "p3=double", "p4=raise"),
            ],
        ),
    ],
    ids=["nothing-open", "incident-open", "abort-window-running"],
)
def test_a_cancel_never_withdraws_a_press_made_after_it(
    configs: MakeConfig, dtype: dict[str, Any], before: tuple[P, ...], expected: list[str]
) -> None:
    """A2 presses once (a cancel) at 1 s; A1 double-presses at 1.4 s and 1.6 s, after it:
    the cancel does what it does to the incident or held raise before it, and A1's double
    raises a new alarm."""
    sim = Sim(configs(dtype))
    outs = sim.run((*before, P(1, A2), P(1.4), P(1.6)))
    assert tokens(outs) == expected
    n = len(before)
    first, double = f"p{n + 2}", f"p{n + 3}"
    assert find(outs, f"{first}=double").by == double
    assert not [o for o in outs if o.kind == "withdrawn" and o.key == first]
    raised = [o for o in outs if o.opened and o.t_ns >= BASE + s(1.6)]
    assert [o.customer for o in raised] == [CUSTOMER[A1]], tokens(outs)
    assert sim.engine.open_incident(CUSTOMER[A1]) == raised[0].opened

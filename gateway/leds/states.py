"""What the status LEDs show: the one state with the highest priority, and its patterns.

Pure: the status model (or its ``to_dict()`` form) in, one :class:`LedState` out. The
table below is the whole vocabulary a technician learns; the README's LED table is
generated from it (:func:`readme_table`) and a test keeps the two the same.

Two LEDs and a relay:

- the **alarm** LED (red) is about alarms: off means no alarm is in progress;
- the **status** LED (green) is about the box, or, while the red one is steady on, about
  the help on its way (slow blink: called; fast blink: on the way; steady: on scene);
- the **relay** (a siren, or an input of a local alarm panel) is on while an alarm could
  not be delivered and nobody has acknowledged it: AURA refused it, or alarms are
  waiting and AURA refuses the credentials (nothing can get out), or the oldest waiting
  alarm has waited :data:`WAITING_TOO_LONG_S` or longer (:func:`relay_reason`). The relay
  follows these facts, not the LED state's priority: a press in its abort window never
  switches it off.

Every pattern is steady or a plain on/off blink, which the Linux LED class's ``timer``
trigger times in the kernel: a blinking LED costs the daemon nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.aura.client import CLOSED_STATUSES
from gateway.status import StatusModel


@dataclass(frozen=True)
class Pattern:
    """Steady on, steady off, or a blink of ``on_ms`` on and ``off_ms`` off."""

    kind: Literal["on", "off", "blink"]
    on_ms: int = 0
    off_ms: int = 0

    def __post_init__(self) -> None:
        if self.kind == "blink" and (self.on_ms <= 0 or self.off_ms <= 0):
            raise ValueError(f"a blink needs on and off times > 0, got {self}")

    def __str__(self) -> str:
        return f"blink {self.on_ms}/{self.off_ms} ms" if self.kind == "blink" else self.kind


ON = Pattern("on")
OFF = Pattern("off")


def blink(on_ms: int, off_ms: int) -> Pattern:
    return Pattern("blink", on_ms, off_ms)


@dataclass(frozen=True)
class LedState:
    name: str
    title: str  # what it means, in the README's words
    alarm: Pattern  # the red LED
    status: Pattern  # the green LED
    relay: bool
    looks: str  # what a technician sees, in words
    action: str  # what the technician should do
    relay_note: str = ""  # the README's relay column when it is not plain on/off


# Highest priority first. Each (alarm, status, relay) is used by exactly one state.
STATES: tuple[LedState, ...] = (
    LedState(
        "undeliverable",
        "An alarm cannot be delivered: AURA refused it (400/403/404)",
        blink(100, 100),
        OFF,
        True,
        "red flickers fast; relay/siren on",
        "Call the control room for the person now. `aura-gateway status` names the "
        "incident and AURA's reason (e.g. no subscription); fix it with AURA, then "
        "`aura-gateway incidents ack ID` (relay off).",
    ),
    LedState(
        "abort_window",
        "A press waits out its abort window",
        blink(500, 500),
        OFF,
        False,
        "red blinks evenly, once a second",
        "Nothing, for a few seconds: the person can still cancel (the cancel gesture) or "
        "press again to send at once; the alarm goes when the window ends.",
    ),
    LedState(
        "sending",
        "An alarm is being sent to AURA",
        ON,
        OFF,
        False,
        "red steady, green off",
        "Nothing: this normally lasts under a second.",
    ),
    LedState(
        "queued",
        "AURA cannot be reached (or refuses the credentials) and alarms are waiting",
        blink(100, 1900),
        OFF,
        False,
        "a short red flash every 2 s",
        "The alarms are stored and go out by themselves. Check the box's network; "
        "`aura-gateway status` says why (uplink down, credentials refused). Call the "
        "control room if it lasts.",
        "on if the credentials are refused, or an alarm has waited 60 s or longer",
    ),
    LedState(
        "callout_open",
        "A callout is open at AURA (created, accepted), no responder yet",
        ON,
        blink(1000, 1000),
        False,
        "red steady, green blinks slowly",
        "Nothing: AURA has the alarm. `aura-gateway status` shows the stage.",
    ),
    LedState(
        "responder_on_the_way",
        "A responder is on the way",
        ON,
        blink(200, 200),
        False,
        "red steady, green blinks fast",
        "Nothing: help is coming.",
    ),
    LedState(
        "on_scene",
        "The responder is on scene",
        ON,
        ON,
        False,
        "red and green steady",
        "Nothing: AURA closes the callout when it is over.",
    ),
    LedState(
        "walk_test_press",
        "Walk test: a press was heard (for 1 s)",
        ON,
        blink(1900, 100),
        False,
        "red lights for a second",
        "Note the button; `aura-gateway walk-test report` lists every press.",
    ),
    LedState(
        "walk_test",
        "A walk test is running: presses are recorded, never raised",
        OFF,
        blink(1900, 100),
        False,
        "green on with a short dark blink every 2 s",
        "Press each button; `aura-gateway walk-test stop` when done (it also ends by itself).",
    ),
    LedState(
        "inputs_lost",
        "A receiver (input) is lost, or buttons are silent",
        OFF,
        blink(100, 1900),
        False,
        "a short green flash every 2 s",
        "`aura-gateway status` names the input (receiver unplugged, broker down) and "
        "`aura-gateway devices` the silent buttons (battery, out of range).",
    ),
    LedState(
        "config_error",
        "A reload was refused: the config has an error; the last good one still runs",
        OFF,
        blink(1000, 1000),
        False,
        "green blinks slowly",
        "`aura-gateway check-config` prints the problem with file and line; fix it and reload.",
    ),
    LedState(
        "healthy",
        "Healthy: AURA reachable or idle, receivers heard, nothing waiting",
        OFF,
        ON,
        False,
        "green steady",
        "Nothing.",
    ),
    LedState(
        "booting",
        "Starting (until the gateway is ready, at most a few seconds)",
        OFF,
        blink(200, 200),
        False,
        "green blinks fast",
        "Wait. If it lasts, `journalctl -u aura-gateway`.",
    ),
)

BY_NAME: dict[str, LedState] = {s.name: s for s in STATES}
OFF_STATE = LedState("stopped", "The daemon is not running", OFF, OFF, False, "dark", "")

# An alarm waiting this long (uplink down) is treated as undelivered: the relay goes on.
WAITING_TOO_LONG_S = 60.0


# AURA's callout stage is free text (README, "Following"): matched by keyword, without
# case; unknown words count as "still open, no responder yet". A closed status (the
# follower's words) is over: it shows nothing while the follower closes the incident.
_ON_SCENE = ("scene", "arriv")
_ON_THE_WAY = ("dispatch", "acknowledg", "en route", "enroute", "on the way", "assigned")
Stage = Literal["callout_open", "responder_on_the_way", "on_scene", "closed"]


def stage_of(text: str | None) -> Stage:
    words = (text or "").lower()
    if words.strip() in CLOSED_STATUSES:
        return "closed"
    if any(w in words for w in _ON_SCENE):
        return "on_scene"
    if any(w in words for w in _ON_THE_WAY):
        return "responder_on_the_way"
    return "callout_open"


@dataclass(frozen=True)
class Situation:
    """The facts the LED state is decided from."""

    ready: bool = True
    undeliverable: int = 0
    abort_windows: int = 0
    pending_alarms: int = 0
    uplink: str = "unknown"
    stages: tuple[str, ...] = ()  # AURA's stage text of each open callout
    walk_test: bool = False
    walk_test_press: bool = False
    inputs_lost: tuple[str, ...] = ()  # inputs neither ok nor starting
    devices_silent: int = 0
    config_error: str | None = None
    # How long the oldest waiting alarm has waited; None: not known (the LED driver then
    # counts how long alarms have waited with the uplink down).
    oldest_pending_age_s: float | None = None


def situation(
    status: StatusModel | Mapping[str, Any], *, ready: bool = True, walk_test_press: bool = False
) -> Situation:
    """The facts from the live status model or from its ``to_dict()`` (the status file)."""
    if isinstance(status, StatusModel):
        return Situation(
            ready=ready,
            undeliverable=len(status.failed_incidents),
            abort_windows=status.abort_windows,
            pending_alarms=status.pending_alarms,
            uplink=status.uplink,
            stages=tuple(status.open_callouts.values()),
            walk_test=status.walk_test is not None,
            walk_test_press=walk_test_press,
            inputs_lost=tuple(n for n, h in status.inputs.items() if _lost(h.state)),
            devices_silent=sum(1 for h in status.devices_seen.values() if h.silent),
            config_error=status.config_error,
            oldest_pending_age_s=_age(getattr(status, "oldest_pending_alarm_age_s", None)),
        )
    uplink = status.get("uplink") or {}
    return Situation(
        ready=ready,
        undeliverable=len(status.get("undeliverable") or {}),
        abort_windows=int(status.get("abort_windows") or 0),
        pending_alarms=int(status.get("pending_alarms") or 0),
        uplink=uplink.get("state", "unknown") if isinstance(uplink, Mapping) else str(uplink),
        stages=tuple((status.get("open_callouts") or {}).values()),
        walk_test=status.get("walk_test") is not None,
        walk_test_press=walk_test_press,
        inputs_lost=tuple(
            n for n, h in (status.get("inputs") or {}).items() if _lost(h.get("state", "ok"))
        ),
        devices_silent=sum(
            1 for h in (status.get("devices_seen") or {}).values() if h.get("silent")
        ),
        config_error=status.get("config_error"),
        oldest_pending_age_s=_age(status.get("oldest_pending_alarm_age_s")),
    )


def _age(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _lost(state: str) -> bool:
    return state not in ("ok", "starting")


def choose(s: Situation) -> LedState:
    """The state with the highest priority that holds."""
    if s.undeliverable:
        return BY_NAME["undeliverable"]
    if s.abort_windows:
        return BY_NAME["abort_window"]
    if s.pending_alarms:
        # "unknown": the first try since the start is still under way.
        return BY_NAME["sending" if s.uplink in ("up", "unknown") else "queued"]
    stages = [stage for stage in map(stage_of, s.stages) if stage != "closed"]
    if stages:
        # Several callouts: the one whose help is furthest away.
        order = ("callout_open", "responder_on_the_way", "on_scene")
        return BY_NAME[min(stages, key=order.index)]
    if s.walk_test and s.walk_test_press:
        return BY_NAME["walk_test_press"]
    if s.walk_test:
        return BY_NAME["walk_test"]
    # While starting, inputs are still being opened: judged once the gateway is ready.
    if (s.ready and s.inputs_lost) or s.devices_silent:
        return BY_NAME["inputs_lost"]
    if s.config_error:
        return BY_NAME["config_error"]
    return BY_NAME["healthy" if s.ready else "booting"]


def relay_reason(s: Situation, too_long_s: float = WAITING_TOO_LONG_S) -> str | None:
    """Why the relay is on (an alarm that is not getting through), or None."""
    if s.undeliverable:
        return "undeliverable"
    if s.pending_alarms and s.uplink == "unauthorized":
        return "credentials_refused"
    age = s.oldest_pending_age_s
    if s.pending_alarms and age is not None and age >= too_long_s:
        return "waiting_too_long"
    return None


def led_state(
    status: StatusModel | Mapping[str, Any], *, ready: bool = True, walk_test_press: bool = False
) -> LedState:
    return choose(situation(status, ready=ready, walk_test_press=walk_test_press))


def readme_table() -> str:
    """The README's LED table (Markdown), from :data:`STATES`."""
    lines = [
        "| # | state | looks like | red (alarm) LED | green (status) LED | relay | what to do |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, s in enumerate(STATES, 1):
        lines.append(
            f"| {n} | **{s.name}**: {s.title} | {s.looks} | {s.alarm} | {s.status} | "
            f"{s.relay_note or ('on' if s.relay else 'off')} | {s.action} |"
        )
    return "\n".join(lines)

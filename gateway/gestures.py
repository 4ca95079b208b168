"""What a button's presses add up to: debounce, double presses, held presses, and a
cooldown after a pattern that means nothing. Pure: monotonic nanoseconds in, results out.

A press arrives with the gesture its source reported (receivers and Zigbee buttons
classify single/double/long/hold themselves) and, where the source says how long the
button was held, that duration. For a button that reports raw clicks only
(``compose_double``), two single presses within the device type's double window are a
double press; that is only waited for when the type gives a double a meaning, so a
single-press panic button raises at once.

State changes are returned, not applied: the engine installs them only once the press is
in the journal, so a refused write leaves the tracker as it was and the resend is judged
afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gateway.config.models import DeviceType, Gesture

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Track:
    """One device's pattern state."""

    last_ns: int | None = None  # the last press heard (debounce)
    pending_key: str | None = None  # a single press waiting to become a double
    pending_until_ns: int = 0
    double_at_ns: int | None = None  # the last double press (a third press is invalid)
    cooldown_until_ns: int = 0


EMPTY = Track()


@dataclass(frozen=True, slots=True)
class Recognised:
    """A gesture, now; ``merged`` names an earlier held press it completes."""

    gesture: Gesture
    merged: str | None = None
    kind: Literal["gesture"] = "gesture"


@dataclass(frozen=True, slots=True)
class Wait:
    """A single press that may still become a double: decided at ``until_ns``."""

    until_ns: int
    kind: Literal["wait"] = "wait"


@dataclass(frozen=True, slots=True)
class Dropped:
    """Not a gesture: contact bounce, inside a cooldown, or a pattern that means nothing
    (``merged``: the held press it ends, also for nothing)."""

    reason: str
    merged: str | None = None
    kind: Literal["dropped"] = "dropped"


Result = Recognised | Wait | Dropped


def uses_double(dtype: DeviceType) -> bool:
    """Singles wait for a possible second press only where the gateway composes doubles
    itself and the type gives a double a meaning."""
    return dtype.compose_double and (
        "double" in dtype.raise_gestures or "double" in dtype.cancel_gestures
    )


def classify_hold(held_s: float, dtype: DeviceType) -> Gesture:
    """A press whose source measured how long it was held."""
    # A nanosecond of slack: 3 x 0.8 is 2.4000000000000004 in floating point.
    if held_s >= 3 * dtype.long_press_s - 1e-9:
        return "hold"
    if held_s >= dtype.long_press_s - 1e-9:
        return "long"
    return "single"


def recognise(
    track: Track,
    dtype: DeviceType,
    *,
    key: str,
    reported: Gesture,
    held_s: float | None,
    now_ns: int,
    counted: bool = False,
) -> tuple[Result, Track]:
    """The result of one press and the device's state after it. ``counted``: the button
    numbered it, so it is a press of its own, never a bounce (a receiver delivering a
    burst after a replug stamps several presses within microseconds)."""
    bounce = track.last_ns is not None and now_ns - track.last_ns < dtype.debounce_s * NS
    if bounce and not counted:
        assert track.last_ns is not None
        ms = (now_ns - track.last_ns) / 1e6
        return Dropped(f"contact bounce: {ms:.0f} ms after the previous press"), track
    heard = replace(track, last_ns=now_ns)
    if now_ns < track.cooldown_until_ns:
        left = (track.cooldown_until_ns - now_ns) / NS
        return Dropped(f"in the cooldown after a meaningless pattern ({left:.1f} s left)"), heard
    gesture = classify_hold(held_s, dtype) if held_s is not None else reported
    if gesture != "single" or not uses_double(dtype):
        return Recognised(gesture), replace(heard, pending_key=None, double_at_ns=None)
    window = int(dtype.double_window_s * NS)
    if track.pending_key is not None and now_ns <= track.pending_until_ns:
        done = replace(heard, pending_key=None, pending_until_ns=0, double_at_ns=now_ns)
        return Recognised("double", merged=track.pending_key), done
    if track.double_at_ns is not None and now_ns - track.double_at_ns <= window:
        # A third press right after a double: someone fiddling, not a signal.
        cooled = replace(
            heard,
            double_at_ns=None,
            cooldown_until_ns=now_ns + int(dtype.cooldown_s * NS),
        )
        return Dropped("three or more quick presses: not a pattern this button uses"), cooled
    waiting = replace(heard, pending_key=key, pending_until_ns=now_ns + window, double_at_ns=None)
    return Wait(now_ns + window), waiting


def expire(track: Track, now_ns: int) -> tuple[str | None, Track]:
    """The held single press whose double window has passed (it stays a single)."""
    if track.pending_key is not None and now_ns > track.pending_until_ns:
        return track.pending_key, replace(track, pending_key=None, pending_until_ns=0)
    return None, track

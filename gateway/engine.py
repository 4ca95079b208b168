"""The engine: pure decisions about what a signal means. No I/O, no wall clock.

It takes a press, the device registry and the monotonic clock, and answers with a
decision and its reason. The daemon stores the decision in the journal and only then
tells the engine to ``apply`` it, so a write that fails leaves the engine unchanged.

Some presses cannot be decided at once: a single press on a button that also knows a
double press (is a second one coming?), and a raise inside its abort window (will the
person cancel?). Those are stored as held; a later press or the window's end resolves
them (``expire``), and the daemon sleeps exactly until ``next_deadline_ns``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gateway import gestures
from gateway.config import Config
from gateway.config.models import (
    CustomerDevice,
    Device,
    DeviceType,
    EventDevice,
    FixedLocation,
    Gesture,
    SiteDevice,
)
from gateway.gestures import EMPTY, Track
from gateway.journal import NewIncident, Resolution, held_key
from gateway.signals import BOOT_ID, GATEWAY_FIX, Fix, Press

NS = 1_000_000_000
# A device's pattern state before and after a press: installed by ``apply``.
TrackChange = tuple[str, Track, Track]


@dataclass(frozen=True, slots=True)
class Raise:
    """Open a new incident and queue its create-callout request."""

    incident: NewIncident
    reason: str
    kind: Literal["raise"] = "raise"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class Attach:
    """A further press while this customer's incident is open: record it there."""

    incident_id: str
    reason: str
    kind: Literal["attach"] = "attach"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel gesture while this customer's incident is open: withdraw it."""

    incident_id: str
    key: str
    reason: str
    kind: Literal["cancel"] = "cancel"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class Ignore:
    """Recorded and counted, never sent (unknown device, non-raising gesture, bounce)."""

    reason: str
    kind: Literal["ignore"] = "ignore"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Stored, decided later: ``pattern`` (a double may follow) or ``abort`` (a raise
    waiting out its abort window; ``pending`` is the incident it will open)."""

    key: str
    device_id: str
    incident_key: str
    hold: Literal["pattern", "abort"]
    until_ns: int
    reason: str
    pending: NewIncident | None = None
    kind: Literal["hold"] = "hold"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class Withdraw:
    """A cancel gesture inside an abort window: the held raise is never sent."""

    reason: str
    kind: Literal["withdraw"] = "withdraw"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


@dataclass(frozen=True, slots=True)
class WalkTest:
    """A press during a walk test: recorded for the report, never raised."""

    reason: str
    kind: Literal["walk_test"] = "walk_test"
    resolves: tuple[Resolution, ...] = ()
    track: TrackChange | None = None


Decision = Raise | Attach | Cancel | Ignore | Hold | Withdraw | WalkTest


def incident_key(device: Device) -> str:
    """One open incident per customer, site or AURA device: AURA dedups per customer too."""
    if isinstance(device, CustomerDevice):
        return f"customer:{device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site:{device.site_ref}"
    return f"device:{device.aura_device_id}"


def new_incidents(decision: Decision) -> list[NewIncident]:
    """Every incident a decision opens: its own raise and any held raise it releases."""
    found = [decision.incident] if isinstance(decision, Raise) else []
    found += [r.new_incident for r in decision.resolves if r.new_incident is not None]
    return found


@dataclass(frozen=True, slots=True)
class LocationChoice:
    """The one location AURA gets (live coordinates or a fixed site), and why."""

    location: dict[str, float] | None
    predefined_location_id: int | None
    reason: str
    # Said to the control room with the callout when the location is not a live one.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Held:
    press: Press
    incident_key: str
    hold: Literal["pattern", "abort"]
    until_ns: int
    pending: NewIncident | None


@dataclass(frozen=True, slots=True)
class WalkTestScope:
    """Presses from these devices are recorded, not raised, until ``until_ns``."""

    device_id: str | None  # None: every device
    until_ns: int
    started_ns: int
    started_wall: float

    def covers(self, device: Device, now_ns: int) -> bool:
        return now_ns < self.until_ns and self.device_id in (None, device.id)


@dataclass
class _State:
    open: dict[str, str] = field(default_factory=dict)  # incident key -> incident id
    tracks: dict[str, Track] = field(default_factory=dict)  # device -> pattern state
    held: dict[str, Held] = field(default_factory=dict)  # dedup key -> held press
    pending_raise: dict[str, str] = field(default_factory=dict)  # incident key -> dedup key

    def copy(self) -> _State:
        return _State(dict(self.open), dict(self.tracks), dict(self.held), dict(self.pending_raise))


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        open_incidents: dict[str, str] | None = None,
        fixes: Iterable[Fix] = (),
        clock_ns: Callable[[], int],
    ) -> None:
        self.config = config
        self._s = _State(open=dict(open_incidents or {}))
        self._fixes: dict[str, Fix] = {}
        self._clock_ns = clock_ns
        self.walk_test: WalkTestScope | None = None
        for fix in fixes:
            self.apply_fix(fix)

    # ------------------------------------------------------------------ presses

    def decide(self, press: Press) -> Decision:
        """What this press means. Pure: nothing changes until ``apply``."""
        device = self.config.device(press.device_id)
        if device is None:
            return Ignore(f"unknown device {press.device_id}: not in the device registry")
        now = press.stamp.mono_ns
        scope = self.walk_test
        if scope is not None and scope.covers(device, self._clock_ns()):
            choice = self.choose_location(device)
            return WalkTest(
                f"walk test: {press.gesture} press from {device.id} recorded, not raised "
                f"({_target(device)}; location: {choice.reason})"
            )
        dtype = self.config.device_type(device)
        before = self._s.tracks.get(device.id, EMPTY)
        result, after = gestures.recognise(
            before, dtype, key=held_key(press), reported=press.gesture, held_s=press.held_s,
            now_ns=now, counted=press.counter is not None,
        )  # fmt: skip
        track = (device.id, before, after)
        if isinstance(result, gestures.Dropped):
            merged = (Resolution(result.merged, "ignore", result.reason),) if result.merged else ()
            return Ignore(result.reason, resolves=merged, track=track)
        if isinstance(result, gestures.Wait):
            return Hold(
                held_key(press),
                device.id,
                incident_key(device),
                "pattern",
                result.until_ns,
                f"single press from {device.id}: waiting {dtype.double_window_s:g} s for a "
                "second one (double press)",
                track=track,
            )
        decision = self._decide_gesture(device, dtype, result.gesture, press, now, result.merged)
        if result.merged is not None:
            first = Resolution(
                result.merged,
                "double",
                "first press of a double press",
                incident_id=_incident_of(decision),
            )
            decision = replace(decision, resolves=(first, *decision.resolves))
        return replace(decision, track=track)

    def decide_again(self, press: Press) -> Decision:
        """A stored press decided afresh (its callout ended before it was covered): its
        gesture as recognised then, no pattern, no abort window: it is late already."""
        device = self.config.device(press.device_id)
        if device is None:
            return Ignore(f"unknown device {press.device_id}: not in the device registry")
        dtype = self.config.device_type(device)
        return self._decide_gesture(device, dtype, press.gesture, press, None)

    def _decide_gesture(
        self,
        device: Device,
        dtype: DeviceType,
        gesture: Gesture,
        press: Press,
        now: int | None,
        merged: str | None = None,
    ) -> Decision:
        key = incident_key(device)
        open_id = self._s.open.get(key)
        held_raise = self._s.pending_raise.get(key)
        if gesture in dtype.cancel_gestures:
            # Presses of this customer still waiting to see if they are a double would
            # raise after the cancel: they go with it (not the first half of this press).
            own = held_key(press)
            waiting = [
                k
                for k, h in self._s.held.items()
                if h.hold == "pattern"
                and h.incident_key == key
                and k not in (own, merged)
                # Only presses made before this one: a later one is a new emergency.
                and h.press.stamp.mono_ns <= press.stamp.mono_ns
            ]
            why_waiting = f"{gesture} press from {device.id} withdraws the press it follows"
            withdrawn = tuple(Resolution(k, "withdrawn", why_waiting) for k in waiting)
            if held_raise is not None:
                why = (
                    f"{gesture} press from {device.id} within the abort window: the alarm is "
                    "withdrawn, nothing was sent"
                )
                return Withdraw(
                    why, resolves=(Resolution(held_raise, "withdrawn", why), *withdrawn)
                )
            if open_id is not None:
                return Cancel(
                    open_id,
                    key,
                    f"{gesture} press from {device.id} cancels {open_id}",
                    resolves=withdrawn,
                )
            if withdrawn:
                return Withdraw(why_waiting, resolves=withdrawn)
            return Ignore(f"cancel gesture {gesture} with no open incident for {key}")
        if gesture not in dtype.raise_gestures:
            return Ignore(
                f"gesture {gesture} does not raise for type {device.type}"
                f" (raises on {', '.join(dtype.raise_gestures)})"
            )
        if open_id is not None:
            return Attach(open_id, f"{key} already has open incident {open_id}")
        if held_raise is not None:
            # Pressed again inside the abort window: the person means it, send it now.
            pending = self._s.held[held_raise].pending
            assert pending is not None
            release = Resolution(
                held_raise,
                "raise",
                "raised before its abort window ended: pressed again",
                new_incident=pending,
            )
            return Attach(pending.id, "pressed again within the abort window", resolves=(release,))
        new = self._new_incident(device)
        if now is not None and dtype.abort_window_s > 0:
            return Hold(
                held_key(press),
                device.id,
                key,
                "abort",
                now + int(dtype.abort_window_s * NS),
                f"{gesture} press from {device.id} raises for {key} after a "
                f"{dtype.abort_window_s:g} s abort window",
                pending=new,
            )
        return Raise(new, reason=f"{gesture} press from {device.id} raises for {key}")

    def _new_incident(self, device: Device) -> NewIncident:
        choice = self.choose_location(device)
        return NewIncident(
            key=incident_key(device),
            device_id=device.id,
            route=device.route,
            request=build_raise_request(device, choice),
            location_reason=choice.reason,
            note=choice.note,
        ).with_id()

    def apply(self, decision: Decision, press: Press | None = None) -> None:
        """Install a decision once it is in the journal (``press``: the press it was for,
        needed to hold it)."""
        s = self._s
        if decision.track is not None:
            device_id, _, after = decision.track
            s.tracks[device_id] = after
        for resolution in decision.resolves:
            self._resolved(resolution)
        if isinstance(decision, Raise):
            s.open[decision.incident.key] = decision.incident.id
        elif isinstance(decision, Cancel):
            # Withdrawn: a press after this is a new emergency, not part of the old one.
            self.incident_ended(decision.incident_id)
        elif isinstance(decision, Hold):
            assert press is not None
            s.held[decision.key] = Held(
                press, decision.incident_key, decision.hold, decision.until_ns, decision.pending
            )
            if decision.hold == "abort":
                s.pending_raise[decision.incident_key] = decision.key

    def _resolved(self, resolution: Resolution) -> None:
        s = self._s
        held = s.held.pop(resolution.key, None)
        if held is not None and s.pending_raise.get(held.incident_key) == resolution.key:
            del s.pending_raise[held.incident_key]
        if held is not None and held.hold == "pattern":
            track = s.tracks.get(held.press.device_id)
            if track is not None and track.pending_key == resolution.key:
                s.tracks[held.press.device_id] = replace(
                    track, pending_key=None, pending_until_ns=0
                )
        if resolution.new_incident is not None:
            s.open[resolution.new_incident.key] = resolution.new_incident.id

    def snapshot(self) -> _State:
        """The engine's decision state, to put back if a journal write fails."""
        return self._s.copy()

    def restore(self, state: _State) -> None:
        self._s = state

    def now_ns(self) -> int:
        return self._clock_ns()

    def incident_ended(self, incident_id: str) -> None:
        for key, open_id in list(self._s.open.items()):
            if open_id == incident_id:
                del self._s.open[key]

    def open_incident(self, key: str) -> str | None:
        return self._s.open.get(key)

    # ------------------------------------------------------------------ held presses

    def abort_windows(self) -> int:
        """How many raises wait out their abort window now (the status LEDs show it)."""
        return sum(1 for h in self._s.held.values() if h.hold == "abort")

    def next_deadline_ns(self) -> int | None:
        """When the next held press is due (None: nothing is held)."""
        times = [h.until_ns for h in self._s.held.values()]
        return min(times) if times else None

    def expire(self, now_ns: int) -> list[Resolution]:
        """Decide the held presses whose window has passed, in the order they were held.
        Applied provisionally: take a ``snapshot`` first and ``restore`` it if the journal
        refuses the resolutions."""
        out: list[Resolution] = []
        due = sorted(
            (h for h in self._s.held.values() if h.until_ns < now_ns or h.until_ns == 0),
            key=lambda h: (h.until_ns, h.press.stamp.mono_ns),
        )
        for held in due:
            key = held_key(held.press)
            if key not in self._s.held:
                continue  # resolved by an earlier one in this round
            device = self.config.device(held.press.device_id)
            if held.hold == "abort" and held.pending is not None:
                # The alarm was decided when pressed: a reload that removed the button
                # since then does not take it back.
                out.extend(self._release(held, device))
                continue
            if device is None:  # removed from the registry by a reload
                out.append(self._settle(Resolution(key, "ignore", "device no longer configured")))
                continue
            if held.hold == "abort":
                out.extend(self._release(held, device))
                continue
            dtype = self.config.device_type(device)
            track = self._s.tracks.get(device.id, EMPTY)
            _, self._s.tracks[device.id] = gestures.expire(track, max(now_ns, held.until_ns + 1))
            decision = self._decide_gesture(device, dtype, "single", held.press, now_ns)
            out.extend(self._as_resolutions(key, decision))
        return out

    def _release(self, held: Held, device: Device | None) -> list[Resolution]:
        key = held_key(held.press)
        open_id = self._s.open.get(held.incident_key)
        if open_id is not None:  # another button of the same customer raised meanwhile
            why = f"abort window ended; {held.incident_key} already has open incident {open_id}"
            return [self._settle(Resolution(key, "attach", why, incident_id=open_id))]
        assert held.pending is not None or device is not None
        pending = held.pending or self._new_incident(device)  # type: ignore[arg-type]
        why = "abort window ended without a cancel: raised"
        return [self._settle(Resolution(key, "raise", why, new_incident=pending))]

    def _as_resolutions(self, key: str, decision: Decision) -> list[Resolution]:
        out = [self._settle(r) for r in decision.resolves]
        if isinstance(decision, Hold):  # a single that now waits out its abort window
            held = self._s.held[key]
            self._s.held[key] = Held(
                held.press, decision.incident_key, "abort", decision.until_ns, decision.pending
            )
            self._s.pending_raise[decision.incident_key] = key
            out.append(Resolution(key, "held_abort", decision.reason))
            return out
        new = decision.incident if isinstance(decision, Raise) else None
        own = Resolution(key, decision.kind, decision.reason, _incident_of(decision), new)
        out.append(self._settle(own))
        if isinstance(decision, Cancel):
            self.incident_ended(decision.incident_id)
        return out

    def _settle(self, resolution: Resolution) -> Resolution:
        self._resolved(resolution)
        return resolution

    def adopt_held(self, presses: Iterable[tuple[Press, str]]) -> None:
        """Presses held when the gateway stopped (``held_pattern`` / ``held_abort``): their
        windows continue if this is the same boot, else they are due at once."""
        for press, decision in presses:
            device = self.config.device(press.device_id)
            if device is None:
                self._s.held[held_key(press)] = Held(press, "", "pattern", 0, None)
                continue
            dtype = self.config.device_type(device)
            same_boot = press.stamp.boot_id == BOOT_ID
            if decision == "held_abort":
                until = press.stamp.mono_ns + int(dtype.abort_window_s * NS) if same_boot else 0
                held = Held(press, incident_key(device), "abort", until, self._new_incident(device))
                self._s.pending_raise[held.incident_key] = held_key(press)
            else:
                until = press.stamp.mono_ns + int(dtype.double_window_s * NS) if same_boot else 0
                held = Held(press, incident_key(device), "pattern", until, None)
                self._s.tracks[device.id] = Track(
                    last_ns=press.stamp.mono_ns if same_boot else None,
                    pending_key=held_key(press),
                    pending_until_ns=until,
                )
            self._s.held[held_key(press)] = held

    # ------------------------------------------------------------------ walk test

    def start_walk_test(self, device_id: str | None, minutes: float, wall: float) -> WalkTestScope:
        now = self._clock_ns()
        self.walk_test = WalkTestScope(device_id, now + int(minutes * 60 * NS), now, wall)
        return self.walk_test

    def stop_walk_test(self) -> WalkTestScope | None:
        scope, self.walk_test = self.walk_test, None
        return scope

    def walk_test_active(self) -> WalkTestScope | None:
        scope = self.walk_test
        if scope is not None and self._clock_ns() >= scope.until_ns:
            return None
        return scope

    # ------------------------------------------------------------------ location

    def apply_fix(self, fix: Fix) -> None:
        key = fix.device_id.lower()
        current = self._fixes.get(key)
        if current is None:
            self._fixes[key] = fix
        elif fix.stamp.boot_id == current.stamp.boot_id:
            if fix.taken_mono_ns >= current.taken_mono_ns:
                self._fixes[key] = fix
        elif fix.stamp.boot_id == BOOT_ID:
            self._fixes[key] = fix  # this boot's fix beats any from an earlier boot

    def gateway_fix_lost(self) -> None:
        """gpsd reports no usable fix: the gateway's position is unknown from now on."""
        self._fixes.pop(GATEWAY_FIX, None)

    def fresh_fix(self, device_id: str) -> Fix | None:
        """The device's newest fix if it is recent enough to send a responder to."""
        fix = self._fixes.get(device_id.lower())
        if fix is None or not self._is_fresh(fix):
            return None
        return fix

    def live_fix(self, device: Device) -> tuple[Fix, str] | None:
        """The live position of a device now, and where it comes from: its own fresh fix,
        else the gateway's gpsd fix when it travels with the gateway. Never a stale one."""
        if self.config.device_type(device).has_gps:
            fix = self.fresh_fix(device.id)
            if fix is not None:
                return fix, "device"
        if device.travels_with_gateway:
            fix = self.fresh_fix(GATEWAY_FIX)
            if fix is not None:
                return fix, "gateway GPS"
        return None

    def _is_fresh(self, fix: Fix) -> bool:
        if fix.stamp.boot_id != BOOT_ID:
            return False  # taken before this boot: its monotonic time means nothing now
        age_s = (self._clock_ns() - fix.taken_mono_ns) / 1e9
        return age_s <= self.config.gateway.gateway.max_fix_age_s

    def choose_location(self, device: Device) -> LocationChoice:
        """The one location AURA gets at raise time (live coordinates or a fixed site,
        never both), best first, with the reason recorded on the incident."""
        if isinstance(device, SiteDevice):
            return LocationChoice(None, None, f"fixed site {device.site_ref} (site route)")
        if isinstance(device, CustomerDevice) and isinstance(device.location, FixedLocation):
            pid = device.location.predefined_location_id
            return LocationChoice(None, pid, f"fixed location {pid} (device policy)")
        live = self.live_fix(device)
        if live is not None:
            fix, source = live
            age = max(0.0, (self._clock_ns() - fix.taken_mono_ns) / 1e9)
            return LocationChoice(
                _coords(fix), None, f"fresh {source} fix ({age:.0f} s old, ±{fix.accuracy_m:.0f} m)"
            )
        fallback = (
            device.location.fallback_location_id if isinstance(device, CustomerDevice) else None
        )
        if fallback is not None:
            return LocationChoice(
                None, fallback, f"no fresh live fix: fixed location {fallback} (device fallback)"
            )
        position = self.config.gateway.gateway.position
        if position is not None:
            return LocationChoice(
                {
                    "latitude": position.latitude,
                    "longitude": position.longitude,
                    "accuracy": position.accuracy,
                },
                None,
                "no fresh live fix: gateway's surveyed position",
                note="No live position was available when the button was pressed; the "
                "location given is the gateway's installed position.",
            )
        stale = self._last_known(device)
        if stale is not None:
            fix, source = stale
            return LocationChoice(
                _coords(fix),
                None,
                f"no fresh live fix: {source}'s last known fix",
                note=f"No live position was available when the button was pressed; the "
                f"location given is the {source}'s last known position, which may be out of date.",
            )
        return LocationChoice(
            None,
            None,
            "no location known",
            note="No position was known for this button when it was pressed.",
        )

    def _last_known(self, device: Device) -> tuple[Fix, str] | None:
        """Best information when nothing is fresh: the newest fix of this boot, if any."""
        candidates = []
        if self.config.device_type(device).has_gps and device.id in self._fixes:
            candidates.append((self._fixes[device.id], "button"))
        if device.travels_with_gateway and GATEWAY_FIX in self._fixes:
            candidates.append((self._fixes[GATEWAY_FIX], "gateway GPS"))
        if not candidates:
            return None
        return max(candidates, key=lambda c: (c[0].stamp.boot_id == BOOT_ID, c[0].taken_mono_ns))


def _coords(fix: Fix) -> dict[str, float]:
    return {"latitude": fix.latitude, "longitude": fix.longitude, "accuracy": fix.accuracy_m}


def build_raise_request(device: Device, choice: LocationChoice) -> dict[str, Any]:
    """Freeze the create request at press time: a retry after a crash sends the same."""
    if isinstance(device, CustomerDevice):
        body: dict[str, Any] = {"responseTypeId": device.response_type_id}
        if device.callout_classification_id is not None:
            body["calloutClassificationId"] = device.callout_classification_id
        # AURA takes live coordinates or predefinedLocationId, never both.
        if choice.predefined_location_id is not None:
            body["predefinedLocationId"] = choice.predefined_location_id
        else:
            body["location"] = choice.location
        return {"route": "customer", "customer_id": device.customer_id, "body": body}
    if isinstance(device, SiteDevice):
        body = {}
        if device.response_type_id is not None:
            body["responseTypeId"] = device.response_type_id
        if device.callout_classification_id is not None:
            body["calloutClassificationId"] = device.callout_classification_id
        if device.installer_identifier:
            body["installerIdentifier"] = device.installer_identifier
        return {
            "route": "site",
            "site_ref": device.site_ref,
            "predefined_location_id": device.predefined_location_id,
            "body": body,
        }
    assert isinstance(device, EventDevice)
    body = {
        "device_id": device.aura_device_id,
        "device_type_id": device.device_type_id,
        "message_type": device.raise_message_type,
    }
    if choice.location is not None:
        body["location"] = choice.location
    return {"route": "device", "body": body}


def _incident_of(decision: Decision) -> str | None:
    if isinstance(decision, Raise):
        return decision.incident.id
    if isinstance(decision, Attach | Cancel):
        return decision.incident_id
    return None


def _target(device: Device) -> str:
    if isinstance(device, CustomerDevice):
        return f"customer {device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site {device.site_ref}"
    return f"AURA device {device.aura_device_id}"

"""The engine: pure decisions about what a signal means. No I/O, no wall clock.

It takes a press, the device registry and the monotonic clock, and answers with a
decision and its reason. The daemon stores the decision in the journal and only then
tells the engine to ``apply`` it, so a write that fails leaves the engine unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import Config
from gateway.config.models import CustomerDevice, Device, EventDevice, FixedLocation, SiteDevice
from gateway.journal import NewIncident
from gateway.signals import BOOT_ID, GATEWAY_FIX, Fix, Press


@dataclass(frozen=True, slots=True)
class Raise:
    """Open a new incident and queue its create-callout request."""

    incident: NewIncident
    reason: str
    kind: Literal["raise"] = "raise"


@dataclass(frozen=True, slots=True)
class Attach:
    """A further press while this customer's incident is open: record it there."""

    incident_id: str
    reason: str
    kind: Literal["attach"] = "attach"


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel gesture while this customer's incident is open: withdraw it."""

    incident_id: str
    key: str
    reason: str
    kind: Literal["cancel"] = "cancel"


@dataclass(frozen=True, slots=True)
class Ignore:
    """Recorded and counted, never sent (unknown device, non-raising gesture)."""

    reason: str
    kind: Literal["ignore"] = "ignore"


Decision = Raise | Attach | Cancel | Ignore


def incident_key(device: Device) -> str:
    """One open incident per customer, site or AURA device: AURA dedups per customer too."""
    if isinstance(device, CustomerDevice):
        return f"customer:{device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site:{device.site_ref}"
    return f"device:{device.aura_device_id}"


@dataclass(frozen=True, slots=True)
class LocationChoice:
    """The one location AURA gets (live coordinates or a fixed site), and why."""

    location: dict[str, float] | None
    predefined_location_id: int | None
    reason: str
    # Said to the control room with the callout when the location is not a live one.
    note: str | None = None


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
        self._open: dict[str, str] = dict(open_incidents or {})
        self._fixes: dict[str, Fix] = {}
        self._clock_ns = clock_ns
        for fix in fixes:
            self.apply_fix(fix)

    # ------------------------------------------------------------------ presses

    def decide(self, press: Press) -> Decision:
        device = self.config.device(press.device_id)
        if device is None:
            return Ignore(f"unknown device {press.device_id}: not in the device registry")
        dtype = self.config.device_type(device)
        key = incident_key(device)
        open_id = self._open.get(key)
        if press.gesture in dtype.cancel_gestures:
            if open_id is None:
                return Ignore(f"cancel gesture {press.gesture} with no open incident for {key}")
            return Cancel(open_id, key, f"{press.gesture} press from {device.id} cancels {open_id}")
        if press.gesture not in dtype.raise_gestures:
            return Ignore(
                f"gesture {press.gesture} does not raise for type {device.type}"
                f" (raises on {', '.join(dtype.raise_gestures)})"
            )
        if open_id is not None:
            return Attach(open_id, f"{key} already has open incident {open_id}")
        choice = self.choose_location(device)
        request = build_raise_request(device, choice)
        return Raise(
            NewIncident(
                key=key,
                device_id=device.id,
                route=device.route,
                request=request,
                location_reason=choice.reason,
                note=choice.note,
            ).with_id(),
            reason=f"{press.gesture} press from {device.id} raises for {key}",
        )

    def apply(self, decision: Decision) -> None:
        if isinstance(decision, Raise):
            self._open[decision.incident.key] = decision.incident.id
        elif isinstance(decision, Cancel):
            # Withdrawn: a press after this is a new emergency, not part of the old one.
            self.incident_ended(decision.incident_id)

    def undo(self, decision: Decision) -> None:
        """Take back a decision applied ahead of a journal write that then failed."""
        if isinstance(decision, Raise):
            self.incident_ended(decision.incident.id)
        elif isinstance(decision, Cancel):
            self._open[decision.key] = decision.incident_id

    def incident_ended(self, incident_id: str) -> None:
        for key, open_id in list(self._open.items()):
            if open_id == incident_id:
                del self._open[key]

    def open_incident(self, key: str) -> str | None:
        return self._open.get(key)

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

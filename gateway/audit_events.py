"""What goes into the audit trail, built from the daemon's own objects.

The router and the AURA client call these with the ``record`` of ``gateway.audit``
(``None``: no audit, nothing built). Each builds small fresh dicts and hands them over;
redaction, hashing and the disk are the audit writer's business, on its own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.aura.client import Exchange
from gateway.engine import Attach, Cancel, Decision, Hold, Raise
from gateway.journal import NewIncident, Resolution
from gateway.signals import Press

Sink = Callable[[str, dict[str, Any]], None]


def press_data(press: Press, verdict: str) -> dict[str, Any]:
    return {
        "device": press.device_id,
        "source": press.source,
        "gesture": press.gesture,
        "verdict": verdict,
        "counter": press.counter,
        "authenticated": press.authenticated,
        "frame": press.frame_key,
        "battery_pct": press.battery_pct,
        "rssi_dbm": press.rssi_dbm,
        "held_s": press.held_s,
        "pressed_wall": press.stamp.wall,
        "wall_trusted": press.stamp.wall_trusted,
        "pressed_mono_ns": press.stamp.mono_ns,
    }


def location_data(incident: NewIncident, why: str | None = None) -> dict[str, Any]:
    """The location the create request carries, and why the engine chose it."""
    request = incident.request
    body = request.get("body") or {}
    data: dict[str, Any] = {
        "incident": incident.id,
        "device": incident.device_id,
        "route": incident.route,
        "reason": incident.location_reason,
        "location": body.get("location"),
        "predefined_location_id": body.get("predefinedLocationId")
        or request.get("predefined_location_id"),
        "note": incident.note,
    }
    if why is not None:
        data["raised_because"] = why
    return data


def record_press(
    sink: Sink | None, press: Press, decision: Decision, incident_id: str | None
) -> None:
    """A stored press, the engine's decision with its reason, and the location chosen."""
    if sink is None:
        return
    sink("press", press_data(press, "stored"))
    kind = f"held_{decision.hold}" if isinstance(decision, Hold) else decision.kind
    data: dict[str, Any] = {
        "device": press.device_id,
        "decision": kind,
        "reason": decision.reason,
        "incident": incident_id,
    }
    if isinstance(decision, Hold):
        data["until_s"] = round((decision.until_ns - press.stamp.mono_ns) / 1e9, 3)
    if isinstance(decision, Attach | Cancel):
        data["incident"] = decision.incident_id
    sink("decision", data)
    if isinstance(decision, Raise):
        sink("location", location_data(decision.incident))
    record_resolutions(sink, decision.resolves)


def record_repeat(sink: Sink | None, press: Press, verdict: str) -> None:
    """A replay is worth a record (never a callout); a radio repeat or a receiver's
    resend is the press already recorded, and only counted."""
    if sink is not None and verdict == "replay":
        sink("press", press_data(press, verdict))


def record_resolutions(sink: Sink | None, resolutions: Iterable[Resolution]) -> None:
    """Held presses decided later (a second press, a cancel, the window's end)."""
    if sink is None:
        return
    for r in resolutions:
        new = r.new_incident
        sink(
            "decision",
            {
                "held": r.key,
                "decision": r.decision,
                "reason": r.reason,
                "incident": r.incident_id or (new.id if new is not None else None),
            },
        )
        if new is not None:
            sink("location", location_data(new))


def record_promoted(sink: Sink | None, press: Press, incident: NewIncident, why: str) -> None:
    """A press attached to a callout that had already ended, raised as its own."""
    if sink is None:
        return
    sink(
        "decision",
        {"device": press.device_id, "decision": "raise", "reason": why, "incident": incident.id},
    )
    sink("location", location_data(incident, why))


def exchange_recorder(sink: Sink) -> Callable[[Exchange], None]:
    """An ``AuraClient`` observer writing every request and answer (redacted by the
    writer: the token request's secret and the token in the answer never reach disk)."""

    def observe(exchange: Exchange) -> None:
        data: dict[str, Any] = {"method": exchange.method, "path": exchange.path}
        if exchange.phase == "request":
            data["body"] = exchange.body
            sink("aura_request", data)
            return
        data["status"] = exchange.status
        data["elapsed_ms"] = round((exchange.elapsed_s or 0.0) * 1000, 2)
        if exchange.error_class is not None:
            data["error_class"] = exchange.error_class
        if exchange.error is not None:
            data["error"] = exchange.error
        data["body"] = exchange.body
        sink("aura_response", data)

    return observe

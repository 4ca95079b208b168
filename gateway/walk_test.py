"""Walk test: a technician presses every button to check it reaches the gateway, and no
callout is raised while doing so.

It covers one device or the whole gateway, ends by itself after its minutes, and ends
with the daemon: a restart never leaves buttons silenced (a real alarm after a crash must
raise). Presses are stored with decision ``walk_test`` and reported from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.config.models import CustomerDevice, Device, SiteDevice
from gateway.control import ControlError, Handler
from gateway.engine import Engine, WalkTestScope
from gateway.journal import AsyncJournal
from gateway.status import StatusModel
from gateway.waits import wait_event

logger = logging.getLogger(__name__)

MAX_MINUTES = 240.0


@dataclass
class _Run:
    scope: WalkTestScope
    first_press_id: int  # presses after this row belong to the walk test
    ended_wall: float | None = None


class WalkTests:
    def __init__(self, journal: AsyncJournal, engine: Engine, status: StatusModel) -> None:
        self.journal = journal
        self.engine = engine
        self.status = status
        self.last: _Run | None = None
        self._changed = asyncio.Event()

    def handlers(self) -> dict[str, Handler]:
        return {
            "walk_test_start": self.start,
            "walk_test_stop": self.stop,
            "walk_test_report": self.report,
        }

    async def start(self, request: dict[str, Any]) -> dict[str, Any]:
        device_id = request.get("device")
        if device_id is not None:
            device_id = str(device_id).lower()
            if self.engine.config.device(device_id) is None:
                raise ControlError(f"no device {device_id!r} in the registry")
        try:
            minutes = float(request.get("minutes") or 30)
        except (TypeError, ValueError):
            raise ControlError("minutes must be a number") from None
        if not 0 < minutes <= MAX_MINUTES:
            raise ControlError(f"minutes must be above 0 and at most {MAX_MINUTES:g}")
        first = await self.journal.call(lambda j: j.last_press_id())
        scope = self.engine.start_walk_test(device_id, minutes, time.time())
        self.last = _Run(scope, first)
        self._show(scope)
        self._changed.set()
        what = f"device {device_id}" if device_id else "every device"
        logger.warning("event=walk_test_started scope=%s minutes=%g", device_id or "all", minutes)
        return {"result": f"walk test on {what} for {minutes:g} min: presses raise no callout"}

    async def stop(self, request: dict[str, Any]) -> dict[str, Any]:
        scope = self.engine.stop_walk_test()
        if scope is None:
            raise ControlError("no walk test is running")
        self._ended()
        return {"result": "walk test ended: presses raise callouts again"}

    async def report(self, request: dict[str, Any]) -> dict[str, Any]:
        run = self.last
        if run is None:
            raise ControlError("no walk test since the gateway started")
        rows = await self.journal.call(lambda j: j.walk_test_presses(run.first_press_id))
        active = self.engine.walk_test_active() is not None
        return {
            "result": "walk test report",
            "report": {
                "scope": run.scope.device_id or "all",
                "started_wall": run.scope.started_wall,
                "ended_wall": run.ended_wall,
                "active": active,
                "presses": [self._row(r) for r in rows],
            },
        }

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        device = self.engine.config.device(row["device_id"])
        seen = self.status.devices_seen.get(row["device_id"])
        out: dict[str, Any] = {
            "device": row["device_id"],
            "label": device.label if device is not None else None,
            "goes_to": _target(device) if device is not None else "unknown device",
            "gesture": row["gesture"],
            "rssi_dbm": row["rssi_dbm"],
            "battery_pct": row["battery_pct"],
            "pressed_wall": row["wall"],
            "source": row["source"],
            "decision": row["reason"],
        }
        if device is not None:
            out["location"] = self.engine.choose_location(device).reason
        out["last_heard_wall"] = seen.last_seen_wall if seen is not None else None
        return out

    async def run(self) -> None:
        """Ends the walk test when its time is up (asleep otherwise)."""
        while True:
            scope = self.engine.walk_test
            timeout = None
            if scope is not None:
                timeout = max(0.0, (scope.until_ns - self.engine.now_ns()) / 1e9) + 0.01
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_event(self._changed, timeout)
            if self.engine.walk_test is not None and self.engine.walk_test_active() is None:
                self.engine.stop_walk_test()
                self._ended()

    def _show(self, scope: WalkTestScope) -> None:
        self.status.walk_test = {
            "scope": scope.device_id or "all",
            "started_wall": scope.started_wall,
            "ends_in_s": round((scope.until_ns - self.engine.now_ns()) / 1e9),
        }
        self.status.changed()

    def _ended(self) -> None:
        if self.last is not None and self.last.ended_wall is None:
            self.last.ended_wall = time.time()
        self.status.walk_test = None
        self.status.changed()
        self._changed.set()
        logger.warning("event=walk_test_ended")


def _target(device: Device) -> str:
    if isinstance(device, CustomerDevice):
        return f"customer {device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site {device.site_ref}"
    return f"AURA device {device.aura_device_id}"


def format_report(report: dict[str, Any]) -> str:
    """The technician's printout."""
    state = "running" if report["active"] else "ended"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["started_wall"]))
    lines = [f"walk test ({report['scope']}), started {started}, {state}"]
    presses = report["presses"]
    if not presses:
        lines.append("no presses yet")
    for p in presses:
        at = time.strftime("%H:%M:%S", time.localtime(p["pressed_wall"]))
        heard = (
            f"{time.time() - p['last_heard_wall']:.0f} s ago"
            if p.get("last_heard_wall")
            else "never"
        )
        lines.append(
            f"{at}  {p['device']:<20} {p['gesture']:<7} -> {p['goes_to']}"
            f"  rssi {p['rssi_dbm']}  battery {p['battery_pct']}  last heard {heard}"
        )
        if p.get("label"):
            lines.append(f"          {p['label']}")
        if p.get("location"):
            lines.append(f"          location: {p['location']}")
    return "\n".join(lines)

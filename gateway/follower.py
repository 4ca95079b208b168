"""Following open callouts until AURA closes them (DESIGN.md §3).

Every ``poll_interval_s`` (and at once after a raise or a further press) each open
callout is polled: with the newest fresh fix through "update location and return
callout" while a live source moves, else with a plain read. A callout is over when AURA
answers HTTP 285, gives a closed status, answers 404, or leaves its list of active
callouts (checked on two polls in a row, since its status is free text). Presses that
were attached to it after the last poll that saw it open are raised again: nobody may
press into a callout that had already ended and be left without help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.aura.client import AuraClient, Callout
from gateway.backoff import Backoff
from gateway.config.models import AuraSettings, EventDevice
from gateway.engine import Engine
from gateway.errors import (
    CloudError,
    CloudRejected,
    CloudRetryable,
    CloudUnauthorized,
    JournalError,
)
from gateway.health import watched
from gateway.journal import OPEN, AsyncJournal, Incident
from gateway.signals import Fix
from gateway.status import StatusModel
from gateway.waits import wait_event

logger = logging.getLogger(__name__)

RECHECK_GAP_S = 1.0
Tell = Callable[[str, str], Awaitable[None]]
Closed = Callable[[Incident, str | None, int], Awaitable[None]]


class Follower:
    def __init__(
        self,
        client: AuraClient,
        journal: AsyncJournal,
        engine: Engine,
        status: StatusModel,
        settings: AuraSettings,
        *,
        tell: Tell,
        on_closed: Closed,
        alarms_busy: Callable[[], bool],
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.client = client
        self.journal = journal
        self.engine = engine
        self.status = status
        self.settings = settings
        self.wake = asyncio.Event()
        self._tell = tell
        self._on_closed = on_closed
        self._alarms_busy = alarms_busy
        self._clock_ns = clock_ns
        self._next_full = 0.0  # monotonic time of the next poll of every open callout
        self._last_full = 0.0
        self._recheck_due = False
        self._soon: set[str] = set()  # just raised: poll these at once, alone
        self._missing: set[str] = set()  # incidents absent from the active list last time

    def follow_soon(self, incident_id: str) -> None:
        """A callout was just raised: its first poll need not wait for the interval."""
        self._soon.add(incident_id)
        self.wake.set()

    def recheck(self) -> None:
        """A press was attached to an open callout: look at them all soon, in case it has
        just ended. At most one such early round per ``RECHECK_GAP_S``, so a burst of
        presses does not turn the follower into a busy poller."""
        self._recheck_due = True
        self.wake.set()

    def _full_round_due(self, now: float) -> bool:
        if now >= self._next_full:
            return True
        return self._recheck_due and now - self._last_full >= RECHECK_GAP_S

    def _timeout(self, now: float) -> float:
        due = self._next_full
        if self._recheck_due:
            due = min(due, self._last_full + RECHECK_GAP_S)
        return max(0.0, due - now)

    async def run(self) -> None:
        # Warm up: token and connection ready before the first press needs them.
        with contextlib.suppress(CloudError):
            await self.client.authenticate()
        self._next_full = time.monotonic() + self.settings.poll_interval_s
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        while True:
            if not self._soon and not self._full_round_due(time.monotonic()):
                with contextlib.suppress(TimeoutError):
                    await wait_event(self.wake, self._timeout(time.monotonic()))
            self.wake.clear()
            if self._alarms_busy():
                # Alarms first: no location traffic while a raise is in flight.
                await asyncio.sleep(0.05)
                continue
            try:
                now = time.monotonic()
                if self._full_round_due(now):
                    self._recheck_due = False
                    self._soon.clear()
                    self._last_full = now
                    self._next_full = now + self.settings.poll_interval_s
                    await self._round()
                elif self._soon:
                    soon, self._soon = self._soon, set()
                    await self._round(only=soon)
            except (CloudRetryable, CloudUnauthorized) as exc:
                unauthorized = isinstance(exc, CloudUnauthorized)
                self.status.set_uplink("unauthorized" if unauthorized else "down", str(exc))
                await asyncio.sleep(backoff.next_delay(getattr(exc, "retry_after", None)))
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
                await asyncio.sleep(1.0)
            except Exception:
                # Last resort: log it and keep following; the daemon must not die of it.
                logger.exception("event=follow_fault")
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    async def _round(self, only: set[str] | None = None) -> None:
        """Poll open callouts: all of them (and check AURA's active list), or just some."""
        if only is None:
            for ended in await self.journal.call(lambda j: j.reports_due()):
                await self.fetch_report(ended)
        incidents = await self.journal.call(lambda j: j.incidents((OPEN,)))
        if only is not None:
            for incident in incidents:
                if incident.id in only:
                    await self._follow(incident)
            return
        if not incidents:
            return
        active = {c.id for c in await self.client.active_callouts()}
        for incident in incidents:
            if self._alarms_busy():
                self._next_full = time.monotonic()  # alarms first: finish the round later
                return
            if incident.callout_id in active:
                self._missing.discard(incident.id)
            elif incident.id in self._missing:
                await self._closed(incident, None, "no longer among AURA's active callouts")
                continue
            else:
                self._missing.add(incident.id)
            await self._follow(incident)
            await self._read_events(incident)

    async def _read_events(self, incident: Incident) -> None:
        """The callout's event stream (control-room chat, notes) for the status."""
        if incident.callout_id is None or incident.id not in self.status.open_callouts:
            return
        try:
            events = await self.client.events(incident.callout_id)
        except CloudRejected as exc:
            logger.info("event=events_unavailable incident=%s error=%s", incident.id, exc)
            return
        summary = {"count": len(events), "last": events[-1].text[:200] if events else None}
        if self.status.callout_events.get(incident.id) != summary:
            self.status.callout_events[incident.id] = summary
            self.status.changed()

    @watched("follower")
    async def _follow(self, incident: Incident) -> None:
        assert incident.callout_id is not None
        polled_ns = self._clock_ns()
        covered = await self.journal.call(lambda j: j.last_press_id())  # before the poll
        fix = self._live_fix(incident) if _is_live(incident) else None
        try:
            if fix is not None:
                location = {
                    "latitude": fix.latitude,
                    "longitude": fix.longitude,
                    "accuracy": fix.accuracy_m,
                }
                device = self.engine.config.device(incident.device_id)
                if isinstance(device, EventDevice) and device.location_message_type is not None:
                    # A device-route button's position goes the way its template expects.
                    await self.client.device_event(
                        device.aura_device_id,
                        device.device_type_id,
                        device.location_message_type,
                        location,
                    )
                    callout = await self.client.get_callout(incident.callout_id)
                else:
                    callout = await self.client.update_location_and_return(
                        incident.callout_id, location
                    )
                await self.journal.call(lambda j: j.add_trail(incident.id, fix))
                logger.info(
                    "event=location_sent incident=%s callout=%s accuracy_m=%.0f fix_age_s=%.1f",
                    incident.id,
                    incident.callout_id,
                    fix.accuracy_m,
                    (polled_ns - fix.taken_mono_ns) / 1e9,
                )
            else:
                callout = await self.client.get_callout(incident.callout_id)
        except CloudRejected as exc:
            if exc.status == 404:
                await self._closed(incident, None, f"AURA no longer knows it: {exc}")
                return
            logger.error(
                "event=follow_error incident=%s callout=%s error=%s",
                incident.id,
                incident.callout_id,
                exc,
            )
            return
        self.status.set_uplink("up")
        if callout.status and callout.status != incident.aura_status:
            await self.journal.call(lambda j: j.set_aura_status(incident.id, callout.status))
            self.status.open_callouts[incident.id] = callout.status
            self.status.changed()
            logger.info(
                "event=callout_stage incident=%s callout=%s stage=%r",
                incident.id,
                incident.callout_id,
                callout.status,
            )
            if "scene" in callout.status.lower():
                await self._tell(incident.device_id, "on_scene")
        if callout.closed:
            await self._closed(incident, callout, "closed by AURA")
        else:
            await self.journal.call(lambda j: j.mark_seen_open(incident.id, covered))

    def _live_fix(self, incident: Incident) -> Fix | None:
        """The device's own fresh fix, or the gateway's gpsd fix when it travels with the
        gateway (a button in a vehicle): the same choice as at raise time."""
        device = self.engine.config.device(incident.device_id)
        if device is None:  # removed from the registry since: its own fix, if any
            return self.engine.fresh_fix(incident.device_id)
        live = self.engine.live_fix(device)
        return live[0] if live is not None else None

    async def fetch_report(self, incident: Incident) -> None:
        """After the end, AURA's resolution report and map, fetched once and kept for the
        technician (`aura-gateway incidents show`). Retried in later rounds if AURA is
        unreachable now; a refusal is kept as the answer."""
        if incident.callout_id is None:
            return
        try:
            report = await _report_of(self.client, incident.callout_id)
        except CloudError as exc:
            logger.info("event=report_later incident=%s error=%s", incident.id, exc)
            return
        await self.journal.call(lambda j: j.set_report(incident.id, report))
        logger.info("event=report_kept incident=%s callout=%s", incident.id, incident.callout_id)

    async def _closed(self, incident: Incident, callout: Callout | None, why: str) -> None:
        stage = callout.status if callout is not None else None
        # Presses attached after the last poll that saw it open may have come after the end;
        # the router closes the incident and raises such a press in one transaction.
        seen = await self.journal.call(lambda j: j.seen_open(incident.id))
        await self._on_closed(incident, stage, seen)
        self.status.open_callouts.pop(incident.id, None)
        self.status.callout_events.pop(incident.id, None)
        self._missing.discard(incident.id)
        self.status.changed()
        logger.info(
            "event=callout_closed incident=%s callout=%s stage=%r why=%r",
            incident.id,
            incident.callout_id,
            stage,
            why,
        )
        await self._tell(incident.device_id, "clear")
        await self.fetch_report(incident)


async def _report_of(client: AuraClient, callout_id: int) -> dict[str, object]:
    report: dict[str, object] = {}
    for name, fetch in (("report", client.report), ("map", client.map)):
        try:
            report[name] = await fetch(callout_id)
        except CloudRejected as exc:
            report[name] = {"unavailable": str(exc)}
    return report


def _is_live(incident: Incident) -> bool:
    """Only live-location callouts stream coordinates; fixed sites are just polled."""
    request = incident.request
    if request["route"] == "customer":
        return "location" in request["body"]
    return request["route"] == "device"

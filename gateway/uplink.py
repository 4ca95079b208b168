"""The uplink: delivers the alarm outbox to AURA and follows each callout to its end.

Two tasks share one AURA client:

- ``run_alarms`` takes the oldest pending alarm, and nothing else, until AURA has
  answered for it. Transient faults back off and retry forever (invariant 3); a 4xx
  that no retry can fix marks the incident failed, loudly, and the queue moves on.
- ``run_followers`` polls open callouts with the newest fresh fix ("update location and
  return callout"), or a plain read when there is no live fix, until HTTP 285 or a
  closed status. It stands aside while alarms wait, so alarms never queue behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.aura.client import AuraClient, Callout
from gateway.backoff import Backoff
from gateway.config.models import AuraSettings
from gateway.engine import Engine
from gateway.errors import (
    CloudError,
    CloudRejected,
    CloudRetryable,
    CloudUnauthorized,
    JournalError,
)
from gateway.journal import OPEN, SENDING, AsyncJournal, Attempt, Incident, OutboxItem
from gateway.signals import BOOT_ID
from gateway.status import StatusModel

logger = logging.getLogger(__name__)


class Uplink:
    def __init__(
        self,
        client: AuraClient,
        journal: AsyncJournal,
        engine: Engine,
        status: StatusModel,
        settings: AuraSettings,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.client = client
        self.journal = journal
        self.engine = engine
        self.status = status
        self.settings = settings
        self.wake = asyncio.Event()
        self._parked = False  # waiting with an empty queue
        self._handoff: Attempt | None = None
        self._follow_now = asyncio.Event()
        self._clock_ns = clock_ns
        self.alive_ns = clock_ns()  # last sign of life of both loops, for the watchdog

    # ------------------------------------------------------------------ alarms

    async def run_alarms(self) -> None:
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        while True:
            self.alive_ns = self._clock_ns()
            self.wake.clear()  # cleared before the read, so a press in between is not missed
            attempt, self._handoff = self._handoff, None
            try:
                if attempt is None:
                    attempt = await self.journal.call(lambda j: j.claim_next_alarm())
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
                await asyncio.sleep(1.0)
                continue
            if attempt is None:
                self.status.pending_alarms = 0
                self.status.changed()
                self._parked = True
                await self.wake.wait()
                self._parked = False
                continue
            self.status.pending_alarms = attempt.pending
            item = attempt.item
            try:
                await self._deliver(attempt)
            except CloudRejected as exc:
                await self._reject(item, exc)
            except (CloudRetryable, CloudUnauthorized) as exc:
                delay = backoff.next_delay(getattr(exc, "retry_after", None))
                state = "unauthorized" if isinstance(exc, CloudUnauthorized) else "down"
                self.status.set_uplink(state, str(exc))
                logger.warning(
                    "event=raise_retry incident=%s retry_in_s=%.2f error=%s",
                    item.incident_id,
                    delay,
                    exc,
                )
                await self._note_error(item.incident_id, str(exc))
                await asyncio.sleep(delay)
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
                await asyncio.sleep(1.0)
            else:
                backoff.reset()
                self.status.set_uplink("up")

    def idle(self) -> bool:
        """True when the queue is empty and nothing was handed over yet."""
        return self._parked and self._handoff is None and not self.wake.is_set()

    def offer(self, claimed: Attempt | None) -> None:
        """New work: an alarm the press transaction already claimed, or just a wake-up."""
        if claimed is not None:
            self._handoff = claimed
        self.wake.set()

    async def _note_error(self, incident_id: str, error: str, reached_aura: bool = True) -> None:
        # The retry itself matters more than the note.
        with contextlib.suppress(JournalError):
            await self.journal.call(
                lambda j: j.note_error(incident_id, error, reached_aura=reached_aura)
            )

    async def _deliver(self, attempt: Attempt) -> None:
        item, incident = attempt.item, attempt.incident
        callout: Callout | None = None
        # An earlier attempt may have reached AURA (a crash or a lost reply): look first.
        unresolved = incident.state == SENDING
        try:
            await self.client.authenticate()
            if unresolved:
                callout = await self._reconcile(incident)
                unresolved = False
            if callout is None:
                callout = await self.client.raise_callout(incident.request)
                how = "raised"
            else:
                how = "reattached"
        except (CloudRetryable, CloudUnauthorized) as exc:
            if not getattr(exc, "maybe_delivered", False) and not unresolved:
                # Certainly never reached AURA: the next try needs no reconciliation.
                await self._note_error(incident.id, str(exc), reached_aura=False)
            raise
        await self.journal.call(
            lambda j: j.mark_raised(item.seq, incident.id, callout.id, callout.url, callout.status)
        )
        self.status.open_callouts[incident.id] = callout.status or "created"
        self.status.set_uplink("up")
        self.status.changed()
        logger.info(
            "event=callout_%s incident=%s callout=%s device=%s route=%s url=%s delay_s=%s",
            how,
            incident.id,
            callout.id,
            incident.device_id,
            incident.route,
            callout.url,
            self._delay_text(incident),
        )
        self._follow_now.set()

    def _delay_text(self, incident: Incident) -> str:
        if incident.press_boot_id != BOOT_ID:
            return "unknown(previous-boot)"
        return f"{(self._clock_ns() - incident.press_mono_ns) / 1e9:.3f}"

    async def _reconcile(self, incident: Incident) -> Callout | None:
        """Find the callout an earlier attempt may have created, among AURA's active ones."""
        active = await self.client.active_callouts()
        taken = {
            i.callout_id
            for i in await self.journal.call(lambda j: j.incidents())
            if i.callout_id is not None and i.id != incident.id
        }
        request = incident.request
        for callout in active:
            if callout.id in taken or callout.closed:
                continue
            if request["route"] == "customer" and callout.customer_id == request["customer_id"]:
                return callout
            pid = request.get("predefined_location_id")
            if request["route"] == "site" and pid and callout.predefined_location_id == pid:
                return callout
        return None

    async def _reject(self, item: OutboxItem, exc: CloudRejected) -> None:
        # No retry can fix a 4xx: say so everywhere instead of retrying or dropping it.
        logger.critical(
            "event=alarm_undeliverable incident=%s status=%s error=%s",
            item.incident_id,
            exc.status,
            exc,
        )
        await self.journal.call(lambda j: j.mark_rejected(item.seq, item.incident_id, str(exc)))
        self.engine.incident_ended(item.incident_id)
        self.status.failed_incidents[item.incident_id] = str(exc)
        self.status.set_uplink("up")
        self.status.changed()

    # ------------------------------------------------------------------ followers

    async def run_followers(self) -> None:
        # Warm up: token and connection ready before the first press needs them. A failure
        # here changes nothing; the alarm loop authenticates again when it must.
        with contextlib.suppress(CloudError):
            await self.client.authenticate()
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        interval = self.settings.poll_interval_s
        while True:
            self.alive_ns = self._clock_ns()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._follow_now.wait(), timeout=interval)
            self._follow_now.clear()
            if self.status.pending_alarms > 0:
                continue  # alarms first: no location traffic while one waits
            try:
                incidents = await self.journal.call(lambda j: j.incidents((OPEN,)))
                for incident in incidents:
                    await self._follow(incident)
            except CloudRetryable as exc:
                self.status.set_uplink("down", str(exc))
                await asyncio.sleep(backoff.next_delay(exc.retry_after))
            except CloudUnauthorized as exc:
                self.status.set_uplink("unauthorized", str(exc))
                await asyncio.sleep(backoff.next_delay())
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
            else:
                backoff.reset()

    async def _follow(self, incident: Incident) -> None:
        assert incident.callout_id is not None
        fix = self.engine.fresh_fix(incident.device_id) if _is_live(incident) else None
        try:
            if fix is not None:
                location = {
                    "latitude": fix.latitude,
                    "longitude": fix.longitude,
                    "accuracy": fix.accuracy_m,
                }
                callout = await self.client.update_location_and_return(
                    incident.callout_id, location
                )
                logger.info(
                    "event=location_sent incident=%s callout=%s lat=%.6f lon=%.6f acc=%.0f",
                    incident.id,
                    incident.callout_id,
                    fix.latitude,
                    fix.longitude,
                    fix.accuracy_m,
                )
            else:
                callout = await self.client.get_callout(incident.callout_id)
        except CloudRejected as exc:
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
        if callout.closed:
            await self.journal.call(lambda j: j.mark_closed(incident.id, callout.status))
            self.engine.incident_ended(incident.id)
            self.status.open_callouts.pop(incident.id, None)
            self.status.changed()
            logger.info(
                "event=callout_closed incident=%s callout=%s stage=%r",
                incident.id,
                incident.callout_id,
                callout.status,
            )


def _is_live(incident: Incident) -> bool:
    """Only live-location callouts stream coordinates; fixed sites are just polled."""
    request = incident.request
    if request["route"] == "customer":
        return "location" in request["body"]
    return request["route"] == "device"


"""The uplink: delivers the alarm outbox to AURA, oldest first, until AURA answers.

Transient faults back off and retry forever (invariant 3). When AURA cannot be reached
at all, the head of the queue waits and order is kept; when AURA answers one alarm with
an error of its own (5xx, 429), that alarm backs off alone and the next one goes, so a
single failing alarm never holds up the others. A 4xx to the create request, which no
retry can fix, marks the incident failed, loudly, and the queue moves on. Following the
callouts once raised is ``gateway.follower``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.aura.client import AuraClient, Callout
from gateway.backoff import Backoff
from gateway.clock import CLOCK, untrusted_why
from gateway.config.models import AuraSettings, CancelSettings, EventDevice
from gateway.engine import Engine
from gateway.errors import (
    CloudError,
    CloudMalformed,
    CloudRejected,
    CloudRetryable,
    CloudUnauthorized,
    JournalError,
)
from gateway.health import watched
from gateway.journal import SENDING, AsyncJournal, Attempt, Incident, OutboxItem
from gateway.signals import BOOT_ID
from gateway.status import StatusModel
from gateway.waits import wait_event

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
        indicate: Callable[[str, str], Awaitable[None]] | None = None,
        cancel: CancelSettings | None = None,
        late_alarm_after_s: float = 30.0,
        fallback: Callable[[Incident, str], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.cancel = cancel or CancelSettings()
        self.late_alarm_after_s = late_alarm_after_s
        self._fallback = fallback
        self._indicate = indicate
        self.journal = journal
        self.engine = engine
        self.status = status
        self.settings = settings
        self.wake = asyncio.Event()
        self._parked = False  # waiting with an empty queue
        self._handoff: Attempt | None = None
        self._deferred: dict[str, float] = {}  # incident -> monotonic time of its next try
        self._creating = False
        self._draining = False
        self._background: set[asyncio.Task[None]] = set()
        # Told of each raise, so the follower polls the new callout at once.
        self.on_raised: Callable[[str], None] = lambda incident_id: None
        # Told when AURA accepted an alarm, with the monotonic time it answered (the
        # press-to-accept latency in the metrics).
        self.on_accepted: Callable[[Incident, int], None] = lambda incident, at_ns: None
        self._clock_ns = clock_ns

    # ------------------------------------------------------------------ alarms

    async def run_alarms(self) -> None:
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        # AURA unreachable (refused, no route, DNS): a connection attempt costs AURA nothing,
        # so look again often and send the alarms within about a second of its return.
        reach = Backoff(min(0.2, self.settings.reconnect_max_s), self.settings.reconnect_max_s)
        while True:
            self.wake.clear()  # cleared before the read, so a press in between is not missed
            attempt, self._handoff = self._handoff, None
            now = time.monotonic()
            deferred = {i for i, due in self._deferred.items() if due > now}
            try:
                if attempt is None:
                    attempt = await self.journal.call(
                        lambda j, skip=deferred: j.claim_next_alarm(skip)
                    )
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
                await asyncio.sleep(1.0)
                continue
            if attempt is None:
                await self._park(deferred, now)
                continue
            self.status.pending_alarms = attempt.pending
            self._draining = True
            item = attempt.item
            try:
                if item.kind == "raise":
                    await self._deliver(attempt)
                elif item.kind == "cancel":
                    await self._cancel(attempt)
                else:
                    await self._note(attempt)
            except CloudRejected as exc:
                if item.kind == "raise":
                    await self._reject(item, exc)
                else:
                    await self._give_up(item, exc)
            except (CloudRetryable, CloudUnauthorized) as exc:
                unreachable = isinstance(exc, CloudRetryable) and not exc.maybe_delivered
                if unreachable and exc.status is None:
                    delay = reach.next_delay()
                else:
                    delay = backoff.next_delay(getattr(exc, "retry_after", None))
                unauthorized = isinstance(exc, CloudUnauthorized)
                self.status.set_uplink("unauthorized" if unauthorized else "down", str(exc))
                logger.warning(
                    "event=raise_retry incident=%s retry_in_s=%.2f error=%s",
                    item.incident_id,
                    delay,
                    exc,
                )
                await self._note_error(item.incident_id, str(exc))
                if isinstance(exc, CloudRetryable) and exc.status is not None:
                    # AURA answered, with an error for this alarm: let the next one go.
                    self._deferred[item.incident_id] = time.monotonic() + delay
                else:
                    # AURA unreachable: keep the order and wait; still draining, so no
                    # location round slips in ahead of the alarms when it comes back.
                    await asyncio.sleep(delay)
            except JournalError as exc:
                logger.error("event=journal_error error=%s", exc)
                await asyncio.sleep(1.0)
            except Exception:
                # Last resort: the alarm stays queued; log everything and try again later.
                logger.exception("event=uplink_fault incident=%s", item.incident_id)
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()
                reach.reset()
                self._deferred.pop(item.incident_id, None)
                self.status.set_uplink("up")

    async def _park(self, deferred: set[str], now: float) -> None:
        """Nothing to send now: wait for a press, or for the first deferred alarm's turn."""
        self._draining = False
        if deferred:
            due = min(self._deferred[i] for i in deferred)
            with contextlib.suppress(TimeoutError):
                await wait_event(self.wake, max(0.0, due - now))
            return
        self._deferred.clear()
        self.status.pending_alarms = 0
        self.status.changed()
        self._parked = True
        try:
            await self.wake.wait()
        finally:
            self._parked = False

    def device_health(self, device: EventDevice) -> None:
        """A device-route button reported its battery or a tamper: tell AURA's template
        for it (best effort, in the background; the alarm path never waits for it)."""
        if device.health_message_type is None:
            return
        task = asyncio.create_task(self._health(device), name=f"health:{device.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _health(self, device: EventDevice) -> None:
        assert device.health_message_type is not None
        try:
            await self.client.device_event(
                device.aura_device_id, device.device_type_id, device.health_message_type
            )
        except CloudError as exc:
            logger.warning("event=health_not_sent device=%s error=%s", device.id, exc)
        else:
            logger.info("event=health_sent device=%s", device.id)

    def busy(self) -> bool:
        """Alarms are going out (a create in flight, or a queue being drained): location
        traffic waits, so no alarm ever queues behind it."""
        return self._creating or self._draining

    def queue_view(self) -> dict[str, object]:
        """For `aura-gateway queue`: a create in flight, and the alarms backing off alone
        after an error of their own (incident -> seconds to their next try)."""
        now = time.monotonic()
        waits = {i: round(due - now, 1) for i, due in self._deferred.items() if due > now}
        return {"creating": self._creating, "draining": self._draining, "backing_off": waits}

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

    @watched("uplink")
    async def _deliver(self, attempt: Attempt) -> None:
        item, incident = attempt.item, attempt.incident
        callout: Callout | None = None
        # An earlier attempt may have reached AURA (a crash or a lost reply): look first.
        unresolved = incident.state == SENDING
        self._creating = True
        try:
            await _not_a_rejection(self.client.authenticate(), "token")
            if unresolved:
                callout = await self._reconcile(incident)
                if callout is None and incident.route != "customer":
                    # AURA hands back a customer's active callout on a second create, but
                    # nothing says it does so for sites or devices: a slow AURA may still
                    # be working on the first one. Give it a read timeout, look again.
                    await asyncio.sleep(self.settings.timeouts.read)
                    callout = await self._reconcile(incident)
                unresolved = False
            if callout is None:
                callout = await self.client.raise_callout(incident.request)
                how = "raised"
            else:
                how = "reattached"
        except CloudMalformed as exc:
            if incident.route == "device":
                # A deviceEvent AURA accepted (2xx) without naming the callout: sending it
                # again could raise a second one. Delivered; it cannot be followed.
                await self._untracked(item, incident, str(exc))
                return
            raise
        except (CloudRetryable, CloudUnauthorized) as exc:
            if not getattr(exc, "maybe_delivered", False) and not unresolved:
                # Certainly never reached AURA: the next try needs no reconciliation.
                await self._note_error(incident.id, str(exc), reached_aura=False)
            raise
        finally:
            self._creating = False
        accepted_ns = self._clock_ns()
        await self.journal.call(
            lambda j: j.mark_raised(item.seq, incident.id, callout.id, callout.url, callout.status)
        )
        self.on_accepted(incident, accepted_ns)
        self.status.open_callouts[incident.id] = callout.status or "created"
        self.status.set_uplink("up")
        self.status.changed()
        logger.info(
            "event=callout_%s incident=%s callout=%s device=%s route=%s delay_s=%s",
            how,
            incident.id,
            callout.id,
            incident.device_id,
            incident.route,
            self._delay_text(incident),
        )
        self.on_raised(incident.id)
        await self._late_note(incident)
        await self._tell(incident.device_id, "help_on_the_way")

    @watched("uplink")
    async def _cancel(self, attempt: Attempt) -> None:
        """An integration cancel (or with the customer's own safe code, never guessed)."""
        item, incident = attempt.item, attempt.incident
        if incident.callout_id is None:
            # The raise never produced a followable callout (refused, or untracked).
            note = "cancelled at the gateway; AURA had no callout to cancel"
            await self.journal.call(lambda j: j.mark_cancelled(incident.id, item.seq, note))
            logger.warning("event=cancelled_locally incident=%s", incident.id)
            return
        payload = item.payload or {}
        settings = self.cancel
        device = self.engine.config.device(incident.device_id)
        try:
            if (
                isinstance(device, EventDevice)
                and device.cancel_message_type is not None
                and not payload.get("safe_code")
            ):
                # A device-route button cancels the way its template was agreed with AURA.
                await self.client.device_event(
                    device.aura_device_id, device.device_type_id, device.cancel_message_type
                )
            else:
                await self.client.cancel(incident.callout_id, safe_code=payload.get("safe_code"))
        except CloudRejected as exc:
            if exc.status != 404:
                raise
            logger.warning("event=cancel_unknown_callout incident=%s error=%s", incident.id, exc)
        reason_id = payload.get("exception_reason_id", settings.exception_reason_id)
        notes = payload.get("notes", settings.notes)
        if reason_id is not None or notes:
            try:
                await self.client.add_exception_reason(incident.callout_id, reason_id, notes)
            except CloudRejected as exc:  # the cancel itself went through
                logger.warning("event=cancel_reason_refused incident=%s error=%s", incident.id, exc)
        await self.journal.call(
            lambda j: j.mark_cancelled(incident.id, item.seq, "cancelled at AURA")
        )
        self.engine.incident_ended(incident.id)
        self.status.open_callouts.pop(incident.id, None)
        self.status.changed()
        logger.warning(
            "event=callout_cancelled incident=%s callout=%s with=%s",
            incident.id,
            incident.callout_id,
            "safe_code" if payload.get("safe_code") else "integration",
        )
        await self._tell(incident.device_id, "clear")

    @watched("uplink")
    async def _note(self, attempt: Attempt) -> None:
        """A callout event for the control room (late alarm, battery, tamper, pressed again)."""
        item, incident = attempt.item, attempt.incident
        text = (item.payload or {}).get("text", "")
        if incident.callout_id is None or not text:
            await self.journal.call(lambda j: j.finish(item.seq, "skipped"))
            return
        delivered = await self.client.send_event(incident.callout_id, text)
        await self.journal.call(lambda j: j.finish(item.seq, "done" if delivered else "closed"))
        logger.info(
            "event=note_sent incident=%s callout=%s delivered=%s",
            incident.id,
            incident.callout_id,
            delivered,
        )

    async def _give_up(self, item: OutboxItem, exc: CloudRejected) -> None:
        """A cancel or note AURA refuses for good: recorded and logged, never retried blindly."""
        logger.error(
            "event=%s_refused incident=%s status=%s error=%s",
            item.kind,
            item.incident_id,
            exc.status,
            exc,
        )
        await self.journal.call(lambda j: j.finish(item.seq, "rejected"))

    async def _untracked(self, item: OutboxItem, incident: Incident, why: str) -> None:
        await self.journal.call(lambda j: j.mark_delivered_untracked(item.seq, incident.id, why))
        self.on_accepted(incident, self._clock_ns())
        self.engine.incident_ended(incident.id)
        self.status.set_uplink("up")
        self.status.changed()
        logger.warning(
            "event=callout_untracked incident=%s device=%s route=%s delay_s=%s why=%r",
            incident.id,
            incident.device_id,
            incident.route,
            self._delay_text(incident),
            why,
        )
        await self._tell(incident.device_id, "help_on_the_way")

    async def _tell(self, device_id: str, state: str) -> None:
        """Show the button how its alarm is doing, where it has a way to show it."""
        if self._indicate is not None:
            await self._indicate(device_id, state)

    async def _late_note(self, incident: Incident) -> None:
        """Invariant 5: a late alarm still counts, and the control room learns why it is late."""
        text = late_note_text(
            incident,
            now_mono_ns=self._clock_ns(),
            now_wall=time.time(),
            trusted=CLOCK.trusted(),
            late_after_s=self.late_alarm_after_s,
        )
        if text is None:
            return
        await self.journal.call(lambda j: j.enqueue(incident.id, "note", {"text": text}))
        self.wake.set()
        logger.warning("event=late_alarm incident=%s note=%r", incident.id, text)

    def _delay_text(self, incident: Incident) -> str:
        if incident.press_boot_id != BOOT_ID:
            return "unknown(previous-boot)"
        return f"{(self._clock_ns() - incident.press_mono_ns) / 1e9:.3f}"

    async def _reconcile(self, incident: Incident) -> Callout | None:
        """Find the callout an earlier attempt may have created, among AURA's active ones."""
        try:
            active = await self.client.active_callouts()
        except CloudRejected as exc:
            # Cannot look: create again. AURA hands back a customer's active callout.
            logger.warning("event=reconcile_refused incident=%s error=%s", incident.id, exc)
            return None
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
        incident = await self.journal.call(lambda j: j.incident(item.incident_id))
        if incident is not None:
            await self._tell(incident.device_id, "delivery_failing")
            if self._fallback is not None:
                await self._fallback(incident, str(exc))


def late_note_text(
    incident: Incident,
    *,
    now_mono_ns: int,
    now_wall: float,
    trusted: bool,
    late_after_s: float,
    boot_id: str = BOOT_ID,
) -> str | None:
    """The control room's note for a raise this late, or None when it is not late.

    The press time is said only when it is known: in this boot from the monotonic delay and
    a trusted clock now (never the stamp taken before the clock was set); from an earlier
    boot only if the clock was trusted at the press. Otherwise the time is said to be
    unknown, with the delay where the monotonic clock still measures it.
    """
    if incident.press_boot_id == boot_id:
        delay_s = (now_mono_ns - incident.press_mono_ns) / 1e9
        if delay_s < late_after_s:
            return None
        if trusted:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now_wall - delay_s))
            return (
                f"Panic button pressed at {when}, delivered {delay_s:.0f} s late: "
                "the gateway's uplink was down."
            )
        return (
            f"Panic button pressed at an unknown time ({untrusted_why(now_wall)}), "
            f"{delay_s:.0f} s before delivery; delivered late: the gateway's uplink was down."
        )
    text = "Panic button pressed before the gateway restarted (power cut or crash); delivered late."
    if incident.press_wall_trusted:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(incident.press_wall))
        return f"{text} Press time per the gateway's clock: {when}"
    return f"{text} Press time unknown: {untrusted_why(incident.press_wall)} at the press."


async def _not_a_rejection(step: Awaitable[None], what: str) -> None:
    """Only AURA's answer to the create may reject an alarm; any other 4xx is retried."""
    try:
        await step
    except CloudRejected as exc:
        raise CloudRetryable(f"{what}: {exc}", status=exc.status, maybe_delivered=False) from exc

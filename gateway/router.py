"""Carries signals from the inputs through the engine into the journal.

The order is the point (DESIGN.md invariant 1): recognise a repeat, decide, commit,
and only then may the input acknowledge the press to its source and the uplink send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.audit_events import (
    Sink,
    record_press,
    record_promoted,
    record_repeat,
    record_resolutions,
)
from gateway.config.models import EventDevice
from gateway.engine import (
    Attach,
    Cancel,
    Decision,
    Engine,
    Hold,
    Ignore,
    Raise,
    WalkTest,
    Withdraw,
    incident_key,
    new_incidents,
)
from gateway.errors import JournalError
from gateway.health import watched
from gateway.journal import (
    OPEN,
    AsyncJournal,
    Attempt,
    Incident,
    PressWrite,
    Stored,
    counter_is_replay,
)
from gateway.signals import Fix, Press
from gateway.status import StatusModel
from gateway.waits import wait_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PressOutcome:
    """What became of a press: the journal's verdict and, if new, the engine's decision."""

    verdict: str  # stored | repeat | resend | replay
    decision: str | None  # raise | attach | ignore, for a stored press
    incident_id: str | None


class UplinkPort(Protocol):
    """What the router needs of the uplink: is it idle, and here is new work."""

    def idle(self) -> bool: ...

    def offer(self, claimed: Attempt | None) -> None: ...

    def device_health(self, device: EventDevice) -> None: ...


def _row_decision(decision: Decision) -> str:
    """What the journal records for the press: a held press says what it waits for."""
    return f"held_{decision.hold}" if isinstance(decision, Hold) else decision.kind


def _write(press: Press, decision: Decision) -> PressWrite:
    return PressWrite(
        press,
        _row_decision(decision),
        decision.reason,
        decision.incident_id if isinstance(decision, Attach | Cancel) else None,
        decision.incident if isinstance(decision, Raise) else None,
        check_counter=press.authenticated,
        resolves=decision.resolves,
    )


class Router:
    def __init__(
        self,
        engine: Engine,
        journal: AsyncJournal,
        status: StatusModel,
        uplink: UplinkPort,
        *,
        recheck: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.status = status
        self._uplink = uplink
        # A press attached to an open callout makes the follower look at it now: if it
        # has just closed, the press must raise again rather than wait a poll interval.
        self._recheck = recheck
        # Serialises decide → commit → apply so two inputs cannot both open an incident.
        self._lock = asyncio.Lock()
        self._held_wake = asyncio.Event()
        # The audit trail's record (gateway.audit); None: no audit.
        self.audit: Sink | None = None

    async def on_press(self, press: Press, *, repeat_window_s: float = 5.0) -> PressOutcome | None:
        """An outcome once the press is durable (or already was): the input may ack.
        None when the journal refused the write: the input must not ack.

        A repeat, a resend or a replay of a stored transmission is acknowledged too (so the
        receiver stops sending it) but never decided on again.
        """
        async with self._lock:
            # Deciding is pure and cheap; a repeat's decision is simply never applied.
            decision = self.engine.decide(press)
            new = decision.incident if isinstance(decision, Raise) else None
            attach_to = decision.incident_id if isinstance(decision, Attach | Cancel) else None
            # An idle uplink has nothing older queued: this raise is the head, so the same
            # transaction can claim it for delivery.
            claim = bool(new_incidents(decision)) and self._uplink.idle()
            try:
                stored = await self.journal.call(
                    lambda j: j.commit_press(
                        press,
                        decision=_row_decision(decision),
                        reason=decision.reason,
                        incident_id=attach_to,
                        new_incident=new,
                        claim=claim,
                        repeat_window_ns=int(repeat_window_s * 1e9),
                        check_counter=press.authenticated,
                        resolves=decision.resolves,
                    )
                )
            except JournalError as exc:
                # Fail closed: not stored means not acknowledged; the source will resend.
                self.status.count("journal_errors")
                logger.error("event=journal_error device=%s error=%s", press.device_id, exc)
                return None
            if stored.repeat:
                self._log_repeat(press, stored.verdict)
                if stored.incident_id is not None:
                    self._uplink.offer(None)  # in case its raise is still waiting
                return PressOutcome(stored.verdict, None, stored.incident_id)
            self.engine.apply(decision, press)
        if isinstance(decision, Hold) or decision.resolves:
            self._held_changed()
        return self._stored([(press, decision, stored)])[0]

    @watched("presses")
    async def on_presses(
        self, presses: list[Press], *, repeat_window_s: float = 5.0
    ) -> list[PressOutcome | None]:
        """Several presses at once (a burst from the receiver): one transaction, one fsync.

        Everything the journal knows is read first; repeats, resends and replays within
        the batch are told apart here, so every press is decided exactly once, in order.
        """
        if len(presses) == 1:
            return [await self.on_press(presses[0], repeat_window_s=repeat_window_s)]
        window_ns = int(repeat_window_s * 1e9)
        outcomes: list[PressOutcome | None] = [None] * len(presses)
        async with self._lock:
            try:
                priors = await self.journal.call(lambda j: j.classify(presses, window_ns))
            except JournalError as exc:
                return self._refused(presses, exc)
            before = self.engine.snapshot()
            writes: list[PressWrite] = []
            decided: list[tuple[int, Press, Decision]] = []
            seen: set[str] = set()
            # device -> (counter, frame) accepted earlier in this batch
            highest: dict[str, tuple[int | None, str | None]] = {}
            for i, (press, prior) in enumerate(zip(presses, priors, strict=True)):
                verdict = prior.verdict.verdict if prior.verdict is not None else None
                if verdict is None and press.dedup_key in seen:
                    verdict = "repeat"
                if verdict is None and press.authenticated and press.counter is not None:
                    last, frame = highest.get(
                        press.device_id, (prior.last_counter, prior.last_frame)
                    )
                    if counter_is_replay(press.counter, press.frame_key, last, frame):
                        verdict = "replay"
                if verdict is not None:
                    self._log_repeat(press, verdict)
                    incident = prior.verdict.incident_id if prior.verdict else None
                    outcomes[i] = PressOutcome(verdict, None, incident)
                    continue
                decision = self.engine.decide(press)
                self.engine.apply(decision, press)  # provisional: later presses see it
                seen.add(press.dedup_key)
                if press.authenticated and press.counter is not None:
                    last, _ = highest.get(press.device_id, (prior.last_counter, None))
                    if last is None or press.counter > last:
                        highest[press.device_id] = (press.counter, press.frame_key)
                decided.append((i, press, decision))
                writes.append(_write(press, decision))
            claim = any(new_incidents(d) for _, _, d in decided) and self._uplink.idle()
            try:
                stored = await self.journal.call(lambda j: j.commit_presses(writes, claim=claim))
            except JournalError as exc:
                self.engine.restore(before)  # take back the provisional decisions
                return self._refused(presses, exc)
        if any(isinstance(d, Hold) or d.resolves for _, _, d in decided):
            self._held_changed()
        results = self._stored([(p, d, st) for (_, p, d), st in zip(decided, stored, strict=True)])
        for (i, _, _), outcome in zip(decided, results, strict=True):
            outcomes[i] = outcome
        return outcomes

    # ------------------------------------------------------------------ held presses

    def _held_changed(self) -> None:
        self._held_wake.set()
        self._show_abort_windows()

    def _show_abort_windows(self) -> None:
        """The status (and so the LEDs) shows whether a raise waits out its abort window."""
        n = self.engine.abort_windows()
        if n != self.status.abort_windows:
            self.status.abort_windows = n
            self.status.changed()

    async def adopt_held(self) -> None:
        """Presses held when the gateway stopped: their windows go on (or are over)."""
        held = await self.journal.call(lambda j: j.held_presses())
        if held:
            self.engine.adopt_held(held)
            logger.warning("event=held_presses_adopted count=%d", len(held))
            self._show_abort_windows()

    async def run_held(self) -> None:
        """Decide held presses when their window ends; asleep while nothing is held."""
        while True:
            deadline = self.engine.next_deadline_ns()
            timeout = None
            if deadline is not None:
                timeout = max(0, deadline - self.engine.now_ns()) / 1e9 + 0.001
            self._held_wake.clear()
            with contextlib.suppress(TimeoutError):
                await wait_event(self._held_wake, timeout)
            await self.expire_held()

    @watched("held-presses")
    async def expire_held(self) -> None:
        async with self._lock:
            before = self.engine.snapshot()
            resolutions = self.engine.expire(self.engine.now_ns())
            if not resolutions:
                return
            claim = any(r.new_incident for r in resolutions) and self._uplink.idle()
            try:
                claimed = await self.journal.call(
                    lambda j: j.resolve_held(resolutions, claim=claim)
                )
            except JournalError as exc:
                self.engine.restore(before)
                self.status.count("journal_errors")
                logger.error("event=journal_error held=%d error=%s", len(resolutions), exc)
                failed = True
            else:
                failed = False
        if failed:
            await asyncio.sleep(1.0)  # the held presses stay held; tried again (lock released)
            return
        record_resolutions(self.audit, resolutions)
        sent = 0
        for r in resolutions:
            log = logger.warning if r.decision in ("raise", "withdrawn", "cancel") else logger.info
            log(
                "event=held_press_%s key=%s incident=%s reason=%r",
                r.decision,
                r.key,
                r.incident_id or (r.new_incident.id if r.new_incident else None),
                r.reason,
            )
            sent += r.new_incident is not None or r.decision == "cancel"
        self._show_abort_windows()
        if sent:
            self.status.pending_alarms += sent
            self.status.changed()
        if sent or any(r.decision == "attach" for r in resolutions):
            self._uplink.offer(claimed)

    async def note_device(self, device_id: str, text: str) -> None:
        """Something about the pressing device the control room should know (battery low,
        tamper) while its incident is open; nothing when none is."""
        device = self.engine.config.device(device_id)
        if device is None:
            return
        if isinstance(device, EventDevice):
            self._uplink.device_health(device)
        open_id = self.engine.open_incident(incident_key(device))
        if open_id is None:
            return
        try:
            queued = await self.journal.call(lambda j: j.note(open_id, text))
        except JournalError as exc:
            logger.error("event=journal_error device=%s error=%s", device_id, exc)
            return
        if queued:
            self._uplink.offer(None)

    async def close_incident(self, incident: Incident, stage: str | None, seen_open: int) -> None:
        """The callout ended. A press attached after the last poll that found it open
        (``seen_open``: the last journal row then) may have come after the end: the first
        such press becomes its own raise, in the same transaction as the close."""
        async with self._lock:
            current = await self.journal.call(lambda j: j.incident(incident.id))
            if current is None or current.state != OPEN:
                return  # cancelled (or closed) meanwhile: nothing was left uncovered
            ids = await self.journal.call(lambda j: j.presses_after(incident.id, seen_open))
            self.engine.incident_ended(incident.id)
            promote = None
            decision: Decision | None = None
            if ids:
                press = await self.journal.call(lambda j: j.press(ids[0]))
                decision = self.engine.decide_again(press)
                if isinstance(decision, Raise):
                    reason = f"pressed after callout {incident.callout_id} ended"
                    promote = (ids[0], decision.incident, reason)
                else:
                    logger.error(
                        "event=press_reraise_failed incident=%s press=%d reason=%r",
                        incident.id,
                        ids[0],
                        decision.reason,
                    )
            await self.journal.call(lambda j: j.close_incident(incident.id, stage, promote))
            if promote is None or decision is None:
                return
            self.engine.apply(decision)
        record_promoted(self.audit, press, promote[1], promote[2])
        logger.warning(
            "event=press_reraised device=%s old_incident=%s incident=%s presses=%d",
            press.device_id,
            incident.id,
            promote[1].id,
            len(ids),
        )
        self.status.pending_alarms += 1
        self.status.changed()
        self._uplink.offer(None)

    def _refused(self, presses: list[Press], exc: JournalError) -> list[PressOutcome | None]:
        # Fail closed: not stored means not acknowledged; the source will resend.
        self.status.count("journal_errors")
        logger.error("event=journal_error presses=%d error=%s", len(presses), exc)
        return [None] * len(presses)

    def _stored(self, items: list[tuple[Press, Decision, Stored]]) -> list[PressOutcome]:
        """Log, count and hand raises to the uplink once presses are durable."""
        results: list[PressOutcome] = []
        claimed = None
        raises = 0
        for press, decision, stored in items:
            self._log_decision(press, decision, stored.incident_id)
            record_press(self.audit, press, decision, stored.incident_id)
            if isinstance(decision, Attach):
                self._recheck()
            claimed = claimed or stored.claimed
            raises += len(new_incidents(decision)) + isinstance(decision, Cancel)
            results.append(PressOutcome("stored", decision.kind, stored.incident_id))
        if raises:
            self.status.pending_alarms += raises
            self.status.changed()
        if raises or any(isinstance(d, Attach) for _, d, _ in items):
            self._uplink.offer(claimed)  # a raise, a cancel or a "pressed again" note
        return results

    def _log_repeat(self, press: Press, verdict: str) -> None:
        self.status.count(f"presses_{verdict}")
        record_repeat(self.audit, press, verdict)
        if verdict == "replay":
            # An old transmission played again: never a callout, always worth a look.
            logger.warning(
                "event=press_replay device=%s counter=%s rssi=%s",
                press.device_id,
                press.counter,
                press.rssi_dbm,
            )
        else:
            logger.debug("event=press_%s key=%s", verdict, press.dedup_key)

    def _log_decision(self, press: Press, decision: object, incident_id: str | None) -> None:
        if isinstance(decision, Raise):
            self.status.count("presses_raised")
            logger.info(
                "event=press_stored device=%s gesture=%s counter=%s incident=%s route=%s"
                " location=%r queue=%d",
                press.device_id,
                press.gesture,
                press.counter,
                incident_id,
                decision.incident.route,
                decision.incident.location_reason,
                self.status.pending_alarms + 1,
            )
        elif isinstance(decision, Attach):
            self.status.count("presses_attached")
            logger.info(
                "event=press_attached device=%s incident=%s reason=%r",
                press.device_id,
                incident_id,
                decision.reason,
            )
        elif isinstance(decision, Cancel):
            self.status.count("presses_cancel")
            logger.warning(
                "event=cancel_requested device=%s incident=%s reason=%r",
                press.device_id,
                incident_id,
                decision.reason,
            )
        elif isinstance(decision, Hold):
            self.status.count(f"presses_held_{decision.hold}")
            logger.info(
                "event=press_held device=%s gesture=%s until_s=%.2f reason=%r",
                press.device_id,
                press.gesture,
                (decision.until_ns - press.stamp.mono_ns) / 1e9,
                decision.reason,
            )
        elif isinstance(decision, Withdraw):
            self.status.count("presses_withdrawn")
            logger.warning(
                "event=alarm_withdrawn device=%s reason=%r", press.device_id, decision.reason
            )
        elif isinstance(decision, WalkTest):
            self.status.count("presses_walk_test")
            self.status.changed()  # the LEDs show each walk-test press
            logger.info(
                "event=walk_test_press device=%s gesture=%s rssi=%s battery=%s reason=%r",
                press.device_id,
                press.gesture,
                press.rssi_dbm,
                press.battery_pct,
                decision.reason,
            )
        elif isinstance(decision, Ignore):
            self.status.count("presses_ignored")
            logger.warning(
                "event=press_ignored device=%s gesture=%s rssi=%s battery=%s reason=%r",
                press.device_id,
                press.gesture,
                press.rssi_dbm,
                press.battery_pct,
                decision.reason,
            )

    def on_gateway_fix(self, fix: Fix | None) -> None:
        """The gateway's own gpsd position (None: no usable fix now). Kept in memory only:
        after a restart it would be stale anyway, and a fix a second is not worth an fsync."""
        if fix is None:
            self.engine.gateway_fix_lost()
        else:
            self.engine.apply_fix(fix)

    async def on_fix(self, fix: Fix) -> bool:
        try:
            await self.journal.call(lambda j: j.store_fix(fix))
        except JournalError as exc:
            logger.error("event=journal_error device=%s error=%s", fix.device_id, exc)
            return False
        self.engine.apply_fix(fix)
        return True

"""Carries signals from the inputs through the engine into the journal.

The order is the point (DESIGN.md invariant 1): recognise a repeat, decide, commit,
and only then may the input acknowledge the press to its source and the uplink send.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.engine import Attach, Engine, Ignore, Raise
from gateway.errors import JournalError
from gateway.journal import AsyncJournal, Attempt
from gateway.signals import Fix, Press
from gateway.status import StatusModel

logger = logging.getLogger(__name__)


class UplinkPort(Protocol):
    """What the router needs of the uplink: is it idle, and here is new work."""

    def idle(self) -> bool: ...

    def offer(self, claimed: Attempt | None) -> None: ...


class Router:
    def __init__(
        self,
        engine: Engine,
        journal: AsyncJournal,
        status: StatusModel,
        uplink: UplinkPort,
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.status = status
        self._uplink = uplink
        # Serialises decide → commit → apply so two inputs cannot both open an incident.
        self._lock = asyncio.Lock()

    async def on_press(self, press: Press) -> bool:
        """Returns True once the press is durable (or already was): the input may ack."""
        async with self._lock:
            # Deciding is pure and cheap; a repeat's decision is simply never applied.
            decision = self.engine.decide(press)
            new = decision.incident if isinstance(decision, Raise) else None
            attach_to = decision.incident_id if isinstance(decision, Attach) else None
            # An idle uplink has nothing older queued: this raise is the head, so the same
            # transaction can claim it for delivery.
            claim = new is not None and self._uplink.idle()
            try:
                stored = await self.journal.call(
                    lambda j: j.commit_press(
                        press,
                        decision=decision.kind,
                        reason=decision.reason,
                        incident_id=attach_to,
                        new_incident=new,
                        claim=claim,
                    )
                )
            except JournalError as exc:
                # Fail closed: not stored means not acknowledged; the source will resend.
                self.status.count("journal_errors")
                logger.error("event=journal_error device=%s error=%s", press.device_id, exc)
                return False
            if stored.repeat:
                self.status.count("presses_repeated")
                logger.debug("event=press_repeat key=%s", press.dedup_key)
                return True
            self.engine.apply(decision)
        incident_id = stored.incident_id
        self._log_decision(press, decision, incident_id)
        if isinstance(decision, Raise):
            self.status.pending_alarms += 1
            self.status.changed()
            self._uplink.offer(stored.claimed)
        return True

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

    async def on_fix(self, fix: Fix) -> bool:
        try:
            await self.journal.call(lambda j: j.store_fix(fix))
        except JournalError as exc:
            logger.error("event=journal_error device=%s error=%s", fix.device_id, exc)
            return False
        self.engine.apply_fix(fix)
        return True

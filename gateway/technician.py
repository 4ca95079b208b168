"""What the technician's commands do inside the daemon: cancel, rate, acknowledge.

Each handler checks what it is asked against the journal and answers in words a
technician can act on. A safe code is the customer's, used as given: never guessed and
never retried with other digits, since AURA uses it for duress detection.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gateway.aura.client import AuraClient
from gateway.control import ControlError, Handler
from gateway.engine import Engine
from gateway.errors import CloudError
from gateway.journal import ACTIVE_STATES, CANCELLED, CLOSED, AsyncJournal, Incident
from gateway.status import StatusModel
from gateway.uplink import Uplink

logger = logging.getLogger(__name__)


def technician_commands(
    journal: AsyncJournal,
    engine: Engine,
    uplink: Uplink,
    client: AuraClient,
    status: StatusModel,
) -> dict[str, Handler]:
    async def incident(request: dict[str, Any]) -> Incident:
        incident_id = str(request.get("incident", ""))
        found = await journal.call(lambda j: j.incident(incident_id))
        if found is None:
            raise ControlError(f"no incident {incident_id!r} (see: aura-gateway incidents)")
        return found

    async def cancel(request: dict[str, Any]) -> dict[str, Any]:
        found = await incident(request)
        if found.state not in ACTIVE_STATES:
            raise ControlError(f"incident {found.id} is {found.state}: nothing to cancel")
        payload: dict[str, Any] = {}
        safe_code = request.get("safe_code")
        if safe_code is not None:
            if not re.fullmatch(r"\d{4}", str(safe_code)):
                raise ControlError("a safe code is the 4 digits the customer gave; not sent")
            payload["safe_code"] = str(safe_code)
        if request.get("exception_reason_id") is not None:
            payload["exception_reason_id"] = int(request["exception_reason_id"])
        if request.get("notes"):
            payload["notes"] = str(request["notes"])[:500]
        await journal.call(lambda j: j.request_cancel(found.id, payload or None))
        engine.incident_ended(found.id)
        uplink.offer(None)
        after = await journal.call(lambda j: j.incident(found.id))
        local = after is not None and after.state == CANCELLED
        logger.warning("event=cancel_requested incident=%s by=technician local=%s", found.id, local)
        if local:
            return {"result": "cancelled here: its raise had not reached AURA, no callout"}
        return {"result": "cancel queued for AURA, after the raise"}

    async def rate(request: dict[str, Any]) -> dict[str, Any]:
        found = await incident(request)
        if found.state not in (CLOSED, CANCELLED) or found.callout_id is None:
            raise ControlError(f"incident {found.id} is {found.state}: rate it once it closed")
        try:
            score = int(request.get("score", 0))
        except (TypeError, ValueError):
            raise ControlError("the score is a whole number from 1 to 5") from None
        if not 1 <= score <= 5:
            raise ControlError("the score is a whole number from 1 to 5")
        comment = request.get("comment")
        try:
            await client.rate(found.callout_id, score, str(comment) if comment else None)
        except CloudError as exc:
            raise ControlError(f"AURA did not take the rating: {exc}") from exc
        return {"result": f"rated {score} for callout {found.callout_id}"}

    async def ack(request: dict[str, Any]) -> dict[str, Any]:
        found = await incident(request)
        if not await journal.call(lambda j: j.acknowledge(found.id)):
            raise ControlError(f"incident {found.id} is {found.state}, not undeliverable")
        status.failed_incidents.pop(found.id, None)
        status.changed()
        logger.warning("event=undeliverable_acknowledged incident=%s", found.id)
        return {"result": f"acknowledged {found.id}"}

    return {"cancel": cancel, "rate": rate, "ack": ack}

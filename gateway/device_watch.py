"""The daemon's side of device supervision: the Supervisor, fed, persisted and shown.

Fed through the status model: every input already reports a device it heard with
``StatusModel.device_seen`` (a receiver button's heartbeat or press, any MQTT message about
a known device, a zigbee2mqtt availability message), and ``DeviceWatch`` listens there
(``StatusModel.on_device_heard``). So an input needs no second call that it could forget,
and what the status shows as "last seen" and what supervision counts as a check-in are the
same events.

Transitions only (silent, recovered) are written to the journal, in order, by the task in
:meth:`DeviceWatch.run`, which otherwise sleeps until the next device could go silent (or
until a transition needs writing): a gateway with nothing supervised never wakes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from gateway.config import Config
from gateway.config.models import DevicesFile
from gateway.errors import JournalError
from gateway.journal import AsyncJournal
from gateway.status import StatusModel
from gateway.supervision import Supervisor, Transition
from gateway.waits import wait_event

logger = logging.getLogger(__name__)

OFFLINE_REASON = "its bridge reports it unavailable (zigbee2mqtt availability offline)"


class DeviceWatch:
    """Owns the Supervisor; built before the inputs run so no check-in is missed."""

    def __init__(
        self,
        config: Config | DevicesFile,
        journal: AsyncJournal,
        status: StatusModel,
        silent: dict[str, str],
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``silent``: the devices the journal says were silent at the last stop."""
        self.journal = journal
        self.status = status
        self.clock_ns = clock_ns
        self.supervisor = Supervisor(config, clock_ns, silent)
        self._pending: list[Transition] = []
        self._wake = asyncio.Event()
        for device_id, reason in sorted(self.supervisor.silent().items()):
            # Silent before the restart: still silent until it speaks.
            status.device_supervision(device_id, True, reason)
            logger.warning("event=device_still_silent device=%s reason=%r", device_id, reason)
        status.on_device_heard(self._heard)

    def _heard(self, device_id: str, available: bool | None, checkin: bool) -> None:
        now = self.clock_ns()
        if available is False:
            # The bridge's word, retained or not: zigbee2mqtt keeps it current itself.
            transition = self.supervisor.offline(device_id, now, OFFLINE_REASON)
        elif checkin or available is True:
            transition = self.supervisor.heard(device_id, now)
        else:
            return  # old news replayed by the broker: not a sign of life
        if transition is not None:
            self._apply(transition)

    def _apply(self, transition: Transition) -> None:
        self.status.device_supervision(transition.device_id, transition.silent, transition.reason)
        if transition.silent:
            logger.warning(
                "event=device_silent device=%s reason=%r", transition.device_id, transition.reason
            )
        else:
            logger.info(
                "event=device_recovered device=%s reason=%r",
                transition.device_id,
                transition.reason,
            )
        self._pending.append(transition)
        self._wake.set()
        self.status.changed()

    def reload(self, config: Config | DevicesFile) -> None:
        """A new device registry: removed devices leave supervision (and their silence the
        status), new ones are timed from now."""
        for transition in self.supervisor.reload(config):
            self._apply(transition)
        for device_id, health in self.status.devices_seen.items():
            if health.silent and not self.supervisor.is_silent(device_id):
                self.status.device_supervision(device_id, False, None)
        self._wake.set()  # a new device or interval may bring the next deadline closer
        self.status.changed()

    async def run(self) -> None:
        """Until cancelled: turn overdue check-ins into silences, write transitions."""
        while True:
            for transition in self.supervisor.check(self.clock_ns()):
                self._apply(transition)
            await self._persist()
            if self._pending:
                continue  # a transition arrived while the journal was writing
            self._wake.clear()
            deadline = self.supervisor.next_deadline_ns()
            timeout = None
            if deadline is not None:
                # Rounded up to the millisecond: waking a hair early would only loop.
                timeout = math.ceil(max(0, deadline - self.clock_ns()) / 1e6) / 1e3
            with contextlib.suppress(TimeoutError):
                await wait_event(self._wake, timeout)

    async def _persist(self) -> None:
        while self._pending:
            transition = self._pending.pop(0)
            try:
                await self.journal.call(
                    lambda j, t=transition: j.set_supervision(t.device_id, t.silent, t.reason)
                )
            except JournalError as exc:
                # Still shown and logged; only a restart would forget it.
                logger.error(
                    "event=journal_error device=%s supervision=%s error=%s",
                    transition.device_id,
                    transition.state,
                    exc,
                )

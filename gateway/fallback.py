"""The local alarm when AURA refuses an alarm for good (invariant 3).

A configured command (a siren or relay script, an SMS gateway) runs once per
undeliverable alarm, in the background, with a time limit. It is told the incident, the
device and AURA's reason in its environment, never the credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os

from gateway.config.models import FallbackSettings
from gateway.journal import Incident

logger = logging.getLogger(__name__)


class Fallback:
    def __init__(self, settings: FallbackSettings) -> None:
        self.settings = settings
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, incident: Incident, reason: str) -> None:
        if not self.settings.command:
            logger.critical(
                "event=fallback_missing incident=%s why='no [fallback] command is configured'",
                incident.id,
            )
            return
        task = asyncio.create_task(self._run(incident, reason), name=f"fallback:{incident.id}")
        self._running.add(task)  # keep a reference until it ends
        task.add_done_callback(self._running.discard)

    async def _run(self, incident: Incident, reason: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "AURA_INCIDENT": incident.id,
            "AURA_DEVICE": incident.device_id,
            "AURA_REASON": reason,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.settings.command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            logger.critical("event=fallback_failed incident=%s error=%s", incident.id, exc)
            return
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                output, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            logger.critical("event=fallback_timeout incident=%s", incident.id)
            return
        log = logger.warning if proc.returncode == 0 else logger.critical
        log(
            "event=fallback_ran incident=%s rc=%s output=%r",
            incident.id,
            proc.returncode,
            output.decode(errors="replace")[-500:],
        )

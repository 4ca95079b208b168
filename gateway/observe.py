"""The audit trail and the metrics, attached to the daemon's parts (for gateway/app.py).

Both only listen: the router and the AURA client tell them what happened through small
hooks (``Router.audit``, ``AuraClient.observers``, ``Uplink.on_accepted``), and neither
can hold up a press: the audit writer has its own thread, the metrics are read when
scraped.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from gateway.audit import AuditLog, NullAudit
from gateway.audit_events import exchange_recorder
from gateway.aura.client import AuraClient
from gateway.config import Config
from gateway.journal import AsyncJournal
from gateway.metrics import Metrics, gateway_version
from gateway.router import Router
from gateway.signals import BOOT_ID
from gateway.status import StatusModel
from gateway.uplink import Uplink


@dataclass
class Observers:
    audit: AuditLog | NullAudit
    metrics: Metrics | None
    settings: Any  # [metrics]

    async def run_metrics(self) -> None:
        assert self.metrics is not None
        await self.metrics.run(self.settings)

    async def close(self) -> None:
        """The ``stop`` record, then everything queued to disk (fsync'd), off the loop."""
        self.audit.record("stop", {"pid": os.getpid()})
        await asyncio.to_thread(self.audit.close)


def observe(
    config: Config,
    status: StatusModel,
    journal: AsyncJournal,
    client: AuraClient,
    uplink: Uplink,
    router: Router,
) -> Observers:
    audit = AuditLog.from_settings(config.gateway.audit).start()
    if audit.enabled:
        audit.record(
            "startup",
            {
                "gateway": config.gateway.gateway.name,
                "version": gateway_version(),
                "pid": os.getpid(),
                "boot_id": BOOT_ID,
                "config": str(config.path),
                "devices": len(config.devices.devices),
            },
        )
        client.observers.append(exchange_recorder(audit.record))
        router.audit = audit.record
    settings = config.gateway.metrics
    metrics = None
    if settings.listen or settings.textfile_dir is not None:
        metrics = Metrics(
            status,
            gateway=config.gateway.gateway.name,
            facts=lambda: journal.call(lambda j: j.queue_facts()),
            audit=audit,
        )
        client.observers.append(metrics.observe_exchange)
        uplink.on_accepted = metrics.accepted
    return Observers(audit, metrics, settings)

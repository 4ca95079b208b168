"""Wiring only: build the parts from the config, run them in one TaskGroup, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from gateway import sdnotify
from gateway.aura.client import AuraClient
from gateway.config import Config
from gateway.engine import Engine
from gateway.errors import GatewayError, JournalError
from gateway.inputs import input_class
from gateway.journal import ACTIVE_STATES, FAILED, OPEN, AsyncJournal
from gateway.router import Router
from gateway.status import StatusModel
from gateway.uplink import Uplink

logger = logging.getLogger(__name__)

STATUS_PERIOD_S = 5.0


async def run_daemon(config: Config) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    status = StatusModel(devices=len(config.devices.devices))
    try:
        journal = await AsyncJournal(config.journal_path).open()
    except JournalError as exc:
        logger.critical("event=startup_failed error=%s", exc)
        return 1
    try:
        return await _run(config, journal, status)
    finally:
        await journal.close()


async def _run(config: Config, journal: AsyncJournal, status: StatusModel) -> int:
    active = await journal.call(lambda j: j.incidents(ACTIVE_STATES))
    failed = await journal.call(lambda j: j.incidents((FAILED,)))
    fixes = await journal.call(lambda j: j.fixes())
    engine = Engine(
        config,
        open_incidents={i.key: i.id for i in active},
        fixes=fixes,
        clock_ns=time.monotonic_ns,
    )
    status.open_callouts = {i.id: i.aura_status or "created" for i in active if i.state == OPEN}
    status.failed_incidents = {i.id: i.last_error or "rejected" for i in failed}
    status.pending_alarms = await journal.call(lambda j: j.pending_alarms())

    client = AuraClient(config.gateway.aura, config.credentials.aura)
    uplink = Uplink(client, journal, engine, status, config.gateway.aura)
    router = Router(engine, journal, status, uplink)
    try:
        inputs = [input_class(cfg.type)(cfg, router, status) for cfg in config.gateway.inputs]
    except GatewayError as exc:
        logger.critical("event=startup_failed error=%s", exc)
        await client.aclose()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(i.run(), name=f"input:{i.name}") for i in inputs]
            tasks.append(tg.create_task(uplink.run_alarms(), name="uplink-alarms"))
            tasks.append(tg.create_task(uplink.run_followers(), name="uplink-followers"))
            tasks.append(tg.create_task(_report(status, inputs), name="status-report"))
            sdnotify.notify("READY=1\nSTATUS=" + status.summary())
            logger.info(
                "event=ready gateway=%s devices=%d open_incidents=%d queued=%d journal=%s",
                config.gateway.gateway.name,
                status.devices,
                len(active),
                status.pending_alarms,
                config.journal_path,
            )
            await stop.wait()
            logger.info("event=stopping")
            sdnotify.notify("STOPPING=1")
            for task in tasks:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await client.aclose()
    return 0


async def _report(status: StatusModel, inputs: list) -> None:
    """Refresh input health and tell systemd the state in plain words when it changes."""
    last = ""
    interval = sdnotify.watchdog_interval_s() or STATUS_PERIOD_S
    while True:
        for item in inputs:
            link = getattr(item, "link", None)
            health = status.inputs.get(item.name)
            if link is not None and health is not None and health.connected != link.connected:
                health.connected = link.connected
                logger.warning(
                    "event=input_%s input=%s",
                    "connected" if link.connected else "lost",
                    item.name,
                )
        summary = status.summary()
        if summary != last:
            sdnotify.notify("STATUS=" + summary)
            last = summary
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(min(interval, STATUS_PERIOD_S))

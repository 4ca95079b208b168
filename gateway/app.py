"""Wiring only: build the parts from the config, run them in one TaskGroup, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway import sdnotify
from gateway.aura.client import AuraClient
from gateway.clock import CLOCK
from gateway.config import Config
from gateway.control import ControlServer
from gateway.daemon_status import status_commands
from gateway.device_watch import DeviceWatch
from gateway.engine import Engine
from gateway.errors import GatewayError, JournalError
from gateway.fallback import Fallback
from gateway.follower import Follower
from gateway.health import HEALTH, keep_watchdog
from gateway.inputs import input_class
from gateway.journal import ACTIVE_STATES, OPEN, AsyncJournal
from gateway.leds import LedDriver
from gateway.mqtt_status import StatusPublisher
from gateway.observe import observe
from gateway.reload import Reloader
from gateway.router import Router
from gateway.signals import BOOT_ID
from gateway.status import StatusModel
from gateway.statusfile import write_status
from gateway.technician import technician_commands
from gateway.uplink import Uplink
from gateway.waits import wait_event
from gateway.walk_test import WalkTests

logger = logging.getLogger(__name__)

STATUS_PERIOD_S = 5.0
JOURNAL_CHECK_S = 60.0
CLOCK_CHECK_S = 1.0  # the wall clock's trust is looked at this often without signals
# READY waits this long for the receiver's port; an absent receiver must not stop the
# gateway from starting (presses may still come from elsewhere, and status says so).
INPUT_OPEN_WAIT_S = 2.0


async def run_daemon(config: Config) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    # The journal, MQTT and audit threads hand the GIL back within 1 ms rather than the
    # default 5 ms: a press waiting on the event loop must not queue behind a PUBACK.
    sys.setswitchinterval(0.001)
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
    # An incident whose cancel is still on its way is over for new presses, after a
    # restart as before it: a press now is a new emergency.
    cancelling = await journal.call(lambda j: j.cancelling())
    failed = await journal.call(lambda j: j.unacknowledged_failures())
    fixes = await journal.call(lambda j: j.fixes())
    engine = Engine(
        config,
        open_incidents={i.key: i.id for i in active if i.id not in cancelling},
        fixes=fixes,
        clock_ns=time.monotonic_ns,
    )
    status.open_callouts = {i.id: i.aura_status or "created" for i in active if i.state == OPEN}
    status.failed_incidents = {i.id: i.last_error or "rejected" for i in failed}
    status.pending_alarms = await journal.call(lambda j: j.pending_alarms())

    client = AuraClient(config.gateway.aura, config.credentials.aura)
    inputs: list[Any] = []

    async def indicate(device_id: str, state: str) -> None:
        for item in inputs:
            await item.indicate(device_id, state)

    uplink = Uplink(
        client,
        journal,
        engine,
        status,
        config.gateway.aura,
        indicate=indicate,
        cancel=config.gateway.cancel,
        late_alarm_after_s=config.gateway.gateway.late_alarm_after_s,
        fallback=Fallback(config.gateway.fallback),
    )
    follower = Follower(
        client,
        journal,
        engine,
        status,
        config.gateway.aura,
        tell=indicate,
        on_closed=lambda incident, stage, seen: router.close_incident(incident, stage, seen),
        alarms_busy=uplink.busy,
    )
    uplink.on_raised = follower.follow_soon
    router = Router(engine, journal, status, uplink, recheck=follower.recheck)
    await router.adopt_held()
    walk_tests = WalkTests(journal, engine, status)
    # Listening before any input runs: a check-in is never missed, a silence survives.
    silent = await journal.call(lambda j: j.silent_devices())
    device_watch = DeviceWatch(config, journal, status, silent)
    # backend "none": no LED task and no status listener at all.
    leds = LedDriver(config.gateway.leds, status) if config.gateway.leds.backend != "none" else None
    try:
        inputs += [
            input_class(cfg.type)(cfg, router, status, config) for cfg in config.gateway.inputs
        ]
    except GatewayError as exc:
        logger.critical("event=startup_failed error=%s", exc)
        await client.aclose()
        return 1

    # SIGHUP (systemctl reload): a new device registry, swapped everywhere at once.
    reloader = Reloader(
        config, engine=engine, inputs=inputs, device_watch=device_watch, status=status
    )
    HEALTH.limits["uplink"] = HEALTH.limits["follower"] = _aura_step_limit(config)
    # The audit trail (its own writer thread) and the metrics, listening from here on.
    observers = observe(config, status, journal, client, uplink, router)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(i.run(), name=f"input:{i.name}") for i in inputs]
            tasks.append(tg.create_task(uplink.run_alarms(), name="uplink-alarms"))
            tasks.append(tg.create_task(follower.run(), name="follower"))
            tasks.append(tg.create_task(router.run_held(), name="held-presses"))
            for task in tasks:  # the critical ones: the watchdog pings only while they run
                HEALTH.watch(task)
            tasks.append(tg.create_task(reloader.run(), name="reload"))
            watchdog_interval = sdnotify.watchdog_interval_s()
            if watchdog_interval is not None:
                tasks.append(
                    tg.create_task(keep_watchdog(journal, watchdog_interval), name="watchdog")
                )
            tasks.append(tg.create_task(walk_tests.run(), name="walk-test"))
            tasks.append(tg.create_task(device_watch.run(), name="device-watch"))
            if leds is not None:
                tasks.append(tg.create_task(leds.run(), name="leds"))
            control = ControlServer(
                config.control_path,
                technician_commands(journal, engine, uplink, client, status)
                | walk_tests.handlers()
                | status_commands(lambda: engine.config, status, uplink),
            )
            tasks.append(tg.create_task(control.serve(), name="control"))
            tasks.append(
                tg.create_task(
                    _report(status, inputs, config.status_path, _report_period(config)),
                    name="status-report",
                )
            )
            tasks.append(
                tg.create_task(
                    _keep_journal_small(
                        journal, status, int(config.gateway.gateway.journal_max_mb * 2**20)
                    ),
                    name="journal-size",
                )
            )
            tasks.append(tg.create_task(_correct_press_times(journal), name="clock-trust"))
            if observers.metrics is not None:
                tasks.append(tg.create_task(observers.run_metrics(), name="metrics"))
            if config.gateway.status_mqtt is not None:
                publisher = StatusPublisher(config.gateway.status_mqtt, status, config)
                tasks.append(tg.create_task(publisher.run(), name="status-mqtt"))
            await _inputs_opened(inputs, INPUT_OPEN_WAIT_S)
            sdnotify.notify("READY=1\nSTATUS=" + status.summary())
            if leds is not None:
                leds.ready()
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
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        HEALTH.reset()
        await client.aclose()
        await observers.close()
    return 0


async def _inputs_opened(inputs: list[Any], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not all(i.connected for i in inputs):  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # start-up only; the link has no "opened" event to wait on


async def _keep_journal_small(journal: AsyncJournal, status: StatusModel, cap: int) -> None:
    """Report how full the journal is and prune ended history before it reaches its cap.

    Pruning goes in bounded steps (``Journal.prune_step``, ~50 ms each), one journal call
    each: presses, alarms and the watchdog's probe queue between them, never behind a
    whole prune of a big journal."""
    while True:
        removed = 0
        try:
            while step := await journal.call(lambda j: j.prune_step(cap)):
                removed += step
                await asyncio.sleep(0)  # let waiting presses reach the journal thread first
            used, on_disk = await journal.call(lambda j: j.size())
        except JournalError as exc:
            logger.error("event=journal_error error=%s", exc)
        else:
            if removed:
                logger.info("event=journal_pruned presses=%d", removed)
            fill = round(100 * used / cap, 1)
            status.journal = {"used_bytes": used, "disk_bytes": on_disk, "fill_pct": fill}
            if fill > 90:
                logger.warning("event=journal_nearly_full fill_pct=%.1f", fill)
        await asyncio.sleep(JOURNAL_CHECK_S)


async def _correct_press_times(journal: AsyncJournal) -> None:
    """Watch the wall clock's trust; when it comes, correct this boot's press times that
    were stamped before it (from the monotonic clock: ``Journal.restamp_untrusted``)."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = CLOCK.subscribe(lambda _state: loop.call_soon_threadsafe(changed.set))
    done_epoch = 0
    again = False  # one more pass after a correction: a press stamped just before the flip
    try:
        while True:
            changed.clear()
            state = CLOCK.state()
            if state.trusted and (state.epoch != done_epoch or again):
                now_mono, now_wall = time.monotonic_ns(), time.time()
                try:
                    presses, incidents = await journal.call(
                        lambda j, w=now_wall, m=now_mono: j.restamp_untrusted(BOOT_ID, w, m)
                    )
                except JournalError as exc:
                    logger.error("event=journal_error error=%s", exc)  # tried again next tick
                else:
                    again = state.epoch != done_epoch
                    done_epoch = state.epoch
                    if presses or incidents:
                        logger.info(
                            "event=press_times_corrected presses=%d incidents=%d source=%s",
                            presses,
                            incidents,
                            state.source,
                        )
            with contextlib.suppress(TimeoutError):
                await wait_event(changed, CLOCK_CHECK_S)
    finally:
        unsubscribe()


def _aura_step_limit(config: Config) -> float:
    """How long one alarm delivery or one follower poll may take before it counts as stuck
    (gateway/health.py): a few whole AURA requests (token, the request, a 401 retry, the
    active-callouts check), each bounded by the configured timeouts, and a margin."""
    t = config.gateway.aura.timeouts
    # Ten whole requests: a follower poll can be a device event, a read, the report and
    # the map, each with a token refresh and a 401 retry. With the default timeouts that
    # is 290 s: a busy poll is not a hang, a real hang is still caught.
    return 10 * (t.connect + t.write + t.read + t.pool) + 30.0


def _report_period(config: Config) -> float:
    """Often enough to notice a silent receiver within a quarter of its watchdog time."""
    watchdogs = [cfg.watchdog_s for cfg in config.gateway.inputs]
    return min([STATUS_PERIOD_S, *(w / 4 for w in watchdogs)])


async def _report(status: StatusModel, inputs: list[Any], path: Path, period: float) -> None:
    """Refresh input health, keep the status file current, tell systemd in plain words.
    (The watchdog's WATCHDOG=1 is not sent here: gateway/health.py decides it.)"""
    last = ""
    interval = period
    # A change is written at once (at most five times a second), not at the next period:
    # a technician running `aura-gateway status` after a press sees it.
    changed = asyncio.Event()
    status.subscribe(lambda _status: changed.set())
    while True:
        changed.clear()
        for item in inputs:
            item.refresh_health()
        summary = status.summary()
        if summary != last:
            sdnotify.notify("STATUS=" + summary)
            last = summary
        try:
            write_status(path, status)
        except OSError as exc:
            logger.error("event=status_write_failed path=%s error=%s", path, exc)
        with contextlib.suppress(TimeoutError):
            await wait_event(changed, interval)
        await asyncio.sleep(0.2)

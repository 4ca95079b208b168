"""Prometheus metrics for the fleet: a loopback ``/metrics`` endpoint, node_exporter's
textfile directory, or both (``[metrics]``).

Nearly everything is read from the status model (and, for the queue's age, one small
journal query) at the moment of a scrape, by a custom collector: nothing is counted
twice and nothing runs while nobody looks. The scrape runs on prometheus_client's server
thread; it takes its reading on the event loop (``run_coroutine_threadsafe``), so the
loop's data is never read while it changes. Only two things are kept here because no
one else keeps them: the press-to-accept histogram and the uplink errors by class.

No label carries a customer, a device id, a callout or a secret: labels are input names
(from the config), error classes, queue classes and counter names the code defines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.aura.client import Exchange
from gateway.clock import CLOCK
from gateway.signals import BOOT_ID
from gateway.status import StatusModel

logger = logging.getLogger(__name__)

disable_created_metrics()  # no *_created series: the fleet's dashboards do not use them

# From a 5 ms press-to-accept on a quiet LAN to alarms delivered after an outage.
PRESS_TO_ACCEPT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
ERROR_CLASSES = (
    "unreachable",
    "timeout",
    "transport",
    "5xx",
    "429",
    "unauthorized",
    "rejected",
    "redirect",
)
UPLINK_STATES = ("up", "down", "unauthorized", "unknown")
TEXTFILE_NAME = "aura_gateway.prom"
SAMPLE_WAIT_S = 2.0  # a scrape waits this long for the loop, then answers from what it has
LISTEN_RETRY_S = 30.0

Facts = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Sample:
    """What one scrape shows, taken on the event loop in one go."""

    uplink: str = "unknown"
    pending_alarms: int = 0
    open_callouts: int = 0
    undeliverable: int = 0
    devices: int = 0
    silent: int = 0
    battery_low: int = 0
    tampered: int = 0
    unknown_devices: int = 0
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    journal: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] | None = None
    mono_ns: int = 0
    wall: float = 0.0


def sample(status: StatusModel, facts: dict[str, Any] | None = None) -> Sample:
    """Read the status model (on the loop: nothing changes it meanwhile)."""
    devices = list(status.devices_seen.values())
    return Sample(
        uplink=status.uplink,
        pending_alarms=status.pending_alarms,
        open_callouts=len(status.open_callouts),
        undeliverable=len(status.failed_incidents),
        devices=status.devices,
        silent=sum(1 for d in devices if d.silent),
        battery_low=sum(1 for d in devices if d.battery_low),
        tampered=sum(1 for d in devices if d.tamper),
        unknown_devices=len(status.unknown_devices),
        inputs={
            name: {
                "state": h.state,
                "last_frame_age_s": h.last_frame_age_s,
                "frames_ok": h.frames_ok,
                "bad_frames": h.bad_frames,
                "counters": dict(h.counters),
            }
            for name, h in status.inputs.items()
        },
        counters=dict(status.counters),
        journal=dict(status.journal),
        facts=facts,
        mono_ns=time.monotonic_ns(),
        wall=time.time(),
    )


def gateway_version() -> str:
    try:
        return metadata.version("aura-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    def __init__(
        self,
        status: StatusModel,
        *,
        gateway: str = "aura-gateway",
        facts: Facts | None = None,
        audit: Any = None,
    ) -> None:
        self.status = status
        self.gateway = gateway
        self.audit = audit if audit is not None and getattr(audit, "enabled", False) else None
        self.up = 1
        self._facts = facts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version = gateway_version()
        self.registry = CollectorRegistry(auto_describe=False)
        self.press_to_accept = Histogram(
            "aura_gateway_press_to_accept_seconds",
            "From the press (its monotonic stamp) to AURA accepting the create-callout "
            "request; alarms delayed by an outage or a power cut land in the top buckets.",
            buckets=PRESS_TO_ACCEPT_BUCKETS,
            registry=self.registry,
        )
        self.uplink_errors = Counter(
            "aura_gateway_uplink_errors",
            "Requests to AURA that failed, by class: unreachable, timeout, transport, 5xx, "
            "429, unauthorized (401), rejected (another 4xx), redirect.",
            ["class"],
            registry=self.registry,
        )
        for name in ERROR_CLASSES:
            self.uplink_errors.labels(name)
        self.registry.register(_StatusCollector(self))

    # ------------------------------------------------------------------ feeding

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the status model lives on: scrapes read it there."""
        self._loop = loop

    def accepted(self, incident: Any, at_ns: int) -> None:
        """``Uplink.on_accepted``: AURA accepted this incident's alarm at ``at_ns``."""
        if incident.press_boot_id == BOOT_ID:
            seconds = (at_ns - incident.press_mono_ns) / 1e9
        elif incident.press_wall_trusted and CLOCK.trusted():
            # Pressed before a restart: only the wall clock spans it, when it was right.
            seconds = time.time() - (time.monotonic_ns() - at_ns) / 1e9 - incident.press_wall
        else:
            return
        if seconds >= 0:
            self.press_to_accept.observe(seconds)

    def observe_exchange(self, exchange: Exchange) -> None:
        """An ``AuraClient`` observer: count failed requests by class."""
        if exchange.phase == "response" and exchange.error_class is not None:
            self.uplink_errors.labels(exchange.error_class).inc()

    # ------------------------------------------------------------------ reading

    def take_sample(self) -> Sample:
        """A sample from any thread: on the loop when one is bound and running."""
        loop = self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is not None and loop is not current and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._sample_on_loop(), loop)
            try:
                return future.result(SAMPLE_WAIT_S)
            except Exception as exc:  # the loop is busy or stopping: answer anyway
                future.cancel()
                logger.warning("event=metrics_sample_late error=%r", exc)
        return sample(self.status)

    async def _sample_on_loop(self) -> Sample:
        facts = None
        if self._facts is not None:
            try:
                facts = await self._facts()
            except Exception as exc:
                logger.warning("event=metrics_journal_unread error=%s", exc)
        return sample(self.status, facts)

    def render(self) -> bytes:
        """The exposition text (what /metrics answers)."""
        return generate_latest(self.registry)

    def serve(self, listen: str) -> Any:
        """Serve /metrics on ``host:port`` (loopback: the config allows nothing else).
        Returns the server; ``server.shutdown()`` and ``server_close()`` stop it."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        return server

    def write_textfile(self, directory: Path) -> Path:
        """Replace ``<directory>/aura_gateway.prom`` atomically (write, then rename)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TEXTFILE_NAME
        write_to_textfile(str(path), self.registry)
        return path

    async def run(self, settings: Any) -> None:
        """Serve and/or write the textfile until cancelled. With only the endpoint it
        sleeps: a scrape wakes the server thread, never the loop's timers."""
        self.bind(asyncio.get_running_loop())
        server = None
        failing = False
        try:
            while True:
                if settings.listen and server is None:
                    try:
                        server = self.serve(settings.listen)
                        logger.info("event=metrics_listening listen=%s", settings.listen)
                    except OSError as exc:
                        logger.error(
                            "event=metrics_listen_failed listen=%s error=%s", settings.listen, exc
                        )
                wait: float | None = None
                if settings.textfile_dir is not None:
                    try:
                        await asyncio.to_thread(self.write_textfile, Path(settings.textfile_dir))
                        failing = False
                    except OSError as exc:
                        if not failing:
                            logger.error("event=metrics_textfile_failed error=%s", exc)
                        failing = True
                    wait = settings.interval_s
                if settings.listen and server is None:
                    wait = min(wait or LISTEN_RETRY_S, LISTEN_RETRY_S)
                if wait is None:
                    await asyncio.Event().wait()  # served by its own thread from now on
                else:
                    await asyncio.sleep(wait)
        finally:
            self.up = 0
            if settings.textfile_dir is not None:
                # The file stays behind: it says the gateway stopped, not how it was.
                with contextlib.suppress(OSError):
                    self.write_textfile(Path(settings.textfile_dir))
            if server is not None:
                await asyncio.to_thread(server.shutdown)
                server.server_close()


class _StatusCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        s = m.take_sample()
        yield _gauge(
            "aura_gateway_up",
            "1 while the daemon runs; 0 in the textfile a clean stop leaves.",
            m.up,
        )
        info = GaugeMetricFamily(
            "aura_gateway_info", "The gateway's name and version.", labels=["gateway", "version"]
        )
        info.add_metric([m.gateway, m._version], 1)
        yield info
        uplink = GaugeMetricFamily(
            "aura_gateway_uplink_state",
            "1 for the uplink's current state (up, down, unauthorized, unknown).",
            labels=["state"],
        )
        for state in UPLINK_STATES:
            uplink.add_metric([state], 1 if s.uplink == state else 0)
        yield uplink

        depth = GaugeMetricFamily(
            "aura_gateway_queue_depth",
            "Waiting to reach AURA: alarm (raises, cancels, notes; never evicted), location "
            "(open callouts streaming a live position; one newest fix each).",
            labels=["class"],
        )
        depth.add_metric(["alarm"], s.pending_alarms)
        if s.facts is not None:
            depth.add_metric(["location"], s.facts.get("live_callouts", 0))
        yield depth
        if s.facts is not None:
            waiting = GaugeMetricFamily(
                "aura_gateway_outbox_waiting",
                "Alarm-class requests waiting in the journal's outbox, by kind.",
                labels=["kind"],
            )
            counts = s.facts.get("waiting", {})
            for kind in sorted({"raise", "cancel", "note", *counts}):
                waiting.add_metric([kind], counts.get(kind, 0))
            yield waiting
            yield _gauge(
                "aura_gateway_oldest_undelivered_alarm_age_seconds",
                "Age of the oldest alarm AURA has not accepted (waiting, being sent, or "
                "refused and not yet acknowledged); 0 when there is none.",
                _age(s.facts.get("oldest_undelivered"), s),
            )
        yield _gauge("aura_gateway_open_callouts", "Callouts open at AURA.", s.open_callouts)
        yield _gauge(
            "aura_gateway_undeliverable_alarms",
            "Alarms AURA refused for good, not yet acknowledged by a technician.",
            s.undeliverable,
        )
        yield _gauge("aura_gateway_devices_configured", "Buttons in devices.toml.", s.devices)
        yield _gauge(
            "aura_gateway_devices_silent",
            "Supervised buttons that missed their check-ins.",
            s.silent,
        )
        yield _gauge(
            "aura_gateway_devices_battery_low", "Buttons reporting a low battery.", s.battery_low
        )
        yield _gauge("aura_gateway_devices_tampered", "Buttons reporting a tamper.", s.tampered)
        yield _gauge(
            "aura_gateway_unknown_devices",
            "Devices heard that are not configured.",
            s.unknown_devices,
        )
        yield from _inputs(s)
        yield from _press_counters(s)
        if s.journal:
            yield _gauge(
                "aura_gateway_journal_fill_ratio",
                "Journal size as a share of journal_max_mb (ended history is pruned at 1, to 0.8).",
                s.journal.get("fill_pct", 0.0) / 100,
            )
            yield _gauge(
                "aura_gateway_journal_used_bytes",
                "Bytes the journal uses.",
                s.journal.get("used_bytes", 0),
            )
        if m.audit is not None:
            yield _counter("aura_gateway_audit_records", "Audit records written.", m.audit.written)
            yield _gauge(
                "aura_gateway_audit_last_seq",
                "Seq of the newest audit record: kept outside the box, it shows a trail cut short.",
                m.audit.last_seq,
            )
            yield _counter(
                "aura_gateway_audit_dropped",
                "Audit events dropped because the writer could not keep up.",
                m.audit.dropped,
            )
            yield _counter(
                "aura_gateway_audit_write_errors", "Audit writes the disk refused.", m.audit.errors
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _age(oldest: Any, s: Sample) -> float:
    if not oldest:
        return 0.0
    mono_ns, boot_id, wall = oldest
    if boot_id == BOOT_ID:
        return max(0.0, (s.mono_ns - mono_ns) / 1e9)
    return max(0.0, s.wall - wall)  # pressed before a restart: the wall clock is all there is


def _inputs(s: Sample) -> Iterator[Metric]:
    up = GaugeMetricFamily("aura_gateway_input_up", "1 while the input is ok.", labels=["input"])
    age = GaugeMetricFamily(
        "aura_gateway_input_last_frame_age_seconds",
        "Seconds since the input last heard its source.",
        labels=["input"],
    )
    frames = CounterMetricFamily(
        "aura_gateway_input_frames", "Frames (messages) received intact.", labels=["input"]
    )
    bad = CounterMetricFamily(
        "aura_gateway_input_bad_frames",
        "Frames counted and skipped (CRC, decoding, oversize).",
        labels=["input"],
    )
    link = CounterMetricFamily(
        "aura_gateway_input_link_events",
        "The receiver link's counters: crc_errors, decode_errors, oversize, resyncs, "
        "reopens, unknown_type, discarded_bytes ...",
        labels=["input", "event"],
    )
    for name, h in sorted(s.inputs.items()):
        up.add_metric([name], 1 if h["state"] == "ok" else 0)
        if h["last_frame_age_s"] is not None:
            age.add_metric([name], h["last_frame_age_s"])
        frames.add_metric([name], h["frames_ok"])
        bad.add_metric([name], h["bad_frames"])
        for event, n in sorted(h["counters"].items()):
            if event != "frames_ok" and isinstance(n, int | float):
                link.add_metric([name, event], n)
    yield from (up, age, frames, bad, link)


def _press_counters(s: Sample) -> Iterator[Metric]:
    c = s.counters
    yield _counter(
        "aura_gateway_auth_failures",
        "Presses refused: a wrong MAC, or a forged press for an authenticated button.",
        c.get("auth_failures", 0),
    )
    yield _counter(
        "aura_gateway_replays",
        "Old transmissions or counters heard again: never a callout.",
        c.get("presses_replay", 0),
    )
    repeats = CounterMetricFamily(
        "aura_gateway_press_repeats",
        "The same press heard again: a radio repeat (repeat) or a resent frame (resend).",
        labels=["kind"],
    )
    for kind in ("repeat", "resend"):
        repeats.add_metric([kind], c.get(f"presses_{kind}", 0))
    yield repeats
    events = CounterMetricFamily(
        "aura_gateway_events",
        "Every counter of `aura-gateway status` (presses by decision, journal errors, "
        "unknown devices, MQTT ...), by its name there.",
        labels=["event"],
    )
    for name, n in sorted(c.items()):
        events.add_metric([name], n)
    yield events

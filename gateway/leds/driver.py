"""Drives the status LEDs and the relay from the status model.

It listens to ``StatusModel.changed()``, decides the one state to show
(:mod:`gateway.leds.states`) and tells the backend only what changed. It never wakes
by itself while everything is shown and nothing waits: no polling. The one-shot
wake-ups: the end of a walk-test press (shown for a second); the moment waiting alarms
count as waiting too long (:data:`~gateway.leds.states.WAITING_TOO_LONG_S`); and, only
while a write is failing, a retry every :data:`RETRY_S`.

A pattern counts as shown only when the backend wrote it (``set`` returned without
raising and not False). A failed output is retried on the next status change and every
:data:`RETRY_S`; it is logged once (``event=led_output_failing``, then
``event=led_output_ok``) and counted in ``status.counters["led_write_failures"]`` (every
failed attempt).

How long alarms have waited: the status model's ``oldest_pending_alarm_age_s`` when it
has one; otherwise the driver counts, on the monotonic clock, how long alarms have been
waiting with the uplink ``down`` (reset whenever that stops).

The state is "booting" from the start until :meth:`LedDriver.ready` (READY=1). When the
daemon stops, the LEDs go dark; the relay goes off too, unless it is on for an alarm that
did not get through (:func:`~gateway.leds.states.relay_reason`): the siren must not go
quiet because the gateway stopped (``event=relay_held_at_stop``). A backend that cannot
be opened (no LED class, no GPIO chip, no gpiod), or that fails, is logged and the
gateway runs on: the LEDs must never cost an alarm, and :meth:`LedDriver.run` never
raises because of a backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection
from typing import Protocol

from gateway.config.models import LedSettings
from gateway.errors import GatewayError
from gateway.leds.states import (
    OFF,
    OFF_STATE,
    ON,
    WAITING_TOO_LONG_S,
    LedState,
    Pattern,
    Situation,
    choose,
    relay_reason,
    situation,
)
from gateway.status import StatusModel

logger = logging.getLogger(__name__)

WALK_PRESS_S = 1.0  # how long a walk-test press is shown
RETRY_S = 5.0  # while an output's write fails, it is tried again this often


class LedBackend(Protocol):
    name: str

    def set(self, led: str, pattern: Pattern) -> bool | None:
        """Show ``pattern``; False (or an exception): it was not written."""
        ...

    def close(self, keep: Collection[str] = ()) -> None:
        """Stop; outputs in ``keep`` are left as they are, the others are switched off."""
        ...


def open_backend(settings: LedSettings) -> LedBackend | None:
    """The configured backend; None for ``none``. Raises GatewayError or OSError."""
    if settings.backend == "none":
        return None
    if settings.backend == "sysfs":
        from gateway.leds.sysfs import SysfsLeds

        return SysfsLeds(settings.sysfs_root)
    if settings.backend == "mock":
        from gateway.leds.mock import MockLeds

        return MockLeds()
    from gateway.leds.gpiod_backend import GpiodLeds

    return GpiodLeds(settings.gpio_chip, outputs(settings).values())


def outputs(settings: LedSettings) -> dict[str, str]:
    """Role (alarm, status, relay) -> the configured LED name or GPIO line."""
    roles = {"alarm": settings.alarm_led, "status": settings.status_led}
    if settings.relay:
        roles["relay"] = settings.relay
    return roles


def code(pattern: Pattern) -> str:
    """A pattern as one log word: on, off, blink:100/1900."""
    return f"blink:{pattern.on_ms}/{pattern.off_ms}" if pattern.kind == "blink" else pattern.kind


class LedDriver:
    def __init__(
        self,
        settings: LedSettings,
        status: StatusModel,
        *,
        backend: LedBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.status = status
        self.outputs = outputs(settings)
        self._backend = backend
        self._clock = clock
        self._ready = False
        self._wake = asyncio.Event()
        self._shown: dict[str, Pattern] = {}
        self.state: LedState | None = None
        self._walk_presses = status.counters.get("presses_walk_test", 0)
        self._walk_press_until = 0.0
        self._walk_press_end: asyncio.TimerHandle | None = None
        self.relay = False  # whether the relay is wanted on now
        self.relay_reason: str | None = None
        self._failing: set[str] = set()  # roles whose last write failed
        self._retry: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # alarms waiting, uplink down (monotonic)
        self._waiting_wake: asyncio.TimerHandle | None = None
        self._reported_age: tuple[float, float] | None = None  # (age, when it was read)

    def ready(self) -> None:
        """The gateway is ready (READY=1): booting is over."""
        self._ready = True
        self._wake.set()

    async def run(self) -> None:
        try:
            backend = self._backend or open_backend(self.settings)
        except (GatewayError, OSError) as exc:
            logger.error("event=leds_unavailable backend=%s error=%s", self.settings.backend, exc)
            return
        if backend is None:
            return
        self.status.subscribe(lambda _status: self._wake.set())
        logger.info(
            "event=leds_started backend=%s %s",
            backend.name,
            " ".join(f"{role}={name}" for role, name in self.outputs.items()),
        )
        try:
            while True:
                self._wake.clear()
                state, reason = self._decide()
                self._show(backend, state, reason)
                self._schedule_retry()
                await self._wake.wait()
        except Exception:
            # Never take the daemon down for an LED: the alarms go on without them.
            logger.exception("event=leds_failed")
        finally:
            self._stop(backend)

    def _stop(self, backend: LedBackend) -> None:
        """LEDs dark; the relay stays on for an alarm that did not get through. Never
        raises: a failing backend must not take the daemon's other tasks down."""
        for handle in (self._walk_press_end, self._retry, self._waiting_wake):
            if handle is not None:
                handle.cancel()
        keep: list[str] = []
        try:
            reason = relay_reason(self._situation(), WAITING_TOO_LONG_S)
            if reason is not None and "relay" in self.outputs:
                keep.append(self.outputs["relay"])
                logger.warning(
                    "event=relay_held_at_stop output=%s reason=%s",
                    self.outputs["relay"],
                    reason,
                )
            self._show(backend, OFF_STATE, reason)
        except Exception:
            logger.exception("event=leds_stop_failed")
        try:
            backend.close(keep=keep)
        except Exception:
            logger.exception("event=leds_close_failed")

    def _situation(self) -> Situation:
        s = situation(self.status, ready=self._ready)
        now = self._clock()
        reported = s.oldest_pending_age_s
        if reported is not None:
            # The status model's age, grown by the time since it last changed.
            if self._reported_age is None or self._reported_age[0] != reported:
                self._reported_age = (reported, now)
            age = reported + now - self._reported_age[1]
            return dataclasses.replace(s, oldest_pending_age_s=age)
        self._reported_age = None
        # No age in the status model: how long alarms have waited with the uplink down.
        if s.pending_alarms and s.uplink == "down":
            if self._waiting_since is None:
                self._waiting_since = now
            return dataclasses.replace(s, oldest_pending_age_s=now - self._waiting_since)
        self._waiting_since = None
        return s

    def _decide(self) -> tuple[LedState, str | None]:
        now = self._clock()
        presses = self.status.counters.get("presses_walk_test", 0)
        if presses > self._walk_presses and self.status.walk_test is not None:
            self._walk_press_until = now + WALK_PRESS_S
            if self._walk_press_end is not None:
                self._walk_press_end.cancel()
            loop = asyncio.get_running_loop()
            self._walk_press_end = loop.call_later(WALK_PRESS_S, self._wake.set)
        self._walk_presses = presses
        s = dataclasses.replace(self._situation(), walk_test_press=now < self._walk_press_until)
        reason = relay_reason(s, WAITING_TOO_LONG_S)
        # Wake once when the waiting alarms start to count as waiting too long.
        if self._waiting_wake is not None:
            self._waiting_wake.cancel()
            self._waiting_wake = None
        age = s.oldest_pending_age_s
        if s.pending_alarms and reason is None and age is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, WAITING_TOO_LONG_S - age) + 0.01
            self._waiting_wake = loop.call_later(delay, self._wake.set)
        return choose(s), reason

    def _show(self, backend: LedBackend, state: LedState, reason: str | None) -> None:
        relay = state.relay or reason is not None
        wanted = {"alarm": state.alarm, "status": state.status, "relay": ON if relay else OFF}
        if state != self.state or relay != self.relay:
            self._log(state, wanted, relay, reason)
            self.state, self.relay, self.relay_reason = state, relay, reason
        for role, name in self.outputs.items():
            pattern = wanted[role]
            if self._shown.get(role) == pattern:
                continue
            self._shown.pop(role, None)  # unknown until the backend says it is written
            try:
                written = backend.set(name, pattern) is not False
                error: object = "the backend did not write it"
            except Exception as exc:
                written, error = False, exc
            if written:
                self._shown[role] = pattern
                if role in self._failing:
                    self._failing.discard(role)
                    logger.info("event=led_output_ok role=%s output=%s", role, name)
                continue
            self.status.count("led_write_failures")
            if role not in self._failing:
                self._failing.add(role)
                logger.warning(
                    "event=led_output_failing role=%s output=%s pattern=%s error=%s retry_s=%s",
                    role,
                    name,
                    code(pattern),
                    error,
                    RETRY_S,
                )

    def _schedule_retry(self) -> None:
        """While an output is failing, one wake-up every RETRY_S (never a busy loop)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._failing:
            self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._wake.set)

    def _log(
        self, state: LedState, wanted: dict[str, Pattern], relay: bool, reason: str | None
    ) -> None:
        if "relay" in self.outputs and self.state is not None and relay != self.relay:
            logger.warning(
                "event=relay_%s output=%s undeliverable=%d reason=%s pending=%d",
                "on" if relay else "off",
                self.outputs["relay"],
                len(self.status.failed_incidents),
                reason or "none",
                self.status.pending_alarms,
            )
        logger.info(
            "event=leds state=%s alarm=%s status=%s relay=%s",
            state.name,
            code(wanted["alarm"]),
            code(wanted["status"]),
            code(wanted["relay"]) if "relay" in self.outputs else "none",
        )

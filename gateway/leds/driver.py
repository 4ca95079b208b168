"""Drives the status LEDs and the relay from the status model.

It listens to ``StatusModel.changed()``, decides the one state to show
(:mod:`gateway.leds.states`) and tells the backend only what changed. It never wakes
by itself: no polling, no periodic timer. The one exception is a walk-test press, shown
for a second, whose end is a single one-shot wake-up.

The state is "booting" from the start until :meth:`LedDriver.ready` (READY=1); all
outputs go dark when the daemon stops. A backend that cannot be opened (no LED class,
no GPIO chip, no gpiod) is logged and the gateway runs on without LEDs: the LEDs must
never cost an alarm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.config.models import LedSettings
from gateway.errors import GatewayError
from gateway.leds.states import OFF, OFF_STATE, ON, LedState, Pattern, led_state
from gateway.status import StatusModel

logger = logging.getLogger(__name__)

WALK_PRESS_S = 1.0  # how long a walk-test press is shown


class LedBackend(Protocol):
    name: str

    def set(self, led: str, pattern: Pattern) -> None: ...

    def close(self) -> None: ...


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
                self._show(backend, self._decide())
                await self._wake.wait()
        except Exception:
            # Never take the daemon down for an LED: the alarms go on without them.
            logger.exception("event=leds_failed")
        finally:
            if self._walk_press_end is not None:
                self._walk_press_end.cancel()
            try:
                self._show(backend, OFF_STATE)
            finally:
                backend.close()

    def _decide(self) -> LedState:
        now = self._clock()
        presses = self.status.counters.get("presses_walk_test", 0)
        if presses > self._walk_presses and self.status.walk_test is not None:
            self._walk_press_until = now + WALK_PRESS_S
            if self._walk_press_end is not None:
                self._walk_press_end.cancel()
            loop = asyncio.get_running_loop()
            self._walk_press_end = loop.call_later(WALK_PRESS_S, self._wake.set)
        self._walk_presses = presses
        return led_state(
            self.status, ready=self._ready, walk_test_press=now < self._walk_press_until
        )

    def _show(self, backend: LedBackend, state: LedState) -> None:
        wanted = {"alarm": state.alarm, "status": state.status, "relay": ON if state.relay else OFF}
        if state != self.state:
            self._log(state, wanted)
            self.state = state
        for role, name in self.outputs.items():
            pattern = wanted[role]
            if self._shown.get(role) != pattern:
                backend.set(name, pattern)
                self._shown[role] = pattern

    def _log(self, state: LedState, wanted: dict[str, Pattern]) -> None:
        relay_changed = self.state is not None and self.state.relay != state.relay
        if "relay" in self.outputs and relay_changed:
            logger.warning(
                "event=relay_%s output=%s undeliverable=%d",
                "on" if state.relay else "off",
                self.outputs["relay"],
                len(self.status.failed_incidents),
            )
        logger.info(
            "event=leds state=%s alarm=%s status=%s relay=%s",
            state.name,
            code(wanted["alarm"]),
            code(wanted["status"]),
            code(wanted["relay"]) if "relay" in self.outputs else "none",
        )

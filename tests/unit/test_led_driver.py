"""The LED driver follows the status model: booting until ready, only changes reach the
backend, nothing wakes it while nothing changes, the relay follows undeliverable alarms,
a walk-test press shows for a second, and the LEDs never take the daemon down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.models import LedSettings
from gateway.leds import driver as driver_module
from gateway.leds.driver import LedDriver
from gateway.leds.mock import MockLeds
from gateway.leds.states import BY_NAME, OFF, ON, Pattern, blink
from gateway.status import InputHealth, StatusModel

SETTINGS = LedSettings(backend="mock", status_led="green", alarm_led="red", relay="siren")


class Running:
    def __init__(self, driver: LedDriver, leds: MockLeds, status: StatusModel) -> None:
        self.driver, self.leds, self.status = driver, leds, status

    async def change(self, **fields: object) -> None:
        for name, value in fields.items():
            setattr(self.status, name, value)
        self.status.changed()
        await settle()

    def shown(self) -> tuple[Pattern, Pattern, Pattern]:
        return (self.leds.current("red"), self.leds.current("green"), self.leds.current("siren"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    status = StatusModel(devices=1, uplink="up")
    status.inputs["receiver"] = InputHealth(connected=True, state="ok")
    leds = MockLeds()
    driver = LedDriver(SETTINGS, status, backend=leds)
    task = asyncio.create_task(driver.run())
    await settle()
    yield Running(driver, leds, status)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def looks(name: str) -> tuple[Pattern, Pattern, Pattern]:
    state = BY_NAME[name]
    return (state.alarm, state.status, ON if state.relay else OFF)


async def test_booting_until_ready_then_healthy(running: Running) -> None:
    assert running.driver.state is not None and running.driver.state.name == "booting"
    assert running.shown() == (OFF, blink(200, 200), OFF)
    running.driver.ready()
    await settle()
    assert running.driver.state.name == "healthy"
    assert running.shown() == (OFF, ON, OFF)


async def test_only_changes_reach_the_backend_and_nothing_wakes_it(running: Running) -> None:
    running.driver.ready()
    await settle()
    writes = len(running.leds.timeline)
    for _ in range(20):  # presses, counters, status file refreshes: nothing the LEDs show
        running.status.count("presses_raised")
        running.status.changed()
    await settle()
    assert len(running.leds.timeline) == writes
    # Idle: the driver waits on its event alone; no timer of its own is scheduled.
    loop = asyncio.get_running_loop()
    timers = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    assert not any("LedDriver" in repr(h) or "Event.set" in repr(h) for h in timers), timers


async def test_a_press_through_an_outage_and_a_callout_through_its_stages(
    running: Running,
) -> None:
    running.driver.ready()
    await settle()
    await running.change(pending_alarms=1, uplink="unknown")
    assert running.shown() == looks("sending")
    await running.change(uplink="down")
    assert running.shown() == looks("queued")
    await running.change(uplink="up")
    assert running.shown() == looks("sending")
    await running.change(pending_alarms=0, open_callouts={"i1": "created"})
    assert running.shown() == looks("callout_open")
    await running.change(open_callouts={"i1": "Responder Dispatched"})
    assert running.shown() == looks("responder_on_the_way")
    await running.change(open_callouts={"i1": "Responder On Scene"})
    assert running.shown() == looks("on_scene")
    await running.change(open_callouts={})
    assert running.shown() == looks("healthy")
    states = [p for _, led, p in running.leds.timeline if led == "green"]
    assert states == [
        blink(200, 200),  # booting
        ON,  # healthy
        OFF,  # sending, queued, sending
        blink(1000, 1000),
        blink(200, 200),
        ON,  # on scene; then healthy: green stays on, so nothing is written
    ]


async def test_the_relay_is_on_while_an_alarm_is_undeliverable(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.driver.ready()
    await settle()
    with caplog.at_level(logging.INFO):
        await running.change(failed_incidents={"i9": "403 no subscription"})
        assert running.shown() == (blink(100, 100), OFF, ON)
        await running.change(pending_alarms=1)  # another alarm meanwhile: still on
        assert running.leds.current("siren") == ON
        await running.change(failed_incidents={}, pending_alarms=0)  # acknowledged
        assert running.shown() == looks("healthy")
    assert running.leds.patterns("siren") == [OFF, ON, OFF]
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=relay_on output=siren undeliverable=1" in m for m in messages)
    assert any("event=relay_off output=siren" in m for m in messages)
    assert any("event=leds state=undeliverable alarm=blink:100/100" in m for m in messages)


async def test_the_abort_window_and_config_error_show(running: Running) -> None:
    running.driver.ready()
    await running.change(abort_windows=1)
    assert running.shown() == looks("abort_window")
    await running.change(abort_windows=0, config_error="devices.toml:3: bad")
    assert running.shown() == looks("config_error")
    await running.change(config_error=None)
    assert running.shown() == looks("healthy")


async def test_a_walk_test_press_shows_for_a_moment(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver_module, "WALK_PRESS_S", 0.05)
    running.driver.ready()
    await running.change(walk_test={"scope": "all"})
    assert running.shown() == looks("walk_test")
    running.status.count("presses_walk_test")
    running.status.changed()
    await settle()
    assert running.shown() == looks("walk_test_press")
    await asyncio.sleep(0.1)
    assert running.shown() == looks("walk_test")


async def test_stopping_turns_everything_off() -> None:
    status = StatusModel(failed_incidents={"i1": "403"})
    leds = MockLeds()
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=leds).run())
    await settle()
    assert leds.current("siren") == ON
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (leds.current("red"), leds.current("green"), leds.current("siren")) == (OFF, OFF, OFF)
    assert leds.closed


async def test_no_relay_configured_means_two_outputs() -> None:
    leds = MockLeds()
    settings = LedSettings(backend="mock", status_led="g", alarm_led="r")
    task = asyncio.create_task(
        LedDriver(settings, StatusModel(failed_incidents={"i": "x"}), backend=leds).run()
    )
    await settle()
    assert {led for _, led, _ in leds.timeline} == {"g", "r"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_leds_that_cannot_be_opened_never_stop_the_gateway(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = LedSettings(backend="gpiod", gpio_chip=str(tmp_path / "gpiochip9"))
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(LedDriver(settings, StatusModel()).run(), 5)  # returns
    assert any("event=leds_unavailable backend=gpiod" in r.getMessage() for r in caplog.records)


async def test_a_failing_backend_is_logged_and_the_task_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(MockLeds):
        def set(self, led: str, pattern: Pattern) -> None:
            if pattern != OFF:
                raise RuntimeError("bus error")
            super().set(led, pattern)

    leds = Broken()
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(LedDriver(SETTINGS, StatusModel(), backend=leds).run(), 5)
    assert any("event=leds_failed" in r.getMessage() for r in caplog.records)
    assert leds.closed


async def test_backend_none_opens_nothing() -> None:
    await asyncio.wait_for(LedDriver(LedSettings(), StatusModel()).run(), 1)

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
    status = StatusModel(open_callouts={"i1": "created"})
    leds = MockLeds()
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=leds).run())
    await settle()
    assert leds.current("red") == ON
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (leds.current("red"), leds.current("green"), leds.current("siren")) == (OFF, OFF, OFF)
    assert leds.closed and leds.kept == ()


async def test_the_relay_stays_on_at_stop_while_an_alarm_is_unacknowledged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    status = StatusModel(failed_incidents={"i1": "403"})
    leds = MockLeds()
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=leds).run())
    await settle()
    assert leds.current("siren") == ON
    with caplog.at_level(logging.WARNING):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The LEDs go dark; the siren must not go quiet because the gateway stopped.
    assert (leds.current("red"), leds.current("green"), leds.current("siren")) == (OFF, OFF, ON)
    assert leds.patterns("siren") == [ON]
    assert leds.closed and leds.kept == ("siren",)
    assert any(
        "event=relay_held_at_stop output=siren reason=undeliverable" in r.getMessage()
        for r in caplog.records
    )


async def test_the_relay_is_on_while_alarms_wait_and_the_credentials_are_refused(
    running: Running,
) -> None:
    running.driver.ready()
    await running.change(pending_alarms=1, uplink="down")
    assert running.shown() == looks("queued")  # an outage alone: the alarms go out later
    await running.change(uplink="unauthorized")  # nothing can get out
    assert running.shown() == (blink(100, 1900), OFF, ON)
    assert running.driver.relay_reason == "credentials_refused"
    await running.change(abort_windows=1)  # another press meanwhile: the relay stays on
    assert running.shown() == (blink(500, 500), OFF, ON)
    await running.change(abort_windows=0, uplink="up", pending_alarms=0)
    assert running.shown() == looks("healthy")
    assert running.leds.patterns("siren") == [OFF, ON, OFF]


async def test_the_relay_goes_on_when_alarms_have_waited_too_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(driver_module, "WAITING_TOO_LONG_S", 0.05)
    status = StatusModel(uplink="down", pending_alarms=1)
    leds = MockLeds()
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=leds).run())
    await settle()
    assert leds.current("siren") == OFF  # not yet: the one-shot wake-up is scheduled
    await asyncio.sleep(0.15)
    assert leds.current("siren") == ON
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leds.current("siren") == ON  # undelivered: held at stop


def test_the_status_models_age_of_the_oldest_alarm_is_used() -> None:
    from gateway.leds.states import relay_reason, situation

    waiting = {"pending_alarms": 1, "uplink": {"state": "up"}}
    assert relay_reason(situation({**waiting, "oldest_pending_alarm_age_s": 5})) is None
    assert (
        relay_reason(situation({**waiting, "oldest_pending_alarm_age_s": 61.0}))
        == "waiting_too_long"
    )
    assert relay_reason(situation({**waiting, "uplink": {"state": "unauthorized"}})) == (
        "credentials_refused"
    )
    assert relay_reason(situation({"uplink": {"state": "unauthorized"}})) is None


class Flaky(MockLeds):
    """Fails every write to the outputs in ``failing`` (raising, or returning False)."""

    def __init__(self, *failing: str, raises: bool = True) -> None:
        super().__init__()
        self.failing = set(failing)
        self.raises = raises
        self.attempts: list[tuple[str, Pattern]] = []

    def set(self, led: str, pattern: Pattern) -> bool:
        self.attempts.append((led, pattern))
        if led in self.failing:
            if self.raises:
                raise OSError(5, "Input/output error")
            return False
        return super().set(led, pattern)


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


async def test_a_failing_backend_never_escapes_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MockLeds):
        def set(self, led: str, pattern: Pattern) -> bool:
            raise RuntimeError("bus error")

        def close(self, keep: object = ()) -> None:
            raise OSError(19, "No such device")

    status = StatusModel(failed_incidents={"i1": "403"})
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=Broken()).run())
    with caplog.at_level(logging.WARNING):
        await settle()
        assert not task.done()  # still running, retrying
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # the cancel, never the backend's error
            await task
    messages = [r.getMessage() for r in caplog.records]
    # Logged once per output, however often it failed.
    assert sum("event=led_output_failing role=relay" in m for m in messages) == 1
    assert any("event=leds_close_failed" in m for m in messages)
    assert status.counters["led_write_failures"] >= 3


async def test_in_a_task_group_a_failing_backend_cancels_nothing() -> None:
    class Broken(MockLeds):
        def set(self, led: str, pattern: Pattern) -> bool:
            raise OSError(5, "Input/output error")

        def close(self, keep: object = ()) -> None:
            raise OSError(5, "Input/output error")

    driver = LedDriver(SETTINGS, StatusModel(), backend=Broken())
    other_done = False

    async def other() -> None:
        nonlocal other_done
        await asyncio.sleep(0.05)
        other_done = True

    async with asyncio.TaskGroup() as group:
        leds_task = group.create_task(driver.run())
        group.create_task(other())
        await asyncio.sleep(0.01)
        leds_task.cancel()
    assert other_done


@pytest.mark.parametrize("raises", [True, False])
async def test_a_failed_write_is_retried_until_it_is_written(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raises: bool
) -> None:
    monkeypatch.setattr(driver_module, "RETRY_S", 0.05)
    status = StatusModel(uplink="up")
    leds = Flaky("siren", raises=raises)
    driver = LedDriver(SETTINGS, status, backend=leds)
    task = asyncio.create_task(driver.run())
    with caplog.at_level(logging.INFO):
        await settle()
        status.failed_incidents["i1"] = "403"
        status.changed()
        await settle()
        assert leds.current("siren") == OFF  # the write failed: not shown, not forgotten
        tries = len([a for a in leds.attempts if a == ("siren", ON)])
        await asyncio.sleep(0.12)  # the retry timer, not a busy loop
        retried = len([a for a in leds.attempts if a == ("siren", ON)])
        assert tries + 1 <= retried <= tries + 4
        leds.failing.clear()  # the relay's driver is back
        await asyncio.sleep(0.1)
        assert leds.current("siren") == ON
        attempts = len(leds.attempts)
        await asyncio.sleep(0.12)
        assert len(leds.attempts) == attempts  # written: no more retries
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=led_output_failing role=relay output=siren" in m for m in messages) == 1
    assert any("event=led_output_ok role=relay output=siren" in m for m in messages)
    assert status.counters["led_write_failures"] >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failed_write_is_retried_on_the_next_status_change() -> None:
    status = StatusModel(uplink="up", failed_incidents={"i1": "403"})
    leds = Flaky("siren")
    task = asyncio.create_task(LedDriver(SETTINGS, status, backend=leds).run())
    await settle()
    assert leds.current("siren") == OFF
    leds.failing.clear()
    status.changed()  # anything at all: the failed output is tried again
    await settle()
    assert leds.current("siren") == ON
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_backend_none_opens_nothing() -> None:
    await asyncio.wait_for(LedDriver(LedSettings(), StatusModel()).run(), 1)

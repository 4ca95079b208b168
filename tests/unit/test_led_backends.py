"""The LED backends at their boundaries: the Linux LED class against a temporary
directory that behaves like the kernel's, libgpiod through a fake ``gpiod`` module, and
the recording mock."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
import time
import types
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from gateway.leds.gpiod_backend import GpiodLeds, GpiodUnavailable, import_gpiod
from gateway.leds.mock import MockLeds
from gateway.leds.states import OFF, ON, Pattern, blink
from gateway.leds.sysfs import SysfsLeds, read_trigger

# ----------------------------------------------------------------- the kernel's LED class


@dataclass
class KernelLed:
    triggers: tuple[str, ...]
    max_brightness: int
    trigger: str = "none"
    brightness: int = 0
    delay_on: int = 0
    delay_off: int = 0
    shown: list[Pattern | str] = field(default_factory=list)  # after every write
    trigger_writes: int = 0


class FakeLedClass:
    """A directory like /sys/class/leds, made to react to writes as the kernel does
    (drivers/leds/led-class.c, led-core.c, ledtrig-timer.c):

    - ``trigger`` reads ``none [timer] heartbeat``, the selected one in brackets;
    - ``delay_on``/``delay_off`` exist only while the trigger is ``timer``; selecting it
      starts a 500/500 ms blink; both delays 0 means the kernel's 1 Hz default;
      ``delay_on = 0`` is steady off, ``delay_off = 0`` steady on;
    - ``brightness = 0`` drops the trigger.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.leds: dict[str, KernelLed] = {}

    def add(
        self,
        name: str,
        *,
        triggers: tuple[str, ...] = ("none", "timer", "heartbeat"),
        trigger: str = "none",
        max_brightness: int = 255,
    ) -> KernelLed:
        path = self.root / name
        path.mkdir(parents=True)
        led = self.leds[name] = KernelLed(triggers, max_brightness)
        (path / "max_brightness").write_text(f"{max_brightness}\n")
        (path / "brightness").write_text("0\n")
        self._select(name, trigger)
        return led

    def on_write(self, path: Path, text: str) -> None:
        name, attr = path.parent.name, path.name
        led = self.leds[name]
        value = text.strip()
        if attr == "trigger":
            led.trigger_writes += 1
            assert value in led.triggers, f"EINVAL: no trigger {value!r}"
            self._select(name, value)
        elif attr == "brightness":
            led.brightness = min(int(value), led.max_brightness)
            if led.brightness == 0 and led.trigger != "none":
                self._select(name, "none")
        elif attr in ("delay_on", "delay_off"):
            assert led.trigger == "timer"
            setattr(led, attr, int(value))
            if led.delay_on == 0 and led.delay_off == 0:
                led.delay_on = led.delay_off = 500
        self._files(name)
        led.shown.append(self.shown(name))

    def shown(self, name: str) -> Pattern | str:
        led = self.leds[name]
        if led.trigger == "timer":
            if led.delay_on == 0:
                return OFF
            return ON if led.delay_off == 0 else blink(led.delay_on, led.delay_off)
        if led.trigger == "none":
            return ON if led.brightness else OFF
        return led.trigger

    def _select(self, name: str, trigger: str) -> None:
        led = self.leds[name]
        path = self.root / name
        if led.trigger == "timer" and trigger != "timer":
            (path / "delay_on").unlink()
            (path / "delay_off").unlink()
        if trigger == "timer" and led.trigger != "timer":
            led.delay_on = led.delay_off = 500
        led.trigger = trigger
        self._files(name)

    def _files(self, name: str) -> None:
        led = self.leds[name]
        path = self.root / name
        words = [f"[{t}]" if t == led.trigger else t for t in led.triggers]
        (path / "trigger").write_text(" ".join(words) + "\n")
        (path / "brightness").write_text(f"{led.brightness}\n")
        if led.trigger == "timer":
            (path / "delay_on").write_text(f"{led.delay_on}\n")
            (path / "delay_off").write_text(f"{led.delay_off}\n")


@pytest.fixture
def kernel(tmp_path: Path) -> FakeLedClass:
    return FakeLedClass(tmp_path / "leds")


def test_the_fake_reads_like_the_kernel(kernel: FakeLedClass) -> None:
    kernel.add("aura:green:status")
    path = kernel.root / "aura:green:status"
    assert (path / "trigger").read_text() == "[none] timer heartbeat\n"
    assert not (path / "delay_on").exists()
    assert read_trigger("[none] timer heartbeat\n") == ("none", {"none", "timer", "heartbeat"})
    assert read_trigger("none [timer] heartbeat") == ("timer", {"none", "timer", "heartbeat"})
    assert read_trigger("timer\n") == ("timer", {"timer"})  # a plain file


EVERY_PATTERN = [ON, blink(100, 100), OFF, blink(100, 1900), ON, OFF, blink(200, 200), ON]


def test_timer_trigger_set_once_then_only_delays(kernel: FakeLedClass) -> None:
    led = kernel.add("aura:red:alarm")
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    for pattern in EVERY_PATTERN:
        leds.set("aura:red:alarm", pattern)
        assert kernel.shown("aura:red:alarm") == pattern
    path = kernel.root / "aura:red:alarm"
    assert (path / "trigger").read_text() == "none [timer] heartbeat\n"
    assert led.trigger_writes == 1  # the delay files are never re-created
    # Selecting the trigger starts the kernel's 1 Hz default, once; never again in
    # between two patterns (both delays 0 at once).
    assert led.shown.count(blink(500, 500)) == 1
    # Steady patterns stop the kernel's blink timer: delay 0 on one side.
    leds.set("aura:red:alarm", ON)
    assert (path / "delay_off").read_text().strip() == "0"


def test_an_led_already_on_timer_gets_no_trigger_write(kernel: FakeLedClass) -> None:
    led = kernel.add("aura:green:status", trigger="timer")  # the udev rule did that
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    leds.set("aura:green:status", blink(200, 200))
    leds.set("aura:green:status", ON)
    assert led.trigger_writes == 0
    assert kernel.shown("aura:green:status") == ON


def test_a_trigger_changed_behind_our_back_is_set_again(kernel: FakeLedClass) -> None:
    led = kernel.add("aura:green:status")
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    leds.set("aura:green:status", ON)
    kernel.on_write(kernel.root / "aura:green:status" / "brightness", "0")  # someone
    assert led.trigger == "none"
    leds.set("aura:green:status", blink(1000, 1000))
    assert kernel.shown("aura:green:status") == blink(1000, 1000)


def test_an_output_that_never_blinks_never_gets_the_timer_trigger(kernel: FakeLedClass) -> None:
    relay = kernel.add("aura:relay")  # a siren: a 1 Hz blink would sound it
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    for pattern in (OFF, ON, OFF, ON):
        leds.set("aura:relay", pattern)
        assert kernel.shown("aura:relay") == pattern
    assert relay.trigger_writes == 0 and relay.trigger == "none"
    assert set(relay.shown) == {ON, OFF}
    assert relay.brightness == 255


def test_without_the_timer_trigger_steady_is_brightness(kernel: FakeLedClass) -> None:
    led = kernel.add("relay", triggers=("none", "heartbeat"), trigger="heartbeat", max_brightness=1)
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    leds.set("relay", ON)
    assert led.trigger == "none" and led.brightness == 1
    assert (kernel.root / "relay" / "brightness").read_text() == "1\n"
    leds.set("relay", OFF)
    assert led.brightness == 0


async def test_without_the_timer_trigger_a_blink_is_timed_by_a_task(
    kernel: FakeLedClass,
) -> None:
    led = kernel.add("old", triggers=("none",), max_brightness=255)
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    leds.set("old", blink(20, 20))
    await asyncio.sleep(0.15)
    leds.set("old", ON)  # ends the blinking
    toggles = len(led.shown)
    assert toggles >= 5 and ON in led.shown and OFF in led.shown
    await asyncio.sleep(0.06)
    assert len(led.shown) == toggles, "nothing blinks after a steady pattern"
    assert kernel.shown("old") == ON
    leds.close()


def test_a_missing_led_is_warned_about_once(
    kernel: FakeLedClass, caplog: pytest.LogCaptureFixture
) -> None:
    kernel.root.mkdir(parents=True)
    leds = SysfsLeds(kernel.root, on_write=kernel.on_write)
    with caplog.at_level(logging.WARNING):
        for pattern in EVERY_PATTERN:
            assert leds.set("aura:red:alarm", pattern) is False  # not written: retried
    warnings = [r.getMessage() for r in caplog.records if "led_missing" in r.getMessage()]
    assert len(warnings) == 1
    assert "led=aura:red:alarm" in warnings[0] and str(kernel.root) in warnings[0]
    # It appears (a late driver, a fixed device tree): it is used, and said so.
    kernel.add("aura:red:alarm")
    with caplog.at_level(logging.INFO):
        assert leds.set("aura:red:alarm", blink(100, 100)) is True
    assert kernel.shown("aura:red:alarm") == blink(100, 100)
    assert any("event=led_ok led=aura:red:alarm" in r.getMessage() for r in caplog.records)


def test_a_refused_write_is_warned_about_once_and_never_raised(
    kernel: FakeLedClass, caplog: pytest.LogCaptureFixture
) -> None:
    kernel.add("aura:red:alarm", trigger="timer")

    def refuse(path: Path, text: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    leds = SysfsLeds(kernel.root, on_write=refuse)
    with caplog.at_level(logging.WARNING):
        for pattern in EVERY_PATTERN:
            assert leds.set("aura:red:alarm", pattern) is False  # not written: retried
    warnings = [r.getMessage() for r in caplog.records if "led_write_failed" in r.getMessage()]
    assert len(warnings) == 1 and "99-aura-gateway-leds.rules" in warnings[0]


# ----------------------------------------------------------------- gpiod 2.x, faked


class Direction(Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class Value(Enum):
    INACTIVE = 0
    ACTIVE = 1


class LineSettings:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeRequest:
    def __init__(self, chip: str, consumer: str, config: dict[Any, LineSettings]) -> None:
        self.chip, self.consumer, self.config = chip, consumer, config
        self.writes: list[tuple[float, int | str, Value]] = []
        self.released = False

    def set_value(self, line: int | str, value: Value) -> None:
        assert not self.released
        lines = [line for key in self.config for line in key]
        assert line in lines, f"line {line!r} was not requested"
        self.writes.append((time.monotonic(), line, value))

    def values(self, line: int | str) -> list[Value]:
        return [v for _, name, v in self.writes if name == line]

    def release(self) -> None:
        self.released = True


def fake_gpiod() -> Any:
    """The part of gpiod 2.x's API the backend uses (gpiod 2.5.0, libgpiod API 2.3)."""
    module: Any = types.ModuleType("gpiod")
    module.line = types.SimpleNamespace(Direction=Direction, Value=Value)
    module.LineSettings = LineSettings
    module.requests = []

    def request_lines(
        path: str, config: dict[Any, LineSettings], consumer: str | None = None
    ) -> FakeRequest:
        request = FakeRequest(path, consumer or "", config)
        module.requests.append(request)
        return request

    module.request_lines = request_lines
    return module


def test_gpiod_lines_are_requested_as_outputs_driven_inactive() -> None:
    gpiod = fake_gpiod()
    GpiodLeds("/dev/gpiochip0", ["17", "GPIO22", "17"], gpiod=gpiod)
    [request] = gpiod.requests
    assert request.chip == "/dev/gpiochip0" and request.consumer == "aura-gateway"
    [(lines, settings)] = request.config.items()
    assert lines == (17, "GPIO22")  # an offset and a name, each once
    assert settings.kwargs == {"direction": Direction.OUTPUT, "output_value": Value.INACTIVE}


async def test_gpiod_steady_blink_and_close() -> None:
    gpiod = fake_gpiod()
    leds = GpiodLeds("/dev/gpiochip0", ["17", "27"], gpiod=gpiod)
    [request] = gpiod.requests
    leds.set("27", ON)
    assert request.values(27) == [Value.ACTIVE]
    leds.set("17", blink(20, 30))
    await asyncio.sleep(0.2)
    leds.set("17", OFF)
    times = [t for t, line, _ in request.writes if line == 17]
    values = request.values(17)
    assert values[:4] == [Value.ACTIVE, Value.INACTIVE, Value.ACTIVE, Value.INACTIVE]
    assert values[-1] == Value.INACTIVE and len(values) >= 6
    # Timed by the event loop: an on phase lasts about its 20 ms, never less.
    assert times[1] - times[0] >= 0.019
    written = len(request.writes)
    await asyncio.sleep(0.08)
    assert len(request.writes) == written, "a steady line is never written again"
    assert request.values(27) == [Value.ACTIVE]  # the other line was left alone
    leds.set("17", blink(10, 10))
    leds.close()
    assert request.released
    assert request.values(17)[-1] == Value.INACTIVE and request.values(27)[-1] == Value.INACTIVE
    written = len(request.writes)
    await asyncio.sleep(0.05)
    assert len(request.writes) == written, "no blinking after close"


def test_gpiod_a_failing_line_is_reported_logged_once_and_close_can_keep_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpiod = fake_gpiod()
    leds = GpiodLeds("/dev/gpiochip0", ["17", "27"], gpiod=gpiod)
    [request] = gpiod.requests
    working = request.set_value

    def broken(line: int | str, value: Value) -> None:
        raise OSError(errno.EIO, "Input/output error")

    request.set_value = broken
    with caplog.at_level(logging.INFO):
        assert leds.set("27", ON) is False  # never raises: the driver retries it
        assert leds.set("27", ON) is False
        request.set_value = working
        assert leds.set("27", ON) is True
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=led_write_failed led=27" in m for m in messages) == 1
    assert any("event=led_ok led=27" in m for m in messages)
    assert leds.set("99", ON) is False  # not one of its lines
    leds.set("17", ON)
    leds.close(keep=["27"])  # the relay, on for an undelivered alarm, stays on
    assert request.released
    assert request.values(17)[-1] == Value.INACTIVE and request.values(27)[-1] == Value.ACTIVE


def test_gpiod_missing_or_the_old_api_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # not installed
    with pytest.raises(GpiodUnavailable, match=r"pip install 'aura-gateway\[leds\]'"):
        import_gpiod()
    old = types.ModuleType("gpiod")
    old.__version__ = "1.6.3"  # type: ignore[attr-defined]  # Debian's python3-libgpiod
    monkeypatch.setitem(sys.modules, "gpiod", old)
    with pytest.raises(GpiodUnavailable, match=r"1\.x API.*gpiod>=2\.2"):
        import_gpiod()


# ----------------------------------------------------------------- the mock


def test_mock_records_the_timeline() -> None:
    now = [10.0]
    leds = MockLeds(clock=lambda: now[0])
    leds.set("red", ON)
    now[0] = 10.5
    leds.set("green", blink(200, 200))
    leds.set("red", OFF)
    assert leds.timeline == [
        (10.0, "red", ON),
        (10.5, "green", blink(200, 200)),
        (10.5, "red", OFF),
    ]
    assert leds.current("red") == OFF and leds.current("never") == OFF
    assert leds.patterns("red") == [ON, OFF]
    leds.close()
    assert leds.closed

"""The status LEDs through the real daemon, on the Linux LED class backend.

A temporary directory stands in for /sys/class/leds, set up as the udev rule leaves the
real one (trigger ``timer`` selected, the LED dark). The test reads the files as a
technician's eye would read the LEDs and records the timeline of states while the
gateway starts without its receiver, gets it, loses AURA with an alarm waiting, gets
AURA back, follows the callout through its stages to its close, and has an alarm
refused (the relay goes on) until the technician acknowledges it (the relay goes off).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import sim_keys
from gateway.leds.states import OFF, ON, STATES, Pattern, blink
from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

PENDANT = 0x00A1B2C3  # devices.sim.toml: customer 1001
NO_SUBSCRIPTION = 0x00BAD001  # customer 1002: the sandbox answers 403
STATUS, ALARM, RELAY = "aura:green:status", "aura:red:alarm", "aura:relay"
# What each state looks like: (red, green, relay) -> state name.
LOOKS = {(s.alarm, s.status, ON if s.relay else OFF): s.name for s in STATES}
LOOKS[(OFF, OFF, OFF)] = "dark"  # the daemon is not running


def make_led(root: Path, name: str, *, timer: bool) -> None:
    """An output as the udev rule leaves it: an LED on ``timer`` with ``delay_on`` 0
    (dark), the relay on ``none`` with brightness 0."""
    path = root / name
    path.mkdir(parents=True)
    files = {"max_brightness": "255", "brightness": "0"}
    if timer:
        files |= {"trigger": "none [timer] heartbeat", "delay_on": "0", "delay_off": "500"}
    else:
        files["trigger"] = "[none] timer heartbeat"
    for attr, text in files.items():
        (path / attr).write_text(text + "\n")


def read_led(path: Path) -> Pattern:
    """What the kernel would show for these files."""
    trigger = (path / "trigger").read_text()
    if "[timer]" in trigger or trigger.strip() == "timer":
        on, off = int((path / "delay_on").read_text()), int((path / "delay_off").read_text())
        if on == 0:
            return OFF
        return ON if off == 0 else blink(on, off)
    return ON if int((path / "brightness").read_text()) else OFF


class Recorder:
    """Reads the three LEDs every 10 ms; a look that holds for two reads in a row is
    recorded (the daemon writes the files one after another, microseconds apart)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.timeline: list[tuple[float, str]] = []  # (seconds since start, state)
        self.unknown: list[tuple[Pattern, Pattern, Pattern]] = []
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        previous = None
        while not self._stop.is_set():
            try:
                look = tuple(read_led(self.root / n) for n in (ALARM, STATUS, RELAY))
            except (OSError, ValueError):
                look = None  # a file being written: read again
            if look is not None and look == previous:
                state = LOOKS.get(look)  # type: ignore[arg-type]
                if state is None:
                    if look not in self.unknown:
                        self.unknown.append(look)  # type: ignore[arg-type]
                elif not self.timeline or self.timeline[-1][1] != state:
                    self.timeline.append((round(time.monotonic() - self._start, 2), state))
            previous = look
            time.sleep(0.01)

    def states(self) -> list[str]:
        return [state for _, state in self.timeline]

    def wait(self, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.timeline and self.timeline[-1][1] == state:
                return
            time.sleep(0.02)
        raise AssertionError(f"the LEDs never showed {state} within {timeout} s: {self.timeline}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def leds(tmp_path: Path) -> Iterator[Recorder]:
    root = tmp_path / "leds"
    for name in (STATUS, ALARM):
        make_led(root, name, timer=True)
    make_led(root, RELAY, timer=False)
    recorder = Recorder(root)
    yield recorder
    recorder.stop()


def configure(runner: DaemonRunner, root: Path, **more: Any) -> Path:
    # A 2 s watchdog makes the daemon look at the receiver every 0.5 s; the receivers
    # below send a heartbeat every 0.5 s, so they are never "lost" by mistake.
    path = runner.write_config(serial={"watchdog_s": 2.0, "reopen_backoff_max_s": 0.3}, **more)
    data = tomllib.loads(path.read_text())
    data["leds"] = {
        "backend": "sysfs",
        "sysfs_root": str(root),
        "status_led": STATUS,
        "alarm_led": ALARM,
        "relay": RELAY,
    }
    path.write_text(tomli_w.dumps(data))
    return path


def ack(config: Path, incident: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "incidents", "--config", str(config), "ack", incident],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_led_timeline_through_an_outage_a_callout_and_a_refused_alarm(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, leds: Recorder, tmp_path: Path
) -> None:
    config = configure(daemon_runner, leds.root)
    daemon_runner.receiver.close()  # the gateway starts without its receiver

    daemon = daemon_runner.start()  # READY after waiting 2 s for the receiver
    leds.wait("inputs_lost", 5)
    with SimulatedReceiver(
        link_path=tmp_path / "receiver",
        resend_interval_s=0.3,
        keys=sim_keys(),
        heartbeat_interval_s=0.5,
    ) as receiver:
        daemon_runner.receiver = receiver
        leds.wait("healthy", 5)

        # AURA goes away; a press waits in the journal.
        sandbox.set_fault("down")
        assert receiver.wait_acked(receiver.press(PENDANT), 5)
        leds.wait("queued", 5)

        # AURA is back: the alarm goes, and the callout moves through its stages.
        sandbox.clear_fault()
        callout = int(daemon.wait_event("callout_raised", 10)["callout"])
        leds.wait("callout_open", 5)
        sandbox.set_status(callout, "Responder Dispatched")
        leds.wait("responder_on_the_way", 5)
        sandbox.set_status(callout, "Responder On Scene")
        leds.wait("on_scene", 5)
        sandbox.close_callout(callout)
        leds.wait("healthy", 5)

        # An alarm AURA refuses (no subscription): the relay goes on until acknowledged.
        receiver.press(NO_SUBSCRIPTION)
        leds.wait("undeliverable", 5)
        status = daemon_runner.wait_status(lambda s: len(s["undeliverable"]) == 1, 5)
        [incident] = status["undeliverable"]
        result = ack(config, incident)
        assert result.returncode == 0, result.stderr
        leds.wait("healthy", 5)

    # The whole timeline, in order. "sending" lasts milliseconds: seen or not.
    seen = [s for s in leds.states() if s != "sending"]
    assert seen == [
        "dark",
        "booting",
        "inputs_lost",
        "healthy",
        "queued",
        "callout_open",
        "responder_on_the_way",
        "on_scene",
        "healthy",
        "undeliverable",
        "healthy",
    ], leds.timeline
    assert leds.unknown == [], "every look the LEDs held is one of the table's"
    relay_on = [s for s in leds.states() if s == "undeliverable"]
    assert len(relay_on) == 1  # the relay was on exactly once, while undeliverable

    # The log says the same, for journalctl.
    shown = [line for line in daemon.history if "event=leds " in line]
    assert any("state=undeliverable" in line and "relay=on" in line for line in shown)
    assert any("event=relay_off output=aura:relay" in line for line in daemon.history)

    # The relay was switched by brightness alone: never on the timer trigger (1 Hz).
    assert (leds.root / RELAY / "trigger").read_text() == "[none] timer heartbeat\n"
    assert not (leds.root / RELAY / "delay_on").exists()

    # A clean stop leaves the LEDs and the relay dark.
    daemon.stop()
    assert [read_led(leds.root / n) for n in (ALARM, STATUS, RELAY)] == [OFF, OFF, OFF]


LONE_WORKER = 0x00A0B0C0
LONE_WORKER_KEY = "1e" * 16


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_leds_show_the_abort_window_and_each_walk_test_press(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox, leds: Recorder, tmp_path: Path
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "lone-worker": {
                        "raise_gestures": ["single"],
                        "cancel_gestures": ["hold"],
                        "abort_window_s": 1.5,
                    }
                },
                "devices": [
                    {
                        "id": f"{LONE_WORKER:08x}",
                        "type": "lone-worker",
                        "route": "customer",
                        "customer_id": 1001,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                ],
            }
        )
    )
    config = configure(
        daemon_runner,
        leds.root,
        devices_file=devices,
        device_keys={f"{LONE_WORKER:08x}": LONE_WORKER_KEY},
    )
    daemon_runner.receiver.close()
    with SimulatedReceiver(
        link_path=tmp_path / "receiver",
        resend_interval_s=0.3,
        keys={LONE_WORKER: bytes.fromhex(LONE_WORKER_KEY)},
        heartbeat_interval_s=0.5,
    ) as receiver:
        daemon_runner.receiver = receiver
        daemon = daemon_runner.start()
        leds.wait("healthy", 5)

        # A press waits out its abort window; "I am fine" withdraws it.
        assert receiver.wait_acked(receiver.press(LONE_WORKER), 5)
        leds.wait("abort_window", 3)
        receiver.press(LONE_WORKER, gesture="hold")
        daemon.wait_event("alarm_withdrawn", 5)
        leds.wait("healthy", 3)

        # A walk test: each press lights the red LED for a second.
        assert cli(config, "walk-test", "start", "--minutes", "5").returncode == 0
        leds.wait("walk_test", 5)
        receiver.press(LONE_WORKER)
        leds.wait("walk_test_press", 3)
        leds.wait("walk_test", 3)
        assert cli(config, "walk-test", "stop").returncode == 0
        leds.wait("healthy", 5)

    seen = [s for s in leds.states() if s != "booting"]  # booting: too short to be sure
    assert seen == [
        "dark",
        "healthy",
        "abort_window",
        "healthy",
        "walk_test",
        "walk_test_press",
        "walk_test",
        "healthy",
    ], leds.timeline
    raised = [r for r in sandbox.requests() if r.method == "POST" and r.path.endswith("/callouts")]
    assert raised == [], "a withdrawn press and a walk-test press raise nothing"

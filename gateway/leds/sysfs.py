"""The Linux LED class (``/sys/class/leds/<name>/``) as the status LEDs' backend.

Where the LED has the kernel's ``timer`` trigger (almost always: gpio-leds, the Pi's own
LEDs), the first blink sets the trigger to ``timer`` (the udev rule may have done it
already) and it stays there; every pattern is then a pair of ``delay_on``/``delay_off``
writes and the kernel times the blinking: the daemon never wakes for an LED. Steady on
is ``delay_off = 0``, steady off ``delay_on = 0`` (the kernel stops its blink timer for
both). An output that never blinked (the relay) stays on ``trigger = none`` and
``brightness``: selecting ``timer`` starts a 1 Hz blink, which a siren must never do.

Why not ``trigger = none`` and ``brightness`` for steady patterns: switching the
trigger away from ``timer`` and back makes the kernel remove and re-create
``delay_on``/``delay_off`` owned by root, so a daemon running as its own user could set
them once (after the udev rule, ``systemd/99-aura-gateway-leds.rules``, gave it the files)
and never again. Writing ``brightness = 0`` would drop the trigger the same way.

Steady patterns off the ``timer`` trigger are ``trigger = none`` plus ``brightness``
(``max_brightness`` or 0). Without a ``timer`` trigger at all, blinks are timed by an
asyncio task (it wakes only while something blinks).

An LED that does not exist is warned about once, clearly, and skipped: a missing LED
never stops the gateway. So is a write the kernel refuses (permissions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

from gateway.leds.blinker import Blinker
from gateway.leds.states import Pattern

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/class/leds")


def read_trigger(text: str) -> tuple[str | None, set[str]]:
    """The selected trigger and the available ones from ``trigger``'s text, which the
    kernel reads as ``none [timer] heartbeat`` (the selected one in brackets)."""
    words = text.split()
    current = next((w[1:-1] for w in words if w.startswith("[") and w.endswith("]")), None)
    available = {w.strip("[]") for w in words}
    if current is None and len(words) == 1:
        current = words[0]  # not the kernel's format (a plain file): take it as selected
    return current, available


def timer_delays(pattern: Pattern) -> tuple[int, int]:
    """``(delay_on, delay_off)`` in ms for the ``timer`` trigger."""
    if pattern.kind == "on":
        return 1, 0
    if pattern.kind == "off":
        return 0, 1
    return pattern.on_ms, pattern.off_ms


class SysfsLeds:
    name = "sysfs"

    def __init__(
        self, root: Path = DEFAULT_ROOT, *, on_write: Callable[[Path, str], None] | None = None
    ) -> None:
        """``on_write(path, text)`` is called after every attribute write (tests mimic the
        kernel's reaction with it)."""
        self.root = Path(root)
        self._on_write = on_write
        self._warned: set[tuple[str, str]] = set()
        self._max: dict[str, int] = {}
        self._soft = Blinker(self._set_brightness)

    def set(self, led: str, pattern: Pattern) -> bool:
        """Show ``pattern``; False: it could not be written (warned about once)."""
        path = self.root / led
        if not (path / "trigger").exists():
            self._warn_once(
                led,
                "missing",
                "event=led_missing led=%s path=%s hint='this LED is not shown; "
                "ls %s lists the LEDs there, [leds] in gateway.toml names them'",
                led,
                path,
                self.root,
            )
            return False
        try:
            current, available = read_trigger((path / "trigger").read_text())
            if current == "timer" or (pattern.kind == "blink" and "timer" in available):
                self._soft.stop(led)
                if current != "timer":
                    self._write(path / "trigger", "timer")
                on, off = timer_delays(pattern)
                # Never both 0 in between: the kernel would blink at 1 Hz meanwhile.
                first, second = (
                    (("delay_off", off), ("delay_on", on))
                    if on == 0
                    else (
                        ("delay_on", on),
                        ("delay_off", off),
                    )
                )
                self._write(path / first[0], str(first[1]))
                self._write(path / second[0], str(second[1]))
            else:
                if current not in (None, "none"):
                    self._write(path / "trigger", "none")
                self._soft.set(led, pattern)
        except OSError as exc:
            self._warn_once(
                led,
                f"write:{exc.errno}",
                "event=led_write_failed led=%s error=%s hint='the gateway needs write access: "
                "systemd/99-aura-gateway-leds.rules'",
                led,
                exc,
            )
            return False
        if any(key[0] == led for key in self._warned):
            logger.info("event=led_ok led=%s", led)  # it came (or was fixed)
            self._warned = {key for key in self._warned if key[0] != led}
        return True

    def close(self, keep: Collection[str] = ()) -> None:
        """Stop the soft blinks; every output stays as it was last set (the driver set
        them). An output in ``keep`` never blinks in software, so nothing changes."""
        self._soft.close()

    # ------------------------------------------------------------------ the files

    def _set_brightness(self, led: str, on: bool) -> None:
        path = self.root / led
        self._write(path / "brightness", str(self._max_brightness(path) if on else 0))

    def _max_brightness(self, path: Path) -> int:
        if path.name not in self._max:
            try:
                self._max[path.name] = max(1, int((path / "max_brightness").read_text()))
            except (OSError, ValueError):
                self._max[path.name] = 1
        return self._max[path.name]

    def _write(self, path: Path, text: str) -> None:
        # No O_CREAT: an attribute the kernel has not made is an error, as in sysfs.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        if self._on_write is not None:
            self._on_write(path, text)

    def _warn_once(self, led: str, kind: str, message: str, *args: object) -> None:
        if (led, kind) not in self._warned:
            self._warned.add((led, kind))
            logger.warning(message, *args)

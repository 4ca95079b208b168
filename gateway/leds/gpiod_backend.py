"""GPIO lines (through libgpiod 2.x, the ``gpiod`` package) as LEDs and the relay.

The lines are requested once as outputs, driven inactive at first. GPIO has no blink
timer of its own, so a blink is timed by an asyncio task (:class:`Blinker`, never
``time.sleep``) that runs only while something blinks: a healthy gateway (green steady)
has none.

``gpiod`` is imported when this backend is chosen, not before: it is an optional extra
(``pip install 'aura-gateway[leds]'``), not needed with ``backend = "sysfs"``. Debian's
``python3-libgpiod`` is the old 1.x API and is refused with a clear message.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Iterable
from types import ModuleType
from typing import Any

from gateway.errors import GatewayError
from gateway.leds.blinker import Blinker
from gateway.leds.states import OFF, Pattern

CONSUMER = "aura-gateway"

logger = logging.getLogger(__name__)


class GpiodUnavailable(GatewayError):
    pass


def import_gpiod() -> ModuleType:
    try:
        gpiod = importlib.import_module("gpiod")
    except ImportError as exc:
        raise GpiodUnavailable(
            "backend gpiod needs the gpiod package (libgpiod 2.x): pip install 'aura-gateway[leds]'"
        ) from exc
    if not hasattr(gpiod, "request_lines"):
        raise GpiodUnavailable(
            f"gpiod {getattr(gpiod, '__version__', '?')} is the libgpiod 1.x API; "
            "backend gpiod needs gpiod>=2.2 (pip install 'aura-gateway[leds]')"
        )
    return gpiod


def line_id(name: str) -> int | str:
    """A line offset ("17") or a line name ("GPIO17"), as gpiod takes either."""
    return int(name) if name.isdigit() else name


class GpiodLeds:
    name = "gpiod"

    def __init__(
        self, chip: str, lines: Iterable[str], *, gpiod: ModuleType | Any | None = None
    ) -> None:
        """Request ``lines`` on ``chip`` as outputs. ``gpiod``: the module (a fake in
        tests); imported here when not given. Raises GpiodUnavailable or OSError."""
        self._gpiod = gpiod if gpiod is not None else import_gpiod()
        value = self._gpiod.line.Value
        self._active, self._inactive = value.ACTIVE, value.INACTIVE
        self._ids = {name: line_id(name) for name in dict.fromkeys(lines)}
        settings = self._gpiod.LineSettings(
            direction=self._gpiod.line.Direction.OUTPUT, output_value=self._inactive
        )
        self._request = self._gpiod.request_lines(
            chip, consumer=CONSUMER, config={tuple(self._ids.values()): settings}
        )
        self._blinker = Blinker(self._write)
        self._failing: set[str] = set()

    def set(self, led: str, pattern: Pattern) -> bool:
        """Show ``pattern``; False: the line could not be set (logged once until it
        works again). A blink's later edges are the blink task's (it logs them)."""
        if led not in self._ids:
            return False
        try:
            self._blinker.set(led, pattern)
        except OSError as exc:
            if led not in self._failing:
                self._failing.add(led)
                logger.warning("event=led_write_failed led=%s error=%s", led, exc)
            return False
        if led in self._failing:
            self._failing.discard(led)
            logger.info("event=led_ok led=%s", led)
        return True

    def close(self, keep: Collection[str] = ()) -> None:
        """Switch every line off except those in ``keep`` (left as they are: a relay on
        for an undelivered alarm), then release the lines. Never raises OSError."""
        self._blinker.close()
        try:
            for name in self._ids:
                if name not in keep:
                    self.set(name, OFF)
        finally:
            try:
                self._request.release()
            except OSError as exc:
                logger.warning("event=led_release_failed error=%s", exc)

    def _write(self, led: str, on: bool) -> None:
        self._request.set_value(self._ids[led], self._active if on else self._inactive)

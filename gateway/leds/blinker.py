"""Blinking an output the kernel cannot blink for us (a GPIO line, an LED without the
``timer`` trigger): one asyncio task per blinking output, asleep between its edges.

A steady output has no task at all, so a healthy gateway (green steady) never wakes for
its LEDs. Never ``time.sleep``: the event loop carries the alarms.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.leds.states import Pattern

logger = logging.getLogger(__name__)


class Blinker:
    def __init__(self, write: Callable[[str, bool], None]) -> None:
        """``write(output, on)`` switches one output; it may raise OSError."""
        self._write = write
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def set(self, output: str, pattern: Pattern) -> None:
        """Show ``pattern``; a blink needs a running event loop."""
        self.stop(output)
        if pattern.kind == "blink":
            self._tasks[output] = asyncio.get_running_loop().create_task(
                self._blink(output, pattern.on_ms / 1000, pattern.off_ms / 1000),
                name=f"led-blink:{output}",
            )
        else:
            self._write(output, pattern.kind == "on")

    def stop(self, output: str) -> None:
        task = self._tasks.pop(output, None)
        if task is not None:
            task.cancel()

    def blinking(self) -> set[str]:
        return {name for name, task in self._tasks.items() if not task.done()}

    def close(self) -> None:
        for name in list(self._tasks):
            self.stop(name)

    async def _blink(self, output: str, on_s: float, off_s: float) -> None:
        try:
            while True:
                self._write(output, True)
                await asyncio.sleep(on_s)
                self._write(output, False)
                await asyncio.sleep(off_s)
        except OSError as exc:
            logger.error("event=led_write_failed led=%s error=%s", output, exc)
        finally:
            if self._tasks.get(output) is asyncio.current_task():
                del self._tasks[output]  # a failed output: the next set() tries again

"""A recording LED backend: the timeline of (monotonic time, output, pattern) it was told
to show. For tests and demos; ``backend = "mock"`` in the daemon (each change is also in
the log as ``event=leds``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from gateway.leds.states import OFF, Pattern


class MockLeds:
    name = "mock"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.timeline: list[tuple[float, str, Pattern]] = []
        self.closed = False
        self.kept: tuple[str, ...] = ()  # what close() was told to leave as it was

    def set(self, led: str, pattern: Pattern) -> bool:
        self.timeline.append((self._clock(), led, pattern))
        return True

    def current(self, led: str) -> Pattern:
        """What ``led`` shows now (off if it was never set)."""
        for _, name, pattern in reversed(self.timeline):
            if name == led:
                return pattern
        return OFF

    def patterns(self, led: str) -> list[Pattern]:
        """Every pattern ``led`` was given, in order."""
        return [pattern for _, name, pattern in self.timeline if name == led]

    def close(self, keep: Collection[str] = ()) -> None:
        self.closed = True
        self.kept = tuple(keep)

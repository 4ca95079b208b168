"""Capped exponential backoff with full jitter, shared by every retry loop."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rand = rand

    def next_delay(self, hint_s: float | None = None) -> float:
        """Delay before the next try; a server's Retry-After wins when it is given."""
        ceiling = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        if hint_s is not None:
            return min(max(hint_s, 0.0), self.max_s * 4)
        return self._rand(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0

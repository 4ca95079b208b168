"""Retry delays: full jitter under a cap that doubles, and Retry-After when AURA gives one."""

from __future__ import annotations

from gateway.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap() -> None:
    ceilings: list[float] = []
    backoff = Backoff(0.5, 5.0, rand=lambda low, high: ceilings.append(high) or high)
    for _ in range(7):
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    backoff = Backoff(0.5, 5.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 5.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # jittered, not a fixed schedule


def test_retry_after_wins_and_reset_starts_over() -> None:
    ceilings: list[float] = []
    backoff = Backoff(1.0, 8.0, rand=lambda low, high: ceilings.append(high) or high)
    assert backoff.next_delay(hint_s=7.0) == 7.0
    backoff.next_delay()
    backoff.reset()
    backoff.next_delay()
    assert ceilings == [2.0, 1.0]

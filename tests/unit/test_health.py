"""The watchdog pings only while the loop, the critical tasks and the journal answer."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import JournalError
from gateway.health import HEALTH, Health, keep_watchdog, watched

INTERVAL = 0.05


class FakeJournal:
    """``call`` runs the probe at once, or waits while ``hang`` is clear, or refuses."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.answer.set()
        self.refuse = False
        self.probes = 0
        self.delay = 0.0  # a slow but answering journal

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        self.probes += 1
        await self.answer.wait()
        await asyncio.sleep(self.delay)
        if self.refuse:
            raise JournalError("journal probe failed: database is locked")
        return None


class Pings:
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, state: str) -> bool:
        assert state == "WATCHDOG=1"
        self.times.append(asyncio.get_running_loop().time())
        return True


async def _watch(journal: FakeJournal, health: Health, pings: Pings) -> asyncio.Task[None]:
    return asyncio.create_task(
        keep_watchdog(journal, INTERVAL, health=health, notify=pings)  # type: ignore[arg-type]
    )


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_pings_every_interval_while_healthy() -> None:
    journal, pings = FakeJournal(), Pings()
    task = await _watch(journal, Health(), pings)
    await asyncio.sleep(10.5 * INTERVAL)
    await _stop(task)
    assert 9 <= len(pings.times) <= 12
    assert journal.probes == len(pings.times)  # one probe per ping


async def test_a_hung_journal_stops_the_pings_and_its_answer_resumes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.health")
    journal, pings = FakeJournal(), Pings()
    task = await _watch(journal, Health(), pings)
    await asyncio.sleep(2.5 * INTERVAL)
    journal.answer.clear()
    hung = asyncio.get_running_loop().time()
    await asyncio.sleep(6 * INTERVAL)
    # Within one WatchdogSec (two intervals): systemd never sees a ping from a hung journal
    # more than WatchdogSec after it hung.
    assert [t for t in pings.times if t > hung + 2 * INTERVAL] == []
    probes_while_hung = journal.probes
    await asyncio.sleep(2 * INTERVAL)
    assert journal.probes == probes_while_hung  # one outstanding probe, not a pile
    journal.answer.set()
    released = asyncio.get_running_loop().time()
    await asyncio.sleep(3 * INTERVAL)
    await _stop(task)
    assert [t for t in pings.times if t > released]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=watchdog_withheld" in m and "journal not answering" in m for m in messages)
    assert sum(m.startswith("event=watchdog_resumed") for m in messages) == 1


async def test_a_slow_probe_below_the_limit_keeps_the_pings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A long prune batch or a slow fsync: each probe takes most of an interval (more than
    # the half interval the pinger waits) but less than 2/3 of WatchdogSec.
    caplog.set_level(logging.INFO, logger="gateway.health")
    journal, pings = FakeJournal(), Pings()
    journal.delay = 0.9 * INTERVAL
    task = await _watch(journal, Health(), pings)
    await asyncio.sleep(10.5 * INTERVAL)
    await _stop(task)
    assert len(pings.times) >= 9
    gaps = [b - a for a, b in itertools.pairwise(pings.times)]
    assert max(gaps) < 2 * INTERVAL, gaps  # never a gap of a WatchdogSec
    assert not [r for r in caplog.records if "watchdog_withheld" in r.getMessage()]


async def test_a_refused_probe_withholds_the_ping() -> None:
    journal, pings = FakeJournal(), Pings()
    journal.refuse = True
    task = await _watch(journal, Health(), pings)
    await asyncio.sleep(4 * INTERVAL)
    assert pings.times == []
    journal.refuse = False
    await asyncio.sleep(2 * INTERVAL)
    await _stop(task)
    assert pings.times


async def test_an_ended_critical_task_stops_the_pings() -> None:
    journal, pings, health = FakeJournal(), Pings(), Health()
    gone = asyncio.create_task(asyncio.sleep(0), name="input:receiver")
    health.watch(gone)
    await gone
    assert [p.text for p in health.problems()] == ["task input:receiver has ended"]
    task = await _watch(journal, health, pings)
    await asyncio.sleep(4 * INTERVAL)
    await _stop(task)
    assert pings.times == []


def test_a_step_is_stuck_after_its_limit_and_fine_before() -> None:
    now = [100.0]
    health = Health(clock=lambda: now[0])
    health.limits["uplink"] = 10.0
    with health.step("uplink"):
        now[0] += 9.0
        assert health.problems() == []
        now[0] += 2.0
        [problem] = health.problems()
        assert problem.kind == "stuck:uplink"
        assert problem.text == "uplink stuck for 11 s (limit 10 s)"
    assert health.problems() == []  # ended: no longer a step


async def test_watched_marks_the_call_as_a_step_on_the_process_record() -> None:
    seen: list[list[str]] = []

    @watched("presses")
    async def store() -> int:
        seen.append([name for name, _ in HEALTH._steps.values()])
        return 7

    assert await store() == 7
    assert "presses" in seen[0]
    assert all(name != "presses" for name, _ in HEALTH._steps.values())

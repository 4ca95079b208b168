"""An honest systemd watchdog: ``WATCHDOG=1`` only while the daemon really works.

systemd restarts the service when the pings stop (``WatchdogSec=`` in the unit), so a ping
must mean "presses are being stored and alarms delivered", not merely "a timer fired".
:func:`keep_watchdog` pings every half ``WATCHDOG_USEC`` (``sdnotify.watchdog_interval_s``)
and only when all of these hold:

* **the event loop runs**: the pinger is a coroutine on it, so a loop blocked by a
  synchronous call sends nothing;
* **every critical task is alive**: each input's run loop, the uplink's alarm loop, the
  follower and the held-press task (:meth:`Health.watch`). They loop forever; one that has
  ended, for whatever reason, is a daemon that no longer does its work;
* **the journal thread answers**: each ping interval a probe (``Journal.probe``: ``BEGIN
  IMMEDIATE``, one read, ``ROLLBACK``; nothing written) goes through ``AsyncJournal``'s
  one thread. A probe that fails (``JournalError``: e.g. the database locked by another
  process past the 5 s busy timeout) withholds the ping; one that is merely slow does not,
  until it has been outstanding for :data:`PROBE_LIMIT_SHARE` of ``WatchdogSec`` (20 s of
  30 s). That is far above the longest legitimate journal call (busy timeout 5 s plus an
  fsync; pruning runs in batches of ~50 ms, ``Journal.prune_step``), yet a hung fsync or a
  wedged thread still stops the pings within one watchdog interval: the pinger waits at
  most half an interval per tick, so a probe stuck from tick T is pinged for at T + 1/2
  interval at the latest and withheld at T + 2/3 ``WatchdogSec``;
* **no critical step is stuck**: a batch of presses through the router, one round of held
  presses, one alarm delivery, one follower poll of a callout are *steps*
  (:func:`watched`), each with a limit well above what it can take when things work
  (AURA's requests carry their own deadline, so a slow AURA is not a stuck step).

What the gateway cannot fix by restarting never stops the pings: AURA down, a receiver
unplugged, a broker gone. Those are in the status and the log, and the daemon keeps
working on them.

A change of verdict is logged once: ``event=watchdog_withheld problems='...'`` and
``event=watchdog_resumed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from gateway import sdnotify
from gateway.errors import JournalError

if TYPE_CHECKING:
    from gateway.journal import AsyncJournal

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Default limits of the steps (seconds); the daemon sets the AURA ones from the configured
# timeouts (Health.limits). Generous: a stuck step is one that will not end by itself.
DEFAULT_LIMITS: dict[str, float] = {
    "presses": 30.0,  # router lock + one journal transaction (busy timeout 5 s, fsync)
    "held-presses": 30.0,
    "uplink": 120.0,
    "follower": 120.0,
}

# An outstanding journal probe is a problem once older than this share of WatchdogSec
# (the ping interval is half of it). At most 3/4: a probe stuck from tick T must not be
# pinged for past T + 1/2 interval, so the pings stop within one WatchdogSec.
PROBE_LIMIT_SHARE = 2 / 3


@dataclass(frozen=True)
class Problem:
    kind: str  # what, without numbers: a change of kind is logged
    text: str  # what, in words, with how long


class Health:
    """Critical tasks and the steps in progress; :meth:`problems` is the verdict."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._steps: dict[int, tuple[str, float]] = {}  # token -> (name, started)
        self._tokens = itertools.count()
        self.limits = dict(DEFAULT_LIMITS)

    def watch(self, task: asyncio.Task[Any]) -> None:
        """A task that must run as long as the daemon does (named by its task name)."""
        self._tasks[task.get_name()] = task

    def reset(self) -> None:
        """The daemon run is over: forget its tasks (steps end by themselves)."""
        self._tasks.clear()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A unit of critical work; stuck when it runs longer than ``limits[name]``."""
        token = next(self._tokens)
        self._steps[token] = (name, self._clock())
        try:
            yield
        finally:
            self._steps.pop(token, None)

    def problems(self) -> list[Problem]:
        out = [
            Problem(f"ended:{name}", f"task {name} has ended")
            for name, task in self._tasks.items()
            if task.done()
        ]
        now = self._clock()
        for name, started in list(self._steps.values()):
            limit = self.limits.get(name, 60.0)
            if now - started > limit:
                out.append(
                    Problem(
                        f"stuck:{name}",
                        f"{name} stuck for {now - started:.0f} s (limit {limit:g} s)",
                    )
                )
        return out


# The process's one record (like gateway.clock.CLOCK): the router, the uplink and the
# follower mark their steps here without being handed it.
HEALTH = Health()


def watched(name: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorator: every call of this coroutine function is a critical step ``name``."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with HEALTH.step(name):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate


async def keep_watchdog(
    journal: AsyncJournal,
    interval_s: float,
    *,
    health: Health = HEALTH,
    notify: Callable[[str], object] = sdnotify.notify,
) -> None:
    """Ping every ``interval_s`` while :mod:`the rules <gateway.health>` hold; forever."""
    loop = asyncio.get_running_loop()
    probe_limit = PROBE_LIMIT_SHARE * 2 * interval_s  # WatchdogSec = 2 * interval_s
    probe: asyncio.Future[None] | None = None
    probe_started = 0.0
    withheld: set[str] = set()
    withheld_since = 0.0
    next_tick = loop.time()
    try:
        while True:
            problems: list[Problem] = []
            if probe is None:
                probe = asyncio.ensure_future(journal.call(lambda j: j.probe()))
                probe_started = loop.time()
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands as the probe completes, and the daemon would not stop.
            # Wait for the answer at most half an interval, and not past the probe's limit.
            overdue_at = probe_started + probe_limit
            wait_s = min(interval_s / 2, overdue_at - loop.time())
            await asyncio.wait({probe}, timeout=max(wait_s, 0.0))
            if not probe.done():
                waited = loop.time() - probe_started
                if wait_s < interval_s / 2:  # waited up to the limit: not merely slow
                    problems.append(Problem("journal", f"journal not answering for {waited:.1f} s"))
                # else merely slow (below the limit): not a problem yet
            else:
                failed, probe = probe.exception(), None
                if isinstance(failed, JournalError | RuntimeError):  # RuntimeError: executor down
                    problems.append(Problem("journal", f"journal refused the probe: {failed}"))
                elif failed is not None:
                    raise failed
            problems += health.problems()
            kinds = {p.kind for p in problems}
            if not problems:
                notify("WATCHDOG=1")
                if withheld:
                    logger.warning(
                        "event=watchdog_resumed after_s=%.1f", loop.time() - withheld_since
                    )
            elif kinds != withheld:
                if not withheld:
                    withheld_since = loop.time()
                logger.error(
                    "event=watchdog_withheld problems=%r",
                    "; ".join(p.text for p in problems),
                )
            withheld = kinds
            next_tick = max(next_tick + interval_s, loop.time())
            await asyncio.sleep(next_tick - loop.time())
    finally:
        if probe is not None and not probe.done():
            probe.cancel()  # the journal thread finishes it; nobody waits for the answer
        elif probe is not None and not probe.cancelled():
            probe.exception()  # retrieved: an answer nobody reads is not an error

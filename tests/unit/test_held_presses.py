"""Held presses through the real Router and the real Journal (SQLite on tmp_path).

A press that cannot be decided at once (a double may follow, or an abort window runs) is
stored as ``held_pattern`` / ``held_abort`` and acknowledged before anything else: no
incident, no alarm queued. ``expire_held`` decides it once due and updates its row in the
same transaction as the incident it opens; a journal that refuses that write leaves the
engine as it was and the press held. After a restart, ``adopt_held`` picks the held
presses up from the journal and they resolve as they would have.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway import router as router_module
from gateway.config import Config
from gateway.config.models import Gesture
from gateway.engine import Engine
from gateway.errors import JournalError
from gateway.journal import SENDING, AsyncJournal, Attempt, Journal, Resolution, held_key
from gateway.router import Router
from gateway.signals import BOOT_ID, Press, Stamp
from gateway.status import StatusModel

from .test_engine_gestures import (
    A1,
    A2,
    ABORT,
    B1,
    BASE,
    CANCEL_BEFORE_ABORT_WINDOW,
    CUSTOMER,
    DOUBLE,
    SAME_KEY,
    TOLD_CANCEL,
    Clock,
    MakeConfig,
    config_cache,
    s,
)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> MakeConfig:
    return config_cache(tmp_path_factory)


SINGLE_OR_CANCEL_DOUBLE: dict[str, Any] = {"compose_double": True, "cancel_gestures": ["double"]}
DOUBLE_WINDOW_THEN_ABORT: dict[str, Any] = {
    "compose_double": True,
    "cancel_gestures": ["double"],
    "abort_window_s": 2.0,
}


class IdleUplink:
    def __init__(self) -> None:
        self.offers: list[Attempt | None] = []

    def idle(self) -> bool:
        return not self.offers

    def offer(self, claimed: Attempt | None) -> None:
        self.offers.append(claimed)

    def device_health(self, device: object) -> None:
        pass


@asynccontextmanager
async def running(
    config: Config, path: Path, clock: Clock, *, adopt: bool = False
) -> AsyncIterator[Router]:
    """A Router with a fresh Engine on the journal at ``path``; ``adopt``: pick up the
    presses held when the last one stopped, as the daemon does at start."""
    journal = await AsyncJournal(path).open()
    try:
        router = Router(Engine(config, clock_ns=clock), journal, StatusModel(), IdleUplink())
        if adopt:
            await router.adopt_held()
        yield router
    finally:
        await journal.close()


def press(
    dev: str,
    n: int,
    clock: Clock,
    gesture: Gesture = "single",
    *,
    boot_id: str = BOOT_ID,
    wall: float = 1.0,
    trusted: bool = False,
) -> Press:
    return Press(
        source="test",
        device_id=dev,
        gesture=gesture,
        dedup_key=f"rf:{dev}:{n}",
        counter=n,
        stamp=Stamp(mono_ns=clock.ns, wall=wall, boot_id=boot_id, wall_trusted=trusted),
        frame_key=f"s:{n}",
        authenticated=True,
    )


def rows(path: Path) -> dict[str, tuple[str, str, str | None]]:
    """Every press row by dedup key: (decision, reason, incident id), read on a connection
    of its own (what is committed, and only that)."""
    db = sqlite3.connect(path)
    try:
        found = db.execute(
            "SELECT dedup_key, decision, reason, incident_id FROM presses ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return {key: (decision, reason, inc) for key, decision, reason, inc in found}


def rows_in_order(path: Path) -> list[tuple[str, str, str, str | None]]:
    """Every press row in the order stored: (dedup key, decision, reason, incident id)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT dedup_key, decision, reason, incident_id FROM presses ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def incidents(path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, key, state FROM incidents ORDER BY rowid").fetchall()
    finally:
        db.close()


def notes(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        found = db.execute("SELECT payload FROM outbox WHERE kind = 'note' ORDER BY seq")
        return [json.loads(payload)["text"] for (payload,) in found.fetchall()]
    finally:
        db.close()


def outbox(path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT incident_id, kind, state FROM outbox ORDER BY seq").fetchall()
    finally:
        db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(BASE)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


# --------------------------------------------------------------------------- stored, acked


@pytest.mark.parametrize(
    ("dtype", "held"),
    [(ABORT, "held_abort"), (DOUBLE, "held_pattern"), (SINGLE_OR_CANCEL_DOUBLE, "held_pattern")],
    ids=["abort-window", "double-type", "double-cancels"],
)
async def test_held_press_is_stored_and_acknowledged_before_anything_else(
    configs: MakeConfig, path: Path, clock: Clock, dtype: dict[str, Any], held: str
) -> None:
    async with running(configs(dtype), path, clock) as router:
        outcome = await router.on_press(press(A1, 1, clock))
        assert outcome is not None  # durable: the input may acknowledge it
        assert (outcome.verdict, outcome.decision, outcome.incident_id) == ("stored", "hold", None)
        decision, reason, incident = rows(path)["rf:0000a001:1"]
        assert decision == held and incident is None
        assert ("abort window" if held == "held_abort" else "double press") in reason
        # Nothing else yet: no incident, nothing queued, nothing offered to the uplink.
        assert incidents(path) == [] and outbox(path) == []
        assert router._uplink.offers == []  # type: ignore[attr-defined]
        assert router.status.pending_alarms == 0
        assert router.status.counters[f"presses_{held}"] == 1
        assert [(p.dedup_key, d) for p, d in await router.journal.call(Journal.held_presses)] == [
            ("rf:0000a001:1", held)
        ]
        assert router.engine.next_deadline_ns() is not None
        # The receiver resends it: acknowledged again, never decided again.
        before = router.engine.snapshot()
        again = await router.on_press(press(A1, 1, clock))
        assert again is not None and again.verdict == "repeat"
        assert router.engine.snapshot() == before


# --------------------------------------------------------------------------- expiry


async def test_abort_window_press_is_raised_when_its_window_ends(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    async with running(configs(ABORT), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(3)  # the last instant of the window: not yet
        await router.expire_held()
        assert rows(path)["rf:0000a001:1"][0] == "held_abort"
        assert incidents(path) == []

        clock.ns = BASE + s(3) + 1
        await router.expire_held()
        decision, reason, incident = rows(path)["rf:0000a001:1"]
        assert (decision, reason) == ("raise", "abort window ended without a cancel: raised")
        # The incident and its raise, claimed for the idle uplink in the same transaction.
        assert incidents(path) == [(incident, CUSTOMER[A1], SENDING)]
        assert outbox(path) == [(incident, "raise", "pending")]
        [claimed] = router._uplink.offers  # type: ignore[attr-defined]
        assert claimed is not None and claimed.incident.id == incident
        assert router.status.pending_alarms == 1
        assert router.engine.open_incident(CUSTOMER[A1]) == incident
        assert router.engine.next_deadline_ns() is None
        assert await router.journal.call(Journal.held_presses) == []
        # Further presses attach to it.
        clock.ns = BASE + s(4)
        later = await router.on_press(press(A2, 1, clock))
        assert later is not None and (later.decision, later.incident_id) == ("attach", incident)


async def test_cancel_inside_the_abort_window_withdraws_it_in_the_journal(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    async with running(configs(ABORT), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(1)
        outcome = await router.on_press(press(A1, 2, clock, "hold"))
        assert outcome is not None and outcome.decision == "withdraw"
        got = rows(path)
        assert got["rf:0000a001:1"][0] == "withdrawn"
        assert got["rf:0000a001:2"][0] == "withdraw"
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert incidents(path) == [] and outbox(path) == []
        assert router.status.pending_alarms == 0


async def test_pressed_again_raises_the_held_press_at_once(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    async with running(configs(ABORT), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(1)
        outcome = await router.on_press(press(A2, 1, clock))
        assert outcome is not None and outcome.decision == "attach"
        got = rows(path)
        assert got["rf:0000a001:1"][0] == "raise"
        assert got["rf:0000a002:1"] == (
            "attach",
            "pressed again within the abort window",
            got["rf:0000a001:1"][2],
        )
        [(incident, _, _)] = incidents(path)
        assert incident == outcome.incident_id
        assert router.status.pending_alarms == 1


@pytest.mark.parametrize(
    ("dtype", "second_at", "first", "second"),
    [
        (DOUBLE, None, "ignore", None),
        (DOUBLE, 0.3, "double", "raise"),
        (SINGLE_OR_CANCEL_DOUBLE, None, "raise", None),
        (SINGLE_OR_CANCEL_DOUBLE, 0.3, "double", "ignore"),
    ],
    ids=["single-on-double-type", "double", "single-raises", "double-cancels-nothing"],
)
async def test_pattern_press_resolves_as_single_or_as_half_of_a_double(
    configs: MakeConfig,
    path: Path,
    clock: Clock,
    dtype: dict[str, Any],
    second_at: float | None,
    first: str,
    second: str | None,
) -> None:
    async with running(configs(dtype), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        if second_at is not None:
            clock.ns = BASE + s(second_at)
            await router.on_press(press(A1, 2, clock))
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()
        got = rows(path)
        assert got["rf:0000a001:1"][0] == first
        if second is not None:
            assert got["rf:0000a001:2"][0] == second
        raised = [r for r in got.values() if r[0] == "raise"]
        assert len(incidents(path)) == len(raised) <= 1
        if raised:
            assert raised[0][2] == incidents(path)[0][0]
        if first == "double":  # the first half carries the incident the double opened
            assert got["rf:0000a001:1"][2] == got["rf:0000a001:2"][2]
        assert await router.journal.call(Journal.held_presses) == []


async def test_pattern_press_then_abort_window_is_stored_at_each_step(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    async with running(configs(DOUBLE_WINDOW_THEN_ABORT), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        assert rows(path)["rf:0000a001:1"][0] == "held_pattern"
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()
        assert rows(path)["rf:0000a001:1"][0] == "held_abort"
        assert incidents(path) == []
        clock.ns = BASE + s(2.5) + 2
        await router.expire_held()
        assert rows(path)["rf:0000a001:1"][0] == "raise"
        assert len(incidents(path)) == 1


async def test_a_type_that_tells_doubles_itself_stores_every_press_decided(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    """compose_double off (the receiver's firmware tells a double): a single raises when it
    comes, a second quick single attaches (two presses, not a cancel), a reported double
    cancels. Nothing is ever stored as held."""
    async with running(configs(TOLD_CANCEL), path, clock) as router:
        first = await router.on_press(press(A1, 1, clock))
        assert first is not None and (first.verdict, first.decision) == ("stored", "raise")
        [(incident, key, state)] = incidents(path)
        assert (first.incident_id, key, state) == (incident, CUSTOMER[A1], SENDING)
        assert router.engine.next_deadline_ns() is None
        clock.ns = BASE + s(0.2)
        second = await router.on_press(press(A1, 2, clock))
        assert second is not None and (second.decision, second.incident_id) == ("attach", incident)
        clock.ns = BASE + s(0.4)
        cancel = await router.on_press(press(A1, 3, clock, "double"))
        assert cancel is not None and (cancel.decision, cancel.incident_id) == ("cancel", incident)
        assert [(k, d) for k, d, _, _ in rows_in_order(path)] == [
            ("rf:0000a001:1", "raise"),
            ("rf:0000a001:2", "attach"),
            ("rf:0000a001:3", "cancel"),
        ]
        assert await router.journal.call(Journal.held_presses) == []
        assert router.engine.next_deadline_ns() is None
        assert router.engine.open_incident(CUSTOMER[A1]) is None
        assert router.status.counters.get("presses_held_pattern", 0) == 0


@pytest.mark.parametrize("same_boot", [True, False], ids=["same-boot", "after-reboot"])
async def test_a_press_held_for_a_double_before_composing_was_turned_off_resolves_as_a_single(
    configs: MakeConfig, path: Path, clock: Clock, same_boot: bool
) -> None:
    """Stored as held_pattern by a type that composed doubles; the gateway restarts with
    compose_double off: the press is adopted and resolved once, as the single it was, and
    a later press never completes a double with it."""
    boot = BOOT_ID if same_boot else f"{BOOT_ID}-before"
    async with running(configs(SINGLE_OR_CANCEL_DOUBLE), path, clock) as router:
        await router.on_press(press(A1, 1, clock, boot_id=boot))
        assert rows(path)["rf:0000a001:1"][0] == "held_pattern"
    clock.ns = BASE + s(0.2)
    async with running(configs(TOLD_CANCEL), path, clock, adopt=True) as router:
        clock.ns = BASE + s(0.3)
        later = await router.on_press(press(A1, 2, clock))
        assert later is not None and later.decision in ("raise", "attach")
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()
        got = rows(path)
        assert {got["rf:0000a001:1"][0], got["rf:0000a001:2"][0]} == {"raise", "attach"}
        [(incident, _, _)] = incidents(path)
        assert got["rf:0000a001:1"][2] == got["rf:0000a001:2"][2] == incident
        assert await router.journal.call(Journal.held_presses) == []
        assert router.engine.next_deadline_ns() is None


# --------------------------------------------------------------------------- refused


class NoBackoff:
    """The router's ``asyncio`` with a ``sleep`` that returns at once (the back-off after a
    refused write), noting the delays asked for and whether ``lock`` (the router's) was
    held meanwhile."""

    def __init__(self, lock: asyncio.Lock | None = None) -> None:
        self.delays: list[float] = []
        self.lock = lock
        self.locked: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        if self.lock is not None:
            self.locked.append(self.lock.locked())
        await asyncio.sleep(0)


async def test_refused_resolution_restores_the_engine_and_keeps_the_press_held(
    configs: MakeConfig, path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept = NoBackoff()

    def refuse(self: Journal, resolutions: list[Resolution], *, claim: bool = False) -> None:
        raise JournalError("disk full")

    async with running(configs(DOUBLE_WINDOW_THEN_ABORT), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        await router.on_press(press(B1, 1, clock))
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()  # both now wait out their abort windows
        clock.ns = BASE + s(3)
        before = router.engine.snapshot()
        deadline = router.engine.next_deadline_ns()

        monkeypatch.setattr(Journal, "resolve_held", refuse)
        monkeypatch.setattr(router_module, "asyncio", slept)
        slept.lock = router._lock
        await router.expire_held()
        assert slept.delays == [1.0]  # it backs off before trying again
        assert slept.locked == [False]  # with presses free to come in meanwhile
        assert router.engine.snapshot() == before
        assert router.engine.next_deadline_ns() == deadline
        assert router.engine.open_incident(CUSTOMER[A1]) is None
        assert router.status.counters["journal_errors"] == 1
        assert router.status.pending_alarms == 0
        assert {k: r[0] for k, r in rows(path).items()} == {
            "rf:0000a001:1": "held_abort",
            "rf:0000b001:1": "held_abort",
        }
        assert incidents(path) == [] and router._uplink.offers == []  # type: ignore[attr-defined]

        monkeypatch.undo()
        await router.expire_held()
        assert {k: r[0] for k, r in rows(path).items()} == {
            "rf:0000a001:1": "raise",
            "rf:0000b001:1": "raise",
        }
        assert len(incidents(path)) == 2
        assert router.status.pending_alarms == 2


async def test_refused_pattern_resolution_keeps_the_double_possible(
    configs: MakeConfig, path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry moved the device's pattern state too: restored with the rest."""

    def refuse(self: Journal, resolutions: list[Resolution], *, claim: bool = False) -> None:
        raise JournalError("disk full")

    async with running(configs(DOUBLE), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        before = router.engine.snapshot()
        clock.ns = BASE + s(0.5) + 1
        monkeypatch.setattr(Journal, "resolve_held", refuse)
        monkeypatch.setattr(router_module, "asyncio", NoBackoff())
        await router.expire_held()
        assert router.engine.snapshot() == before
        assert rows(path)["rf:0000a001:1"][0] == "held_pattern"


# --------------------------------------------------------------------------- restart


async def test_restart_adopts_an_abort_window_press_and_raises_it_once_due(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    config = configs(ABORT)
    async with running(config, path, clock) as router:
        await router.on_press(press(A1, 1, clock))
    # The gateway stopped with the press held; same boot, 1 s later.
    clock.ns = BASE + s(1)
    async with running(config, path, clock, adopt=True) as router:
        assert router.engine.next_deadline_ns() == BASE + s(3)
        await router.expire_held()
        assert rows(path)["rf:0000a001:1"][0] == "held_abort"
        clock.ns = BASE + s(3) + 1
        await router.expire_held()
        decision, reason, incident = rows(path)["rf:0000a001:1"]
        assert (decision, reason) == ("raise", "abort window ended without a cancel: raised")
        assert incidents(path) == [(incident, CUSTOMER[A1], SENDING)]
        assert router.engine.open_incident(CUSTOMER[A1]) == incident
        assert router.status.pending_alarms == 1


async def test_restart_keeps_the_abort_window_open_for_a_cancel(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    config = configs(ABORT)
    async with running(config, path, clock) as router:
        await router.on_press(press(A1, 1, clock))
    clock.ns = BASE + s(2)
    async with running(config, path, clock, adopt=True) as router:
        outcome = await router.on_press(press(A1, 2, clock, "hold"))
        assert outcome is not None and outcome.decision == "withdraw"
        assert rows(path)["rf:0000a001:1"][0] == "withdrawn"
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert incidents(path) == []


@pytest.mark.parametrize("same_boot", [True, False], ids=["same-boot", "after-reboot"])
async def test_restart_adopts_a_pattern_press_as_its_single(
    configs: MakeConfig, path: Path, clock: Clock, same_boot: bool
) -> None:
    config = configs(SINGLE_OR_CANCEL_DOUBLE)
    boot = BOOT_ID if same_boot else f"{BOOT_ID}-before"
    async with running(config, path, clock) as router:
        await router.on_press(press(A1, 1, clock, boot_id=boot))
        assert rows(path)["rf:0000a001:1"][0] == "held_pattern"
    clock.ns = BASE + s(0.2)
    async with running(config, path, clock, adopt=True) as router:
        if same_boot:  # its double window goes on
            assert router.engine.next_deadline_ns() == BASE + s(0.5)
            await router.expire_held()
            assert rows(path)["rf:0000a001:1"][0] == "held_pattern"
            clock.ns = BASE + s(0.5) + 1
        else:  # its monotonic time means nothing now: due at once
            assert router.engine.next_deadline_ns() == 0
        await router.expire_held()
        decision, reason, incident = rows(path)["rf:0000a001:1"]
        assert decision == "raise" and reason.startswith("single press from 0000a001 raises")
        assert [i[0] for i in incidents(path)] == [incident]
        assert await router.journal.call(Journal.held_presses) == []


async def test_restart_with_the_customer_already_open_attaches_the_held_press(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    config = configs(ABORT)
    async with running(config, path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(4)
        await router.expire_held()  # raised: customer 2001 is open
        [(incident, _, _)] = incidents(path)
        clock.ns = BASE + s(5)
        await router.on_press(press(A2, 1, clock))  # attaches: nothing held
        await router.on_press(press(B1, 1, clock))  # held (customer 2002)
    clock.ns = BASE + s(9)
    async with running(config, path, clock, adopt=True) as router:
        await router.expire_held()
        got = rows(path)
        assert (got["rf:0000a002:1"][0], got["rf:0000a002:1"][2]) == ("attach", incident)
        assert got["rf:0000b001:1"][0] == "raise"
        states = {key: state for _, key, state in incidents(path)}
        assert states == {CUSTOMER[A1]: SENDING, CUSTOMER[B1]: SENDING}  # each claimed


# --------------------------------------------------------------------------- run_held


async def test_run_held_wakes_when_a_window_ends(configs: MakeConfig, path: Path) -> None:
    """The held-press task sleeps exactly until the deadline (here on the real monotonic
    clock, with a 50 ms abort window)."""
    config = configs({"cancel_gestures": ["hold"], "abort_window_s": 0.05})
    journal = await AsyncJournal(path).open()
    router = Router(
        Engine(config, clock_ns=time.monotonic_ns), journal, StatusModel(), IdleUplink()
    )
    task = asyncio.create_task(router.run_held())
    try:
        await asyncio.sleep(0)
        outcome = await router.on_press(
            Press(
                source="test",
                device_id=A1,
                gesture="single",
                dedup_key="rf:0000a001:1",
                counter=1,
                stamp=Stamp(mono_ns=time.monotonic_ns(), wall=1.0),
            )
        )
        assert outcome is not None and outcome.decision == "hold"
        for _ in range(200):
            if rows(path)["rf:0000a001:1"][0] == "raise":
                break
            await asyncio.sleep(0.01)
        assert rows(path)["rf:0000a001:1"][0] == "raise"
        assert router.status.pending_alarms == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await journal.close()


# --------------------------------------------------------------------------- notes


async def held_press_attached(config: Config, path: Path, clock: Clock, **stamp: Any) -> None:
    """A1's held single raises; A2's, held too, is resolved as an attach to it."""
    async with running(config, path, clock) as router:
        await router.on_press(press(A1, 1, clock, **stamp))
        clock.ns = BASE + s(1)
        await router.expire_held()
        await router.on_press(press(A2, 1, clock, **stamp))
        clock.ns = BASE + s(2)
        await router.expire_held()
    assert rows(path)["rf:0000a002:1"][0] == "attach"


async def test_held_press_attached_says_when_it_was_pressed(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    config = configs(SINGLE_OR_CANCEL_DOUBLE)
    await held_press_attached(config, path, clock, wall=1_700_000_001.0, trusted=True)
    assert notes(path) == ["Panic button 0000a002 pressed again at 22:13:21 UTC."]


async def test_held_press_attached_never_says_a_1970_time(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    config = configs(SINGLE_OR_CANCEL_DOUBLE)
    await held_press_attached(config, path, clock, wall=1.0, trusted=False)
    assert notes(path) == [
        "Panic button 0000a002 pressed again (time unknown: the gateway's clock was not set)."
    ]


# --------------------------------------------------------------------------- cancel while waiting


@pytest.mark.parametrize("canceller", [A1, A2], ids=["same-device", "other-device"])
async def test_cancel_while_a_press_waits_for_its_double_withdraws_it_in_the_journal(
    configs: MakeConfig, path: Path, clock: Clock, canceller: str
) -> None:
    async with running(configs(CANCEL_BEFORE_ABORT_WINDOW), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(1.2)
        outcome = await router.on_press(press(canceller, 2, clock, "long"))
        assert outcome is not None and outcome.decision == "withdraw"
        reason = f"long press from {canceller} withdraws the press it follows"
        got = rows(path)
        assert got["rf:0000a001:1"] == ("withdrawn", reason, None)
        assert got[f"rf:{canceller}:2"] == ("withdraw", reason, None)
        assert await router.journal.call(Journal.held_presses) == []
        assert router.engine.next_deadline_ns() is None
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert incidents(path) == [] and outbox(path) == []
        assert router.status.pending_alarms == 0
        assert router._uplink.offers == []  # type: ignore[attr-defined]


WITHDRAWN_BY_LONG = "long press from 0000a001 withdraws the press it follows"


async def test_cancel_of_the_open_incident_withdraws_a_waiting_press_in_the_journal(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    """A2's press waits for a double when A1 cancels the open incident: both are stored in
    the cancel's transaction, and A2's press never raises afterwards."""
    async with running(
        configs({"compose_double": True, "cancel_gestures": ["double", "long"]}), path, clock
    ) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()
        [(incident, _, _)] = incidents(path)
        clock.ns = BASE + s(1)
        await router.on_press(press(A2, 1, clock))
        assert rows(path)["rf:0000a002:1"][0] == "held_pattern"
        clock.ns = BASE + s(1.2)
        outcome = await router.on_press(press(A1, 2, clock, "long"))
        assert outcome is not None
        assert (outcome.decision, outcome.incident_id) == ("cancel", incident)
        got = rows(path)
        assert got["rf:0000a001:2"] == (
            "cancel",
            f"long press from {A1} cancels {incident}",
            incident,
        )
        assert got["rf:0000a002:1"] == ("withdrawn", WITHDRAWN_BY_LONG, None)
        assert await router.journal.call(Journal.held_presses) == []
        assert router.engine.next_deadline_ns() is None
        assert router.engine.open_incident(CUSTOMER[A1]) is None
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert [i for i, _, _ in incidents(path)] == [incident]
        assert [kind for _, kind, _ in outbox(path)] == ["raise", "cancel"]


async def test_withdraw_in_the_abort_window_withdraws_a_waiting_press_in_the_journal(
    configs: MakeConfig, path: Path, clock: Clock
) -> None:
    """A1's raise waits out its abort window and A2's press waits for a double when A1
    cancels: both are withdrawn in one transaction and nothing is ever raised."""
    dtype = {"compose_double": True, "cancel_gestures": ["double", "long"], "abort_window_s": 3.0}
    async with running(configs(dtype), path, clock) as router:
        await router.on_press(press(A1, 1, clock))
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()
        assert rows(path)["rf:0000a001:1"][0] == "held_abort"
        clock.ns = BASE + s(1)
        await router.on_press(press(A2, 1, clock))
        clock.ns = BASE + s(1.2)
        outcome = await router.on_press(press(A1, 2, clock, "long"))
        assert outcome is not None and outcome.decision == "withdraw"
        got = rows(path)
        within = f"long press from {A1} within the abort window: the alarm is withdrawn"
        assert got["rf:0000a001:2"][0] == "withdraw" and got["rf:0000a001:2"][1].startswith(within)
        assert got["rf:0000a001:1"][0] == "withdrawn" and got["rf:0000a001:1"][1].startswith(within)
        assert got["rf:0000a002:1"] == ("withdrawn", WITHDRAWN_BY_LONG, None)
        assert await router.journal.call(Journal.held_presses) == []
        assert router.engine.next_deadline_ns() is None
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert incidents(path) == [] and outbox(path) == []
        assert router.status.pending_alarms == 0
        assert router._uplink.offers == []  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- shared dedup keys


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted-while-held"])
async def test_presses_sharing_a_dedup_key_survive_expiry_and_restart(
    configs: MakeConfig, path: Path, clock: Clock, restart: bool
) -> None:
    """Two presses of a button whose dedup key is its message content (zigbee2mqtt,
    rtl_433), both held at once: each row is resolved on its own, also when the gateway
    stopped with both held and adopted them at start."""
    config = configs({"compose_double": True, "cancel_gestures": ["double"], "abort_window_s": 5.0})

    def z2m() -> Press:
        return Press("mqtt:z2m", A1, "single", SAME_KEY, stamp=Stamp(clock.ns, 1.0))

    async with running(config, path, clock) as router:
        first = z2m()
        await router.on_press(first, repeat_window_s=2.0)
        clock.ns = BASE + s(0.5) + 1
        await router.expire_held()  # now waiting out its abort window
        clock.ns = BASE + s(3)
        second = z2m()
        again = await router.on_press(second, repeat_window_s=2.0)
        assert again is not None and again.verdict == "stored"
        held = await router.journal.call(Journal.held_presses)
        assert [(held_key(p), d) for p, d in held] == [
            (held_key(first), "held_abort"),
            (held_key(second), "held_pattern"),
        ]
        assert held_key(first) != held_key(second)
        if not restart:
            clock.ns = BASE + s(3.5) + 1
            await router.expire_held()
            assert router.engine.open_incident(CUSTOMER[A1]) is not None
            assert router.engine.next_deadline_ns() is None
    async with running(config, path, clock, adopt=True) as router:
        clock.ns = BASE + s(10)
        await router.expire_held()
        assert await router.journal.call(Journal.held_presses) == []
        [(incident, key, state)] = incidents(path)
        assert (key, state) == (CUSTOMER[A1], SENDING)
        # The second press, a single, released the first one's held raise and attached.
        assert rows_in_order(path) == [
            (SAME_KEY, "raise", "raised before its abort window ended: pressed again", incident),
            (SAME_KEY, "attach", "pressed again within the abort window", incident),
        ]
        if restart:  # (a fresh engine knows the incidents it opened itself only)
            assert router.engine.open_incident(CUSTOMER[A1]) == incident
        assert router.engine.next_deadline_ns() is None

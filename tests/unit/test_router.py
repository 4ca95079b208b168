"""The router's batch path: every press of a burst decided once, in order, durably."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.engine import Engine
from gateway.errors import JournalError
from gateway.journal import AsyncJournal, Attempt, Journal
from gateway.router import Router
from gateway.signals import Press, Stamp
from gateway.status import StatusModel

from .test_engine import DESK, PENDANT, Clock, config  # noqa: F401  (fixture)


class IdleUplink:
    def __init__(self) -> None:
        self.offers: list[Attempt | None] = []

    def idle(self) -> bool:
        return not self.offers

    def offer(self, claimed: Attempt | None) -> None:
        self.offers.append(claimed)

    def device_health(self, device: object) -> None:
        pass


def press(
    device: str, counter: int, *, at_ns: int = 0, gesture: str = "single", frame: str = ""
) -> Press:
    return Press(
        source="test",
        device_id=device,
        gesture=gesture,  # type: ignore[arg-type]
        dedup_key=f"rf:{device}:{counter}",
        counter=counter,
        stamp=Stamp(mono_ns=at_ns, wall=1.0),
        frame_key=frame or f"s:{counter}",
        authenticated=True,
    )


@pytest.fixture
async def router(config, tmp_path: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    journal = await AsyncJournal(tmp_path / "j.sqlite").open()
    uplink = IdleUplink()
    r = Router(Engine(config, clock_ns=Clock()), journal, StatusModel(), uplink)
    yield r
    await journal.close()


async def test_burst_is_decided_in_order_with_repeats_and_replays(router: Router) -> None:
    outcomes = await router.on_presses(
        [
            press(DESK, 5),
            press(DESK, 5),  # radio repeat inside the burst
            press(DESK, 4, frame="s:9"),  # older counter heard after a newer one: a replay
            press(DESK, 6),  # a second real press: attached, never swallowed
            press(PENDANT, 1),  # another customer: its own incident
        ]
    )
    assert [o.verdict if o else None for o in outcomes] == [
        "stored",
        "repeat",
        "replay",
        "stored",
        "stored",
    ]
    assert [o.decision if o else None for o in outcomes] == ["raise", None, None, "attach", "raise"]
    assert outcomes[3].incident_id == outcomes[0].incident_id  # type: ignore[union-attr]
    assert router.status.pending_alarms == 2
    stored = await router.journal.call(lambda j: j.press_count())
    assert stored == 3
    # The first raise was claimed in the same transaction for the idle uplink.
    [claimed] = router._uplink.offers  # type: ignore[attr-defined]
    assert claimed is not None and claimed.incident.id == outcomes[0].incident_id  # type: ignore[union-attr]


async def test_burst_after_restart_sees_what_the_journal_knows(router: Router) -> None:
    await router.on_presses([press(DESK, 9), press(PENDANT, 2)])
    late = 60 * 10**9  # past the repeat window
    again = await router.on_presses(
        [
            press(DESK, 9, at_ns=late),  # the receiver resending the same frame
            press(DESK, 9, at_ns=late, frame="other:1"),  # the transmission recorded, replayed
            press(DESK, 8, frame="other:2"),  # an older counter
        ]
    )
    assert [o.verdict for o in again if o] == ["resend", "replay", "replay"]


async def test_older_counter_heard_first_but_delivered_late_is_a_press(router: Router) -> None:
    # The receiver heard counter 3 (frame 10) then counter 4 (frame 11); the first copy of
    # frame 10 was lost on the wire and its resend arrives after frame 11.
    later = await router.on_press(press(DESK, 4, frame="sess:11"))
    delayed = await router.on_press(press(DESK, 3, frame="sess:10"))
    assert later is not None and delayed is not None
    assert (later.verdict, delayed.verdict) == ("stored", "stored")
    assert delayed.decision == "attach"
    # ... but the bar stays at 4: a recording of 3 heard later (frame 12) is a replay.
    replayed = await router.on_press(press(DESK, 3, frame="sess:12", at_ns=10**12))
    assert replayed is not None and replayed.verdict == "replay"


async def test_refused_write_acks_nothing_and_opens_nothing(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Journal, writes: object, *, claim: bool = False) -> None:
        raise JournalError("disk full")

    monkeypatch.setattr(Journal, "commit_presses", refuse)
    outcomes = await router.on_presses([press(DESK, 1), press(PENDANT, 1)])
    assert outcomes == [None, None]
    assert router.engine.open_incident("customer:1003") is None
    assert router.engine.open_incident("customer:1001") is None
    monkeypatch.undo()
    retried = await router.on_presses([press(DESK, 1), press(PENDANT, 1)])
    assert [o.decision for o in retried if o] == ["raise", "raise"]

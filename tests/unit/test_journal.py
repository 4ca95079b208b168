"""The journal keeps presses, incidents and the alarm outbox across a power cut."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import JournalError
from gateway.journal import CLOSED, FAILED, OPEN, PENDING, SENDING, Journal, NewIncident
from gateway.signals import Press, Stamp


def press(counter: int, device: str = "00a1b2c3") -> Press:
    return Press(
        source="serial:receiver",
        device_id=device,
        gesture="single",
        dedup_key=f"rf:{device}:{counter}",
        counter=counter,
        stamp=Stamp(mono_ns=1_000 + counter, wall=1_700_000_000.0 + counter),
    )


def incident(key: str = "customer:1001") -> NewIncident:
    return NewIncident(
        key=key,
        device_id="00a1b2c3",
        route="customer",
        request={"route": "customer", "customer_id": 1001, "body": {"responseTypeId": 1}},
        location_reason="fresh device fix",
    ).with_id()


def test_settings_are_durable(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    db = sqlite3.connect(tmp_path / "j.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    journal.close()


def test_press_incident_and_raise_commit_together_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    new = incident()
    stored = journal.commit_press(press(1), decision="raise", reason="r", new_incident=new)
    assert not stored.repeat and stored.incident_id == new.id
    journal.close()  # as after a power cut: a fresh connection sees everything

    again = Journal(path)
    # The receiver resends the frame the crash left unacknowledged: recognised, not redone.
    other = incident()
    repeat = again.commit_press(press(1), decision="raise", reason="r", new_incident=other)
    assert repeat.repeat and repeat.incident_id == new.id
    assert again.incident(other.id) is None
    item = again.next_alarm()
    assert item is not None and item.incident_id == new.id and item.kind == "raise"
    stored = again.incident(new.id)
    assert stored is not None and stored.state == PENDING
    assert stored.request == new.request
    assert stored.press_wall == 1_700_000_001.0


def test_outbox_is_fifo_and_done_items_leave_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    ids = []
    for n in range(3):
        new = incident(key=f"customer:{n}")
        journal.commit_press(press(n), decision="raise", reason="r", new_incident=new)
        ids.append(new.id)
    attempt = journal.claim_next_alarm()
    assert attempt is not None and attempt.item.incident_id == ids[0]
    assert attempt.incident.state == PENDING and attempt.pending == 3  # as before the claim
    claimed = journal.incident(ids[0])
    assert claimed is not None and claimed.state == SENDING and claimed.attempts == 1
    # Not delivered yet: claiming again gives the same head, now known to be in flight.
    again = journal.claim_next_alarm()
    assert again is not None and again.item == attempt.item
    assert again.incident.state == SENDING
    journal.mark_raised(attempt.item.seq, ids[0], 880001, "http://x/track", "created")
    second = journal.next_alarm()
    assert second is not None and second.incident_id == ids[1]
    assert journal.pending_alarms() == 2
    done = journal.incident(ids[0])
    assert done is not None and done.state == OPEN and done.callout_id == 880001


def test_rejected_alarm_is_kept_and_visible(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    new = incident()
    journal.commit_press(press(1), decision="raise", reason="r", new_incident=new)
    item = journal.next_alarm()
    assert item is not None
    journal.mark_rejected(item.seq, new.id, "HTTP 403: no subscription")
    assert journal.next_alarm() is None
    [failed] = journal.incidents((FAILED,))
    assert failed.last_error == "HTTP 403: no subscription"


def test_attached_press_and_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    new = incident()
    journal.commit_press(press(1), decision="raise", reason="r", new_incident=new)
    journal.commit_press(press(2), decision="attach", reason="open", incident_id=new.id)
    assert journal.press_count(new.id) == 2
    journal.mark_closed(new.id, "Closed")
    assert journal.incident(new.id).state == CLOSED  # type: ignore[union-attr]


def test_same_transmission_cannot_be_stored_twice(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.commit_press(press(1), decision="ignore", reason="r")
    assert journal.commit_press(press(1), decision="ignore", reason="r").repeat
    assert journal.press_count() == 1


def test_failed_write_rolls_back_everything(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    first = incident()
    journal.commit_press(press(1), decision="raise", reason="r", new_incident=first)
    clash = NewIncident(first.key, "00a1b2c3", "customer", first.request, "r", id=first.id)
    # The incident insert fails (same id): the press must not remain without it.
    with pytest.raises(JournalError):
        journal.commit_press(press(2), decision="raise", reason="r", new_incident=clash)
    assert journal.press_count() == 1
    assert journal.pending_alarms() == 1


def test_unopenable_journal_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(blocker / "j.sqlite")


def test_press_claimed_for_an_idle_uplink_is_in_flight_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    new = incident()
    stored = journal.commit_press(
        press(1), decision="raise", reason="r", new_incident=new, claim=True
    )
    # The uplink gets the fresh incident as never attempted: no reconciliation needed ...
    assert stored.claimed is not None
    assert stored.claimed.incident.state == PENDING and stored.claimed.incident.attempts == 0
    journal.close()
    # ... but if the daemon dies now, the request may have left: the restart must look first.
    attempt = Journal(path).claim_next_alarm()
    assert attempt is not None and attempt.item == stored.claimed.item
    assert attempt.incident.state == SENDING


def test_journal_of_the_first_version_is_migrated_keeping_its_presses(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE presses (id INTEGER PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE,"
        " source TEXT NOT NULL, device_id TEXT NOT NULL, gesture TEXT NOT NULL, counter INTEGER,"
        " battery_pct INTEGER, rssi_dbm INTEGER, mono_ns INTEGER NOT NULL, boot_id TEXT NOT NULL,"
        " wall REAL NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, incident_id TEXT);"
        "INSERT INTO presses VALUES (1, 'rf:x:1', 's', 'x', 'single', 1, NULL, NULL, 5, 'b', 1.0,"
        " 'ignore', 'r', NULL);"
    )
    old.commit()
    old.close()
    journal = Journal(path)
    assert journal.press_count() == 1
    indexes = {row[1] for row in journal._db.execute("PRAGMA index_list(presses)")}
    assert "presses_dedup" in indexes
    # A fixed-code button's same code, later, is a new press now.
    fixed = Press("s", "x", "single", "rf:x:1", 1, stamp=Stamp(mono_ns=10**15, wall=2.0))
    assert journal.commit_press(fixed, decision="ignore", reason="r").verdict == "stored"


def test_heard_before_follows_receiver_order_within_one_session() -> None:
    from gateway.journal import counter_is_replay, heard_before

    assert heard_before("abcd:10", "abcd:11")
    assert not heard_before("abcd:11", "abcd:10")
    assert heard_before("abcd:65535", "abcd:2")  # sequence numbers wrap at 16 bits
    assert not heard_before("abcd:10", "beef:11")  # another receiver session proves nothing
    assert not heard_before(None, "abcd:11")
    assert counter_is_replay(4, "abcd:12", 5, "abcd:11")  # older counter, heard later
    assert not counter_is_replay(4, "abcd:10", 5, "abcd:11")  # older, but heard first
    assert counter_is_replay(5, "abcd:10", 5, "abcd:11")  # the same counter again
    assert not counter_is_replay(6, "abcd:12", 5, "abcd:11")


def test_pruning_keeps_waiting_alarms_and_open_incidents(tmp_path: Path) -> None:
    from gateway.journal import OPEN as OPEN_STATE

    journal = Journal(tmp_path / "j.sqlite")
    waiting = incident("customer:waiting")
    journal.commit_press(press(1), decision="raise", reason="r", new_incident=waiting)
    opened = incident("customer:open")
    journal.commit_press(press(2), decision="raise", reason="r", new_incident=opened)
    journal._db.execute("UPDATE incidents SET state = ? WHERE id = ?", (OPEN_STATE, opened.id))
    journal._db.execute("UPDATE outbox SET state = 'done' WHERE incident_id = ?", (opened.id,))
    for n in range(3, 2000):  # a long history: ended incidents and ignored presses
        ended = incident(f"customer:{n}")
        journal.commit_press(press(n), decision="raise", reason="r", new_incident=ended)
        journal._db.execute("UPDATE outbox SET state = 'done' WHERE incident_id = ?", (ended.id,))
        journal.mark_closed(ended.id, "Closed")
        journal.commit_press(press(n + 100_000), decision="ignore", reason="r")
    used, _ = journal.size()
    removed = journal.prune(max_bytes=used // 4)
    assert removed > 0
    assert journal.size()[0] <= used // 4
    assert journal.next_alarm() is not None and journal.next_alarm().incident_id == waiting.id  # type: ignore[union-attr]
    assert journal.incident(opened.id) is not None
    assert journal.press_count(waiting.id) == 1 and journal.press_count(opened.id) == 1


def test_pruning_goes_in_bounded_steps_oldest_first(tmp_path: Path) -> None:
    # The daemon prunes one prune_step per journal call (app._keep_journal_small), so a
    # press or the watchdog's probe waits for one step, never for a whole prune.
    journal = Journal(tmp_path / "j.sqlite")
    waiting = incident("customer:waiting")
    journal.commit_press(press(1), decision="raise", reason="r", new_incident=waiting)
    ended_ids = []
    for n in range(2, 1200):
        ended = incident(f"customer:{n}")
        journal.commit_press(press(n), decision="raise", reason="r", new_incident=ended)
        journal._db.execute("UPDATE outbox SET state = 'done' WHERE incident_id = ?", (ended.id,))
        journal.mark_closed(ended.id, "Closed")
        ended_ids.append(ended.id)
    used, _ = journal.size()
    cap = used // 2

    first = journal.prune_step(cap, batch=10, budget_s=0.0)  # one transaction only
    assert first == 20  # 10 incidents and their 10 presses
    assert journal.incident(ended_ids[0]) is None and journal.incident(ended_ids[9]) is None
    assert journal.incident(ended_ids[10]) is not None  # oldest first

    steps, removed = 1, first
    while step := journal.prune_step(cap, batch=10, budget_s=0.0):
        steps, removed = steps + 1, removed + step
        assert step <= 20
    assert steps > 5 and journal.size()[0] <= cap
    assert journal.prune_step(cap) == 0  # done: nothing to do
    assert journal.next_alarm() is not None and journal.next_alarm().incident_id == waiting.id  # type: ignore[union-attr]
    assert journal.prune(0) > 0  # everything that may go
    assert journal.prune_step(0) == 0  # only the waiting alarm is left
    assert journal.press_count(waiting.id) == 1

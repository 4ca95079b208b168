"""The journal: the SQLite file where a press becomes durable before anything else happens.

One connection, owned by one thread (``AsyncJournal`` runs every call on a dedicated
worker), WAL mode and ``synchronous=FULL`` so a commit has reached the disk when it
returns (DESIGN.md invariant 1). It holds:

- ``presses``: every press seen, keyed by its transmission (``dedup_key``), so a repeat
  or a resend after a crash is recognised and acknowledged without a second decision;
- ``incidents``: the local incident id, written before the first request to AURA, the
  create request frozen at press time, the AURA callout id once known, and the stage;
- ``outbox``: the alarm class, strictly FIFO by ``seq``, never evicted;
- ``fixes``: the newest position per device (the location class keeps only the newest);
- ``supervision``: which devices are silent (missed check-ins), written on a change only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.clock import untrusted_why
from gateway.errors import JournalError
from gateway.signals import Fix, Press, Stamp

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS presses (
    id          INTEGER PRIMARY KEY,
    dedup_key   TEXT NOT NULL,
    source      TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    gesture     TEXT NOT NULL,
    counter     INTEGER,
    battery_pct INTEGER,
    rssi_dbm    INTEGER,
    mono_ns     INTEGER NOT NULL,
    boot_id     TEXT NOT NULL,
    wall        REAL NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    incident_id TEXT,
    frame_key   TEXT,
    wall_trusted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS presses_dedup ON presses(dedup_key);
-- Pruning and re-raising find a callout's presses and outbox rows by incident.
CREATE INDEX IF NOT EXISTS presses_incident ON presses(incident_id);
CREATE TABLE IF NOT EXISTS device_counters (
    device_id   TEXT PRIMARY KEY,
    counter     INTEGER NOT NULL,
    wall        REAL NOT NULL,
    frame_key   TEXT
);
CREATE TABLE IF NOT EXISTS incidents (
    id              TEXT PRIMARY KEY,
    key             TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    route           TEXT NOT NULL,
    state           TEXT NOT NULL,
    request         TEXT NOT NULL,
    location_reason TEXT NOT NULL,
    callout_id      INTEGER,
    tracking_url    TEXT,
    aura_status     TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    press_mono_ns   INTEGER NOT NULL,
    press_boot_id   TEXT NOT NULL,
    press_wall      REAL NOT NULL,
    raised_wall     REAL,
    closed_wall     REAL,
    report          TEXT,
    acknowledged_wall REAL,
    press_wall_trusted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state);
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    created_wall REAL NOT NULL,
    done_wall   REAL,
    payload     TEXT
);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox(incident_id);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, seq);
CREATE TABLE IF NOT EXISTS seen_open (
    incident_id TEXT PRIMARY KEY,
    press_id    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trail (
    incident_id TEXT NOT NULL,
    latitude    REAL NOT NULL,
    longitude   REAL NOT NULL,
    accuracy_m  REAL NOT NULL,
    wall        REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trail_incident ON trail(incident_id);
CREATE TABLE IF NOT EXISTS fixes (
    device_id   TEXT PRIMARY KEY,
    latitude    REAL NOT NULL,
    longitude   REAL NOT NULL,
    accuracy_m  REAL NOT NULL,
    taken_mono_ns INTEGER NOT NULL,
    boot_id     TEXT NOT NULL,
    wall        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS supervision (
    device_id    TEXT PRIMARY KEY,
    silent       INTEGER NOT NULL,
    changed_wall REAL NOT NULL,
    reason       TEXT
);
"""

# Incident stages kept by the journal. ``sending`` is written before each create
# request, so after a crash we know a request may have reached AURA.
PENDING, SENDING, OPEN, CLOSED, FAILED = "pending", "sending", "open", "closed", "failed"
DELIVERED = "delivered"  # AURA took the raise but named no callout to follow
TRAIL_LIMIT = 100  # positions kept per callout
PRUNE_TO = 0.8  # pruning brings the journal down to this share of its cap
PRUNE_BATCH = 100  # ended incidents (and as many ignored presses) per prune transaction
PRUNE_STEP_S = 0.05  # work per Journal.prune_step: one journal call, presses go between
CANCELLED = "cancelled"
ACTIVE_STATES = (PENDING, SENDING, OPEN)


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    key: str
    device_id: str
    route: str
    state: str
    request: dict[str, Any]
    location_reason: str
    callout_id: int | None
    tracking_url: str | None
    aura_status: str | None
    attempts: int
    last_error: str | None
    press_mono_ns: int
    press_boot_id: str
    press_wall: float
    # The wall clock was trusted at the press (or the press time was corrected since).
    press_wall_trusted: bool = False


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One alarm-class request: ``raise``, ``cancel`` or ``note`` (a callout event)."""

    seq: int
    incident_id: str
    kind: str
    payload: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """What became of a press in the journal.

    ``verdict`` is ``stored`` (new press), ``repeat`` (the same transmission heard again
    within the repeat window: a radio repeat or a resend), ``resend`` (the receiver resent
    a frame already stored, later than the window) or ``replay`` (an old transmission or
    counter played again). Only ``stored`` is a new press; every verdict may be acked.
    """

    verdict: str
    incident_id: str | None
    claimed: Attempt | None = None  # the raise, already claimed for an idle uplink

    @property
    def repeat(self) -> bool:
        return self.verdict != "stored"


@dataclass(frozen=True, slots=True)
class Attempt:
    """An alarm claimed for delivery, with its incident as it was before the claim."""

    item: OutboxItem
    incident: Incident
    pending: int


@dataclass(frozen=True, slots=True)
class NewIncident:
    """What the engine asks the journal to open, in the same transaction as the press."""

    key: str
    device_id: str
    route: str
    request: dict[str, Any]
    location_reason: str
    id: str = ""
    # A note queued behind the raise (the location is not a live one, say so).
    note: str | None = None

    def with_id(self) -> NewIncident:
        return self if self.id else dataclasses.replace(self, id="inc-" + uuid.uuid4().hex[:12])


@dataclass(frozen=True, slots=True)
class Resolution:
    """A held press decided later: by a second press, a cancel, or its window ending.

    ``decision`` is what the held press finally was: raise, attach, cancel, ignore,
    withdraw (it was a cancel that withdrew another), withdrawn, double (the first press
    of a double), or held_abort (a single press that now waits out its abort window)."""

    key: str  # the held press, as ``held_key`` names it
    decision: str
    reason: str
    incident_id: str | None = None
    new_incident: NewIncident | None = None


@dataclass(frozen=True, slots=True)
class Prior:
    """What the journal knew of a press before it: a verdict if it must not count again,
    and the device's highest accepted counter with the frame that carried it."""

    verdict: Stored | None
    last_counter: int | None = None
    last_frame: str | None = None


def heard_before(frame_key: str | None, other: str | None) -> bool:
    """True when the receiver heard ``frame_key`` before ``other`` in the same session.

    A receiver numbers frames in the order it hears them and resends what was not
    acknowledged, so an older counter can arrive after a newer one (the first copy was
    lost on the wire). Its lower sequence number in the same receiver session proves it
    was heard first: a delayed frame, not a recording played back later (which the
    receiver would number after the newer one).
    """
    if not frame_key or not other:
        return False
    session, _, seq = frame_key.rpartition(":")
    other_session, _, other_seq = other.rpartition(":")
    if session != other_session or not seq.isdigit() or not other_seq.isdigit():
        return False
    behind = (int(other_seq) - int(seq)) % 65536  # sequence numbers wrap at 16 bits
    return 0 < behind < 32768


def counter_is_replay(
    counter: int, frame_key: str | None, last_counter: int | None, last_frame: str | None
) -> bool:
    """A button's counter only goes up: an older one is a replay, unless heard first."""
    if last_counter is None or counter > last_counter:
        return False
    return not (counter < last_counter and heard_before(frame_key, last_frame))


@dataclass(frozen=True, slots=True)
class PressWrite:
    press: Press
    decision: str
    reason: str
    incident_id: str | None = None
    new_incident: NewIncident | None = None
    check_counter: bool = False
    resolves: tuple[Resolution, ...] = ()


def _classify(db: sqlite3.Connection, press: Press, window_ns: int, check_counter: bool) -> Prior:
    known = db.execute(
        "SELECT incident_id, mono_ns, boot_id, frame_key FROM presses WHERE dedup_key = ?"
        " ORDER BY id DESC LIMIT 1",
        (press.dedup_key,),
    ).fetchone()
    if known is not None:
        incident_id, mono_ns, boot_id, frame_key = known
        if boot_id == press.stamp.boot_id and press.stamp.mono_ns - mono_ns <= window_ns:
            return Prior(Stored("repeat", incident_id))
        if frame_key is not None and frame_key == press.frame_key:
            return Prior(Stored("resend", incident_id))
        if check_counter:
            return Prior(Stored("replay", None))
        # A button without a counter we can trust (fixed code) sends the same code every
        # time: outside the repeat window it is a new press, never silently dropped.
    if not (check_counter and press.counter is not None):
        return Prior(None)
    row = db.execute(
        "SELECT counter, frame_key FROM device_counters WHERE device_id = ?", (press.device_id,)
    ).fetchone()
    last, last_frame = (row[0], row[1]) if row is not None else (None, None)
    if counter_is_replay(press.counter, press.frame_key, last, last_frame):
        return Prior(Stored("replay", None), last, last_frame)
    return Prior(None, last, last_frame)


def _insert_incident(
    db: sqlite3.Connection, new: NewIncident, press: Press, claim: bool
) -> Attempt | None:
    """The incident and its raise in the alarm outbox; claimed for the uplink if asked."""
    db.execute(
        "INSERT INTO incidents (id, key, device_id, route, state, attempts, request,"
        " location_reason, press_mono_ns, press_boot_id, press_wall, press_wall_trusted)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.key,
            new.device_id,
            new.route,
            SENDING if claim else PENDING,
            1 if claim else 0,
            json.dumps(new.request),
            new.location_reason,
            press.stamp.mono_ns,
            press.stamp.boot_id,
            press.stamp.wall,
            int(press.stamp.wall_trusted),
        ),
    )
    cursor = db.execute(
        "INSERT INTO outbox (incident_id, kind, created_wall) VALUES (?, 'raise', ?)",
        (new.id, time.time()),
    )
    if new.note:
        _enqueue(db, new.id, "note", {"text": new.note})
    if not claim:
        return None
    assert cursor.lastrowid is not None
    return Attempt(
        OutboxItem(cursor.lastrowid, new.id, "raise"), _incident_as_new(new, press), pending=1
    )


def _enqueue(
    db: sqlite3.Connection, incident_id: str, kind: str, payload: dict[str, Any] | None
) -> int:
    cursor = db.execute(
        "INSERT INTO outbox (incident_id, kind, created_wall, payload) VALUES (?, ?, ?, ?)",
        (incident_id, kind, time.time(), json.dumps(payload) if payload is not None else None),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


NOTE_GAP_S = 60.0  # one note per incident per minute: a burst of presses is one message


def _note(db: sqlite3.Connection, incident_id: str, text: str) -> bool:
    """A callout event for the control room, unless one was queued in the last minute."""
    state = db.execute("SELECT state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if state is None or state[0] not in (PENDING, SENDING, OPEN):
        return False
    last = db.execute(
        "SELECT created_wall FROM outbox WHERE incident_id = ? AND kind = 'note'"
        " ORDER BY seq DESC LIMIT 1",
        (incident_id,),
    ).fetchone()
    if last is not None and abs(time.time() - last[0]) < NOTE_GAP_S:
        return False
    _enqueue(db, incident_id, "note", {"text": text})
    return True


def _cancel(db: sqlite3.Connection, incident_id: str, payload: dict[str, Any] | None) -> None:
    """Withdraw an incident: locally if its raise never left, else queue a cancel for AURA."""
    row = db.execute("SELECT state FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        return
    if row[0] == PENDING:
        now = time.time()
        db.execute(
            "UPDATE incidents SET state = ?, closed_wall = ?, last_error = ? WHERE id = ?",
            (
                CANCELLED,
                now,
                "cancelled before it reached AURA: no callout was raised",
                incident_id,
            ),
        )
        db.execute(
            "UPDATE outbox SET state = 'cancelled', done_wall = ? WHERE incident_id = ?"
            " AND state = 'pending'",
            (now, incident_id),
        )
    elif row[0] in (SENDING, OPEN):
        _enqueue(db, incident_id, "cancel", payload)


def _promote(
    db: sqlite3.Connection, press: Press, press_id: int, new_incident: NewIncident, reason: str
) -> None:
    (old_incident,) = db.execute(
        "SELECT incident_id FROM presses WHERE id = ?", (press_id,)
    ).fetchone()
    _insert_incident(db, new_incident, press, claim=False)
    db.execute(
        "UPDATE presses SET decision = 'raise', reason = ?, incident_id = ? WHERE id = ?",
        (reason, new_incident.id, press_id),
    )
    # Later presses that were attached with it belong to the new incident too.
    db.execute(
        "UPDATE presses SET incident_id = ? WHERE incident_id = ? AND id > ?",
        (new_incident.id, old_incident, press_id),
    )


def _load_press(db: sqlite3.Connection, press_id: int) -> Press:
    row = db.execute(
        "SELECT source, device_id, gesture, dedup_key, counter, battery_pct, rssi_dbm,"
        " mono_ns, wall, boot_id, frame_key, wall_trusted FROM presses WHERE id = ?",
        (press_id,),
    ).fetchone()
    return Press(
        source=row[0],
        device_id=row[1],
        gesture=row[2],
        dedup_key=row[3],
        counter=row[4],
        battery_pct=row[5],
        rssi_dbm=row[6],
        stamp=Stamp(mono_ns=row[7], wall=row[8], boot_id=row[9], wall_trusted=bool(row[11])),
        frame_key=row[10],
    )


def _pressed_again(press: Press) -> str:
    if press.stamp.wall_trusted:
        when = time.strftime("at %H:%M:%S UTC", time.gmtime(press.stamp.wall))
    else:  # never a 1970 time to the control room
        when = f"(time unknown: {untrusted_why(press.stamp.wall)})"
    return f"Panic button {press.device_id} pressed again {when}."


def held_key(press: Press) -> str:
    """Names one held press. Not its dedup key alone: a button without a counter sends the
    same key on every press, and two of its presses may be held at once."""
    return f"{press.dedup_key}|{press.stamp.boot_id}|{press.stamp.mono_ns}"


def _resolve(db: sqlite3.Connection, resolution: Resolution, claim: bool) -> Attempt | None:
    """A held press decided: its row says what it finally was (and the incident it opened)."""
    dedup_key, boot_id, mono_ns = resolution.key.rsplit("|", 2)
    row = db.execute(
        "SELECT id FROM presses WHERE dedup_key = ? AND boot_id = ? AND mono_ns = ?"
        " AND decision IN ('held_pattern', 'held_abort') ORDER BY id DESC LIMIT 1",
        (dedup_key, boot_id, int(mono_ns)),
    ).fetchone()
    if row is None:
        return None  # decided already (a resolution replayed after a restart)
    press = _load_press(db, row[0])
    inc_id = resolution.incident_id
    claimed = None
    if resolution.new_incident is not None:
        inc_id = resolution.new_incident.id
        claimed = _insert_incident(db, resolution.new_incident, press, claim)
    if resolution.decision == "cancel" and inc_id is not None:
        _cancel(db, inc_id, None)
    if resolution.decision == "attach" and inc_id is not None:
        _note(db, inc_id, _pressed_again(press))
    db.execute(
        "UPDATE presses SET decision = ?, reason = ?, incident_id = ? WHERE id = ?",
        (resolution.decision, resolution.reason, inc_id, row[0]),
    )
    return claimed


def _insert(db: sqlite3.Connection, write: PressWrite, claim: bool) -> Stored:
    press, new_incident = write.press, write.new_incident
    inc_id = write.incident_id
    claimed: Attempt | None = None
    for resolution in write.resolves:  # held presses this one decides (before its own row)
        got = _resolve(db, resolution, claim and claimed is None)
        claimed = claimed or got
    if new_incident is not None:
        inc_id = new_incident.id
        claimed = claimed or _insert_incident(db, new_incident, press, claim and claimed is None)
    if write.decision == "cancel" and inc_id is not None:
        _cancel(db, inc_id, None)
    if write.decision == "attach" and inc_id is not None:
        _note(db, inc_id, _pressed_again(press))
    db.execute(
        "INSERT INTO presses (dedup_key, source, device_id, gesture, counter,"
        " battery_pct, rssi_dbm, mono_ns, boot_id, wall, decision, reason, incident_id,"
        " frame_key, wall_trusted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            press.dedup_key,
            press.source,
            press.device_id,
            press.gesture,
            press.counter,
            press.battery_pct,
            press.rssi_dbm,
            press.stamp.mono_ns,
            press.stamp.boot_id,
            press.stamp.wall,
            write.decision,
            write.reason,
            inc_id,
            press.frame_key,
            int(press.stamp.wall_trusted),
        ),
    )
    if write.check_counter and press.counter is not None:
        # Only ever upwards: a delayed older frame does not lower the bar.
        db.execute(
            "INSERT INTO device_counters (device_id, counter, wall, frame_key)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
            " counter = excluded.counter, wall = excluded.wall, frame_key = excluded.frame_key"
            " WHERE excluded.counter > device_counters.counter",
            (press.device_id, press.counter, press.stamp.wall, press.frame_key),
        )
    return Stored("stored", inc_id, claimed)


def _incident_as_new(new: NewIncident, press: Press) -> Incident:
    """The incident as the uplink sees a fresh one: pending, never attempted."""
    return Incident(
        id=new.id,
        key=new.key,
        device_id=new.device_id,
        route=new.route,
        state=PENDING,
        request=new.request,
        location_reason=new.location_reason,
        callout_id=None,
        tracking_url=None,
        aura_status=None,
        attempts=0,
        last_error=None,
        press_mono_ns=press.stamp.mono_ns,
        press_boot_id=press.stamp.boot_id,
        press_wall=press.stamp.wall,
        press_wall_trusted=press.stamp.wall_trusted,
    )


class Journal:
    """Synchronous journal; use from one thread only (``AsyncJournal`` ensures that)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc

    def _migrate(self) -> None:
        """Bring a journal written by an older version up to date, keeping its contents."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(presses)")}
        if "frame_key" not in columns:
            self._db.execute("ALTER TABLE presses ADD COLUMN frame_key TEXT")
        if "wall_trusted" not in columns:
            # Older journals never said: their press times count as not trusted.
            self._db.execute(
                "ALTER TABLE presses ADD COLUMN wall_trusted INTEGER NOT NULL DEFAULT 0"
            )
        incident_columns = {r[1] for r in self._db.execute("PRAGMA table_info(incidents)")}
        for column, kind in (
            ("report", "TEXT"),
            ("acknowledged_wall", "REAL"),
            ("press_wall_trusted", "INTEGER NOT NULL DEFAULT 0"),
        ):
            if column not in incident_columns:
                self._db.execute(f"ALTER TABLE incidents ADD COLUMN {column} {kind}")
        outbox_columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "payload" not in outbox_columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN payload TEXT")
        counter_columns = {r[1] for r in self._db.execute("PRAGMA table_info(device_counters)")}
        if "frame_key" not in counter_columns:
            self._db.execute("ALTER TABLE device_counters ADD COLUMN frame_key TEXT")
        (table_sql,) = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'presses'"
        ).fetchone()
        if "UNIQUE" in table_sql:
            # The first version kept every transmission unique forever; fixed-code buttons
            # need repeats outside the window to count, so the constraint goes.
            self._db.executescript(
                "BEGIN; DROP INDEX IF EXISTS presses_dedup;"
                " ALTER TABLE presses RENAME TO presses_v1;"
                + SCHEMA.split("CREATE TABLE IF NOT EXISTS incidents")[0]
                + "INSERT INTO presses SELECT * FROM presses_v1; DROP TABLE presses_v1; COMMIT;"
            )

    def close(self) -> None:
        self._db.close()

    def probe(self) -> None:
        """The watchdog's question (gateway/health.py): does this thread answer, and can it
        take the write lock and read? ``BEGIN IMMEDIATE``, one read, ``ROLLBACK``: nothing
        is written, so asking every few seconds costs the SD card nothing. Blocks at most
        SQLite's busy timeout (5 s) when another connection holds the lock."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"journal probe failed: {exc}") from exc
        finally:
            self._rollback()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = fn(self._db)
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            self._rollback()
            raise JournalError(f"journal write failed: {exc}") from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # A failed COMMIT (busy, I/O error, disk full) may leave the transaction open;
        # without this every later BEGIN would fail and no press could be stored again.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    # ------------------------------------------------------------------ presses

    def commit_press(
        self,
        press: Press,
        *,
        decision: str,
        reason: str,
        incident_id: str | None = None,
        new_incident: NewIncident | None = None,
        claim: bool = False,
        repeat_window_ns: int = 5_000_000_000,
        check_counter: bool = False,
        resolves: tuple[Resolution, ...] = (),
    ) -> Stored:
        """Store one press (and the incident it opens, with its raise) in one transaction.

        A transmission already stored writes nothing and comes back with its verdict (see
        ``Stored``). Raises ``JournalError`` when the disk refused the write: the caller
        must not acknowledge the press then. ``claim`` as in ``commit_presses``.
        """
        write = PressWrite(
            press, decision, reason, incident_id, new_incident, check_counter, resolves
        )

        def run(db: sqlite3.Connection) -> Stored:
            prior = _classify(db, press, repeat_window_ns, check_counter)
            return prior.verdict if prior.verdict is not None else _insert(db, write, claim)

        return self._tx(run)

    def classify(self, presses: list[Press], window_ns: int) -> list[Prior]:
        """What the journal already knows of each press (read only)."""
        return [_classify(self._db, p, window_ns, p.authenticated) for p in presses]

    def commit_presses(self, writes: list[PressWrite], *, claim: bool = False) -> list[Stored]:
        """Store presses the caller has classified and decided, all in one transaction.

        One fsync for the whole batch (group commit). With ``claim`` (the uplink is idle,
        so the first raise in the batch is the head of the queue) that raise is marked in
        flight in the same transaction and returned as the attempt.
        """

        def run(db: sqlite3.Connection) -> list[Stored]:
            out = []
            claiming = claim
            for write in writes:
                stored = _insert(db, write, claiming)
                claiming = claiming and stored.claimed is None  # only the first raise
                out.append(stored)
            return out

        return self._tx(run)

    def press_count(self, incident_id: str | None = None) -> int:
        if incident_id is None:
            return int(self._db.execute("SELECT COUNT(*) FROM presses").fetchone()[0])
        row = self._db.execute(
            "SELECT COUNT(*) FROM presses WHERE incident_id = ?", (incident_id,)
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ fixes

    def store_fix(self, fix: Fix) -> None:
        """Newest fix per device, written without an fsync of its own.

        Fixes are the location class: a newer one replaces it within seconds and one taken
        before a reboot is stale anyway, so they never wait for the disk (or delay a press
        behind them); the next press's commit makes them durable as a side effect.
        """
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._store_fix(fix)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _store_fix(self, fix: Fix) -> None:
        self._tx(
            lambda db: db.execute(
                "INSERT INTO fixes (device_id, latitude, longitude, accuracy_m, taken_mono_ns,"
                " boot_id, wall) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET latitude=excluded.latitude,"
                " longitude=excluded.longitude, accuracy_m=excluded.accuracy_m,"
                " taken_mono_ns=excluded.taken_mono_ns, boot_id=excluded.boot_id,"
                " wall=excluded.wall WHERE excluded.taken_mono_ns >= fixes.taken_mono_ns"
                " OR excluded.boot_id != fixes.boot_id",
                (
                    fix.device_id,
                    fix.latitude,
                    fix.longitude,
                    fix.accuracy_m,
                    fix.taken_mono_ns,
                    fix.stamp.boot_id,
                    fix.stamp.wall - fix.age_s,
                ),
            )
        )

    def add_trail(self, incident_id: str, fix: Fix) -> None:
        """The positions sent for a callout, newest ``TRAIL_LIMIT`` kept (no fsync of its
        own, like fixes: the location class)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO trail (incident_id, latitude, longitude, accuracy_m, wall)"
                " VALUES (?, ?, ?, ?, ?)",
                (incident_id, fix.latitude, fix.longitude, fix.accuracy_m, fix.stamp.wall),
            )
            db.execute(
                "DELETE FROM trail WHERE incident_id = ? AND rowid NOT IN (SELECT rowid FROM"
                " trail WHERE incident_id = ? ORDER BY rowid DESC LIMIT ?)",
                (incident_id, incident_id, TRAIL_LIMIT),
            )

        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._tx(write)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def walk_test_presses(self, after_id: int) -> list[dict[str, Any]]:
        """Presses recorded by a walk test that began after press row ``after_id``."""
        cursor = self._db.execute(
            "SELECT id, device_id, gesture, rssi_dbm, battery_pct, wall, source, reason"
            " FROM presses WHERE id > ? AND decision = 'walk_test' ORDER BY id",
            (after_id,),
        )
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def last_press_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM presses").fetchone()[0])

    def mark_seen_open(self, incident_id: str, press_id: int) -> None:
        """A poll sent after press row ``press_id`` found the callout open: that press and
        every one before it were covered by the callout and are never raised again. Kept
        across restarts (by journal order, not by any clock)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO seen_open (incident_id, press_id) VALUES (?, ?)"
                " ON CONFLICT(incident_id) DO UPDATE SET press_id = excluded.press_id",
                (incident_id, press_id),
            )

        self._db.execute("PRAGMA synchronous=NORMAL")  # a hint, not an alarm: no fsync
        try:
            self._tx(write)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def seen_open(self, incident_id: str) -> int:
        """The last press stored when a poll last found the callout open (0: never)."""
        row = self._db.execute(
            "SELECT press_id FROM seen_open WHERE incident_id = ?", (incident_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def size(self) -> tuple[int, int]:
        """(bytes in use, bytes on disk) of the journal, WAL included."""
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        wal = self.path.with_name(self.path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        return (pages - free) * page, pages * page + wal_bytes

    def prune(self, max_bytes: int, batch: int = PRUNE_BATCH) -> int:
        """Keep the journal under ``max_bytes``: drop the history of ended incidents and of
        ignored presses, oldest first. Alarms waiting for AURA, open incidents and the
        replay counters are never touched. Returns the rows removed. All in one call: the
        daemon prunes with :meth:`prune_step`, one bounded journal call at a time."""
        removed = 0
        while step := self.prune_step(max_bytes, batch):
            removed += step
        return removed

    def prune_step(
        self, max_bytes: int, batch: int = PRUNE_BATCH, budget_s: float = PRUNE_STEP_S
    ) -> int:
        """A bounded piece of :meth:`prune`: transactions of at most ``batch`` ended
        incidents (with their presses) and ``batch`` ignored presses, until the journal is
        under its target, nothing more may go, or ``budget_s`` of work is spent (always at
        least one transaction). Returns the rows removed: 0 when pruning is done."""
        started = time.monotonic()
        removed = 0
        while self.size()[0] > max_bytes * PRUNE_TO:
            dropped = self._prune_batch(batch)
            if dropped == 0:
                break  # nothing left that may go: the status reports the fill
            removed += dropped
            if time.monotonic() - started >= budget_s:
                break
        return removed

    def _prune_batch(self, batch: int) -> int:
        """One transaction of :meth:`prune`: the oldest ``batch`` ended incidents that no
        alarm waits for, and the oldest ``batch`` ignored presses."""
        ended = self._db.execute(
            "SELECT id FROM incidents WHERE state NOT IN (?, ?, ?) AND NOT (state = ?"
            " AND acknowledged_wall IS NULL) AND id NOT IN (SELECT incident_id FROM outbox"
            " WHERE state = 'pending') ORDER BY rowid LIMIT ?",
            (PENDING, SENDING, OPEN, FAILED, batch),
        ).fetchall()
        ids = [r[0] for r in ended]

        def drop(db: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(ids))
            gone = db.execute(
                "DELETE FROM presses WHERE rowid IN (SELECT rowid FROM presses WHERE"
                " incident_id IS NULL ORDER BY id LIMIT ?)",
                (batch,),
            ).rowcount
            gone += db.execute(f"DELETE FROM presses WHERE incident_id IN ({marks})", ids).rowcount
            if ids:
                db.execute(f"DELETE FROM outbox WHERE incident_id IN ({marks})", ids)
                db.execute(f"DELETE FROM trail WHERE incident_id IN ({marks})", ids)
                db.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids)
            return gone + len(ids)

        return self._tx(drop)

    def restamp_untrusted(self, boot_id: str, now_wall: float, now_mono_ns: int) -> tuple[int, int]:
        """Correct this boot's press times taken before the wall clock was trusted.

        ``now_wall`` is a trusted wall time taken at ``now_mono_ns``: a press at ``mono_ns``
        happened ``(now_mono_ns - mono_ns)`` earlier. Rows from other boots cannot be
        corrected (their monotonic clock is gone) and stay marked untrusted. Returns the
        number of presses and incidents corrected.
        """

        def write(db: sqlite3.Connection) -> tuple[int, int]:
            presses = db.execute(
                "UPDATE presses SET wall = ? - (? - mono_ns) / 1e9, wall_trusted = 1"
                " WHERE boot_id = ? AND wall_trusted = 0",
                (now_wall, now_mono_ns, boot_id),
            ).rowcount
            incidents = db.execute(
                "UPDATE incidents SET press_wall = ? - (? - press_mono_ns) / 1e9,"
                " press_wall_trusted = 1 WHERE press_boot_id = ? AND press_wall_trusted = 0",
                (now_wall, now_mono_ns, boot_id),
            ).rowcount
            return presses, incidents

        return self._tx(write)

    def fixes(self) -> list[Fix]:
        rows = self._db.execute(
            "SELECT device_id, latitude, longitude, accuracy_m, taken_mono_ns, boot_id, wall"
            " FROM fixes"
        ).fetchall()
        return [
            Fix(
                "journal", r[0], r[1], r[2], r[3], 0.0, Stamp(mono_ns=r[4], wall=r[6], boot_id=r[5])
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ supervision

    def silent_devices(self) -> dict[str, str]:
        """Devices silent when the gateway stopped (device id -> why): they stay silent
        after a restart until they speak."""
        rows = self._db.execute(
            "SELECT device_id, reason FROM supervision WHERE silent = 1 ORDER BY device_id"
        ).fetchall()
        return {r[0]: r[1] or "" for r in rows}

    def set_supervision(self, device_id: str, silent: bool, reason: str | None) -> None:
        """A supervision transition (silent or recovered); only transitions, never a
        heartbeat, so this is rare enough for an fsync of its own."""
        self._tx(
            lambda db: db.execute(
                "INSERT INTO supervision (device_id, silent, changed_wall, reason)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
                " silent = excluded.silent, changed_wall = excluded.changed_wall,"
                " reason = excluded.reason",
                (device_id, int(silent), time.time(), reason),
            )
        )

    # ------------------------------------------------------------------ incidents

    _INCIDENT_COLS = (
        "id, key, device_id, route, state, request, location_reason, callout_id, tracking_url,"
        " aura_status, attempts, last_error, press_mono_ns, press_boot_id, press_wall,"
        " press_wall_trusted"
    )

    def _incident(self, row: tuple[Any, ...]) -> Incident:
        return Incident(
            id=row[0],
            key=row[1],
            device_id=row[2],
            route=row[3],
            state=row[4],
            request=json.loads(row[5]),
            location_reason=row[6],
            callout_id=row[7],
            tracking_url=row[8],
            aura_status=row[9],
            attempts=row[10],
            last_error=row[11],
            press_mono_ns=row[12],
            press_boot_id=row[13],
            press_wall=row[14],
            press_wall_trusted=bool(row[15]),
        )

    def incident(self, incident_id: str) -> Incident | None:
        row = self._db.execute(
            f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE id = ?", (incident_id,)
        ).fetchone()
        return self._incident(row) if row else None

    def incidents(self, states: tuple[str, ...] | None = None) -> list[Incident]:
        if states is None:
            rows = self._db.execute(
                # Insertion order, not press_wall: ordering never uses the wall clock.
                f"SELECT {self._INCIDENT_COLS} FROM incidents ORDER BY rowid"
            )
        else:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE state IN ({marks})"
                " ORDER BY rowid",
                states,
            )
        return [self._incident(r) for r in rows.fetchall()]

    def claim_next_alarm(self, skip: Collection[str] = ()) -> Attempt | None:
        """The oldest pending alarm, marked as being sent, in one transaction.

        Marked before the request leaves, so after a crash we know it may have reached
        AURA; the incident is returned as it was, so the caller knows whether an earlier
        attempt may have reached AURA too.
        """

        def claim(db: sqlite3.Connection) -> Attempt | None:
            # ``skip``: incidents backing off after a failure of their own, so one alarm
            # that AURA keeps failing does not hold up every alarm behind it.
            marks = ",".join("?" * len(skip))
            row = db.execute(
                "SELECT seq, incident_id, kind, payload FROM outbox WHERE state = 'pending'"
                f" AND incident_id NOT IN ({marks}) ORDER BY seq LIMIT 1",
                tuple(skip),
            ).fetchone()
            if row is None:
                return None
            item = OutboxItem(row[0], row[1], row[2], json.loads(row[3]) if row[3] else None)
            found = db.execute(
                f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE id = ?", (item.incident_id,)
            ).fetchone()
            if found is None:
                raise JournalError(f"outbox {item.seq} names missing incident {item.incident_id}")
            pending = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
            if item.kind == "raise":
                db.execute(
                    "UPDATE incidents SET state = ?, attempts = attempts + 1 WHERE id = ?",
                    (SENDING, item.incident_id),
                )
            return Attempt(item, self._incident(found), int(pending[0]))

        return self._tx(claim)

    def note_error(self, incident_id: str, error: str, *, reached_aura: bool = True) -> None:
        """Record a failed attempt; one that certainly never left goes back to pending."""
        state_sql = "" if reached_aura else f", state = '{PENDING}'"
        self._tx(
            lambda db: db.execute(
                f"UPDATE incidents SET last_error = ?{state_sql} WHERE id = ? AND state != ?",
                (error, incident_id, OPEN),
            )
        )

    def mark_raised(
        self, seq: int, incident_id: str, callout_id: int, url: str | None, status: str | None
    ) -> None:
        def write(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "UPDATE incidents SET state = ?, callout_id = ?, tracking_url = ?,"
                " aura_status = ?, raised_wall = ?, last_error = NULL WHERE id = ?",
                (OPEN, callout_id, url, status, now, incident_id),
            )
            db.execute("UPDATE outbox SET state = 'done', done_wall = ? WHERE seq = ?", (now, seq))

        self._tx(write)

    def mark_rejected(self, seq: int, incident_id: str, error: str) -> None:
        """AURA refused the raise (4xx): kept, visible, never silently discarded."""

        def write(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "UPDATE incidents SET state = ?, last_error = ? WHERE id = ?",
                (FAILED, error, incident_id),
            )
            db.execute(
                "UPDATE outbox SET state = 'rejected', done_wall = ? WHERE seq = ?", (now, seq)
            )

        self._tx(write)

    def mark_delivered_untracked(self, seq: int, incident_id: str, note: str) -> None:
        """AURA accepted the raise (2xx) but named no callout: delivered, not followable."""

        def write(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "UPDATE incidents SET state = ?, last_error = ?, raised_wall = ?,"
                " closed_wall = ? WHERE id = ?",
                (DELIVERED, note, now, now, incident_id),
            )
            db.execute("UPDATE outbox SET state = 'done', done_wall = ? WHERE seq = ?", (now, seq))

        self._tx(write)

    def presses_after(self, incident_id: str, press_id: int) -> list[int]:
        """Ids of presses attached to an incident after journal row ``press_id``."""
        rows = self._db.execute(
            "SELECT id FROM presses WHERE incident_id = ? AND decision = 'attach' AND id > ?"
            " ORDER BY id",
            (incident_id, press_id),
        )
        return [r[0] for r in rows.fetchall()]

    def press(self, press_id: int) -> Press:
        return _load_press(self._db, press_id)

    def held_presses(self) -> list[tuple[Press, str]]:
        """Presses still held (a double may follow, or an abort window) when it stopped."""
        rows = self._db.execute(
            "SELECT id, decision FROM presses WHERE decision IN ('held_pattern', 'held_abort')"
            " ORDER BY id"
        ).fetchall()
        return [(_load_press(self._db, row[0]), row[1]) for row in rows]

    def resolve_held(self, resolutions: list[Resolution], *, claim: bool = False) -> Attempt | None:
        """Held presses decided (their window ended), in one transaction; with ``claim``
        the first raise among them is handed to the idle uplink."""

        def run(db: sqlite3.Connection) -> Attempt | None:
            claimed = None
            for resolution in resolutions:
                got = _resolve(db, resolution, claim and claimed is None)
                claimed = claimed or got
            return claimed

        return self._tx(run)

    def close_incident(
        self,
        incident_id: str,
        status: str | None,
        promote: tuple[int, NewIncident, str] | None = None,
    ) -> None:
        """The callout ended; if a press attached after it was last seen open, that press
        becomes its own raise in the same transaction, so no crash can come between the
        two and leave the press attached to an ended callout."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE incidents SET state = ?, aura_status = COALESCE(?, aura_status),"
                " closed_wall = ? WHERE id = ?",
                (CLOSED, status, time.time(), incident_id),
            )
            if promote is not None:
                _promote(db, self.press(promote[0]), *promote)

        self._tx(write)

    def cancelling(self) -> set[str]:
        """Incidents with a cancel still waiting to reach AURA: no longer open for presses."""
        rows = self._db.execute(
            "SELECT DISTINCT incident_id FROM outbox WHERE kind = 'cancel' AND state = 'pending'"
        )
        return {r[0] for r in rows.fetchall()}

    def set_aura_status(self, incident_id: str, status: str | None) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE incidents SET aura_status = ? WHERE id = ?", (status, incident_id)
            )
        )

    def mark_closed(self, incident_id: str, status: str | None) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE incidents SET state = ?, aura_status = COALESCE(?, aura_status),"
                " closed_wall = ? WHERE id = ?",
                (CLOSED, status, time.time(), incident_id),
            )
        )

    # ------------------------------------------------------------------ outbox

    def next_alarm(self) -> OutboxItem | None:
        row = self._db.execute(
            "SELECT seq, incident_id, kind FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT 1"
        ).fetchone()
        return OutboxItem(*row) if row else None

    def pending_alarms(self) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
        )

    def queue_facts(self) -> dict[str, Any]:
        """For the metrics, read at scrape time: alarm-class items waiting by kind; the
        press stamp (mono_ns, boot id, wall) of the oldest alarm AURA has not accepted
        (waiting, being sent, or refused and not yet acknowledged), or None; and the open
        callouts that stream a live position (the location class holds one fix each)."""
        db = self._db
        waiting = db.execute(
            "SELECT kind, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY kind"
        ).fetchall()
        oldest = db.execute(
            "SELECT press_mono_ns, press_boot_id, press_wall FROM incidents"
            " WHERE state IN (?, ?) OR (state = ? AND acknowledged_wall IS NULL)"
            " ORDER BY rowid LIMIT 1",
            (PENDING, SENDING, FAILED),
        ).fetchone()
        live = db.execute(
            "SELECT COUNT(*) FROM incidents WHERE state = ? AND (route = 'device'"
            " OR json_extract(request, '$.body.location') IS NOT NULL)",
            (OPEN,),
        ).fetchone()[0]
        return {
            "waiting": {str(kind): int(n) for kind, n in waiting},
            "oldest_undelivered": tuple(oldest) if oldest is not None else None,
            "live_callouts": int(live),
        }

    def note(self, incident_id: str, text: str) -> bool:
        """Queue a note for an open incident's callout (at most one a minute)."""
        return self._tx(lambda db: _note(db, incident_id, text))

    def enqueue(self, incident_id: str, kind: str, payload: dict[str, Any] | None = None) -> int:
        """Queue a cancel or a note behind everything already queued (alarm class)."""
        return self._tx(lambda db: _enqueue(db, incident_id, kind, payload))

    def request_cancel(self, incident_id: str, payload: dict[str, Any] | None = None) -> None:
        """A technician's cancel: local if the raise never left, else queued for AURA."""
        self._tx(lambda db: _cancel(db, incident_id, payload))

    def finish(self, seq: int, state: str = "done") -> None:
        """An outbox item AURA answered for (done), or that cannot be sent (rejected)."""
        self._tx(
            lambda db: db.execute(
                "UPDATE outbox SET state = ?, done_wall = ?, payload = NULL WHERE seq = ?",
                (state, time.time(), seq),
            )
        )

    def mark_cancelled(self, incident_id: str, seq: int | None, note: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "UPDATE incidents SET state = ?, last_error = ?, closed_wall = ? WHERE id = ?",
                (CANCELLED, note, now, incident_id),
            )
            if seq is not None:
                # The payload may hold a customer's safe code: gone once used.
                db.execute(
                    "UPDATE outbox SET state = 'done', done_wall = ?, payload = NULL WHERE seq = ?",
                    (now, seq),
                )

        self._tx(write)

    def acknowledge(self, incident_id: str) -> bool:
        """A technician has seen an undeliverable alarm; it leaves the status."""
        cursor = self._tx(
            lambda db: db.execute(
                "UPDATE incidents SET acknowledged_wall = ? WHERE id = ? AND state = ?",
                (time.time(), incident_id, FAILED),
            )
        )
        return cursor.rowcount == 1

    def unacknowledged_failures(self) -> list[Incident]:
        rows = self._db.execute(
            f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE state = ?"
            " AND acknowledged_wall IS NULL ORDER BY rowid",
            (FAILED,),
        )
        return [self._incident(r) for r in rows.fetchall()]

    def set_report(self, incident_id: str, report: dict[str, Any]) -> None:
        """AURA's resolution report and map, fetched once after the callout ended."""
        self._tx(
            lambda db: db.execute(
                "UPDATE incidents SET report = ? WHERE id = ?", (json.dumps(report), incident_id)
            )
        )

    def reports_due(self, limit: int = 5) -> list[Incident]:
        rows = self._db.execute(
            f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE state IN (?, ?)"
            " AND callout_id IS NOT NULL AND report IS NULL ORDER BY rowid DESC LIMIT ?",
            (CLOSED, CANCELLED, limit),
        )
        return [self._incident(r) for r in rows.fetchall()]


class AsyncJournal:
    """Runs every journal call on one dedicated thread: the single owner of the connection.

    fsync happens off the event loop, so a slow SD card never stalls the inputs or the
    uplink, and calls are still strictly ordered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._journal: Journal | None = None

    async def open(self) -> AsyncJournal:
        self._journal = await self._run_raw(lambda: Journal(self.path))
        return self

    async def _run_raw(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def call(self, fn: Callable[[Journal], T]) -> T:
        journal = self._journal
        if journal is None:
            raise JournalError("journal is not open")
        return await self._run_raw(lambda: fn(journal))

    async def close(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            await self._run_raw(journal.close)
        self._executor.shutdown(wait=True)

"""The journal: the SQLite file where a press becomes durable before anything else happens.

One connection, owned by one thread (``AsyncJournal`` runs every call on a dedicated
worker), WAL mode and ``synchronous=FULL`` so a commit has reached the disk when it
returns (DESIGN.md invariant 1). It holds:

- ``presses``: every press seen, keyed by its transmission (``dedup_key``), so a repeat
  or a resend after a crash is recognised and acknowledged without a second decision;
- ``incidents``: the local incident id, written before the first request to AURA, the
  create request frozen at press time, the AURA callout id once known, and the stage;
- ``outbox``: the alarm class, strictly FIFO by ``seq``, never evicted;
- ``fixes``: the newest position per device (the location class keeps only the newest).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import JournalError
from gateway.signals import Fix, Press

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS presses (
    id          INTEGER PRIMARY KEY,
    dedup_key   TEXT NOT NULL UNIQUE,
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
    incident_id TEXT
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
    closed_wall     REAL
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state);
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    created_wall REAL NOT NULL,
    done_wall   REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, seq);
CREATE TABLE IF NOT EXISTS fixes (
    device_id   TEXT PRIMARY KEY,
    latitude    REAL NOT NULL,
    longitude   REAL NOT NULL,
    accuracy_m  REAL NOT NULL,
    taken_mono_ns INTEGER NOT NULL,
    boot_id     TEXT NOT NULL,
    wall        REAL NOT NULL
);
"""

# Incident stages kept by the journal. ``sending`` is written before each create
# request, so after a crash we know a request may have reached AURA.
PENDING, SENDING, OPEN, CLOSED, FAILED = "pending", "sending", "open", "closed", "failed"
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


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    incident_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class Stored:
    repeat: bool
    incident_id: str | None
    claimed: Attempt | None = None  # the raise, already claimed for an idle uplink


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

    def with_id(self) -> NewIncident:
        return self if self.id else _replace_id(self, "inc-" + uuid.uuid4().hex[:12])


def _replace_id(n: NewIncident, new_id: str) -> NewIncident:
    return NewIncident(n.key, n.device_id, n.route, n.request, n.location_reason, new_id)


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
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise JournalError(f"journal write failed: {exc}") from exc

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
    ) -> Stored:
        """Store a press (and the incident it opens, with its raise) in one transaction.

        A transmission already stored (a radio repeat, or a resend after a crash) writes
        nothing and comes back as ``Stored(repeat=True)``. Raises ``JournalError`` when the
        disk refused the write: the caller must not acknowledge the press then.

        With ``claim`` (the uplink is idle, so this raise is the head of the queue) the
        raise is marked in flight in the same transaction and returned as the attempt:
        the press path then costs one fsync instead of two.
        """

        def write(db: sqlite3.Connection) -> Stored:
            known = db.execute(
                "SELECT incident_id FROM presses WHERE dedup_key = ?", (press.dedup_key,)
            ).fetchone()
            if known is not None:
                return Stored(repeat=True, incident_id=known[0])
            inc_id = incident_id
            claimed: Attempt | None = None
            if new_incident is not None:
                inc_id = new_incident.id
                db.execute(
                    "INSERT INTO incidents (id, key, device_id, route, state, attempts, request,"
                    " location_reason, press_mono_ns, press_boot_id, press_wall)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        inc_id,
                        new_incident.key,
                        new_incident.device_id,
                        new_incident.route,
                        SENDING if claim else PENDING,
                        1 if claim else 0,
                        json.dumps(new_incident.request),
                        new_incident.location_reason,
                        press.stamp.mono_ns,
                        press.stamp.boot_id,
                        press.stamp.wall,
                    ),
                )
                cursor = db.execute(
                    "INSERT INTO outbox (incident_id, kind, created_wall) VALUES (?, 'raise', ?)",
                    (inc_id, time.time()),
                )
                if claim:
                    assert cursor.lastrowid is not None
                    claimed = Attempt(
                        OutboxItem(cursor.lastrowid, inc_id, "raise"),
                        _incident_as_new(new_incident, press),
                        pending=1,
                    )
            db.execute(
                "INSERT INTO presses (dedup_key, source, device_id, gesture, counter,"
                " battery_pct, rssi_dbm, mono_ns, boot_id, wall, decision, reason, incident_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    decision,
                    reason,
                    inc_id,
                ),
            )
            return Stored(repeat=False, incident_id=inc_id, claimed=claimed)

        return self._tx(write)

    def press_count(self, incident_id: str | None = None) -> int:
        if incident_id is None:
            return int(self._db.execute("SELECT COUNT(*) FROM presses").fetchone()[0])
        row = self._db.execute(
            "SELECT COUNT(*) FROM presses WHERE incident_id = ?", (incident_id,)
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ fixes

    def store_fix(self, fix: Fix) -> None:
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

    def fixes(self) -> list[Fix]:
        rows = self._db.execute(
            "SELECT device_id, latitude, longitude, accuracy_m, taken_mono_ns, boot_id, wall"
            " FROM fixes"
        ).fetchall()
        from gateway.signals import Stamp

        return [
            Fix(
                "journal", r[0], r[1], r[2], r[3], 0.0, Stamp(mono_ns=r[4], wall=r[6], boot_id=r[5])
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ incidents

    _INCIDENT_COLS = (
        "id, key, device_id, route, state, request, location_reason, callout_id, tracking_url,"
        " aura_status, attempts, last_error, press_mono_ns, press_boot_id, press_wall"
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
        )

    def incident(self, incident_id: str) -> Incident | None:
        row = self._db.execute(
            f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE id = ?", (incident_id,)
        ).fetchone()
        return self._incident(row) if row else None

    def incidents(self, states: tuple[str, ...] | None = None) -> list[Incident]:
        if states is None:
            rows = self._db.execute(
                f"SELECT {self._INCIDENT_COLS} FROM incidents ORDER BY press_wall, id"
            )
        else:
            marks = ",".join("?" * len(states))
            rows = self._db.execute(
                f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE state IN ({marks})"
                " ORDER BY rowid",
                states,
            )
        return [self._incident(r) for r in rows.fetchall()]

    def claim_next_alarm(self) -> Attempt | None:
        """The oldest pending alarm, marked as being sent, in one transaction.

        Marked before the request leaves, so after a crash we know it may have reached
        AURA; the incident is returned as it was, so the caller knows whether an earlier
        attempt may have reached AURA too.
        """

        def claim(db: sqlite3.Connection) -> Attempt | None:
            row = db.execute(
                "SELECT seq, incident_id, kind FROM outbox WHERE state = 'pending'"
                " ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            item = OutboxItem(*row)
            found = db.execute(
                f"SELECT {self._INCIDENT_COLS} FROM incidents WHERE id = ?", (item.incident_id,)
            ).fetchone()
            if found is None:
                raise JournalError(f"outbox {item.seq} names missing incident {item.incident_id}")
            pending = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
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

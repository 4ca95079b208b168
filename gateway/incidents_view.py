"""`aura-gateway incidents`: the journal read-only, for the technician.

Reading needs no running daemon (SQLite readers never block the writer in WAL mode), so
it works on a box whose daemon is down, which is when it is needed most.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.clock import CLOCK_FLOOR
from gateway.tables import table


def read_incidents(journal: Path, incident_id: str | None = None) -> list[dict[str, Any]]:
    if not journal.exists():
        raise FileNotFoundError(f"no journal at {journal}")
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        where, args = ("WHERE id = ?", (incident_id,)) if incident_id else ("", ())
        # A journal the daemon has not migrated yet (read-only here) never said: untrusted.
        press_trusted = _column(db, "presses", "wall_trusted")
        rows = db.execute(
            "SELECT id, device_id, route, state, callout_id, aura_status, attempts, last_error,"
            f" press_wall, raised_wall, closed_wall, report, acknowledged_wall, location_reason,"
            f" {_column(db, 'incidents', 'press_wall_trusted')} AS press_wall_trusted"
            # Newest first by insertion, not by press_wall: the wall clock may have jumped.
            f" FROM incidents {where} ORDER BY rowid DESC",
            args,
        ).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            item["press_wall_trusted"] = bool(item["press_wall_trusted"])
            item["report"] = json.loads(item["report"]) if item["report"] else None
            item["presses"] = [
                {**dict(p), "wall_trusted": bool(p["wall_trusted"])}
                for p in db.execute(
                    "SELECT device_id, gesture, counter, wall, decision, reason,"
                    f" {press_trusted} AS wall_trusted FROM presses"
                    " WHERE incident_id = ? ORDER BY id",
                    (item["id"],),
                )
            ]
            item["outbox"] = [
                dict(o)
                for o in db.execute(
                    "SELECT seq, kind, state, created_wall, done_wall FROM outbox"
                    " WHERE incident_id = ? ORDER BY seq",
                    (item["id"],),
                )
            ]
            out.append(item)
        return out
    finally:
        db.close()


def _column(db: sqlite3.Connection, table: str, column: str) -> str:
    """The column if the journal has it, else 0 (an older journal: not trusted)."""
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    return column if column in have else "0"


def _when(wall: float | None) -> str:
    if not wall:
        return "-"
    if wall < CLOCK_FLOOR:  # a gateway that booted without a clock: not a real date
        return "clock not set"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall))


def _pressed(wall: float, trusted: bool) -> str:
    """A press time, short: marked ``?`` when the gateway's clock was not trusted."""
    if trusted:
        return _when(wall)
    return "clock not set" if wall < CLOCK_FLOOR else _when(wall) + " ?"


def _pressed_long(wall: float, trusted: bool) -> str:
    if trusted:
        return f"{_when(wall)} UTC"
    if wall < CLOCK_FLOOR:
        return "time unknown (the gateway's clock was not set)"
    return f"{_when(wall)} UTC (the gateway's clock was not synchronised: not verified)"


UNTRUSTED_KEY = "? the gateway's clock was not synchronised at the press: time not verified"


def listing(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no incidents"
    lines = [f"{'incident':18} {'pressed (UTC)':21} {'device':9} {'state':10} {'callout':8} stage"]
    for r in rows:
        pressed = _pressed(r["press_wall"], r["press_wall_trusted"])
        lines.append(
            f"{r['id']:18} {pressed:21} {r['device_id']:9} {r['state']:10} "
            f"{r['callout_id'] or '-'!s:8} {r['aura_status'] or ''}"
        )
    if any(_pressed(r["press_wall"], r["press_wall_trusted"]).endswith("?") for r in rows):
        lines.append(UNTRUSTED_KEY)
    return "\n".join(lines)


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"incident   {r['id']}  ({r['route']} route, device {r['device_id']})",
        f"state      {r['state']}"
        + (f"  (acknowledged {_when(r['acknowledged_wall'])})" if r["acknowledged_wall"] else ""),
        f"callout    {r['callout_id'] or '-'}  stage: {r['aura_status'] or '-'}",
        f"pressed    {_pressed_long(r['press_wall'], r['press_wall_trusted'])}; "
        f"raised {_when(r['raised_wall'])}; "
        f"ended {_when(r['closed_wall'])}",
        f"location   {r['location_reason']}",
    ]
    if r["last_error"]:
        lines.append(f"note       {r['last_error']}")
    lines.append(f"presses    {len(r['presses'])}")
    for p in r["presses"]:
        lines.append(
            f"  {_pressed(p['wall'], p['wall_trusted']):21} {p['gesture']:6} "
            f"counter {p['counter']}  {p['decision']}"
        )
    if any(_pressed(p["wall"], p["wall_trusted"]).endswith("?") for p in r["presses"]):
        lines.append("  " + UNTRUSTED_KEY)
    lines.append("requests")
    for o in r["outbox"]:
        lines.append(f"  #{o['seq']} {o['kind']:6} {o['state']}")
    if r["report"]:
        lines.append("report     " + json.dumps(r["report"], sort_keys=True))
    return "\n".join(lines)


# ------------------------------------------------------------------ the list, grouped

OPEN_STATES = ("pending", "sending", "open")
_STAGE_WITHOUT_CALLOUT = {
    "pending": "not raised yet: queued for AURA",
    "sending": "being raised (AURA's answer not stored yet)",
    "open": "created",
    "delivered": "delivered, AURA named no callout to follow",
    "cancelled": "cancelled",
    "closed": "closed",
}


def is_open(r: dict[str, Any]) -> bool:
    """Still going (raise queued, in flight, callout open), or undeliverable and not yet
    acknowledged by a technician: what needs looking at first."""
    return r["state"] in OPEN_STATES or (r["state"] == "failed" and not r["acknowledged_wall"])


def stage(r: dict[str, Any]) -> str:
    """AURA's stage of the callout (its own words), or where the incident stands when AURA
    has none to give."""
    if r["state"] == "failed":
        return "UNDELIVERABLE" + (" (acknowledged)" if r["acknowledged_wall"] else "")
    if r["aura_status"]:
        return str(r["aura_status"])
    return _STAGE_WITHOUT_CALLOUT.get(r["state"], r["state"])


def for_list(rows: list[dict[str, Any]], limit: int = 0) -> list[dict[str, Any]]:
    """Open incidents first, then the recent ended ones (at most ``limit``; 0: all), each
    group newest first; every row gains ``open`` and ``stage``."""
    marked = [{**r, "open": is_open(r), "stage": stage(r)} for r in rows]
    ended = [r for r in marked if not r["open"]]
    return [r for r in marked if r["open"]] + (ended[:limit] if limit > 0 else ended)


def grouped_listing(rows: list[dict[str, Any]], total_ended: int | None = None) -> str:
    """The human `incidents` list: rows as :func:`for_list` returns them."""
    if not rows:
        return "no incidents"
    header = ("INCIDENT", "PRESSED (UTC)", "DEVICE", "STATE", "CALLOUT", "AURA STAGE")

    def cells(r: dict[str, Any]) -> tuple[object, ...]:
        pressed = _pressed(r["press_wall"], r["press_wall_trusted"])
        return (r["id"], pressed, r["device_id"], r["state"], r["callout_id"], r["stage"])

    opened = [r for r in rows if r["open"]]
    ended = [r for r in rows if not r["open"]]
    lines = [f"open or undeliverable: {len(opened)}"]
    if opened:
        lines.append(table(header, [cells(r) for r in opened]))
    shown = str(len(ended))
    if total_ended is not None and total_ended != len(ended):
        shown += f" of {total_ended}; --limit 0 lists all"
    if ended:
        lines.append(f"recent, ended: {shown} (newest first)")
        lines.append(table(header, [cells(r) for r in ended]))
    else:
        lines.append("recent, ended: none")
    if any(_pressed(r["press_wall"], r["press_wall_trusted"]).endswith("?") for r in rows):
        lines.append(UNTRUSTED_KEY)
    return "\n".join(lines)

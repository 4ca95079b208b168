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


def read_incidents(journal: Path, incident_id: str | None = None) -> list[dict[str, Any]]:
    if not journal.exists():
        raise FileNotFoundError(f"no journal at {journal}")
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        where, args = ("WHERE id = ?", (incident_id,)) if incident_id else ("", ())
        rows = db.execute(
            "SELECT id, device_id, route, state, callout_id, aura_status, attempts, last_error,"
            f" press_wall, raised_wall, closed_wall, report, acknowledged_wall, location_reason"
            f" FROM incidents {where} ORDER BY press_wall DESC",
            args,
        ).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            item["report"] = json.loads(item["report"]) if item["report"] else None
            item["presses"] = [
                dict(p)
                for p in db.execute(
                    "SELECT device_id, gesture, counter, wall, decision, reason FROM presses"
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


def _when(wall: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall)) if wall else "-"


def listing(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no incidents"
    lines = [f"{'incident':18} {'pressed (UTC)':19} {'device':9} {'state':10} {'callout':8} stage"]
    for r in rows:
        lines.append(
            f"{r['id']:18} {_when(r['press_wall']):19} {r['device_id']:9} {r['state']:10} "
            f"{r['callout_id'] or '-'!s:8} {r['aura_status'] or ''}"
        )
    return "\n".join(lines)


def describe(r: dict[str, Any]) -> str:
    lines = [
        f"incident   {r['id']}  ({r['route']} route, device {r['device_id']})",
        f"state      {r['state']}"
        + (f"  (acknowledged {_when(r['acknowledged_wall'])})" if r["acknowledged_wall"] else ""),
        f"callout    {r['callout_id'] or '-'}  stage: {r['aura_status'] or '-'}",
        f"pressed    {_when(r['press_wall'])} UTC; raised {_when(r['raised_wall'])}; "
        f"ended {_when(r['closed_wall'])}",
        f"location   {r['location_reason']}",
    ]
    if r["last_error"]:
        lines.append(f"note       {r['last_error']}")
    lines.append(f"presses    {len(r['presses'])}")
    for p in r["presses"]:
        lines.append(
            f"  {_when(p['wall'])} {p['gesture']:6} counter {p['counter']}  {p['decision']}"
        )
    lines.append("requests")
    for o in r["outbox"]:
        lines.append(f"  #{o['seq']} {o['kind']:6} {o['state']}")
    if r["report"]:
        lines.append("report     " + json.dumps(r["report"], sort_keys=True))
    return "\n".join(lines)

"""`aura-gateway queue`: what waits for AURA, and why.

The waiting requests are the journal's outbox rows still ``pending`` (raises, cancels and
notes for the control room, in the order they will go), read read-only; the reason each
waits comes from the daemon's view when it answers (the uplink's state and error, an alarm
backing off alone, a create in flight), else from the journal alone. A cancel's payload
may hold a customer's safe code: it is never read here.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.tables import ago, clip, table


def read_queue(journal: Path) -> list[dict[str, Any]]:
    """The pending outbox rows with their incident, oldest first (the order they go in)."""
    if not journal.exists():
        raise FileNotFoundError(f"no journal at {journal}")
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute(
            "SELECT o.seq, o.kind, o.incident_id, o.created_wall, i.device_id, i.route,"
            " i.state AS incident_state, i.attempts, i.last_error, i.callout_id"
            " FROM outbox o LEFT JOIN incidents i ON i.id = o.incident_id"
            " WHERE o.state = 'pending' ORDER BY o.seq"
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        db.close()


def queue_data(
    rows: list[dict[str, Any]],
    daemon: dict[str, Any] | None,
    *,
    source: str,
    running: bool | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """What --json prints. ``daemon``: the uplink's view from the running daemon
    (``uplink``, ``uplink_error``, ``creating``, ``backing_off``), None when it did not
    answer; ``running`` then says whether its process still lives (hung, or not ours to
    ask)."""
    now = time.time() if now is None else now
    running = daemon is not None if running is None else running
    items = []
    for row in rows:
        created = row.get("created_wall")
        items.append(
            {
                "seq": row["seq"],
                "kind": row["kind"],
                "incident": row["incident_id"],
                "device": row.get("device_id"),
                "route": row.get("route"),
                "incident_state": row.get("incident_state"),
                "callout_id": row.get("callout_id"),
                "age_s": None if created is None else round(max(0.0, now - created), 1),
                "attempts": row.get("attempts") if row["kind"] == "raise" else None,
                # The incident's error is its raise's: shown on the raise only.
                "last_error": row.get("last_error") if row["kind"] == "raise" else None,
                "why": why(row, daemon, first=not items, running=running),
            }
        )
    uplink = None
    if daemon is not None:
        uplink = {"state": daemon.get("uplink"), "error": daemon.get("uplink_error")}
    return {
        "source": source,
        "running": running,
        "uplink": uplink,
        "sending_now": bool(daemon and daemon.get("creating")),
        "pending": len(items),
        "items": items,
    }


def why(
    row: dict[str, Any], daemon: dict[str, Any] | None, *, first: bool, running: bool = True
) -> str:
    """Why this request has not reached AURA yet, in a technician's words."""
    if daemon is None and running:
        return "the daemon did not answer: its view is unknown"
    if daemon is None:
        return "daemon not running: goes out, in this order, when it starts"
    state = daemon.get("uplink")
    backing_off = daemon.get("backing_off") or {}
    backoff = backing_off.get(row["incident_id"])
    if backoff is not None:
        return f"AURA answered it with an error; tried again in {backoff:.0f} s, alone"
    if (state == "down" and not backing_off) or state == "unauthorized":
        cause = "AURA unreachable" if state == "down" else "AURA refuses the gateway's login"
        return f"{cause}: retried with backoff" if first else f"{cause}: waits its turn"
    if row["kind"] == "raise" and row.get("incident_state") == "sending":
        if first and daemon.get("creating"):
            return "being sent to AURA now"
        return "an earlier try may have reached AURA: looked up before it is sent again"
    if first:
        return "being sent to AURA now" if daemon.get("creating") else "next to go"
    if row["kind"] == "raise":
        return "waiting its turn: alarms go in press order"
    return f"waiting its turn behind the alarms ({row['kind']} after its raise)"


def listing(data: dict[str, Any], state_line: str | None = None) -> str:
    lines = [state_line] if state_line else []
    uplink = data.get("uplink")
    if uplink is not None:
        lines.append(
            f"uplink: {uplink['state']}" + (f" ({uplink['error']})" if uplink.get("error") else "")
        )
    if not data["items"]:
        lines.append("nothing waits for AURA")
        return "\n".join(lines)
    lines.append(f"{data['pending']} waiting for AURA, in the order they go:")
    rows = [
        (
            f"#{i['seq']}",
            i["kind"],
            i["incident"],
            i["device"] or "-",
            ago(i["age_s"]).removesuffix(" ago"),
            "-" if i["attempts"] is None else i["attempts"],
            clip(i["last_error"], 40),
            i["why"],
        )
        for i in data["items"]
    ]
    header = ("SEQ", "KIND", "INCIDENT", "DEVICE", "WAITING", "TRIES", "LAST ERROR", "WHY")
    lines.append(table(header, rows))
    return "\n".join(lines)

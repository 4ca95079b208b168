"""`aura-gateway devices`: every configured button and what the daemon last knew of it.

The registry comes from the config files, the live state (last seen, battery, signal,
silent) from the daemon's status file. Without a running daemon the list still shows the
registry, says so, and takes which devices were silent from the journal (read-only), where
supervision keeps them across a restart.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.tables import ago

if TYPE_CHECKING:  # the listing alone is printed without the config models (pydantic)
    from gateway.config import Config
    from gateway.config.models import Device


def route_target(device: Device) -> str:
    from gateway.config.models import CustomerDevice, SiteDevice

    if isinstance(device, CustomerDevice):
        return f"customer {device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site {device.site_ref}"
    return f"device {device.aura_device_id}"


def silent_in_journal(journal: Path) -> dict[str, str]:
    """Devices silent when the daemon last wrote the journal ({} when it cannot tell)."""
    if not journal.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT device_id, reason FROM supervision WHERE silent = 1")
            return {r[0]: r[1] or "" for r in rows.fetchall()}
        finally:
            db.close()
    except sqlite3.Error:
        return {}  # an older journal without the table, or unreadable: nothing to add


def device_rows(
    config: Config, status: dict[str, Any] | None, *, now: float | None = None
) -> dict[str, Any]:
    """The listing as data (what --json prints); ``status`` None: no status file."""
    now = time.time() if now is None else now
    running = bool(status and status.get("running"))
    seen: dict[str, Any] = (status or {}).get("devices_seen", {})
    from_journal = {} if running else silent_in_journal(config.journal_path)
    devices = []
    for device in config.devices.devices:
        kind = config.device_type(device)
        health = seen.get(device.id) or {}
        last = health.get("last_seen_wall")
        interval = device.checkin_interval_s or kind.checkin_interval_s
        silent = bool(health.get("silent"))
        reason = health.get("silent_reason")
        if not silent and device.id in from_journal:
            silent, reason = True, from_journal[device.id]
        devices.append(
            {
                "id": device.id,
                "label": device.label,
                "type": device.type,
                "route": route_target(device),
                "auth": device.auth,
                "spoofable": device.auth == "none" or bool(health.get("spoofable")),
                "checkin_interval_s": interval,
                "missed_checkins": kind.missed_checkins if interval is not None else None,
                "last_seen_wall": last,
                "last_seen_age_s": None if last is None else round(max(0.0, now - last), 1),
                "battery_pct": health.get("battery_pct"),
                "battery_low": bool(health.get("battery_low")),
                "tamper": bool(health.get("tamper")),
                "rssi_dbm": health.get("rssi_dbm"),
                "linkquality": health.get("linkquality"),
                "available": health.get("available"),
                "silent": silent,
                "silent_reason": reason if silent else None,
                "source": health.get("source"),
            }
        )
    unknown = [
        {
            "id": dev,
            "source": u.get("source"),
            "last_seen_age_s": round(max(0.0, now - u["last_seen_wall"]), 1)
            if u.get("last_seen_wall") is not None
            else None,
            "messages": u.get("messages", 0),
            "presses": u.get("presses", 0),
            "detail": u.get("detail", ""),
        }
        for dev, u in sorted((status or {}).get("unknown_devices", {}).items())
    ]
    if status is None:
        state = "daemon not running (no status file)"
    elif running:
        state = "running"
    else:
        state = "daemon not running (last status shown)"
    return {"running": running, "state": state, "devices": devices, "unknown_devices": unknown}


def _signal(row: dict[str, Any]) -> str:
    if row.get("rssi_dbm") is not None:
        return f"{row['rssi_dbm']} dBm"
    if row.get("linkquality") is not None:
        return f"lqi {row['linkquality']}"
    return "-"


def _flags(row: dict[str, Any]) -> str:
    flags = []
    if row["silent"]:
        flags.append("SILENT")
    if row["tamper"]:
        flags.append("TAMPER")
    if row["battery_low"]:
        flags.append("BATTERY LOW")
    if row.get("available") is False:
        flags.append("unavailable")
    if row["spoofable"]:
        flags.append("spoofable")
    return ", ".join(flags) or "ok"


def listing(data: dict[str, Any]) -> str:
    """The human table: one row per configured device, then unknown devices heard."""
    header = ("DEVICE", "TYPE", "ROUTE", "LAST SEEN", "BATTERY", "SIGNAL", "STATE", "LABEL")
    rows = [header]
    for d in data["devices"]:
        battery = "-" if d["battery_pct"] is None else f"{d['battery_pct']}%"
        rows.append(
            (
                d["id"],
                d["type"],
                d["route"],
                ago(d["last_seen_age_s"]),
                battery,
                _signal(d),
                _flags(d),
                d["label"],
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    asked = data.get("source", "daemon") == "daemon"  # else: not from a daemon that answered
    lines = [f"{len(data['devices'])} devices" if data["running"] and asked else data["state"]]
    for r in rows:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        lines.append("  ".join([*cells, str(r[-1])]).rstrip())
    for d in data["devices"]:
        extra = []
        if d["silent"]:
            extra.append(f"silent: {d['silent_reason'] or 'no reason recorded'}")
        if d["checkin_interval_s"] is not None:
            extra.append(
                f"checks in every {d['checkin_interval_s']:g} s, "
                f"silent after {d['missed_checkins']} missed"
            )
        if d["source"]:
            extra.append(f"heard on {d['source']}")
        if extra:
            lines.append(f"  {d['id']}: " + "; ".join(extra))
    if data["unknown_devices"]:
        lines.append("unknown devices heard (not in the registry):")
        for u in data["unknown_devices"]:
            lines.append(
                f"  {u['id']} on {u['source']}, {ago(u['last_seen_age_s'])}, "
                f"{u['messages']} messages, {u['presses']} presses: {u['detail']}"
            )
    return "\n".join(lines)

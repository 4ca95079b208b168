"""The daemon's side of the technician's read commands, on the control socket.

``status``, ``queue`` and ``devices`` answer from the running daemon itself: its status
model as it is now (the status file can be up to a write behind), the uplink's view of
the queue, the registry it runs with. The CLI asks here first and falls back to the status
file and the journal when no daemon answers (gateway/readout.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.control import Handler
from gateway.devices_view import device_rows
from gateway.queue_view import queue_data, read_queue
from gateway.status import StatusModel
from gateway.uplink import Uplink


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("aura-gateway")
    except PackageNotFoundError:
        return "unknown"


def status_commands(
    config: Callable[[], Config],
    status: StatusModel,
    uplink: Uplink,
    *,
    started_mono: float | None = None,
) -> dict[str, Handler]:
    """``config``: the configuration the daemon runs with now (it may be reloaded)."""
    started = time.monotonic() if started_mono is None else started_mono
    release = version()

    def now_status() -> dict[str, Any]:
        data = status.to_dict()
        data.update(
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - started, 1),
            version=release,
            updated_wall=time.time(),
            status_age_s=0.0,
            running=True,
        )
        return data

    async def status_(_request: dict[str, Any]) -> dict[str, Any]:
        return {"status": now_status()}

    async def queue(_request: dict[str, Any]) -> dict[str, Any]:
        view = {
            "uplink": status.uplink,
            "uplink_error": status.uplink_error,
            **uplink.queue_view(),
        }
        rows = await asyncio.to_thread(read_queue, config().journal_path)
        return {"queue": queue_data(rows, view, source="daemon")}

    async def devices(_request: dict[str, Any]) -> dict[str, Any]:
        return {"devices": device_rows(config(), now_status())}

    return {"status": status_, "queue": queue, "devices": devices}

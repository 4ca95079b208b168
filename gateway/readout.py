"""The technician's read commands (`status`, `queue`, `devices`): ask the running daemon,
else say so and show what is known.

The daemon is asked over its control socket (a short timeout: a hung daemon must not hang
the technician). When no daemon answers, the status file it last wrote and the journal
(read-only) still tell what was known, marked with where it came from (``source``) and
how old it is, so a reader never takes a dead daemon's last words for the present.

Exit codes (`status` and `queue`): 0 the daemon answered; 3 the daemon is not running
(what is known is still printed); 4 the daemon's process lives but it could not be asked
(socket permissions, or it did not answer in time); 1 the configuration cannot be read.

Imports stay light (no pydantic, httpx, paho, asyncio) on the path where the daemon
answers: see the figures in the README (Benchmarks, technician's status call).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from gateway.paths import RuntimePaths
from gateway.tables import ago, duration

ASK_TIMEOUT_S = 2.0
OK, NOT_RUNNING, NOT_ANSWERING = 0, 3, 4
GROUP_HINT = "run it as root or as a member of the service's group (aura-gateway)"


class ConfigUnreadable(Exception):
    """The configuration was needed (no daemon answered) and has errors."""


@dataclass(frozen=True)
class Asked:
    """The daemon's answer, or why there is none; ``alive``: the failure says a daemon
    is there (it refused us, or was too slow), not that none is running."""

    answer: dict[str, Any] | None
    error: str | None = None
    alive: bool = False


def ask(paths: RuntimePaths, cmd: str, timeout_s: float = ASK_TIMEOUT_S) -> Asked:
    from gateway.control import call

    where = paths.control
    try:
        answer = call(where, cmd, timeout_s=timeout_s)
    except FileNotFoundError:
        return Asked(None, f"no control socket at {where}")
    except ConnectionRefusedError:
        return Asked(None, f"nothing listens on {where}")
    except PermissionError:
        return Asked(None, f"permission denied on {where}: {GROUP_HINT}", alive=True)
    except TimeoutError:
        return Asked(None, f"the daemon did not answer within {timeout_s:g} s", alive=True)
    except OSError as exc:
        return Asked(None, f"cannot reach {where}: {exc.strerror or exc}")
    except ValueError:
        return Asked(None, "the daemon's answer could not be read", alive=True)
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        return Asked(None, f"the daemon did not answer {cmd!r}: {error}", alive=True)
    return Asked(answer)


# ------------------------------------------------------------------ status


def read_any_status(
    paths: RuntimePaths, *, timeout_s: float = ASK_TIMEOUT_S, now: float | None = None
) -> dict[str, Any]:
    """The daemon's status, from the daemon, else from its last status file, else none.

    Always a dict with ``source`` (daemon | status-file | none), ``running`` and
    ``daemon_error`` (why the daemon was not asked, None when it answered)."""
    asked = ask(paths, "status", timeout_s)
    if asked.answer is not None:
        data: dict[str, Any] = asked.answer["status"]
        data.update(source="daemon", running=True, daemon_error=None)
        return data
    from gateway.statusfile import read_status

    now = time.time() if now is None else now
    try:
        data = read_status(paths.status)
    except FileNotFoundError:
        return _no_status(paths, asked, f"no status file at {paths.status}")
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        return _no_status(paths, asked, f"cannot read {paths.status}: {why}")
    written = data.get("updated_wall")
    data.update(
        source="status-file",
        daemon_error=asked.error,
        status_age_s=None if written is None else round(max(0.0, now - written), 1),
        uptime_s=None,
    )
    data.setdefault("version", None)
    return data


def _no_status(paths: RuntimePaths, asked: Asked, why: str) -> dict[str, Any]:
    return {
        "source": "none",
        "running": asked.alive,
        "daemon_error": asked.error,
        "error": why,
        "status_path": str(paths.status),
    }


def status_exit(data: dict[str, Any]) -> int:
    if data["source"] == "daemon":
        return OK
    return NOT_ANSWERING if data.get("running") else NOT_RUNNING


def headline(data: dict[str, Any]) -> str:
    """The first line of `aura-gateway status`: where this comes from, and the summary."""
    summary = data.get("summary", "")
    if data["source"] == "daemon":
        return f"running: {summary}"
    written = ago(data.get("status_age_s"))
    if data["source"] == "none":
        if data.get("running"):
            return f"daemon not answering ({data['daemon_error']}); {data['error']}"
        return f"daemon not running ({data['error']})"
    if data.get("running"):
        return (
            f"daemon not answering ({data['daemon_error']}); "
            f"its status file, written {written}: {summary}"
        )
    return f"daemon not running (last status written {written}): {summary}"


def daemon_line(data: dict[str, Any]) -> str | None:
    """pid, uptime and version, when the daemon said them."""
    if data["source"] != "daemon":
        return None
    return (
        f"daemon: pid {data.get('pid')}, up {duration(data.get('uptime_s'))}, "
        f"version {data.get('version')}"
    )


# ------------------------------------------------------------------ queue


def read_any_queue(paths: RuntimePaths) -> dict[str, Any]:
    """What waits for AURA: from the daemon, else from the journal read-only."""
    from gateway.queue_view import queue_data, read_queue

    asked = ask(paths, "queue")
    if asked.answer is not None:
        data: dict[str, Any] = asked.answer["queue"]
        data["daemon_error"] = None
        return data
    alive = asked.alive or _pid_alive(paths)
    try:
        rows = read_queue(paths.journal)
    except FileNotFoundError as exc:
        data = queue_data([], None, source="none", running=alive)
        data["error"] = str(exc)
    except (sqlite3.Error, OSError) as exc:  # said, not a traceback
        data = queue_data([], None, source="none", running=alive)
        data["error"] = f"cannot read the journal {paths.journal}: {exc}"
    else:
        data = queue_data(rows, None, source="journal", running=alive)
    data["daemon_error"] = asked.error
    return data


def queue_exit(data: dict[str, Any]) -> int:
    if data["source"] == "daemon":
        return OK
    return NOT_ANSWERING if data.get("running") else NOT_RUNNING


def queue_state_line(data: dict[str, Any]) -> str | None:
    if data["source"] == "daemon":
        return None
    where = data.get("error") or "from the journal"
    if data.get("running"):
        return f"daemon not answering ({data['daemon_error']}); {where}"
    return f"daemon not running: nothing is sent until it starts; {where}"


def _pid_alive(paths: RuntimePaths) -> bool:
    """Whether the status file's writer still runs (False when there is no file)."""
    from gateway.statusfile import read_status

    try:
        return bool(read_status(paths.status).get("running"))
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------ devices


def read_any_devices(paths: RuntimePaths, config_path: str) -> dict[str, Any]:
    """Every configured button: from the daemon (the registry it runs with), else the
    config files and the last status file. Raises ConfigError when the config is needed
    and cannot be loaded (:class:`ConfigUnreadable`)."""
    asked = ask(paths, "devices")
    if asked.answer is not None:
        data: dict[str, Any] = asked.answer["devices"]
        data.update(source="daemon", daemon_error=None)
        return data
    from gateway.config import ConfigError, load_config
    from gateway.devices_view import device_rows
    from gateway.statusfile import read_status

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise ConfigUnreadable(str(exc)) from exc
    status: dict[str, Any] | None
    try:
        status = read_status(config.status_path)
    except (OSError, ValueError):
        status = None
    data = device_rows(config, status)
    if status is None:
        data.update(source="none", state=f"daemon not running (no status file; {asked.error})")
    else:
        written = status.get("updated_wall")
        age = None if written is None else max(0.0, time.time() - written)
        if status.get("running"):
            state = f"daemon not answering ({asked.error}); last status written {ago(age)}"
        else:
            state = f"daemon not running (last status written {ago(age)})"
        data.update(source="status-file", state=state)
    data["daemon_error"] = asked.error
    return data


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)

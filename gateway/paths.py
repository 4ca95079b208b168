"""Where the daemon keeps its control socket, status file and journal, read from
gateway.toml alone.

The technician's read-only commands (`status`, `queue`, `incidents`) need only these three
paths. The full check (:func:`gateway.config.load_config`) imports pydantic and reads
credentials.toml, which only root and the service user may read; this reads one TOML file
with the standard library, so a status call stays fast and works for a member of the
service's group. The rule is the loader's (``_setting_path``): a relative path is taken
from gateway.toml's folder; the defaults are those of ``GatewaySection`` (a unit test holds
the two together).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULTS = {
    "journal_path": "/var/lib/aura-gateway/journal.sqlite",
    "status_path": "/run/aura-gateway/status.json",
    "control_path": "/run/aura-gateway/control.sock",
}


class PathsError(Exception):
    """gateway.toml cannot be read, or names one of the paths in a way that is not a path."""


@dataclass(frozen=True)
class RuntimePaths:
    config: Path
    journal: Path
    status: Path
    control: Path


def runtime_paths(config_path: str | Path) -> RuntimePaths:
    path = Path(os.path.abspath(config_path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PathsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        why = f"{path} is not valid TOML ({exc}); see: aura-gateway check-config"
        raise PathsError(why) from exc
    section = data.get("gateway", {})
    if not isinstance(section, dict):
        raise PathsError(f"{path}: [gateway] is not a table; see: aura-gateway check-config")
    found: dict[str, Path] = {}
    for key, default in DEFAULTS.items():
        value = section.get(key, default)
        if not isinstance(value, str) or not value:
            raise PathsError(f"{path}: gateway.{key} is not a path; see: aura-gateway check-config")
        found[key] = Path(os.path.normpath(path.parent / value))
    return RuntimePaths(path, found["journal_path"], found["status_path"], found["control_path"])

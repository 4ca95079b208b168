"""The daemon's status as a small JSON file that `aura-gateway status` reads.

Written atomically (temporary file + rename) so a reader never sees half a file, under
/run by default (tmpfs: no SD-card wear). It carries the writer's pid so a reader can tell
a running daemon from a stale file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.status import StatusModel


def write_status(path: Path, status: StatusModel) -> None:
    data = status.to_dict()
    data["pid"] = os.getpid()
    data["updated_wall"] = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any]:
    """The last status written, with ``running`` telling whether its writer still lives."""
    data: dict[str, Any] = json.loads(path.read_text())
    pid = data.get("pid")
    running = False
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
            running = True
        except ProcessLookupError:
            running = False
        except PermissionError:
            running = True  # alive, owned by the service user
    data["running"] = running
    return data

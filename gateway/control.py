"""A local control socket for the technician's commands.

One JSON object per line each way, over a unix socket whose file mode (0660: root and the
service's group) decides who may cancel a callout or rate one, and who may ask the daemon
for its status (`status`, `queue`, `devices`: gateway/daemon_status.py). Reading needs no
daemon: without one, `aura-gateway status` reads the status file and `aura-gateway
incidents` and `queue` the journal.

asyncio is imported where the server needs it, not here: the CLI's side (:func:`call`)
stays quick to start (asyncio pulls in ssl, tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
REQUEST_LIMIT = 64 * 1024


class ControlError(Exception):
    """A command that cannot be done, with the reason a technician should read."""


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers

    async def serve(self) -> None:
        import asyncio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a killed daemon
        # A request line longer than this is refused with an answer, not a traceback.
        server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=REQUEST_LIMIT
        )
        os.chmod(self.path, 0o660)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            answer = await self._answer(line)
        except (TimeoutError, ConnectionError):
            answer = {"ok": False, "error": "no request"}
        except ValueError:  # asyncio's LimitOverrunError: a line beyond REQUEST_LIMIT
            answer = {"ok": False, "error": "request too large"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            # A client that never reads its answer does not keep this task (and a file
            # descriptor) for ever.
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > REQUEST_LIMIT:
            return {"ok": False, "error": "request too large"}
        try:
            request = json.loads(line)
            handler = self.handlers[request["cmd"]]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": f"unknown command; known: {', '.join(self.handlers)}"}
        try:
            result = await handler(request)
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the daemon down with it
            logger.exception("event=control_fault cmd=%s", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        return {"ok": True, **result}


def call(path: Path, cmd: str, timeout_s: float = 30.0, **args: Any) -> dict[str, Any]:
    """The CLI's side: one request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)

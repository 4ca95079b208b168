"""The control socket answers an oversized request and survives a client that never
reads its answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from gateway.control import REQUEST_LIMIT, ControlServer


async def _echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"result": "x" * 10}


async def test_an_oversized_request_gets_an_answer_and_the_server_keeps_serving() -> None:
    path = Path(tempfile.mkdtemp(dir="/tmp")) / "c.sock"
    server = ControlServer(path, {"echo": _echo})
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.01)

    async def ask(payload: bytes) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(payload)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return json.loads(line)

    too_big = json.dumps({"cmd": "echo", "pad": "y" * (REQUEST_LIMIT * 2)}).encode() + b"\n"
    answer = await ask(too_big)
    assert answer == {"ok": False, "error": "request too large"}
    answer = await ask(json.dumps({"cmd": "echo"}).encode() + b"\n")
    assert answer["ok"] is True and answer["result"] == "x" * 10
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

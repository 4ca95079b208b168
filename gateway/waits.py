"""Waiting for an event with a timeout, without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives in the same
loop turn as the awaited event is set: a task asked to stop would carry on, and the
daemon would hang on SIGTERM. ``asyncio.timeout`` counts cancellations and never does.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, limit_s: float | None) -> bool:
    """True once ``event`` is set, False when ``limit_s`` (seconds; None: never) passed."""
    if limit_s is None:
        await event.wait()
        return True
    try:
        async with asyncio.timeout(max(0.0, limit_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True

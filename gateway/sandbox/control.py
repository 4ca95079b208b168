"""A small sync client for the sandbox's control port, for tests in another process.

Mirrors :class:`gateway.sandbox.server.AuraSandbox`'s control methods. Unknown callouts raise
``KeyError`` and rejected arguments ``ValueError``, as the in-process API does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 5.0


class SandboxControl:
    """``SandboxControl("http://127.0.0.1:8766")``; close it, or use it as a context manager."""

    def __init__(self, control_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._client = httpx.Client(base_url=control_url, timeout=httpx.Timeout(timeout))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = self._client.request(method, path, json=body, params=params)
        if response.status_code in (400, 404):
            message = response.json().get("message", response.text)
            raise (KeyError if response.status_code == 404 else ValueError)(message)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def set_fault(
        self,
        mode: str,
        *,
        status: int = 503,
        retry_after: float | None = None,
        delay_s: float = 0.0,
        count: int | None = None,
        path_regex: str | None = None,
    ) -> None:
        self._call(
            "POST",
            "/fault",
            {
                "mode": mode,
                "status": status,
                "retry_after": retry_after,
                "delay_s": delay_s,
                "count": count,
                "path_regex": path_regex,
            },
        )

    def fault(self) -> dict[str, Any] | None:
        """The fault in force as a dict, or None."""
        return self._call("GET", "/fault")["fault"]

    def clear_fault(self) -> None:
        self._call("POST", "/fault/clear", {})

    def set_status(self, callout_id: int, status: str) -> None:
        self._call("POST", f"/callouts/{int(callout_id)}/status", {"status": status})

    def close_callout(self, callout_id: int) -> None:
        self._call("POST", f"/callouts/{int(callout_id)}/close", {})

    def expire_tokens(self) -> None:
        self._call("POST", "/tokens/expire", {})

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Recorded API requests as dicts; ``since`` skips those with ``seq <= since``."""
        return self._call("GET", "/requests", params={"since": since} if since else None)

    def callouts(self) -> list[dict[str, Any]]:
        return self._call("GET", "/callouts")

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float,
        interval: float = 0.05,
    ) -> bool:
        """Poll ``requests()`` until ``predicate`` holds; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self.requests()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))

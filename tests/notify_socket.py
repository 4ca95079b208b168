"""A real ``NOTIFY_SOCKET`` for tests: what systemd's side of sd_notify receives.

Binds an AF_UNIX datagram socket under a short /tmp path (``sun_path`` holds 108 bytes;
pytest's tmp_path can be longer) and collects every datagram with its arrival time on a
background thread, as systemd would see them.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() when it arrived
    text: str

    def has(self, assignment: str) -> bool:
        """``READY=1`` is one of its lines."""
        return assignment in self.text.split("\n")

    def value(self, key: str) -> str | None:
        for line in self.text.split("\n"):
            if line.startswith(key + "="):
                return line[len(key) + 1 :]
        return None


class NotifySocket:
    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="agn-", dir="/tmp"))
        self.path = str(self._dir / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self.received: list[Notification] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.received.append(Notification(time.monotonic(), data.decode()))
                self._changed.notify_all()

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def snapshot(self) -> list[Notification]:
        with self._changed:
            return list(self.received)

    def wait_for(
        self,
        predicate: Callable[[Notification], bool],
        timeout: float,
        *,
        after: float = 0.0,
    ) -> Notification:
        """The first notification (arrived after ``after``) the predicate accepts."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for n in self.received:
                    if n.at > after and predicate(n):
                        return n
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [n.text for n in self.received if n.at > after]
                    raise AssertionError(f"no matching notification in {timeout} s; got {seen}")
                self._changed.wait(remaining)

    def pings(self, start: float, end: float = float("inf")) -> list[float]:
        """Arrival times of WATCHDOG=1 in [start, end)."""
        return [n.at for n in self.snapshot() if n.has("WATCHDOG=1") and start <= n.at < end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

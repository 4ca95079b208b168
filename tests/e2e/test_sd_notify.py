"""The real daemon speaks sd_notify to a real NOTIFY_SOCKET, and its watchdog is honest.

``WATCHDOG_USEC=1000000``: systemd would kill the daemon one second after its last ping,
so it pings every half second while it works. Made to hang for real (another process
holds the journal's write lock, so the journal thread every press goes through blocks),
the pings stop within one watchdog interval and come back once the lock is gone.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import time
from collections.abc import Iterator

import pytest

from tests.notify_socket import NotifySocket

from .conftest import DaemonRunner

WATCHDOG_USEC = 1_000_000
INTERVAL_S = WATCHDOG_USEC / 1e6


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_ready_status_pings_reload_and_stopping(
    daemon_runner: DaemonRunner, notify: NotifySocket
) -> None:
    daemon = daemon_runner.start(env=notify.env(WATCHDOG_USEC))

    ready = notify.wait_for(lambda n: n.has("READY=1"), 5)
    status = ready.value("STATUS")
    assert status is not None and "4 devices" in status and "queued" in status, status

    # Pings at half the interval, steadily: at least 3 in the next 2 s, never a gap
    # systemd would punish.
    time.sleep(2.0)
    pings = notify.pings(ready.at)
    assert len(pings) >= 3, notify.snapshot()
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < INTERVAL_S, gaps

    # systemctl reload: RELOADING=1, then READY=1 again, with the registry still there.
    hup = time.monotonic()
    daemon.proc.send_signal(signal.SIGHUP)
    reloading = notify.wait_for(lambda n: n.has("RELOADING=1"), 5, after=hup)
    assert reloading.value("MONOTONIC_USEC") is not None
    ready_again = notify.wait_for(lambda n: n.has("READY=1"), 5, after=reloading.at)
    assert "4 devices" in (ready_again.value("STATUS") or "")
    assert daemon.wait_event("reload_done", 5)["devices"] == "4"

    # systemctl stop: STOPPING=1, and a clean exit.
    term = time.monotonic()
    assert daemon.stop() == 0
    notify.wait_for(lambda n: n.has("STOPPING=1"), 2, after=term)


def test_pings_stop_while_the_journal_hangs_and_resume_after(
    daemon_runner: DaemonRunner, notify: NotifySocket
) -> None:
    daemon = daemon_runner.start(env=notify.env(WATCHDOG_USEC))
    ready = notify.wait_for(lambda n: n.has("READY=1"), 5)
    notify.wait_for(lambda n: n.has("WATCHDOG=1"), 2, after=ready.at)

    # Another process takes the journal's write lock and keeps it: the daemon's journal
    # thread (presses, alarms, the watchdog's probe) blocks on it.
    holder = sqlite3.connect(daemon_runner.workdir / "journal.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        locked = time.monotonic()
        time.sleep(2.5)
        late = notify.pings(locked + INTERVAL_S)
        assert late == [], f"pinged {[round(t - locked, 2) for t in late]} s after the lock"
        withheld = daemon.wait_event("watchdog_withheld", 1)
        assert "journal not answering" in withheld["problems"]
        assert daemon.proc.poll() is None
    finally:
        holder.execute("ROLLBACK")
        released = time.monotonic()
        holder.close()

    ping = notify.wait_for(lambda n: n.has("WATCHDOG=1"), 3, after=released)
    assert ping.at - released < 2 * INTERVAL_S
    daemon.wait_event("watchdog_resumed", 2)
    assert daemon.stop() == 0

"""A real gpsd for tests, fed NMEA over UDP from the receiver logs in tests/data/nmea.

``gpsd -N -n -b -S <port> -F <ctl.sock> udp://127.0.0.1:<udp_port>`` on free loopback
ports (../shared/TESTBED.md §2): no gpsfake, no pty, ~0.02 s to start. A log's NMEA
sentences are sent one datagram each, a cycle (RMC to the next RMC) at a time, so gpsd
sees the receiver's own sentence order and garbage. ``kill()`` is SIGKILL, and ``start()``
brings gpsd back on the same ports, as after a crash and a systemd restart.

If gpsd is not installed the test fails under CI (CI must exercise the real gpsd) and is
skipped elsewhere, naming the apt package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest

NMEA_DIR = Path(__file__).resolve().parent / "data" / "nmea"


def gpsd_binary() -> str:
    """Path of gpsd; fail (CI) or skip (a laptop) when it is not installed."""
    found = shutil.which("gpsd") or (
        "/usr/sbin/gpsd" if os.access("/usr/sbin/gpsd", os.X_OK) else None
    )
    if found is None:
        message = "gpsd is not installed (apt-get install gpsd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nmea_cycles(name: str) -> list[list[bytes]]:
    """The log's data lines (not its '#' header), grouped into reporting cycles: a new
    cycle at each RMC, the sentence that opens a cycle in these logs. Lines are kept as
    recorded, broken ones included: coping with them is gpsd's job."""
    cycles: list[list[bytes]] = [[]]
    for raw in (NMEA_DIR / name).read_bytes().splitlines():
        line = raw.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        if line[3:6] == b"RMC" and cycles[-1]:
            cycles.append([])
        cycles[-1].append(line + b"\r\n")
    return [c for c in cycles if c]


def nmea_positions(name: str) -> list[tuple[float, float]]:
    """(lat, lon) of every well-formed GGA with a fix in the log: what gpsd should say."""
    out = []
    for cycle in nmea_cycles(name):
        for line in cycle:
            body, _, checksum = line.strip().partition(b"*")
            fields = body.split(b",")
            if fields[0][3:] != b"GGA" or len(fields) < 7 or fields[6] in (b"", b"0"):
                continue
            calc = 0
            for byte in body[1:]:
                calc ^= byte
            if checksum[:2].upper() != f"{calc:02X}".encode():
                continue
            lat = _degrees(fields[2], 2) * (-1 if fields[3] == b"S" else 1)
            lon = _degrees(fields[4], 3) * (-1 if fields[5] == b"W" else 1)
            out.append((lat, lon))
    return out


def _degrees(text: bytes, width: int) -> float:
    return int(text[:width]) + float(text[width:]) / 60


class GpsdService:
    """One real gpsd on free loopback ports; use as a context manager."""

    def __init__(self) -> None:
        self.binary = gpsd_binary()
        self.port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        # Short, under /tmp: a unix socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="gpsd-", dir="/tmp"))
        self.log_path = self.dir / "gpsd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._feeder: threading.Thread | None = None
        self._feeding = threading.Event()

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 10.0) -> GpsdService:
        """Start gpsd (again, on the same ports) and return once it greets a client."""
        assert self.proc is None or self.proc.poll() is not None, "gpsd is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-N",  # foreground
                    "-n",  # open the UDP source now, not when a client asks
                    "-b",  # read-only: never reconfigure the "receiver"
                    "-S",
                    str(self.port),
                    "-F",
                    str(self.dir / "ctl.sock"),
                    f"udp://127.0.0.1:{self.udp_port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpsd exited with {self.proc.returncode}: {self.log_tail()}")
            if self._greets():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"gpsd did not answer within {timeout} s: {self.log_tail()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                return b'"class":"VERSION"' in s.makefile("rb").readline()
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing gets to run in gpsd."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ feeding

    def send_cycle(self, cycle: list[bytes]) -> None:
        for sentence in cycle:
            # Nobody listening (gpsd killed) is the point of some tests, not an error.
            with contextlib.suppress(OSError):
                self._udp.sendto(sentence, ("127.0.0.1", self.udp_port))

    def replay(self, name: str, *, cycle_s: float = 0.02, loops: int = 1) -> None:
        """Send a log's cycles ``loops`` times, ``cycle_s`` apart (a receiver sends one a
        second; the tests need not wait that long)."""
        cycles = nmea_cycles(name)
        for _ in range(loops):
            for cycle in cycles:
                self.send_cycle(cycle)
                time.sleep(cycle_s)  # pacing of the feed, not synchronisation

    def stream(self, name: str, *, cycle_s: float = 0.2) -> None:
        """Keep replaying a log in a background thread until ``stop_stream()``."""
        self.stop_stream()
        cycles = nmea_cycles(name)
        self._feeding.set()

        def feed() -> None:
            while self._feeding.is_set():
                for cycle in cycles:
                    if not self._feeding.is_set():
                        return
                    self.send_cycle(cycle)
                    time.sleep(cycle_s)

        self._feeder = threading.Thread(target=feed, name=f"nmea:{name}", daemon=True)
        self._feeder.start()

    def stop_stream(self) -> None:
        self._feeding.clear()
        if self._feeder is not None:
            self._feeder.join(timeout=5)
            self._feeder = None

    # ------------------------------------------------------------------ a client

    def reported_positions(self, distinct: int, within_s: float = 10.0) -> set[tuple[float, float]]:
        """What gpsd tells a client of its own: the (lat, lon) of its TPVs with a fix,
        read until ``distinct`` different ones were seen (or ``within_s`` passed)."""
        seen: set[tuple[float, float]] = set()
        deadline = time.monotonic() + within_s
        with socket.create_connection(("127.0.0.1", self.port), timeout=within_s) as s:
            s.sendall(b'?WATCH={"enable":true,"json":true}\n')
            reader = s.makefile("rb")
            while len(seen) < distinct and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    line = reader.readline()
                except TimeoutError:
                    break
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("class") == "TPV" and msg.get("mode", 0) >= 2 and "lat" in msg:
                    seen.add((msg["lat"], msg["lon"]))
        return seen

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        self.stop_stream()
        self.stop()
        self._udp.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GpsdService:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""``aura-gateway demo``: the whole story of one press, on a laptop, in under a minute.

Starts the AURA sandbox and the simulated receiver in this process, the real daemon
(``aura-gateway run``) as a child process with the simulation config from ``config/``,
presses a button, and narrates: press → stored → callout raised → location updates →
responder stage → closed by the sandbox → summary. Exits 0 only if all of it happened.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.audit import verify as verify_audit
from gateway.sandbox import AuraSandbox, SandboxSeed

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"
PENDANT = 0x00A1B2C3  # config/devices.sim.toml: pendant with GPS, customer 1001, live location
# Keys of the simulated buttons in config/devices.sim.toml. Simulation only: a real button's
# key is provisioned into it and into /etc/aura-gateway/credentials.toml, never committed.
SIM_DEVICE_KEYS: dict[str, str] = {
    "00a1b2c3": "51a7e0c3b9d24f6e8a1b2c3d4e5f6071",
    "00a1b2c4": "51a7e0c3b9d24f6e8a1b2c3d4e5f6072",
    "00c0ffee": "51a7e0c3b9d24f6e8a1b2c3d4e5f6073",
    "00bad001": "51a7e0c3b9d24f6e8a1b2c3d4e5f6074",
}


def sim_keys() -> dict[int, bytes]:
    """The same keys as the simulated receiver wants them: device id -> key bytes."""
    return {int(dev, 16): bytes.fromhex(key) for dev, key in SIM_DEVICE_KEYS.items()}


START = (-33.92490, 18.42410)  # Cape Town, where the simulated pendant walks


class DemoFailed(Exception):
    pass


def _event_fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=('[^']*'|\"[^\"]*\"|\S+)", line))


class DaemonProcess:
    """The real daemon as a child process; its log lines become events we can wait for."""

    def __init__(
        self,
        config_path: Path,
        echo: Callable[[str], None],
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: variables added to this process's environment for the daemon."""
        self._echo = echo
        self.history: list[str] = []  # every line, for a test's failure report
        self._events: list[dict[str, str]] = []
        self._next: dict[str, int] = {}  # event name -> index of its next unconsumed match
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            with self._changed:
                self.history.append(line)
                if "event=" in line:
                    self._events.append(_event_fields(line))
                elif line.startswith(("ERROR", "CRITICAL", "Traceback")):
                    self._echo(f"  daemon: {line}")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_event(self, name: str, timeout: float) -> dict[str, str]:
        """The next ``name`` event not returned before, in log order; other events are
        kept for their own waits, so the order in which a test waits does not matter."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                start = self._next.get(name, 0)
                for index in range(start, len(self._events)):
                    if self._events[index].get("event") == name:
                        self._next[name] = index + 1
                        return self._events[index]
                self._next[name] = len(self._events)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise DemoFailed(
                        f"the daemon exited with code {self.proc.returncode} before '{name}'"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DemoFailed(f"the daemon did not report '{name}' within {timeout:.0f} s")
                self._changed.wait(min(remaining, 0.5))

    def kill(self) -> None:
        """SIGKILL: the power-cut case. Nothing gets to run in the daemon."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._release()

    def _release(self) -> None:
        """After exit: let the reader drain to EOF, then close our end of the pipe."""
        self._reader.join(timeout=5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._release()
        return self.proc.returncode


def write_sim_config(
    workdir: Path,
    *,
    base_url: str,
    port_path: str,
    source: Path = REPO_CONFIG,
    aura: dict[str, Any] | None = None,
    devices_file: Path | None = None,
    device_keys: dict[str, str] | None = None,
    serial: dict[str, Any] | None = None,
    extra_inputs: list[dict[str, Any]] | None = None,
    gateway: dict[str, Any] | None = None,
    status_mqtt: dict[str, Any] | None = None,
    mqtt_passwords: dict[str, str] | None = None,
    metrics: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
) -> Path:
    """The simulation config from ``config/``, pointed at this run's sandbox and pty, with
    any further inputs (MQTT, gpsd) and settings a test adds."""
    gateway_file = source / "gateway.sim.toml"
    if not gateway_file.exists():
        raise DemoFailed(f"{gateway_file} not found: run the demo from a checkout of the project")
    data: dict[str, Any] = tomllib.loads(gateway_file.read_text())
    section = data.setdefault("gateway", {})
    section["devices_file"] = str(
        devices_file or (source / section.get("devices_file", "devices.sim.toml"))
    )
    section["credentials_file"] = str(workdir / "credentials.toml")
    section["journal_path"] = str(workdir / "journal.sqlite")
    section["status_path"] = str(workdir / "status.json")
    section["control_path"] = str(workdir / "control.sock")
    section.update(gateway or {})
    data["audit"] = {**data.get("audit", {}), "path": str(workdir / "audit"), **(audit or {})}
    if metrics is not None:
        data["metrics"] = metrics
    data["aura"]["base_url"] = base_url
    data["aura"].update(aura or {})
    for entry in data["inputs"]:
        if entry.get("type") == "serial":
            entry["port"] = port_path
            entry.update(serial or {})
    data["inputs"].extend(extra_inputs or [])
    if status_mqtt is not None:
        data["status_mqtt"] = status_mqtt
    seed = SandboxSeed()
    credentials = workdir / "credentials.toml"
    credentials.write_text(
        tomli_w.dumps(
            {
                "aura": {"client_id": seed.client_id, "client_secret": seed.client_secret},
                "device_keys": SIM_DEVICE_KEYS if device_keys is None else device_keys,
                "mqtt_passwords": mqtt_passwords or {},
            }
        )
    )
    credentials.chmod(0o600)
    config_path = workdir / "gateway.toml"
    config_path.write_text(tomli_w.dumps(data))
    return config_path


def run_demo(timeout_s: float = 50.0, echo: Callable[[str], None] = print) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aura-gateway-demo-"))
    daemon: DaemonProcess | None = None
    try:
        with (
            AuraSandbox() as sandbox,
            SimulatedReceiver(link_path=workdir / "receiver", keys=sim_keys()) as sim,
        ):
            echo(f"AURA sandbox      {sandbox.base_url} (local stand-in, loopback only)")
            echo(f"receiver (sim)    {sim.port_path}")
            config_path = write_sim_config(
                workdir, base_url=sandbox.base_url, port_path=str(workdir / "receiver")
            )
            echo(f"daemon            aura-gateway run --config {config_path}")
            daemon = DaemonProcess(config_path, echo)
            ready = daemon.wait_event("ready", 15)
            echo(f"  ready: {ready.get('devices')} devices, journal {ready.get('journal')}")
            _story(sandbox, sim, daemon, echo, deadline=started + timeout_s)
            code = daemon.stop()
            if code != 0:
                raise DemoFailed(f"the daemon exited with code {code} on SIGTERM")
            trail = verify_audit(workdir / "audit")
            if not trail.ok:
                raise DemoFailed(f"the audit trail does not verify: {trail.error}")
            echo(f"audit trail       {trail.records} records, hash chain verified")
            echo(f"done in {time.monotonic() - started:.1f} s: the whole story happened.")
            return 0
    except DemoFailed as exc:
        echo(f"DEMO FAILED: {exc}")
        return 1
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _callout(sandbox: AuraSandbox, callout_id: int) -> dict[str, Any]:
    return next(c for c in sandbox.callouts() if c["id"] == callout_id)


def _story(
    sandbox: AuraSandbox,
    sim: SimulatedReceiver,
    daemon: DaemonProcess,
    echo: Callable[[str], None],
    deadline: float,
) -> None:
    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    lat, lon = START
    fix_seq = sim.send_fix(PENDANT, lat, lon, accuracy_m=8)
    if not sim.wait_acked(fix_seq, left()):
        raise DemoFailed("the daemon never acknowledged the pendant's GPS fix")
    echo(f"1. pendant {PENDANT:08x} reports its GPS fix {lat:.5f}, {lon:.5f}")

    seq = sim.press(PENDANT, gesture="single")
    echo(f"2. PRESS: pendant {PENDANT:08x}, single press (frame seq {seq})")
    stored = daemon.wait_event("press_stored", left())
    if not sim.wait_acked(seq, left()):
        raise DemoFailed("the press was never acknowledged to the receiver")
    ack_ms = (sim.acked()[seq] - sim.sent_ns(seq)) / 1e6
    echo(
        f"3. stored in the journal (fsync'd) as incident {stored['incident']}, "
        f"acked to the receiver {ack_ms:.1f} ms after the press"
    )

    raised = daemon.wait_event("callout_raised", left())
    callout_id = int(raised["callout"])
    creates = [r for r in sandbox.requests() if r.path.endswith("/callouts") and r.method == "POST"]
    if len(creates) != 1:
        raise DemoFailed(f"expected one create-callout request at AURA, saw {len(creates)}")
    request_ms = (creates[0].arrived_ns - sim.sent_ns(seq)) / 1e6
    body = creates[0].body if isinstance(creates[0].body, dict) else {}
    echo(
        f"4. callout {callout_id} raised at AURA for customer 1001 "
        f"({request_ms:.1f} ms from press to request), location {body.get('location')}"
    )
    # The tracking link shows the person's live position: the daemon never logs it.
    echo(f"   tracking url (from AURA's answer): {_callout(sandbox, callout_id)['url']}")

    for step in (1, 2):
        lat, lon = lat + 0.0004, lon + 0.0003
        sim.send_fix(PENDANT, lat, lon, accuracy_m=6)
        while True:
            daemon.wait_event("location_sent", left())
            last = _callout(sandbox, callout_id).get("lastLocationUpdate") or {}
            if abs(float(last.get("latitude", 0.0)) - lat) < 1e-6:
                break  # a poll that still carried the previous fix comes first sometimes
        echo(f"5.{step} location update at AURA: {lat:.5f}, {lon:.5f} (the pendant moves)")

    sandbox.set_status(callout_id, "Responder Dispatched")
    stage = daemon.wait_event("callout_stage", left())
    echo(f"6. AURA stage: {stage['stage']}")

    sandbox.close_callout(callout_id)
    closed = daemon.wait_event("callout_closed", left())
    echo(f"7. callout {closed['callout']} closed by AURA ({closed['stage']}): streaming stopped")

    creates = [r for r in sandbox.requests() if r.path.endswith("/callouts") and r.method == "POST"]
    locations = [r for r in sandbox.requests() if "/location" in r.path]
    echo(
        f"summary: 1 press -> {len(creates)} callout, {len(locations)} location updates, "
        f"press->ack {ack_ms:.1f} ms, press->request {request_ms:.1f} ms, closed."
    )

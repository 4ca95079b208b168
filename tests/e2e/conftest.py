"""Fixtures for end-to-end tests: the real daemon process, the sandbox, a real pty."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, sim_keys, write_sim_config
from gateway.sandbox import AuraSandbox
from gateway.statusfile import read_status

# Short timings so scenarios take seconds; the code paths are the production ones.
FAST_AURA: dict[str, Any] = {
    "poll_interval_s": 1.0,
    "backoff_initial_s": 0.2,
    "backoff_max_s": 1.0,
    "timeouts": {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 1.0},
}


@pytest.fixture
def sandbox() -> Iterator[AuraSandbox]:
    with AuraSandbox() as box:
        yield box


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[SimulatedReceiver]:
    with SimulatedReceiver(
        link_path=tmp_path / "receiver", resend_interval_s=0.3, keys=sim_keys()
    ) as sim:
        yield sim


class DaemonRunner:
    """Starts (and restarts) the real daemon on one journal, and reports on failure."""

    def __init__(self, workdir: Path, sandbox: AuraSandbox, receiver: SimulatedReceiver) -> None:
        self.workdir = workdir
        self.sandbox = sandbox
        self.receiver = receiver
        self.processes: list[DaemonProcess] = []
        self.config_path: Path | None = None

    def write_config(
        self,
        *,
        serial: dict[str, Any] | None = None,
        devices_file: Path | None = None,
        device_keys: dict[str, str] | None = None,
        **aura: Any,
    ) -> Path:
        self.config_path = write_sim_config(
            self.workdir,
            base_url=self.sandbox.base_url,
            port_path=str(self.workdir / "receiver"),
            aura={**FAST_AURA, **aura},
            serial=serial,
            devices_file=devices_file,
            device_keys=device_keys,
        )
        return self.config_path

    def status(self) -> dict[str, Any]:
        return read_status(self.workdir / "status.json")

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict:
        """Poll the daemon's status file until the predicate holds (or fail with it)."""
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                data = self.status()
            except (FileNotFoundError, ValueError):
                data = {}
            if data and predicate(data):
                return data
            time.sleep(0.1)
        raise AssertionError(f"status never matched within {timeout} s; last: {data}")

    def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        """``env``: variables added for the daemon (NOTIFY_SOCKET, WATCHDOG_USEC...)."""
        if self.config_path is None:
            self.write_config()
        assert self.config_path is not None
        daemon = DaemonProcess(self.config_path, echo=lambda _line: None, env=env)
        self.processes.append(daemon)
        daemon.wait_event("ready", 20)
        return daemon

    def logs(self) -> str:
        out = []
        for n, daemon in enumerate(self.processes):
            out.append(f"--- daemon run {n} (rc={daemon.proc.poll()}) ---")
            out.extend(daemon.history)
        return "\n".join(out)

    def close(self) -> None:
        for daemon in self.processes:
            daemon.stop()


@pytest.fixture
def daemon_runner(
    tmp_path: Path,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    request: pytest.FixtureRequest,
) -> Iterator[DaemonRunner]:
    runner = DaemonRunner(tmp_path, sandbox, receiver)
    yield runner
    runner.close()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(runner.logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep

"""A technician's walk test through the real daemon and the real CLI: the tested button
raises nothing, every other button still raises."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.sandbox import AuraSandbox

from .conftest import DaemonRunner

TESTED, OTHER = 0x00A1B2C3, 0x00A1B2C4  # customers 1001 and 1003 in devices.sim.toml


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def creates(requests: list[Any]) -> list[str]:
    return [r.path for r in requests if r.method == "POST" and r.path.endswith("/callouts")]


def test_walk_test_records_the_tested_button_while_another_raises_for_real(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox
) -> None:
    config = daemon_runner.write_config()
    daemon_runner.start()
    started = cli(config, "walk-test", "start", "--device", f"{TESTED:08x}", "--minutes", "5")
    assert started.returncode == 0, started.stderr
    assert "raise no callout" in started.stdout
    daemon_runner.wait_status(lambda s: (s.get("walk_test") or {}).get("scope") == "00a1b2c3", 5)

    daemon_runner.receiver.press(TESTED, gesture="single")
    daemon_runner.receiver.press(OTHER, gesture="single")
    assert sandbox.wait_for(lambda reqs: len(creates(reqs)) == 1, 10)
    daemon_runner.wait_status(lambda s: s["counters"].get("presses_walk_test") == 1, 10)
    time.sleep(0.5)  # room for a wrong create to arrive
    assert creates(sandbox.requests()) == ["/panic-api/v2/customers/1003/callouts"]

    shown = cli(config, "walk-test", "report", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["active"] is True and report["scope"] == "00a1b2c3"
    [entry] = report["presses"]
    assert entry["device"] == "00a1b2c3"
    assert entry["goes_to"] == "customer 1001"
    assert entry["gesture"] == "single"
    assert entry["location"]  # where the callout would have gone
    human = cli(config, "walk-test", "report")
    assert "00a1b2c3" in human.stdout and "customer 1001" in human.stdout

    # Ended by the technician: the tested button raises again.
    assert cli(config, "walk-test", "stop").returncode == 0
    daemon_runner.wait_status(lambda s: s.get("walk_test") is None, 5)
    daemon_runner.receiver.press(TESTED, gesture="single")
    assert sandbox.wait_for(lambda reqs: len(creates(reqs)) == 2, 10)
    assert "/panic-api/v2/customers/1001/callouts" in creates(sandbox.requests())


def test_walk_test_ends_by_itself_and_with_the_daemon(
    daemon_runner: DaemonRunner, sandbox: AuraSandbox
) -> None:
    config = daemon_runner.write_config()
    daemon = daemon_runner.start()
    assert cli(config, "walk-test", "start", "--minutes", "0.02").returncode == 0  # 1.2 s
    daemon_runner.wait_status(lambda s: s.get("walk_test") is not None, 5)
    daemon_runner.wait_status(lambda s: s.get("walk_test") is None, 10)
    # A walk test never outlives the daemon either: after a crash, presses raise.
    assert cli(config, "walk-test", "start", "--minutes", "30").returncode == 0
    daemon.kill()
    daemon_runner.start()
    daemon_runner.receiver.press(TESTED, gesture="single")
    assert sandbox.wait_for(lambda reqs: len(creates(reqs)) == 1, 10)
    refused = cli(config, "walk-test", "stop")
    assert refused.returncode == 1 and "no walk test" in refused.stderr

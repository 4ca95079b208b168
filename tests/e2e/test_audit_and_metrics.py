"""The audit trail and the metrics of a real run: the daemon process, the sandbox, a pty.

`aura-gateway audit verify` (the real CLI, as a technician runs it) passes on what the
daemon wrote, finds the press, the decision, the location choice and the AURA exchange in
it with no secret, and fails naming the place once one byte of it is altered. The metrics
are scraped over HTTP and read from node_exporter's textfile.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from firmware_bridge.sim import SimulatedReceiver
from gateway.audit import audit_files, read_records
from gateway.demo import write_sim_config
from gateway.sandbox import AuraSandbox, SandboxSeed

from .conftest import FAST_AURA, DaemonRunner

PENDANT = 0x00A1B2C3  # devices.sim.toml: customer 1001, live location
LAT, LON = -33.92490, 18.42410


def audit_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def press_with_fix(receiver: SimulatedReceiver) -> int:
    fix = receiver.send_fix(PENDANT, LAT, LON, accuracy_m=8)
    assert receiver.wait_acked(fix, 5), "the daemon never acked the fix"
    return receiver.press(PENDANT, gesture="single")


def configure(runner: DaemonRunner, tmp_path: Path, **extra: Any) -> Path:
    runner.config_path = write_sim_config(
        tmp_path,
        base_url=runner.sandbox.base_url,
        port_path=str(tmp_path / "receiver"),
        aura=dict(FAST_AURA),
        **extra,
    )
    return runner.config_path


def test_audit_verify_passes_on_a_real_run_and_fails_after_one_byte_is_altered(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    tmp_path: Path,
) -> None:
    config = configure(daemon_runner, tmp_path)
    daemon = daemon_runner.start()
    press_with_fix(receiver)
    raised = daemon.wait_event("callout_raised", 10)
    assert daemon.stop() == 0  # the stop record, and everything flushed and fsync'd

    done = audit_cli(config, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("audit OK: ")
    report = json.loads(audit_cli(config, "verify", "--json").stdout)
    assert report["ok"] and report["complete"] and report["first_seq"] == 1
    for kind in ("startup", "press", "decision", "location", "aura_request", "aura_response"):
        assert report["kinds"].get(kind, 0) >= 1, (kind, report["kinds"])
    assert report["kinds"]["stop"] == 1

    records = read_records(tmp_path / "audit")
    [press] = [r["data"] for r in records if r["kind"] == "press"]
    assert (press["device"], press["gesture"], press["verdict"]) == ("00a1b2c3", "single", "stored")
    [decision] = [r["data"] for r in records if r["kind"] == "decision"]
    assert decision["decision"] == "raise" and decision["incident"] == raised["incident"]
    assert "raises for customer:1001" in decision["reason"]
    [location] = [r["data"] for r in records if r["kind"] == "location"]
    assert location["incident"] == raised["incident"]
    assert location["reason"].startswith("fresh device fix")
    assert location["location"] == {"latitude": LAT, "longitude": LON, "accuracy": 8.0}
    create = next(
        r["data"]
        for r in records
        if r["kind"] == "aura_request" and r["data"]["path"] == "/customers/1001/callouts"
    )
    assert create["method"] == "POST" and create["body"]["location"]["latitude"] == LAT
    accepted = next(
        r["data"]
        for r in records
        if r["kind"] == "aura_response" and r["data"]["path"] == "/customers/1001/callouts"
    )
    assert accepted["status"] == 201
    assert str(accepted["body"]["callout"]["id"]) == raised["callout"]
    token_answer = next(
        r["data"]
        for r in records
        if r["kind"] == "aura_response" and r["data"]["path"] == "/oauth/token"
    )
    assert token_answer["body"]["accessToken"] == "[redacted]"

    # No secret anywhere: not the client's, not a bearer token the sandbox issued.
    seed = SandboxSeed()
    tokens = list(sandbox._state._tokens)  # the sandbox's own record of what it minted
    assert tokens
    raw = b"".join(p.read_bytes() for _, p in audit_files(tmp_path / "audit"))
    for secret in (seed.client_secret, seed.client_id, *tokens):
        assert secret.encode() not in raw, secret

    # One byte altered in the middle of the file: verify fails and says where.
    [(_, path)] = audit_files(tmp_path / "audit")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if data[middle : middle + 1] == b"\n":
        middle += 1
    data[middle] ^= 0x04
    path.write_bytes(bytes(data))
    line = bytes(data).count(b"\n", 0, middle) + 1
    broken = audit_cli(config, "verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith("audit BROKEN")
    assert f"audit-1.jsonl line {line} (seq {line})" in broken.stdout, broken.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_over_http_through_an_outage_and_a_callout(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    tmp_path: Path,
) -> None:
    port = _free_port()
    configure(daemon_runner, tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = daemon_runner.start()
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200
        return _values(response.text)

    before = scrape()
    assert before[("aura_gateway_up", ())] == 1
    assert before[("aura_gateway_devices_configured", ())] == 4
    assert before[("aura_gateway_input_up", (("input", "receiver"),))] == 1
    assert before[("aura_gateway_press_to_accept_seconds_count", ())] == 0

    sandbox.set_fault("down")
    press_with_fix(receiver)
    daemon.wait_event("press_stored", 5)
    daemon.wait_event("raise_retry", 5)
    time.sleep(0.3)
    waiting = scrape()
    assert waiting[("aura_gateway_queue_depth", (("class", "alarm"),))] == 1
    assert waiting[("aura_gateway_outbox_waiting", (("kind", "raise"),))] == 1
    assert waiting[("aura_gateway_oldest_undelivered_alarm_age_seconds", ())] > 0.2
    assert waiting[("aura_gateway_uplink_errors_total", (("class", "unreachable"),))] >= 1
    assert waiting[("aura_gateway_open_callouts", ())] == 0

    sandbox.clear_fault()
    daemon.wait_event("callout_raised", 5)
    after = scrape()
    assert after[("aura_gateway_press_to_accept_seconds_count", ())] == 1
    assert after[("aura_gateway_press_to_accept_seconds_sum", ())] > 0.3  # waited out the outage
    assert after[("aura_gateway_open_callouts", ())] == 1
    assert after[("aura_gateway_queue_depth", (("class", "location"),))] == 1
    assert after[("aura_gateway_oldest_undelivered_alarm_age_seconds", ())] == 0
    assert after[("aura_gateway_events_total", (("event", "presses_raised"),))] == 1
    assert after[("aura_gateway_audit_last_seq", ())] > 0
    assert daemon.stop() == 0


def test_metrics_textfile_for_node_exporter(
    daemon_runner: DaemonRunner,
    sandbox: AuraSandbox,
    receiver: SimulatedReceiver,
    tmp_path: Path,
) -> None:
    textfile_dir = tmp_path / "node-exporter"
    configure(daemon_runner, tmp_path, metrics={"textfile_dir": str(textfile_dir), "interval_s": 1})
    daemon = daemon_runner.start()
    path = textfile_dir / "aura_gateway.prom"
    press_with_fix(receiver)
    daemon.wait_event("callout_raised", 10)
    deadline = time.monotonic() + 5
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    while time.monotonic() < deadline:
        if path.exists():
            values = _values(path.read_text())
            if values.get(("aura_gateway_open_callouts", ())) == 1:
                break
        time.sleep(0.1)
    assert values[("aura_gateway_open_callouts", ())] == 1
    assert values[("aura_gateway_up", ())] == 1
    assert values[("aura_gateway_press_to_accept_seconds_count", ())] == 1
    assert daemon.stop() == 0
    assert _values(path.read_text())[("aura_gateway_up", ())] == 0  # it says it stopped
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["aura_gateway.prom"]

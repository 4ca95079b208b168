"""Press frame on the pty → first byte of the create-callout request at the sandbox.

Runs the real daemon as a child process, the simulated receiver on a real pty and the
AURA sandbox, presses N different buttons one after another (each its own customer, so
each press raises), and prints p50/p99 beside the floor measured in the same run: one
fdatasync on the journal's disk plus one loopback HTTP round trip to the same sandbox.

    .venv/bin/python bench/press_to_request.py [--presses 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox, SandboxSeed

WARMUP = 5  # first presses pay for the token and the first connection


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(title: str, latencies: list[float], floor_parts: dict[str, list[float]]) -> None:
    """Print the gateway's latencies beside the floor: the sum of the parts measured in the
    same run (medians for p50, 99th percentiles for p99)."""
    floor_p50 = sum(statistics.median(v) for v in floor_parts.values())
    floor_p99 = sum(pct(v, 99) for v in floor_parts.values())
    p50, p99 = statistics.median(latencies), pct(latencies, 99)
    steps = sum(1 for v in latencies if 38.0 <= v <= 45.0)
    print(title)
    print(f"  gateway      p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   max {max(latencies):7.2f} ms")
    for name, values in floor_parts.items():
        med, tail = statistics.median(values), pct(values, 99)
        print(f"  {name:<12} p50 {med:7.2f} ms   p99 {tail:7.2f} ms")
    print(f"  floor        p50 {floor_p50:7.2f} ms   p99 {floor_p99:7.2f} ms")
    print(
        f"  ratio        p50 {p50 / floor_p50:7.2f} x    p99 {p99 / floor_p99:7.2f} x"
        "   (budget: p99 within 3x)"
    )
    print(f"  samples in 38-45 ms (Nagle/delayed-ACK step): {steps}")


def fdatasync_floor(directory: Path, n: int) -> list[float]:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    out = []
    try:
        for i in range(n):
            os.write(fd, b"x" * 128)
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            out.append((time.perf_counter_ns() - t0) / 1e6)
            if i % 64 == 63:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)
        path.unlink()
    return out


def http_floor(sandbox: AuraSandbox, seed: SandboxSeed, n: int) -> list[float]:
    body = {"clientId": seed.client_id, "clientSecret": seed.client_secret}
    out = []
    with httpx.Client(base_url=sandbox.base_url, timeout=5.0) as client:
        client.post("/panic-api/v2/oauth/token", json=body)  # connect once, keep alive
        for _ in range(n):
            t0 = time.perf_counter_ns()
            client.post("/panic-api/v2/oauth/token", json=body).raise_for_status()
            out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def write_devices(path: Path, n: int) -> dict[int, bytes]:
    """n authenticated desk buttons, each its own customer, and their keys."""
    ids = [0x10000000 + i for i in range(n)]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"desk-button": {"raise_gestures": ["single"]}},
                "devices": [
                    {
                        "id": f"{dev:08x}",
                        "type": "desk-button",
                        "route": "customer",
                        "customer_id": 2001 + i,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                    for i, dev in enumerate(ids)
                ],
            }
        )
    )
    return {dev: dev.to_bytes(4, "big") * 4 for dev in ids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between presses")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="aura-bench-"))
    seed = SandboxSeed(customers={2001 + i: True for i in range(args.presses + WARMUP)})
    keys = write_devices(workdir / "devices.toml", args.presses + WARMUP)
    devices = sorted(keys)
    with (
        AuraSandbox(seed) as sandbox,
        SimulatedReceiver(link_path=workdir / "receiver", keys=keys) as sim,
    ):
        config = write_sim_config(
            workdir,
            base_url=sandbox.base_url,
            port_path=str(workdir / "receiver"),
            devices_file=workdir / "devices.toml",
            device_keys={f"{dev:08x}": key.hex() for dev, key in keys.items()},
            aura={"poll_interval_s": 60.0},  # keep follower polls out of the way
        )
        daemon = DaemonProcess(config, echo=lambda line: None)
        try:
            daemon.wait_event("ready", 30)
            latencies: list[float] = []
            for i, dev in enumerate(devices):
                seq = sim.press(dev)
                path = f"/panic-api/v2/customers/{2001 + i}/callouts"
                if not sandbox.wait_for(lambda reqs, p=path: any(r.path == p for r in reqs), 10):
                    print(f"press {i} never reached the sandbox", file=sys.stderr)
                    return 1
                arrived = next(r.arrived_ns for r in sandbox.requests() if r.path == path)
                if i >= WARMUP:
                    latencies.append((arrived - sim.sent_ns(seq)) / 1e6)
                time.sleep(args.gap_ms / 1000)
            fsyncs = fdatasync_floor(workdir, 300)
            rtts = http_floor(sandbox, seed, 300)
        finally:
            daemon.stop()

    title = f"press -> create-callout request, {len(latencies)} presses (after {WARMUP} warm-up)"
    report(title, latencies, {"fdatasync": fsyncs, "loopback RTT": rtts})
    return 0


if __name__ == "__main__":
    sys.exit(main())

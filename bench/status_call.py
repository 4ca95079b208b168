"""The technician's `aura-gateway status --json` against a running daemon, wall time.

The real daemon runs as a child process on the simulation config (sandbox AURA, the
simulated receiver on a real pty, one raised callout so the status is not empty). Each
sample starts ``python -m gateway status --json --config ...`` as a new process, exactly
as a technician or a monitoring script does, and times it to its exit; the answer must
come from the daemon (``"source": "daemon"``). Beside it, in the same run:

- the floor: the same interpreter starting and exiting (``python -c pass``);
- the interpreter importing what the daemon needs (``import gateway.app``): what every
  status call would cost if the CLI imported eagerly (pydantic, httpx, paho, asyncio);
- the control socket's round trip alone (``status`` asked in this process).

    .venv/bin/python bench/status_call.py [--samples 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from firmware_bridge.sim import SimulatedReceiver  # noqa: E402
from gateway.control import call  # noqa: E402
from gateway.demo import DaemonProcess, sim_keys, write_sim_config  # noqa: E402
from gateway.sandbox import AuraSandbox  # noqa: E402

DESK = 0x00A1B2C4


def timed(cmd: list[str], samples: int, check: bool = False) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        out.append((time.perf_counter() - start) * 1000)
        if check:
            data = json.loads(done.stdout)
            if done.returncode != 0 or data.get("source") != "daemon":
                raise SystemExit(f"status did not come from the daemon: {done.returncode} {data}")
    return out


def row(name: str, ms: list[float], floor: float) -> str:
    p50, worst = statistics.median(ms), max(ms)
    return f"| {name} | {p50:.1f} ms | {worst:.1f} ms | {p50 / floor:.1f}x |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, AuraSandbox() as sandbox:
        work = Path(tmp)
        with SimulatedReceiver(link_path=work / "receiver", keys=sim_keys()) as receiver:
            config = write_sim_config(
                work, base_url=sandbox.base_url, port_path=str(work / "receiver")
            )
            daemon = DaemonProcess(config, echo=lambda _line: None)
            try:
                daemon.wait_event("ready", 20)
                receiver.press(DESK)
                daemon.wait_event("callout_raised", 15)
                py = sys.executable
                timed([py, "-m", "gateway", "status", "--json", "--config", str(config)], 3)
                floor = timed([py, "-c", "pass"], args.samples)
                eager = timed([py, "-c", "import gateway.app"], args.samples)
                status = timed(
                    [py, "-m", "gateway", "status", "--json", "--config", str(config)],
                    args.samples,
                    check=True,
                )
                socket_ms = []
                for _ in range(args.samples):
                    start = time.perf_counter()
                    answer = call(work / "control.sock", "status", timeout_s=2.0)
                    socket_ms.append((time.perf_counter() - start) * 1000)
                    assert answer["ok"], answer
            finally:
                daemon.stop()
    base = statistics.median(floor)
    print(f"{args.samples} samples each, {time.strftime('%Y-%m-%d')}")
    print("| what | p50 | max | p50 / floor |")
    print("|---|---|---|---|")
    print(row("`python -c pass` (floor)", floor, base))
    print(row("`aura-gateway status --json` (daemon answers)", status, base))
    print(row("`import gateway.app` (eager imports, for comparison)", eager, base))
    print(row("control socket round trip alone", socket_ms, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start to READY, resident memory and idle CPU of the real daemon with N buttons.

Starts the AURA sandbox, the simulated receiver (heartbeats every 10 s, as the real
one) and the daemon with N configured buttons, then measures: spawn → ``event=ready``
(READY=1 follows on the same line of code), VmRSS after READY, and the daemon's own CPU
time (utime + stime from /proc) over an idle window, as a share of one core. The floor for
start-up is the interpreter importing the daemon's modules, measured in the same run.

    .venv/bin/python bench/idle.py [--devices 1000] [--idle-s 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox

TICK = os.sysconf("SC_CLK_TCK")


def write_devices(path: Path, n: int) -> dict[str, str]:
    ids = [f"{0x40000000 + i:08x}" for i in range(n)]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"desk-button": {"raise_gestures": ["single"]}},
                "devices": [
                    {
                        "id": dev,
                        "type": "desk-button",
                        "route": "customer",
                        "customer_id": 1001,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                    for dev in ids
                ],
            }
        )
    )
    return {dev: ("%032x" % (i + 1)) for i, dev in enumerate(ids)}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def import_floor() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import gateway.app, gateway.cli"], check=True)
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aura-bench-idle-"))
    keys = write_devices(workdir / "devices.toml", args.devices)
    with (
        AuraSandbox() as sandbox,
        SimulatedReceiver(
            link_path=workdir / "receiver",
            keys={int(d, 16): bytes.fromhex(k) for d, k in keys.items()},
        ) as _sim,
    ):
        config = write_sim_config(
            workdir,
            base_url=sandbox.base_url,
            port_path=str(workdir / "receiver"),
            devices_file=workdir / "devices.toml",
            device_keys=keys,
        )
        started = time.monotonic()
        daemon = DaemonProcess(config, echo=lambda line: None)
        try:
            daemon.wait_event("ready", 30)
            ready_s = time.monotonic() - started
            pid = daemon.proc.pid
            time.sleep(2.0)  # let start-up work (token, first status) finish
            rss = rss_mb(pid)
            before = cpu_s(pid)
            time.sleep(args.idle_s)
            idle = (cpu_s(pid) - before) / args.idle_s
        finally:
            daemon.stop()
    floor = import_floor()
    print(f"daemon with {args.devices} buttons, simulated receiver, sandbox")
    print(f"  spawn -> READY        {ready_s * 1000:7.0f} ms   (budget 1000 ms)")
    print(f"  import floor          {floor * 1000:7.0f} ms   (python -c 'import gateway.app')")
    print(f"  RSS after READY       {rss:7.1f} MB   (budget 40 MB)")
    print(
        f"  idle CPU              {idle * 100:7.3f} %    of one core over {args.idle_s:g} s"
        "   (budget 0.1 %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sustained press frames per second through the receiver link: decode, authentication,
journal (group commit) and ack, with many buttons pressing at once.

The real daemon runs as a child process on a real pty; the simulated receiver writes
presses from many authenticated buttons as fast as the link takes them and resends what
is not acknowledged. Throughput counts frames acknowledged (so: durably stored). It is
printed beside the line rate of a 115200-baud UART carrying the same frames, the
receiver's real link, measured in the same run from the same frame sizes.

    .venv/bin/python bench/bridge_throughput.py [--devices 50] [--presses 4000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from firmware_bridge.frames import Press
from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox

BAUD = 115200
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def write_devices(path: Path, n: int) -> dict[str, str]:
    """n authenticated buttons in one shop: the first press raises, the rest attach."""
    ids = [f"{0x30000000 + i:08x}" for i in range(n)]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"shop-button": {"raise_gestures": ["single"]}},
                "devices": [
                    {"id": dev, "type": "shop-button", "route": "site", "site_ref": "SHOP-CPT-001"}
                    for dev in ids
                ],
            }
        )
    )
    return {dev: (f"{i:04x}" * 8) for i, dev in enumerate(ids)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--presses", type=int, default=4000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="aura-bench-bridge-"))
    keys = write_devices(workdir / "devices.toml", args.devices)
    sim_keys = {int(dev, 16): bytes.fromhex(key) for dev, key in keys.items()}
    devices = sorted(sim_keys)
    with (
        AuraSandbox() as sandbox,
        SimulatedReceiver(
            link_path=workdir / "receiver", keys=sim_keys, resend_interval_s=2.0
        ) as sim,
    ):
        config = write_sim_config(
            workdir,
            base_url=sandbox.base_url,
            port_path=str(workdir / "receiver"),
            devices_file=workdir / "devices.toml",
            device_keys=keys,
            aura={"poll_interval_s": 60.0},
        )
        daemon = DaemonProcess(config, echo=lambda line: None)
        try:
            daemon.wait_event("ready", 30)
            assert sim.wait_acked(sim.hello(), 10), "link never came up"
            seqs = []
            started = time.monotonic()
            for n in range(args.presses):
                seqs.append(sim.press(devices[n % len(devices)]))
            deadline = time.monotonic() + 120
            for seq in seqs:
                if not sim.wait_acked(seq, max(0.0, deadline - time.monotonic())):
                    print(f"frame seq {seq} never acknowledged", file=sys.stderr)
                    return 1
            acked = sim.acked()
            finished = max(acked[s] for s in seqs) / 1e9
            first = min(sim.sent_ns(s) for s in seqs) / 1e9
            writing_s = time.monotonic() - started
            resends = sim.counters.resends
        finally:
            daemon.stop()

    stored = (
        sqlite3.connect(workdir / "journal.sqlite")
        .execute("SELECT COUNT(*) FROM presses")
        .fetchone()[0]
    )
    frame = Press(seq=1, device_id=devices[0], counter=1, gesture="single", tag=b"\0" * 8)
    wire_bytes = len(frame.to_bytes()) + 1  # the simulated receiver prefixes a delimiter
    line_fps = BAUD / (wire_bytes * BITS_PER_BYTE)
    fps = len(seqs) / (finished - first)
    print(f"bridge throughput: {len(seqs)} presses from {len(devices)} buttons")
    print(f"  acknowledged (stored)  {fps:8.0f} frames/s   ({finished - first:.2f} s)")
    print(f"  115200-baud line rate  {line_fps:8.0f} frames/s   ({wire_bytes} bytes a frame)")
    print(f"  ratio                  {fps / line_fps:8.2f} x     (target: at least 4x)")
    print(
        f"  stored in the journal  {stored} of {len(seqs)}; resends {resends}; "
        f"writer busy {writing_s:.2f} s"
    )
    return 0 if stored == len(seqs) else 1


if __name__ == "__main__":
    sys.exit(main())

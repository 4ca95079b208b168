"""MQTT publish → first byte of the create-callout request at the sandbox.

Runs a real mosquitto, the real daemon as a child process with an MQTT input
(zigbee2mqtt payloads), and the AURA sandbox; publishes N emergency presses from N
different buttons (each its own customer, so each press raises) and prints p50/p99 beside
the floor measured in the same run: one MQTT loopback delivery (publish → a subscriber's
callback, QoS 1) + one fdatasync on the journal's disk + one loopback HTTP round trip.

    .venv/bin/python bench/mqtt_press_to_request.py [--presses 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from press_to_request import fdatasync_floor, http_floor, report

from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox, SandboxSeed
from tests.mosquitto_service import Mosquitto

WARMUP = 5
PAYLOAD = json.dumps({"action": "emergency", "battery": 90, "linkquality": 110})


def write_devices(path: Path, n: int) -> list[str]:
    names = [f"sos_{i:04d}" for i in range(n)]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {"zigbee-sos": {"raise_gestures": ["single"]}},
                "devices": [
                    {
                        "id": name,
                        "type": "zigbee-sos",
                        "auth": "network",
                        "route": "customer",
                        "customer_id": 2001 + i,
                        "response_type_id": 1,
                        "location": {"policy": "fixed", "predefined_location_id": 501},
                    }
                    for i, name in enumerate(names)
                ],
            }
        )
    )
    return names


def client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


def mqtt_floor(port: int, n: int) -> list[float]:
    """Publish → delivered to another client's callback, one at a time, QoS 1."""
    got = threading.Event()
    sub = client(port, "floor-sub")
    sub.on_message = lambda _c, _u, _m: got.set()
    sub.subscribe("floor/probe", qos=1)
    time.sleep(0.3)
    pub = client(port, "floor-pub")
    out = []
    try:
        for _ in range(n + 1):
            got.clear()
            t0 = time.perf_counter_ns()
            pub.publish("floor/probe", b"x", qos=1)
            if not got.wait(5):
                raise RuntimeError("floor probe lost")
            out.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    return out[1:]  # the first pays for the connection's warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=300)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between presses")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="aura-bench-mqtt-"))
    total = args.presses + WARMUP
    seed = SandboxSeed(customers={2001 + i: True for i in range(total)})
    names = write_devices(workdir / "devices.toml", total)
    broker = Mosquitto(workdir / "broker").start()
    try:
        with AuraSandbox(seed) as sandbox:
            config = write_sim_config(
                workdir,
                base_url=sandbox.base_url,
                port_path=str(workdir / "no-receiver"),
                devices_file=workdir / "devices.toml",
                aura={"poll_interval_s": 60.0},  # keep follower polls out of the way
                extra_inputs=[
                    {
                        "type": "mqtt",
                        "name": "broker",
                        "port": broker.port,
                        "subscriptions": [{"topic": "zigbee2mqtt/+", "adapter": "zigbee2mqtt"}],
                    }
                ],
            )
            data = tomllib.loads(config.read_text())
            data["inputs"] = [i for i in data["inputs"] if i["type"] != "serial"]
            config.write_text(tomli_w.dumps(data))
            daemon = DaemonProcess(config, echo=lambda line: None)
            publisher = client(broker.port, "bench-bridge")
            try:
                daemon.wait_event("ready", 30)
                latencies: list[float] = []
                for i, name in enumerate(names):
                    path = f"/panic-api/v2/customers/{2001 + i}/callouts"
                    sent = time.monotonic_ns()
                    publisher.publish(f"zigbee2mqtt/{name}", PAYLOAD, qos=1)
                    if not sandbox.wait_for(
                        lambda reqs, p=path: any(r.path == p for r in reqs), 10
                    ):
                        print(f"press {i} never reached the sandbox", file=sys.stderr)
                        return 1
                    arrived = next(r.arrived_ns for r in sandbox.requests() if r.path == path)
                    if i >= WARMUP:
                        latencies.append((arrived - sent) / 1e6)
                    time.sleep(args.gap_ms / 1000)
                mqtts = mqtt_floor(broker.port, 300)
                fsyncs = fdatasync_floor(workdir, 300)
                rtts = http_floor(sandbox, seed, 300)
            finally:
                publisher.disconnect()
                publisher.loop_stop()
                daemon.stop()
    finally:
        broker.stop()

    title = (
        f"MQTT publish -> create-callout request, {len(latencies)} presses (after {WARMUP} warm-up)"
    )
    report(title, latencies, {"MQTT deliver": mqtts, "fdatasync": fsyncs, "loopback RTT": rtts})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Uplink recovery: 100 queued alarms and 10,000 queued fixes, drained when AURA returns.

DESIGN.md §6: "uplink returns after an outage with 10,000 queued location fixes and 100
pending alarms: every alarm sent before any location; all alarms out within 1 s of
recovery." The real daemon runs as a child process on the simulation config (its backoff
and poll settings unless overridden), with the simulated receiver on a real pty and the
AURA sandbox. Each run:

1. a few live-location pendants (each its own customer) raise callouts while AURA is up;
2. AURA goes down (``set_fault("down")``: connections refused); 100 desk buttons (each
   its own customer) press, and the pendants send 10,000 fixes in between; the bench
   waits until the daemon has acknowledged every frame (so all of it is in the journal)
   and until the outage has lasted ``--outage-s``;
3. ``clear_fault()``: from that moment, the time until each alarm's create is answered
   2xx at the sandbox, the rate the creates reach between the first and the last, and
   whether any location update reached AURA before the last create.

The sandbox's own ceiling is measured in the same run (``AuraSandbox.max_rate``, 1 s over
4 keep-alive connections, and over 1 as the gateway uses) and the drain rate is printed
as a ratio to it. Several runs (``--runs``), since the first retry after recovery waits
out a randomised backoff.

    .venv/bin/python bench/drain.py [--runs 5] [--alarms 100] [--fixes 10000]
                                    [--pendants 4] [--outage-s 5] [--backoff-max-s S]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

# The config helper is single-sourced with the crash soak; import it from the checkout.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from firmware_bridge.sim import SimulatedReceiver  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.demo import DaemonProcess  # noqa: E402
from gateway.sandbox import AuraSandbox, RecordedRequest, SandboxSeed  # noqa: E402
from tests.e2e.soak import write_config  # noqa: E402

ALARM_BASE = 0x60000000
PENDANT_BASE = 0x61000000
ALARM_CUSTOMER = 7001
PENDANT_CUSTOMER = 7901
START = (-33.92490, 18.42410)
CREATE = re.compile(r"/panic-api/v2/customers/(\d+)/callouts")
LOCATION = re.compile(r"/panic-api/v2/callouts/\d+/location(/callout)?")


class BenchFailed(Exception):
    pass


@dataclass(frozen=True)
class Drain:
    """One run's figures; times in ms from ``clear_fault()``."""

    queued: int
    acked_s: float
    outage_s: float
    latencies_ms: list[float]  # per alarm: recovery -> its create arrived (answered 201)
    gaps_ms: list[float]  # between successive creates
    rate: float  # creates/s between the first and the last create
    max_rate_4: float
    max_rate_1: float
    locations_before_last: int
    first_location_ms: float | None
    locations: int
    other_before_last: list[str]

    @property
    def first_ms(self) -> float:
        return min(self.latencies_ms)

    @property
    def last_ms(self) -> float:
        return max(self.latencies_ms)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def key_of(device: int) -> bytes:
    return device.to_bytes(4, "big") * 4


def write_devices(path: Path, alarms: list[int], pendants: list[int]) -> None:
    devices: list[dict[str, Any]] = [
        {
            "id": f"{dev:08x}",
            "type": "desk-button",
            "route": "customer",
            "customer_id": ALARM_CUSTOMER + i,
            "response_type_id": 1,
            "location": {"policy": "fixed", "predefined_location_id": 501},
        }
        for i, dev in enumerate(alarms)
    ]
    devices += [
        {
            "id": f"{dev:08x}",
            "type": "pendant-gps",
            "route": "customer",
            "customer_id": PENDANT_CUSTOMER + i,
            "response_type_id": 1,
            "location": {"policy": "live"},
        }
        for i, dev in enumerate(pendants)
    ]
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "desk-button": {"raise_gestures": ["single"]},
                    "pendant-gps": {"raise_gestures": ["single"], "has_gps": True},
                },
                "devices": devices,
            }
        )
    )


def wait_all_acked(sim: SimulatedReceiver, seqs: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(sim.wait_acked(seq, max(0.0, deadline - time.monotonic())) for seq in seqs)


def run_once(args: argparse.Namespace, seed: int, workdir: Path) -> tuple[Drain, dict[str, Any]]:
    rng = random.Random(seed)
    alarms = [ALARM_BASE + i for i in range(args.alarms)]
    pendants = [PENDANT_BASE + i for i in range(args.pendants)]
    keys = {dev: key_of(dev) for dev in alarms + pendants}
    write_devices(workdir / "devices.toml", alarms, pendants)
    customers = {ALARM_CUSTOMER + i: True for i in range(args.alarms)}
    customers |= {PENDANT_CUSTOMER + i: True for i in range(args.pendants)}
    aura: dict[str, Any] = {}
    if args.backoff_max_s is not None:
        aura["backoff_max_s"] = args.backoff_max_s
    with (
        AuraSandbox(SandboxSeed(customers=customers)) as sandbox,
        SimulatedReceiver(link_path=workdir / "receiver", keys=keys, resend_interval_s=1.0) as sim,
    ):
        config = write_config(
            workdir,
            sandbox,
            workdir / "devices.toml",
            {f"{dev:08x}": key.hex() for dev, key in keys.items()},
            aura,
        )
        # The effective settings, defaults included, as the daemon reads them.
        settings = load_config(config).gateway.aura.model_dump()
        daemon = DaemonProcess(config, echo=lambda line: print(f"  daemon: {line}"))
        try:
            daemon.wait_event("ready", 30)
            # 1. live callouts, raised while AURA is up
            lat, lon = START
            first = [sim.send_fix(dev, lat, lon, accuracy_m=8) for dev in pendants]
            if not wait_all_acked(sim, first, 10):
                raise BenchFailed("the pendants' first fixes were never acknowledged")
            for dev in pendants:
                sim.press(dev)
            for _ in pendants:
                daemon.wait_event("callout_raised", 10)

            # 2. the outage: alarms and fixes queue up, alarms spread among the fixes
            sandbox.set_fault("down")
            outage_ns = time.monotonic_ns()
            seqs: list[int] = []
            every = max(1, args.fixes // max(1, args.alarms))
            pressed = 0
            for n in range(args.fixes):
                if n % every == 0 and pressed < args.alarms:
                    seqs.append(sim.press(alarms[pressed]))
                    pressed += 1
                lat += rng.uniform(-1e-4, 1e-4)
                lon += rng.uniform(-1e-4, 1e-4)
                dev = pendants[n % len(pendants)]
                seqs.append(sim.send_fix(dev, lat, lon, accuracy_m=rng.randint(3, 15)))
            seqs += [sim.press(dev) for dev in alarms[pressed:]]
            if not wait_all_acked(sim, seqs, 120):
                raise BenchFailed(f"{len(sim.unacked())} frames never acknowledged")
            acked_s = (time.monotonic_ns() - outage_ns) / 1e9
            with contextlib.closing(sqlite3.connect(workdir / "journal.sqlite")) as db:
                (queued,) = db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND kind = 'raise'"
                ).fetchone()
            time.sleep(max(0.0, args.outage_s - acked_s))

            # 3. recovery
            before = len(sandbox.requests())
            recovered_ns = time.monotonic_ns()
            sandbox.clear_fault()

            def creates_done(reqs: list[RecordedRequest]) -> bool:
                return sum(_is_alarm_create(r) and r.status == 201 for r in reqs) >= args.alarms

            if not sandbox.wait_for(creates_done, 120):
                raise BenchFailed("not every alarm reached AURA within 120 s of recovery")
            time.sleep(float(settings["poll_interval_s"]) + 0.5)  # let locations follow
            after = sandbox.requests()[before:]
            max_rate_4 = sandbox.max_rate(seconds=1.0, connections=4)
            max_rate_1 = sandbox.max_rate(seconds=1.0, connections=1)
        finally:
            daemon.stop()

    creates = [r for r in after if _is_alarm_create(r) and r.status == 201]
    locations = [r for r in after if r.method == "POST" and LOCATION.fullmatch(r.path)]
    arrivals = sorted(r.arrived_ns for r in creates)
    span_s = (arrivals[-1] - arrivals[0]) / 1e9
    created = {r.seq for r in creates}
    last = arrivals[-1]
    drain = Drain(
        queued=int(queued),
        acked_s=acked_s,
        outage_s=(recovered_ns - outage_ns) / 1e9,
        latencies_ms=[(t - recovered_ns) / 1e6 for t in arrivals],
        gaps_ms=[(b - a) / 1e6 for a, b in itertools.pairwise(arrivals)],
        rate=(len(arrivals) - 1) / span_s if span_s > 0 else float("inf"),
        max_rate_4=max_rate_4,
        max_rate_1=max_rate_1,
        locations_before_last=sum(1 for r in locations if r.arrived_ns < last),
        first_location_ms=min(
            ((r.arrived_ns - recovered_ns) / 1e6 for r in locations), default=None
        ),
        locations=len(locations),
        other_before_last=sorted(
            {
                f"{r.method} {_shape(r.path)}"
                for r in after
                if r.arrived_ns < last and r.seq not in created
            }
        ),
    )
    return drain, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--alarms", type=int, default=100)
    parser.add_argument("--fixes", type=int, default=10_000)
    parser.add_argument("--pendants", type=int, default=4)
    parser.add_argument(
        "--outage-s", type=float, default=5.0, help="minimum outage, from the fault to recovery"
    )
    parser.add_argument(
        "--backoff-max-s", type=float, help="override aura.backoff_max_s (default: the config's)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the fix positions")
    args = parser.parse_args()

    runs: list[Drain] = []
    settings: dict[str, Any] = {}
    print(
        f"drain after an outage: {args.alarms} alarms ({args.alarms} customers), "
        f"{args.fixes} fixes from {args.pendants} live callouts, {args.runs} runs"
    )
    for n in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="aura-bench-drain-"))
        try:
            drain, settings = run_once(args, args.seed + n, workdir)
        except BenchFailed as exc:
            print(f"run {n + 1}: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        runs.append(drain)
        lat = drain.latencies_ms
        first_loc = (
            f"{drain.first_location_ms:.0f} ms" if drain.first_location_ms is not None else "none"
        )
        print(
            f"  run {n + 1}: outage {drain.outage_s:.1f} s ({drain.queued} raises queued, frames"
            f" acked in {drain.acked_s:.1f} s); recovery -> first {drain.first_ms:.0f} ms,"
            f" p50 {statistics.median(lat):.0f} ms, p99 {pct(lat, 99):.0f} ms,"
            f" last {drain.last_ms:.0f} ms; {drain.rate:.0f} creates/s;"
            f" locations before the last create {drain.locations_before_last},"
            f" first location {first_loc}"
        )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    lasts = [d.last_ms for d in runs]
    firsts = [d.first_ms for d in runs]
    spans = [d.last_ms - d.first_ms for d in runs]
    rates = [d.rate for d in runs]
    every_alarm = [v for d in runs for v in d.latencies_ms]
    gaps = [v for d in runs for v in d.gaps_ms]
    cap4 = [d.max_rate_4 for d in runs]
    cap1 = [d.max_rate_1 for d in runs]
    early = sum(d.locations_before_last for d in runs)
    others = sorted({k for d in runs for k in d.other_before_last})
    reconnect = settings.get("reconnect_max_s")
    print(
        f"  config               backoff {settings['backoff_initial_s']}.."
        f"{settings['backoff_max_s']} s (full jitter)"
        + (f", AURA unreachable: look again within {reconnect} s" if reconnect else "")
        + f", poll {settings['poll_interval_s']} s"
    )
    print(
        f"  recovery -> first    p50 {med(firsts):7.0f} ms   max {max(firsts):7.0f} ms"
        "   (waiting out the uplink's backoff)"
    )
    print(
        f"  first -> last        p50 {med(spans):7.0f} ms   max {max(spans):7.0f} ms"
        "   (sending the queue)"
    )
    print(
        f"  recovery -> last     p50 {med(lasts):7.0f} ms   max {max(lasts):7.0f} ms"
        f"   (budget: 1000 ms; met in {sum(v <= 1000 for v in lasts)} of {len(lasts)} runs)"
    )
    print(
        f"  per alarm            p50 {med(every_alarm):7.0f} ms"
        f"   p90 {pct(every_alarm, 90):7.0f} ms   p99 {pct(every_alarm, 99):7.0f} ms"
        "   (recovery -> its 2xx, all runs)"
    )
    print(
        f"  drain rate           p50 {med(rates):7.0f} creates/s   min {min(rates):5.0f}"
        f"   (gap between creates p50 {med(gaps):.2f} ms, p99 {pct(gaps, 99):.2f} ms)"
    )
    print(
        f"  sandbox max rate     p50 {med(cap4):7.0f} requests/s over 4 connections,"
        f" {med(cap1):.0f} over 1"
    )
    print(
        f"  ratio                {med(rates) / med(cap4):7.2f} of the 4-connection maximum,"
        f" {med(rates) / med(cap1):.2f} of the 1-connection maximum"
    )
    print(
        f"  alarms first         {'yes' if early == 0 else 'NO'}: {early} location updates"
        " before a run's last create (all runs); "
        f"{sum(d.locations for d in runs)} location updates in the windows (newest fix per callout)"
    )
    print(f"  other requests before the last create: {others or 'none'}")
    return 0


def _is_alarm_create(r: RecordedRequest) -> bool:
    found = CREATE.fullmatch(r.path)
    return r.method == "POST" and found is not None and int(found.group(1)) < PENDANT_CUSTOMER


def _shape(path: str) -> str:
    return re.sub(r"/\d+", "/{id}", path.removeprefix("/panic-api/v2"))


if __name__ == "__main__":
    sys.exit(main())

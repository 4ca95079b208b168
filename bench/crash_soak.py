"""Crash soak at length: the scenario of tests/e2e/test_crash_soak.py, 1,000 cycles.

Each cycle presses one to three of twelve buttons (new counters; sometimes a second press
or a cancel on a button whose incident is open), flaps AURA (down / up), closes some
callouts at AURA, SIGKILLs the real daemon 0-300 ms after the press and starts it again
on the same journal. Then the faults clear, the daemon restarts a last time, everything
drains, and the receiver's, the journal's and AURA's records are checked against the
invariants in tests/e2e/soak.py (``CrashSoak.check``). Prints what ran, what came of it,
and every violation (there must be none); exits 1 if there was one.

    .venv/bin/python bench/crash_soak.py [--cycles 1000] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

# The scenario is single-sourced in the e2e tests' package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.soak import CrashSoak, SoakSettings  # noqa: E402

SHOWN = 40  # violations printed in full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--buttons", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    # Shorter pauses than the test so 1,000 cycles take minutes; same kill delays.
    settings = SoakSettings(
        cycles=args.cycles, seed=args.seed, buttons=args.buttons, dwell_s=0.15, long_dwell_p=0.05
    )
    workdir = Path(tempfile.mkdtemp(prefix="aura-bench-soak-"))
    try:
        with CrashSoak(settings, workdir=workdir, progress=lambda s: print(s, flush=True)) as soak:
            print(f"crash soak: {args.cycles} cycles, {args.buttons} buttons, seed {args.seed}")
            soak.run(drain_timeout_s=60.0)
            violations = soak.check()
            figures = soak.figures()
            pending = [] if soak.stats.drained else soak.pending_work()
            if args.keep:
                (workdir / "daemon.log").write_text(soak.logs(last_runs=len(soak.runs)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    stats = soak.stats
    print(f"  cycles run        {stats.cycles}")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(figures["presses_by_kind"].items()))
    print(f"  presses           {figures['presses']} ({kinds})")
    decisions = ", ".join(f"{n} {k}" for k, n in sorted(figures["decisions"].items()))
    print(f"  decisions         {decisions}")
    print(
        f"  callouts          {figures['callouts']} (creates {figures['creates']}, "
        f"re-attached after a crash {figures['reattached']}, cancelled at AURA "
        f"{figures['cancelled_at_aura']}, cancelled before leaving {figures['local_cancels']})"
    )
    print(
        f"  re-raised presses {figures['reraised']} (stored while the old callout was still "
        f"open: {figures['reraised_while_open']})"
    )
    print(f"  kills             {stats.kills} (SIGKILL; daemon starts {stats.starts})")
    for phase, n in stats.kill_phases.most_common():
        print(f"    {n:5d}  {phase}")
    print(f"  uplink down       {stats.downs} times; callouts closed at AURA {stats.closes}")
    print(f"  AURA requests     {figures['requests']}")
    print(f"  daemon errors     {len(soak.daemon_errors)} ERROR/CRITICAL/Traceback lines")
    for line in soak.daemon_errors[:10]:
        print(f"    {line}")
    if not stats.drained:
        print(f"  NOT DRAINED within 60 s: {pending}")
    by_invariant = Counter(line.split("]")[0].lstrip("[") for line in violations)
    print(
        f"  violations        {len(violations)}"
        + (f" (by invariant: {dict(sorted(by_invariant.items()))})" if violations else "")
    )
    for line in violations[:SHOWN]:
        print(f"    - {line}")
    if len(violations) > SHOWN:
        print(f"    ... and {len(violations) - SHOWN} more")
    for line in soak.covered_late:
        print(f"    (covered) {line}")
    print(f"  elapsed           {stats.elapsed_s:.0f} s (drain {stats.drain_s:.1f} s)")
    if args.keep:
        print(f"  work directory    {workdir}")
    return 0 if stats.drained and not violations else 1


if __name__ == "__main__":
    sys.exit(main())

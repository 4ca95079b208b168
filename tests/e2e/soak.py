"""The crash-soak scenario, shared by ``tests/e2e/test_crash_soak.py`` and ``bench/crash_soak.py``.

N buttons, each its own subscribed customer on AURA (the sandbox), half of them with a
cancel gesture, press through the simulated receiver (a real pty) into the real daemon
(``aura-gateway run`` as a child process). Every cycle presses one or more buttons,
flaps the uplink (``set_fault("down")`` / ``clear_fault()``), closes some callouts the way
AURA's controller would, and SIGKILLs the daemon 0-300 ms after the press, then starts
it again on the same journal. At the end the faults are cleared, the daemon is restarted
a last time and everything drains; then :meth:`CrashSoak.check` compares what the
receiver sent, what the journal holds and what AURA saw. See :meth:`CrashSoak.check`
for the invariants.

Everything random comes from one ``random.Random(seed)``; the daemon's own timing is not
seeded, so a seed reproduces the scenario, not every interleaving.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import re
import sqlite3
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import tomli_w

from firmware_bridge.sim import SimulatedReceiver
from gateway.demo import DaemonProcess, write_sim_config
from gateway.sandbox import AuraSandbox, RecordedRequest, SandboxSeed

BUTTON_BASE: Final = 0x50000000
CUSTOMER_BASE: Final = 5001
PREDEFINED_LOCATION: Final = 501  # the sandbox's seeded fixed location SHOP-CPT-001

Gesture = Literal["single", "double", "long", "hold"]
RAISE: Final[Gesture] = "single"  # raises on both button types
CANCEL: Final[Gesture] = "double"  # cancels on "cancel-button" (nothing on "desk-button")
INERT: Final[Gesture] = "hold"  # neither raises nor cancels on either type

# What the daemon may decide for each kind of press (journal ``presses.decision``).
ALLOWED_DECISIONS: Final[dict[str, frozenset[str]]] = {
    "raise": frozenset({"raise", "attach"}),
    "cancel": frozenset({"cancel", "ignore"}),  # ignore: no open incident any more
    "inert": frozenset({"ignore"}),
}

# Short timings so a cycle takes well under a second; the code paths are the production ones.
SOAK_AURA: Final[dict[str, Any]] = {
    "poll_interval_s": 1.0,  # the minimum the config accepts
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "timeouts": {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 1.0},
}

CREATE_PATH = re.compile(r"/panic-api/v2/customers/(\d+)/callouts")
CANCEL_PATH = re.compile(r"/panic-api/v2/callouts/(\d+)/cancel")
GET_PATH = re.compile(r"/panic-api/v2/callouts/(\d+)")
LOCATION_RETURN_PATH = re.compile(r"/panic-api/v2/callouts/(\d+)/location/callout")
# Invariant 9's slack: a poll counts as having seen a press's callout open if it arrived
# this long after the press was stored (the follower stamps a poll just before sending it)
# and the daemon then lived this long (so it read the answer; a GET answers in ~1 ms).
PRESS_MARGIN_NS: Final = 100_000_000
SEEN_MARGIN_NS: Final = 500_000_000
REPROMOTED = "pressed after callout"  # the reason the router gives a re-raised press


# ---------------------------------------------------------------------------- set-up


@dataclass(frozen=True, slots=True)
class Button:
    device_id: int
    customer_id: int
    can_cancel: bool

    @property
    def hex(self) -> str:
        return f"{self.device_id:08x}"

    @property
    def key(self) -> bytes:
        return self.device_id.to_bytes(4, "big") * 4


def make_buttons(
    n: int, *, first_id: int = BUTTON_BASE, first_customer: int = CUSTOMER_BASE
) -> list[Button]:
    """n buttons, each its own customer; every other one has the cancel gesture."""
    return [Button(first_id + i, first_customer + i, can_cancel=i % 2 == 0) for i in range(n)]


def write_devices(path: Path, buttons: list[Button]) -> None:
    path.write_text(
        tomli_w.dumps(
            {
                "device_types": {
                    "desk-button": {"raise_gestures": [RAISE]},
                    "cancel-button": {"raise_gestures": [RAISE], "cancel_gestures": [CANCEL]},
                },
                "devices": [
                    {
                        "id": b.hex,
                        "type": "cancel-button" if b.can_cancel else "desk-button",
                        "route": "customer",
                        "customer_id": b.customer_id,
                        "response_type_id": 1,
                        "location": {
                            "policy": "fixed",
                            "predefined_location_id": PREDEFINED_LOCATION,
                        },
                    }
                    for b in buttons
                ],
            }
        )
    )


def write_config(
    workdir: Path,
    sandbox: AuraSandbox,
    devices_file: Path,
    device_keys: dict[str, str],
    aura: dict[str, Any],
) -> Path:
    """The simulation config pointed at this run, with the control socket in ``workdir``
    (the default is /run/aura-gateway, shared by every daemon on the machine)."""
    path = write_sim_config(
        workdir,
        base_url=sandbox.base_url,
        port_path=str(workdir / "receiver"),
        aura=aura,
        devices_file=devices_file,
        device_keys=device_keys,
    )
    data = tomllib.loads(path.read_text())
    data["gateway"]["control_path"] = str(workdir / "control.sock")
    path.write_text(tomli_w.dumps(data))
    return path


@contextlib.contextmanager
def journal_reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived connection for SELECTs only, used while the daemon has the journal
    open (so closing it never checkpoints or removes the WAL behind a killed daemon)."""
    db = sqlite3.connect(path, timeout=10.0)
    try:
        yield db
    finally:
        db.close()


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SoakSettings:
    cycles: int
    seed: int
    buttons: int = 12
    max_kill_delay_s: float = 0.3
    # A third of the kills land in the first ``first_kill_s`` after the press (around the
    # commit and the ack), a third before ``early_kill_s`` (the create request and its
    # reply), a third anywhere up to the maximum.
    first_kill_s: float = 0.008
    early_kill_s: float = 0.04
    dwell_s: float = 0.25  # random pause after the restart before the next press
    long_dwell_p: float = 0.1  # sometimes longer than the poll interval: a full follow round
    down_p: float = 0.25  # uplink up -> down at a flap point
    up_p: float = 0.5  # uplink down -> up at a flap point
    close_p: float = 0.15  # each callout the gateway knows as open is closed at AURA
    cancel_p: float = 0.35  # a cancel button with an open incident presses cancel
    again_p: float = 0.35  # a button with an open incident presses again
    inert_p: float = 0.05  # a gesture that neither raises nor cancels
    resend_interval_s: float = 0.2


@dataclass(frozen=True, slots=True)
class SentPress:
    seq: int
    button: Button
    counter: int
    gesture: Gesture
    cycle: int

    @property
    def kind(self) -> str:
        if self.gesture == RAISE:
            return "raise"
        if self.gesture == CANCEL and self.button.can_cancel:
            return "cancel"
        return "inert"


@dataclass(frozen=True, slots=True)
class JournalPress:
    id: int
    device_id: str
    gesture: str
    counter: int
    mono_ns: int
    decision: str
    reason: str
    incident_id: str | None


@dataclass(frozen=True, slots=True)
class JournalIncident:
    id: str
    key: str
    device_id: str
    state: str
    callout_id: int | None


@dataclass
class SoakStats:
    cycles: int = 0
    presses: Counter[str] = field(default_factory=Counter)  # by kind
    kills: int = 0
    kill_phases: Counter[str] = field(default_factory=Counter)
    downs: int = 0
    closes: int = 0
    starts: int = 0
    elapsed_s: float = 0.0
    drain_s: float = 0.0
    drained: bool = False


# ---------------------------------------------------------------------------- the run


class CrashSoak:
    """Owns the sandbox, the simulated receiver and the daemon for one soak run."""

    def __init__(
        self,
        settings: SoakSettings,
        workdir: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="aura-soak-"))
        self.buttons = make_buttons(settings.buttons)
        self.by_hex = {b.hex: b for b in self.buttons}
        self.sent: list[SentPress] = []
        # callout -> monotonic ns just before our close call, and once it returned
        self.closing_ns: dict[int, int] = {}
        self.closed_ns: dict[int, int] = {}
        self.stats = SoakStats()
        self.daemon_errors: list[str] = []
        # Presses left attached to a callout that had already ended because the daemon
        # found a newer incident of the customer open (filled by ``check``).
        self.covered_late: list[str] = []
        # Re-raised presses that were stored while their old callout was still open
        # (filled by ``figures``): each gave the customer a callout of its own.
        self.reraised_while_open: list[str] = []
        self.runs: list[DaemonProcess] = []
        self.lifetimes: list[tuple[int, int | None]] = []  # per run: spawned, killed (ns)
        self._progress = progress or (lambda line: None)
        self._down = False
        self._counters: dict[int, int] = {}
        self._stack = contextlib.ExitStack()
        self.sandbox = AuraSandbox(
            SandboxSeed(customers={b.customer_id: True for b in self.buttons})
        )
        self.sim = SimulatedReceiver(
            link_path=self.workdir / "receiver",
            keys={b.device_id: b.key for b in self.buttons},
            resend_interval_s=settings.resend_interval_s,
        )
        self.journal_path = self.workdir / "journal.sqlite"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self._stack.enter_context(self.sandbox)
        self._stack.enter_context(self.sim)
        devices = self.workdir / "devices.toml"
        write_devices(devices, self.buttons)
        self.config = write_config(
            self.workdir,
            self.sandbox,
            devices,
            {b.hex: b.key.hex() for b in self.buttons},
            SOAK_AURA,
        )
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.runs:
                self.runs[-1].stop()
        finally:
            self._stack.close()

    @property
    def daemon(self) -> DaemonProcess:
        return self.runs[-1]

    def _start(self) -> None:
        def echo(line: str) -> None:
            self.daemon_errors.append(f"run {len(self.runs) - 1}: {line.strip()}")

        self.lifetimes.append((time.monotonic_ns(), None))
        daemon = DaemonProcess(self.config, echo=echo)
        self.runs.append(daemon)
        daemon.wait_event("ready", 20)
        self.stats.starts += 1

    def _kill(self) -> int:
        """SIGKILL the daemon (its whole process group); returns when, in monotonic ns."""
        killed_ns = time.monotonic_ns()
        self.daemon.kill()
        self.lifetimes[-1] = (self.lifetimes[-1][0], killed_ns)
        self.stats.kills += 1
        return killed_ns

    def _survived(self, at_ns: int, margin_ns: int) -> bool:
        """Whether the daemon run alive at ``at_ns`` lived at least ``margin_ns`` longer."""
        run = bisect.bisect_right(self.lifetimes, at_ns, key=lambda life: life[0]) - 1
        if run < 0:
            return False
        killed = self.lifetimes[run][1]
        return killed is None or killed - at_ns >= margin_ns

    def logs(self, last_runs: int = 4) -> str:
        """The daemon's log of its last few runs, for a failure report."""
        out = []
        first = max(0, len(self.runs) - last_runs)
        for n, daemon in enumerate(self.runs[first:], start=first):
            out.append(f"--- daemon run {n} (rc={daemon.proc.poll()}) ---")
            out.extend(daemon.history)
        return "\n".join(out)

    # ------------------------------------------------------------------ the scenario

    def run(self, drain_timeout_s: float = 30.0) -> None:
        started = time.monotonic()
        for n in range(self.settings.cycles):
            self.cycle(n)
            if n % 100 == 99:
                self._progress(
                    f"  {n + 1} cycles, {len(self.sent)} presses, "
                    f"{time.monotonic() - started:.0f} s"
                )
        drain_started = time.monotonic()
        self.stats.drained = self.drain(drain_timeout_s)
        self.stats.drain_s = time.monotonic() - drain_started
        self.stats.elapsed_s = time.monotonic() - started

    def cycle(self, n: int) -> None:
        s, rng = self.settings, self.rng
        self.stats.cycles += 1
        dwell = (
            rng.uniform(1.1, 1.5) if rng.random() < s.long_dwell_p else rng.uniform(0, s.dwell_s)
        )
        time.sleep(dwell)
        self._close_some()
        self._flap()
        presses = self._press(n)
        pressed_ns = time.monotonic_ns()
        window = rng.randrange(3)
        if window == 0:
            delay = rng.uniform(0.0, s.first_kill_s)
        elif window == 1:
            delay = rng.uniform(s.first_kill_s, s.early_kill_s)
        else:
            delay = rng.uniform(s.early_kill_s, s.max_kill_delay_s)
        # Somewhere inside the delay the uplink may flap and a callout may close, so both
        # can land during the create request or between the reply and its commit.
        middle = rng.uniform(0.0, delay)
        flap_mid = rng.random() < 0.3
        close_mid = rng.random() < 0.2
        _sleep_until(pressed_ns + int(middle * 1e9))
        if flap_mid:
            self._flap()
        if close_mid:
            self._close_some()
        _sleep_until(pressed_ns + int(delay * 1e9))
        killed_ns = self._kill()
        if presses:
            self.stats.kill_phases[self._phase(presses[0], killed_ns)] += 1
        if rng.random() < 0.3:
            self._flap()  # while the gateway is dead
        self._start()

    def _flap(self) -> None:
        rng = self.rng
        if self._down and rng.random() < self.settings.up_p:
            self.sandbox.clear_fault()
            self._down = False
        elif not self._down and rng.random() < self.settings.down_p:
            self.sandbox.set_fault("down")
            self._down = True
            self.stats.downs += 1

    def _close_some(self) -> None:
        """AURA's controller closes some callouts, only ones the gateway has recorded as
        raised (see ``check``: a callout closed before the gateway learnt that it exists
        is a case no gateway can tell apart from one that never reached AURA)."""
        known = self.active_incidents()  # read first: a cancel landing now shows below
        open_at_aura = {c["id"] for c in self.sandbox.callouts() if not c["closed"]}
        for incident in known:
            callout = incident.callout_id
            if incident.state != "open" or callout is None or callout not in open_at_aura:
                continue
            if self.rng.random() < self.settings.close_p:
                self.closing_ns[callout] = time.monotonic_ns()
                self.sandbox.close_callout(callout)
                self.closed_ns[callout] = time.monotonic_ns()
                self.stats.closes += 1

    def _press(self, cycle: int) -> list[SentPress]:
        s, rng = self.settings, self.rng
        active = {i.device_id for i in self.active_incidents()}
        out = []
        for button in rng.sample(self.buttons, rng.choice((1, 1, 1, 2, 2, 3))):
            gesture: Gesture = RAISE
            if rng.random() < s.inert_p:
                # Means nothing here: the inert gesture, or cancel with no open incident.
                gesture = CANCEL if button.can_cancel and rng.random() < 0.5 else INERT
            elif button.hex in active:
                roll = rng.random()
                if button.can_cancel and roll < s.cancel_p:
                    gesture = CANCEL
                elif roll >= s.cancel_p + s.again_p:
                    continue  # mostly leave it alone, so that other buttons raise
            seq = self.sim.press(button.device_id, gesture=gesture)
            # The simulator counts per device from 1; ours are the only presses it sends.
            counter = self._counters[button.device_id] = self._counters.get(button.device_id, 0) + 1
            press = SentPress(seq, button, counter, gesture, cycle)
            self.sent.append(press)
            self.stats.presses[press.kind] += 1
            out.append(press)
        return out

    def _phase(self, press: SentPress, killed_ns: int) -> str:
        """Where the kill landed, seen from the cycle's first press."""
        acked = self.sim.acked().get(press.seq)
        if acked is None or acked > killed_ns:
            return "before the ack"
        stored = f"event=press_stored device={press.button.hex} gesture={press.gesture}"
        incident = None
        for line in self.daemon.history:
            if stored in line and f" counter={press.counter} " in line:
                incident = _field(line, "incident")
        if incident is None:
            return "after the ack (not a raise)"
        sent_ns = self.sim.sent_ns(press.seq)
        path = f"/panic-api/v2/customers/{press.button.customer_id}/callouts"
        if not any(
            r.path == path and sent_ns <= r.arrived_ns <= killed_ns for r in self.sandbox.requests()
        ):
            return "after the ack, before the create arrived"
        if any(
            ("event=callout_raised" in line or "event=callout_reattached" in line)
            and f"incident={incident} " in line
            for line in self.daemon.history
        ):
            return "after the reply was stored"
        return "after the create arrived, before its reply was stored"

    # ------------------------------------------------------------------ drain

    def drain(self, timeout_s: float) -> bool:
        """Clear the fault, restart a last time, wait until nothing is left to do."""
        self.sandbox.clear_fault()
        self._down = False
        self._kill()
        self._start()
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline:
            quiet = quiet + 1 if not self.pending_work() else 0
            if quiet >= 3:  # three looks in a row, 0.2 s apart: nothing left in flight
                return True
            time.sleep(0.2)
        return False

    def pending_work(self) -> list[str]:
        """What still has to happen: unacked frames, queued alarms, incidents in flight,
        callouts AURA closed that the gateway has not noticed yet."""
        left = []
        if self.sim.unacked():
            left.append(f"unacked frames {self.sim.unacked()}")
        closed_at_aura = {c["id"] for c in self.sandbox.callouts() if c["closed"]}
        with journal_reader(self.journal_path) as db:
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            ).fetchone()
            if pending:
                left.append(f"{pending} outbox rows pending")
            rows = db.execute(
                "SELECT id, state, callout_id FROM incidents"
                " WHERE state IN ('pending', 'sending', 'open')"
            ).fetchall()
        for incident_id, state, callout in rows:
            if state != "open":
                left.append(f"incident {incident_id} {state}")
            elif callout in closed_at_aura:
                left.append(
                    f"incident {incident_id}: callout {callout} closed at AURA, not noticed"
                )
        return left

    # ------------------------------------------------------------------ journal

    def active_incidents(self) -> list[JournalIncident]:
        with journal_reader(self.journal_path) as db:
            rows = db.execute(
                "SELECT id, key, device_id, state, callout_id FROM incidents"
                " WHERE state IN ('pending', 'sending', 'open')"
            ).fetchall()
        return [JournalIncident(*row) for row in rows]

    def journal(self) -> tuple[list[JournalPress], list[JournalIncident], int]:
        with journal_reader(self.journal_path) as db:
            presses = [
                JournalPress(*row)
                for row in db.execute(
                    "SELECT id, device_id, gesture, counter, mono_ns, decision, reason,"
                    " incident_id FROM presses ORDER BY id"
                )
            ]
            incidents = [
                JournalIncident(*row)
                for row in db.execute("SELECT id, key, device_id, state, callout_id FROM incidents")
            ]
            (pending,) = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
            ).fetchone()
        return presses, incidents, int(pending)

    # ------------------------------------------------------------------ invariants

    def check(self) -> list[str]:
        """Every violation of the soak's invariants, as sentences; empty means all held.

        Sources of truth: ``sent`` (every press the simulated receiver sent, with its
        device counter and gesture; the simulator stamps its first write), the journal
        (``presses``, ``incidents``, ``outbox``) and the sandbox's record (every request
        with its arrival time and answer; every callout, closed or not). Monotonic clocks
        are one clock here: the daemon, the simulator and the sandbox share the machine.

        1. No press lost, none invented. Every frame the receiver sent was acked
           (``unacked()`` empty, none refused); every press the receiver sent is in the
           journal exactly once with its gesture (a resend after a kill is recognised, not
           stored again), and the journal holds no press the receiver did not send.
        2. Each press means what its gesture says: a raise gesture is decided ``raise`` or
           ``attach``; a cancel gesture ``cancel`` or ``ignore`` (no open incident left);
           the inert gesture ``ignore``.
        3. One incident per raising press, and each ends settled: every incident has
           exactly one ``raise`` press; none is left pending, sending, failed or
           delivered-untracked; an incident without a callout was cancelled locally and
           has a cancel press; the outbox has no pending row.
        4. One raising press, one callout: the incidents' callout ids are distinct, and
           they are exactly the callouts AURA holds. A callout no incident names is a
           duplicate (a second create for one press) or a phantom; a callout two incidents
           name is a second emergency merged into an open one.
        5. No second create while a callout is open. AURA keeps one open callout per
           customer and answers a create for a customer that has one with 200 and that
           callout. So a create answered 200 is how two callouts open at once for one
           customer shows: it must never happen (the gateway re-attaches after a crash by
           reading the active callouts, not by creating again).
        6. No callout without a press: each callout's incident's raising press came from
           a button of that customer and was sent before the create request arrived.
        7. Cancels: every cancel AURA saw is for a callout whose incident has a cancel
           press sent before it, and arrived after that callout's create; every cancel
           press on an incident with a callout reached AURA (2xx) and that callout is closed;
           a press made before a cancel press of its incident is never raised again as a
           callout of its own (the person withdrew it). A cancel press belongs to the
           incident its decision names (``reason``), whatever the journal did later.
        8. Nobody pressed into an ended callout without help: a press still attached to
           an incident was stored (daemon's stamp) before that incident's callout ended
           at AURA (closed by us, or cancelled), or a cancel press on its incident came
           after it (withdrawn with the incident); any other must have been raised again,
           or the daemon said why not (``press_reraise_failed``: a newer incident of the
           customer was already open) and that newer callout was created after it.
        9. A restart never raises a callout by itself (DESIGN.md §2.2 and §2.4): a press
           that was attached to an open callout, and that a later poll of that callout
           found still open (the poll arrived 100 ms or more after the press was stored,
           before the callout ended, and the daemon lived 0.5 s past it to read the
           answer), is part of that emergency: when the callout ends it is not raised
           again as a callout of its own. (The sandbox answers at once here, with no slow
           or stall fault, so a poll that arrived before the end was answered "open".)

        Checks 7 and 9 read the router's reasons ("... cancels inc-…", "pressed after
        callout N ended"); a raise or cancel whose reason has neither shape is reported as
        ``[0]``, so a reworded reason cannot turn those checks off in silence.

        Out of scope by construction: the controller here closes only callouts the journal
        already names. A callout closed at AURA before the gateway learnt it exists (kill
        or lost reply, then a close, then the restart) leaves the active-callouts read
        nothing to re-attach to, so any gateway would raise again.
        """
        v: list[str] = []

        def bad(invariant: int, text: str) -> None:
            v.append(f"[{invariant}] {text}")

        presses, incidents, pending = self.journal()
        callouts = {int(c["id"]): c for c in self.sandbox.callouts()}
        requests = self.sandbox.requests()
        sent_ns = {p.seq: self.sim.sent_ns(p.seq) for p in self.sent}

        # 1. frames and presses
        unacked, refused = self.sim.unacked(), self.sim.refused()
        if unacked:
            bad(1, f"frames never acked by the daemon: seqs {unacked}")
        if refused:
            bad(1, f"frames the daemon refused (NAK): {refused}")
        in_journal: dict[tuple[str, int], list[JournalPress]] = defaultdict(list)
        for jp in presses:
            in_journal[(jp.device_id, jp.counter)].append(jp)
        sent_keys = set()
        press_of: dict[int, SentPress] = {}  # journal press id -> the frame that carried it
        for sp in self.sent:
            key = (sp.button.hex, sp.counter)
            sent_keys.add(key)
            rows = in_journal.get(key, [])
            where = (
                f"press {sp.button.hex}#{sp.counter} {sp.gesture} (seq {sp.seq}, cycle {sp.cycle})"
            )
            if len(rows) != 1:
                bad(1, f"{where} is in the journal {len(rows)} times")
                continue
            row = rows[0]
            press_of[row.id] = sp
            if row.gesture != sp.gesture:
                bad(1, f"{where} is in the journal as {row.gesture}")
            # 2. decisions
            if row.decision not in ALLOWED_DECISIONS[sp.kind]:
                bad(2, f"{where} was decided {row.decision!r} ({row.reason})")
        for key, rows in in_journal.items():
            if key not in sent_keys:
                bad(1, f"journal press {key} ({len(rows)} rows) was never sent by the receiver")

        # 0. the reasons checks 7 and 9 rely on still read as expected
        for jp in presses:
            if jp.decision == "raise" and not (
                " raises for " in jp.reason or _repromoted_from(jp) is not None
            ):
                bad(0, f"press {jp.id}: raise reason {jp.reason!r} not understood by the soak")
            if jp.decision == "cancel" and not re.search(r"cancels inc-\w+", jp.reason):
                bad(0, f"press {jp.id}: cancel reason {jp.reason!r} not understood by the soak")

        # 3. incidents
        raises: dict[str, list[JournalPress]] = defaultdict(list)
        cancels: dict[str, list[JournalPress]] = defaultdict(list)
        for jp in presses:
            if jp.incident_id is None:
                continue
            if jp.decision == "raise":
                raises[jp.incident_id].append(jp)
            elif jp.decision == "cancel":
                # The incident the press cancelled, as the router decided it; the column may
                # have been rewritten since (a re-raise moves an incident's later presses).
                target = re.search(r"cancels (inc-\w+)", jp.reason)
                cancels[target.group(1) if target else jp.incident_id].append(jp)
        if pending:
            bad(3, f"{pending} alarm-class outbox rows still pending after the drain")
        owners: dict[int, list[JournalIncident]] = defaultdict(list)
        by_id = {i.id: i for i in incidents}
        for inc in incidents:
            if len(raises[inc.id]) != 1:
                bad(3, f"incident {inc.id} has {len(raises[inc.id])} raising presses")
            if inc.state not in ("open", "closed", "cancelled"):
                bad(3, f"incident {inc.id} ({inc.key}) ended {inc.state}")
            if inc.callout_id is not None:
                owners[inc.callout_id].append(inc)
            elif inc.state == "cancelled":
                if not cancels[inc.id]:
                    bad(3, f"incident {inc.id} cancelled locally without a cancel press")
            elif inc.state in ("open", "closed"):
                bad(3, f"incident {inc.id} is {inc.state} without a callout id")

        # 4. bijection incidents <-> callouts
        for callout_id, incs in owners.items():
            if len(incs) > 1:
                bad(
                    4,
                    f"callout {callout_id} is named by {len(incs)} incidents"
                    f" {[i.id for i in incs]}",
                )
            if callout_id not in callouts:
                bad(4, f"incident {incs[0].id} names callout {callout_id} that AURA never had")
        for callout_id, c in callouts.items():
            if callout_id not in owners:
                bad(
                    4,
                    f"callout {callout_id} (customer {c['customerId']}) belongs to no incident:"
                    " a duplicate or phantom callout",
                )

        # 5. creates
        creates = [r for r in requests if r.method == "POST" and CREATE_PATH.fullmatch(r.path)]
        created_ns: dict[int, int] = {}
        for r in creates:
            if r.status == 201 and r.callout_id is not None:
                created_ns[r.callout_id] = r.arrived_ns
            elif r.status == 200:
                bad(
                    5,
                    f"create for {r.path} answered 200 with open callout {r.callout_id}:"
                    " a second create while that customer's callout was open",
                )
            elif r.status == 400 and r.body is None:
                pass  # cut off mid-request (a kill or the fault): AURA never processed it
            elif r.status is not None and r.status >= 300:
                bad(5, f"create {r.path} answered {r.status}")

        # 6. no callout without a press before it
        for callout_id, incs in owners.items():
            c = callouts.get(callout_id)
            rows = raises[incs[0].id]
            if c is None or len(rows) != 1:
                continue  # reported above
            sp = press_of.get(rows[0].id)
            if sp is None:
                bad(6, f"callout {callout_id}: its raising press {rows[0].id} was never sent")
                continue
            if sp.button.customer_id != c["customerId"]:
                bad(
                    6,
                    f"callout {callout_id} is for customer {c['customerId']} but was raised by"
                    f" {sp.button.hex} of customer {sp.button.customer_id}",
                )
            created = created_ns.get(callout_id)
            if created is None:
                bad(6, f"callout {callout_id}: no create answered 201 for it")
            elif created <= sent_ns[sp.seq]:
                bad(
                    6,
                    f"callout {callout_id} was created {(sent_ns[sp.seq] - created) / 1e6:.1f} ms"
                    f" before its press {sp.button.hex}#{sp.counter} was sent",
                )

        # 7. cancels
        cancel_reqs = [r for r in requests if r.method == "POST" and CANCEL_PATH.fullmatch(r.path)]
        for r in cancel_reqs:
            callout_id = r.callout_id
            incs = owners.get(callout_id) if callout_id is not None else None
            if not incs:
                bad(7, f"AURA saw a cancel of callout {callout_id}, which no incident names")
                continue
            pressed = [
                sent_ns[press_of[jp.id].seq] for jp in cancels[incs[0].id] if jp.id in press_of
            ]
            if not pressed:
                bad(
                    7,
                    f"AURA saw a cancel of callout {callout_id} whose incident had no cancel press",
                )
            elif r.arrived_ns <= min(pressed):
                bad(7, f"cancel of callout {callout_id} arrived before the cancel press was sent")
            created = created_ns.get(callout_id)
            if created is not None and r.arrived_ns <= created:
                bad(7, f"cancel of callout {callout_id} arrived before its create")
        for incident_id, jps in cancels.items():
            inc = by_id.get(incident_id)
            if inc is None or inc.callout_id is None:
                continue
            first = min(
                (sent_ns[press_of[jp.id].seq] for jp in jps if jp.id in press_of), default=None
            )
            if first is None:
                continue  # a cancel press the receiver never sent: reported under 1
            if not any(
                r.status == 200 and r.arrived_ns > first
                for r in cancel_reqs
                if r.path.endswith(f"/callouts/{inc.callout_id}/cancel")
            ):
                bad(
                    7,
                    f"cancel press on {incident_id} never reached AURA (callout {inc.callout_id})",
                )
            c = callouts.get(inc.callout_id)
            if c is not None and not c["closed"]:
                bad(7, f"callout {inc.callout_id} is still open after its cancel press")
        for jp in presses:
            old = _repromoted_from(jp)
            owner = owners.get(old, []) if old is not None else []
            withdrawn = [c for c in cancels[owner[0].id] if c.mono_ns > jp.mono_ns] if owner else []
            if withdrawn:
                bad(
                    7,
                    f"press {jp.device_id}#{jp.counter} (journal id {jp.id}) was raised again as"
                    f" {jp.incident_id} after callout {old} ended, although the cancel press"
                    f" #{withdrawn[0].counter} after it had withdrawn that incident:"
                    " a phantom callout",
                )

        # 8. attached presses
        ended_ns = self._ended_ns(requests)
        created_for: dict[int, list[int]] = defaultdict(list)  # customer -> create times
        for callout_id, created in created_ns.items():
            if callout_id in callouts:
                created_for[int(callouts[callout_id]["customerId"])].append(created)
        declined = {  # presses the daemon said it did not raise again, and why
            _field(line, "press"): line
            for run in self.runs
            for line in run.history
            if "event=press_reraise_failed" in line
        }
        self.covered_late = []
        for jp in presses:
            if jp.decision != "attach" or jp.incident_id is None:
                continue
            inc = by_id.get(jp.incident_id)
            if inc is None or inc.callout_id is None:
                continue  # withdrawn with its incident before any callout
            ended = ended_ns.get(inc.callout_id)
            if ended is None or jp.mono_ns < ended:
                continue
            if any(c.mono_ns > jp.mono_ns for c in cancels[inc.id]):
                continue  # the person pressed cancel after it: withdrawn with the incident
            what = (
                f"press {jp.device_id}#{jp.counter} (journal id {jp.id}) stayed attached to"
                f" callout {inc.callout_id} of {inc.id} ({inc.state}) although it was stored"
                f" {(jp.mono_ns - ended) / 1e6:.0f} ms after that callout ended"
            )
            button = self.by_hex.get(jp.device_id)
            later = [t for t in created_for[button.customer_id] if t > jp.mono_ns] if button else []
            if str(jp.id) in declined and later:
                # The daemon found a newer incident of the customer open, raised by a press
                # after this one: that callout covers it.
                self.covered_late.append(f"{what}; {declined[str(jp.id)].strip()}")
            else:
                bad(8, f"{what}, and was never raised again: a lost press")
        # 9. a restart does not turn a press AURA had as part of an open callout into a new one
        began = self._ended_ns(requests, early=True)
        seen_open: dict[int, list[int]] = defaultdict(list)  # callout -> polls read as open
        for r in requests:
            polled = (r.method == "GET" and GET_PATH.fullmatch(r.path)) or (
                r.method == "POST" and LOCATION_RETURN_PATH.fullmatch(r.path)
            )
            if not polled or r.status != 200 or r.callout_id is None:
                continue
            closed = began.get(r.callout_id)
            if (closed is None or r.arrived_ns < closed) and self._survived(
                r.arrived_ns, SEEN_MARGIN_NS
            ):
                seen_open[r.callout_id].append(r.arrived_ns)
        for jp in presses:
            old = _repromoted_from(jp)
            if old is None:
                continue
            later = [a for a in seen_open[old] if a > jp.mono_ns + PRESS_MARGIN_NS]
            if later:
                bad(
                    9,
                    f"press {jp.device_id}#{jp.counter} (journal id {jp.id}) was raised again as"
                    f" {jp.incident_id} after callout {old} ended, although a poll"
                    f" {(min(later) - jp.mono_ns) / 1e6:.0f} ms after it had found that callout"
                    " open: a second callout for one emergency",
                )
        return v

    def _ended_ns(self, requests: list[RecordedRequest], *, early: bool = False) -> dict[int, int]:
        """callout -> when it closed at AURA: once our close returned (``early``: just
        before we called it), or when its cancel arrived, whichever came first."""
        ended = dict(self.closing_ns if early else self.closed_ns)
        for r in requests:
            if r.method == "POST" and CANCEL_PATH.fullmatch(r.path) and r.status == 200:
                assert r.callout_id is not None
                ended[r.callout_id] = min(ended.get(r.callout_id, r.arrived_ns), r.arrived_ns)
        return ended

    # ------------------------------------------------------------------ figures

    def figures(self) -> dict[str, Any]:
        """Counts for the report: what the run did and what came of it."""
        presses, incidents, _ = self.journal()
        requests = self.sandbox.requests()
        decisions = Counter(p.decision for p in presses)
        repromoted = [p for p in presses if p.reason.startswith(REPROMOTED)]
        cancelled_at_aura = sum(1 for c in self.sandbox.callouts() if c["cancelledWith"])
        # A re-raised press stamped while its old callout was still open: the follower had
        # not polled since it attached (or the daemon had restarted, and then every press
        # after the incident's own counts), so it gets a callout of its own.
        ended = self._ended_ns(requests)
        notes = {int(c["id"]): c["events"] for c in self.sandbox.callouts()}
        self.reraised_while_open = []
        for p in repromoted:
            old = re.search(r"callout (\d+) ended", p.reason)
            old_id = int(old.group(1)) if old else None
            closed = ended.get(old_id) if old_id is not None else None
            if closed is None or p.mono_ns >= closed:
                continue
            told = sum(1 for e in notes.get(old_id or 0, []) if "pressed again" in str(e))
            self.reraised_while_open.append(
                f"press {p.device_id}#{p.counter} (journal id {p.id}) stored"
                f" {(closed - p.mono_ns) / 1e6:.0f} ms before callout {old_id} closed"
                f" ({told} 'pressed again' note(s) on that callout), re-raised as {p.incident_id}"
            )
        while_open = len(self.reraised_while_open)
        return {
            "presses": sum(self.stats.presses.values()),
            "presses_by_kind": dict(self.stats.presses),
            "decisions": dict(decisions),
            "incidents": len(incidents),
            "local_cancels": sum(
                1 for i in incidents if i.state == "cancelled" and i.callout_id is None
            ),
            "callouts": len(self.sandbox.callouts()),
            "creates": sum(
                1 for r in requests if r.method == "POST" and CREATE_PATH.fullmatch(r.path)
            ),
            "reattached": sum(
                1 for run in self.runs for line in run.history if "event=callout_reattached" in line
            ),
            "cancelled_at_aura": cancelled_at_aura,
            "reraised": len(repromoted),
            "reraised_while_open": while_open,
            "requests": len(requests),
        }


def _repromoted_from(press: JournalPress) -> int | None:
    """The callout a re-raised press was attached to, from the router's reason."""
    found = re.match(rf"{REPROMOTED} (\d+) ended", press.reason)
    return int(found.group(1)) if press.decision == "raise" and found else None


def _field(line: str, name: str) -> str | None:
    match = re.search(rf"\b{name}=(\S+)", line)
    return match.group(1) if match else None


def _sleep_until(deadline_ns: int) -> None:
    left = (deadline_ns - time.monotonic_ns()) / 1e9
    if left > 0:
        time.sleep(left)

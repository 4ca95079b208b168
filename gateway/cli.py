"""``aura-gateway``: the daemon and the technician's tools."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.paths import RuntimePaths

DEFAULT_CONFIG = "/etc/aura-gateway/gateway.toml"


def _setup_logging(level: str) -> None:
    # journald stamps every line itself, so no timestamp here.
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Under systemd: journald's native protocol with DEVICE=, INCIDENT=... fields, stderr
    # staying as the fallback (gateway/journald.py).
    from gateway.journald import use_journald_if_connected

    use_journald_if_connected()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the technician's read commands start without asyncio,
    # pydantic, httpx or paho (a status call answers in tens of milliseconds).
    import asyncio

    from gateway.app import run_daemon
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _setup_logging("INFO")
        logging.getLogger("gateway").critical("event=config_refused\n%s", exc)
        print(
            f"aura-gateway: refusing to start, the configuration has errors:\n{exc}",
            file=sys.stderr,
        )
        return 1
    _setup_logging(os.environ.get("AURA_GATEWAY_LOG_LEVEL", config.gateway.gateway.log_level))
    for warning in config.warnings:
        logging.getLogger("gateway").warning("event=config_warning %s", warning)
    return asyncio.run(run_daemon(config))


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config, summarize

    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing was changed.", file=sys.stderr)
        return 1
    print(summarize(config))
    return 0


def _runtime_paths(args: argparse.Namespace) -> RuntimePaths | None:
    """The daemon's socket, status file and journal, from gateway.toml alone (no pydantic,
    no credentials.toml: a member of the service's group may run the read commands)."""
    from gateway.paths import PathsError, runtime_paths

    try:
        return runtime_paths(args.config)
    except PathsError as exc:
        if getattr(args, "json", False):
            print(_dumps({"source": "none", "running": False, "error": str(exc)}))
        print(f"cannot read the configuration: {exc}", file=sys.stderr)
        return None


def _dumps(data: object) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True)


def cmd_status(args: argparse.Namespace) -> int:
    """Asks the running daemon over its control socket (2 s at most); without an answer,
    shows the status file it last wrote and says so. Exit 0: the daemon answered; 3: it
    is not running; 4: it runs but could not be asked (gateway/readout.py)."""
    from gateway.readout import headline, read_any_status, status_exit

    paths = _runtime_paths(args)
    if paths is None:
        return 1
    data = read_any_status(paths)
    if args.json:
        print(_dumps(data))
        if data["source"] != "daemon":
            print(f"aura-gateway: {headline(data)}", file=sys.stderr)
    else:
        print(format_status(data) if data["source"] != "none" else headline(data))
    return status_exit(data)


def cmd_queue(args: argparse.Namespace) -> int:
    """What waits for AURA and why: the daemon's view, else the journal read-only. Exit
    codes as for status."""
    from gateway.queue_view import listing
    from gateway.readout import queue_exit, queue_state_line, read_any_queue

    paths = _runtime_paths(args)
    if paths is None:
        return 1
    data = read_any_queue(paths)
    state = queue_state_line(data)
    if args.json:
        print(_dumps(data))
        if state:
            print(f"aura-gateway: {state}", file=sys.stderr)
    else:
        print(listing(data, state))
    return queue_exit(data)


def cmd_devices(args: argparse.Namespace) -> int:
    """The registry and each button's live state, from the running daemon, else from the
    config files and the last status file; exits 0 without a daemon too (the listing says
    so), so scripts can always read it."""
    from gateway.devices_view import listing
    from gateway.readout import ConfigUnreadable, read_any_devices

    paths = _runtime_paths(args)
    if paths is None:
        return 1
    try:
        data = read_any_devices(paths, args.config)
    except ConfigUnreadable as exc:
        if args.json:
            print(_dumps({"source": "none", "running": False, "error": str(exc)}))
        print(f"cannot read the configuration:\n{exc}", file=sys.stderr)
        return 1
    print(_dumps(data) if args.json else listing(data))
    if args.json and data["source"] != "daemon":
        print(f"aura-gateway: {data['state']}", file=sys.stderr)
    return 0


def format_status(data: dict) -> str:  # type: ignore[type-arg]
    """The human view of the daemon's status (or its last status file), for a technician at
    the box; the first line says which (gateway/readout.py)."""
    from gateway.readout import daemon_line, headline

    lines = [
        headline(data),
        *filter(None, [daemon_line(data)]),
        f"uplink: {data['uplink']['state']}"
        + (f" ({data['uplink']['error']})" if data["uplink"].get("error") else ""),
        f"alarms waiting: {data['pending_alarms']}"
        + (" (see: aura-gateway queue)" if data["pending_alarms"] else ""),
    ]
    events = data.get("callout_events", {})
    for incident, stage in sorted(data.get("open_callouts", {}).items()):
        seen = events.get(incident)
        said = f", {seen['count']} events, last: {seen['last']!r}" if seen else ""
        lines.append(f"open callout: {incident} stage {stage}{said}")
    for incident, reason in sorted(data.get("undeliverable", {}).items()):
        lines.append(f"UNDELIVERABLE: {incident}: {reason}")
    for name, h in sorted(data.get("inputs", {}).items()):
        c = h.get("counters", {})
        lines.append(
            f"input {name}: {h['state']}, last frame {h['last_frame_age_s']} s ago, "
            f"frames ok {c.get('frames_ok', 0)}, bad {h['bad_frames']}, "
            f"reopens {c.get('reopens', 0)}"
        )
    journal = data.get("journal") or {}
    if journal:
        lines.append(f"journal: {journal.get('fill_pct')}% of its cap in use")
    counters = data.get("counters", {})
    if counters:
        lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    return "\n".join(lines)


def cmd_incidents(args: argparse.Namespace) -> int:
    from gateway.control import call
    from gateway.incidents_view import describe, for_list, grouped_listing, is_open, read_incidents

    paths = _runtime_paths(args)  # the journal and the socket: no full config check here
    if paths is None:
        return 1
    action = args.action or "list"
    if action in ("list", "show"):
        try:
            rows = read_incidents(paths.journal, args.id if action == "show" else None)
        except FileNotFoundError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        if action == "show" and not rows:
            print(f"no incident {args.id}", file=sys.stderr)
            return 1
        ended = sum(1 for r in rows if not is_open(r))
        if action == "list":
            # Open (and undeliverable, until acknowledged) first, then the recent ones.
            rows = for_list(rows, args.limit)
        if args.json:
            print(_dumps(rows))
        else:
            print(describe(rows[0]) if action == "show" else grouped_listing(rows, ended))
        return 0
    request: dict[str, object] = {"incident": args.id}
    if action == "cancel":
        request.update(
            safe_code=args.safe_code, exception_reason_id=args.reason_id, notes=args.notes
        )
    elif action == "rate":
        request.update(score=args.score, comment=" ".join(args.comment) or None)
    try:
        answer = call(paths.control, action, **request)
    except OSError as exc:
        print(f"cannot reach the daemon at {paths.control}: {exc}", file=sys.stderr)
        return 3
    if not answer.get("ok"):
        print(f"refused: {answer.get('error')}", file=sys.stderr)
        return 1
    print(answer.get("result", "done"))
    return 0


def cmd_walk_test(args: argparse.Namespace) -> int:
    import json

    from gateway.control import call
    from gateway.walk_test import format_report

    paths = _runtime_paths(args)  # the socket only: the daemon checks what it is asked
    if paths is None:
        return 1
    request: dict[str, object] = {}
    if args.action == "start":
        request = {"device": args.device, "minutes": args.minutes}
    try:
        answer = call(paths.control, f"walk_test_{args.action}", **request)
    except OSError as exc:
        print(f"cannot reach the daemon at {paths.control}: {exc}", file=sys.stderr)
        return 3
    if not answer.get("ok"):
        print(f"refused: {answer.get('error')}", file=sys.stderr)
        return 1
    if args.action == "report":
        report = answer["report"]
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report))
    else:
        print(answer.get("result", "done"))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """`audit verify`: exit 0 when every record checks out, 1 where the chain breaks (the
    file, line and seq) or when there is nothing to read. `audit show`: the newest records
    as written. Reads the files only; gateway.toml alone names the folder."""
    from pathlib import Path

    from gateway.audit import AuditPathError, audit_dir, describe, read_records, verify

    if args.dir:
        directory = Path(args.dir)
    else:
        try:
            directory = audit_dir(args.config)
        except AuditPathError as exc:
            print(f"cannot read the configuration: {exc}", file=sys.stderr)
            return 1
    if args.action == "verify":
        result = verify(directory)
        print(_dumps(result.to_dict()) if args.json else result.summary())
        return 0 if result.ok else 1
    try:
        records = read_records(directory, last=args.last)
    except OSError as exc:
        print(f"cannot read {directory}: {exc}", file=sys.stderr)
        return 1
    print(_dumps(records) if args.json else "\n".join(describe(r) for r in records))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from gateway.sandbox import run_sandbox

    return run_sandbox(args.host, args.port, args.control_port)


def cmd_simulate(args: argparse.Namespace) -> int:
    from firmware_bridge.sim import main as sim_main

    return sim_main(args.sim_args)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(timeout_s=args.timeout)


def cmd_install(args: argparse.Namespace) -> int:
    from gateway.install import main as install_main

    return install_main(args.prefix, args.root, args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aura-gateway",
        description="Panic-button gateway: presses in, AURA callouts out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"gateway.toml (default {DEFAULT_CONFIG})"
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate the config files and summarise them")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG, help="gateway.toml")
    check.set_defaults(func=cmd_check_config)

    status = sub.add_parser(
        "status",
        help="what the running daemon knows, in plain words (exit 3: not running, "
        "4: running but not answering)",
    )
    status.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(func=cmd_status)

    devices = sub.add_parser(
        "devices", help="every configured button: last seen, battery, signal, silent"
    )
    devices.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    devices.add_argument("--json", action="store_true", help="machine-readable")
    devices.set_defaults(func=cmd_devices)

    queue = sub.add_parser("queue", help="what waits for AURA (raises, cancels, notes) and why")
    queue.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    queue.add_argument("--json", action="store_true", help="machine-readable")
    queue.set_defaults(func=cmd_queue)

    incidents = sub.add_parser("incidents", help="open and recent incidents; cancel, rate, ack")
    incidents.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    incidents.add_argument("--json", action="store_true", help="machine-readable")
    limit_help = "list at most N ended incidents (default 20; 0: all); open ones always"
    incidents.add_argument("--limit", type=int, default=20, metavar="N", help=limit_help)
    acts = incidents.add_subparsers(dest="action")
    # --config and --json may also come after the action, where technicians type them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="gateway.toml")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    listed = acts.add_parser(
        "list", help="open incidents, then recent ones, with their AURA stage", parents=[common]
    )
    listed.add_argument(
        "--limit", type=int, default=argparse.SUPPRESS, metavar="N", help=limit_help
    )
    show = acts.add_parser(
        "show", help="one incident: presses, AURA stage, report and map", parents=[common]
    )
    show.add_argument("id")
    cancel = acts.add_parser(
        "cancel", help="withdraw an incident (integration cancel)", parents=[common]
    )
    cancel.add_argument("id")
    cancel.add_argument("--reason-id", type=int, help="AURA exception reason id")
    cancel.add_argument("--notes", help="why, for the control room")
    cancel.add_argument(
        "--safe-code", help="the 4 digits the customer gave; never guess them (duress detection)"
    )
    rate = acts.add_parser(
        "rate", help="rate AURA's response to a closed callout", parents=[common]
    )
    rate.add_argument("id")
    rate.add_argument("score", type=int, choices=range(1, 6), metavar="SCORE(1-5)")
    rate.add_argument("comment", nargs="*")
    ack = acts.add_parser(
        "ack", help="acknowledge an undeliverable alarm you have handled", parents=[common]
    )
    ack.add_argument("id")
    incidents.set_defaults(func=cmd_incidents, action=None, id=None)

    walk = sub.add_parser("walk-test", help="test buttons without raising callouts; ends by itself")
    walk_acts = walk.add_subparsers(dest="action", required=True)
    walk_common = argparse.ArgumentParser(add_help=False)
    walk_common.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    start = walk_acts.add_parser(
        "start", help="presses are recorded, not raised", parents=[walk_common]
    )
    start.add_argument("--device", help="only this button (default: every button)")
    start.add_argument("--minutes", type=float, default=30.0, help="ends after (default 30)")
    walk_acts.add_parser("stop", help="end the walk test now", parents=[walk_common])
    report = walk_acts.add_parser(
        "report", help="what each button did during the walk test", parents=[walk_common]
    )
    report.add_argument("--json", action="store_true", help="machine-readable")
    walk.set_defaults(func=cmd_walk_test, json=False)

    sandbox = sub.add_parser("sandbox", help="run the local stand-in of AURA (loopback only)")
    sandbox.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"])
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--control-port", type=int, default=8766)
    sandbox.set_defaults(func=cmd_sandbox)

    simulate = sub.add_parser(
        "simulate", help="run the simulated receiver on a pty (see --help of firmware_bridge.sim)"
    )
    simulate.add_argument("sim_args", nargs=argparse.REMAINDER)
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="sandbox + simulated receiver + the real daemon, one press")
    demo.add_argument("--timeout", type=float, default=50.0)
    demo.set_defaults(func=cmd_demo)

    install = sub.add_parser(
        "install",
        help="as root, from a checkout: service user, /etc/aura-gateway, venv, systemd unit, "
        "udev rules, tmpfiles entry (gateway/install.py)",
    )
    install.add_argument(
        "--prefix", default="/opt/aura-gateway", help="where the venv goes (default %(default)s)"
    )
    install.add_argument(
        "--root",
        default="/",
        help="install the files into this folder as if it were / (an image); runs no command",
    )
    install.add_argument("--dry-run", action="store_true", help="print what it would do")
    install.set_defaults(func=cmd_install)

    audit = sub.add_parser("audit", help="the tamper-evident audit trail: verify it, show it")
    audit_acts = audit.add_subparsers(dest="action", required=True)
    audit_common = argparse.ArgumentParser(add_help=False)
    audit_common.add_argument("--config", default=DEFAULT_CONFIG, help="gateway.toml")
    audit_common.add_argument("--dir", help="verify this folder (a copy) instead")
    audit_common.add_argument("--json", action="store_true", help="machine-readable")
    audit_acts.add_parser(
        "verify", help="check every hash and link; exit 1 where it breaks", parents=[audit_common]
    )
    audit_show = audit_acts.add_parser("show", help="the newest records", parents=[audit_common])
    audit_show.add_argument("--last", type=int, default=20, help="how many (default 20)")
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

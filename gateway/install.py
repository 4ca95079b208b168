"""``aura-gateway install``: set a Debian / Raspberry Pi OS machine up to run the gateway.

Run as root from a checkout (its ``systemd/`` and ``config/`` folders are what gets
installed); it needs only the standard library, so the system Python will do::

    sudo python3 -m gateway install [--prefix /opt/aura-gateway] [--dry-run]

What it does, in order (``--dry-run`` prints the same list and changes nothing):

1. the ``gpio`` group if the machine has none (plain Debian; Raspberry Pi OS has it), and
   the system user ``aura-gateway`` (its own group, no home, no login shell);
2. ``/etc/aura-gateway`` with the example ``gateway.toml``, ``devices.toml`` and
   ``credentials.toml`` (root's, mode 0600: the unit hands the service a copy through
   ``LoadCredential=``). A file that is already there is never touched;
3. ``/var/lib/aura-gateway`` (the journal; mode 0700, the service user's);
4. the software: a virtualenv in ``<prefix>/venv`` with this checkout installed into it
   (``pip install``, so the machine needs the package index once), and the README at
   ``<prefix>/README.md`` (the unit's Documentation=);
5. the unit (``/etc/systemd/system/aura-gateway.service``, ExecStart under ``<prefix>``),
   the udev rules (receiver, LEDs, GPIO; a rule file already there is kept, it may hold
   the receiver's USB ids) and the tmpfiles entry (``/etc/tmpfiles.d/aura-gateway.conf``);
6. ``systemd-tmpfiles --create``, ``udevadm control --reload`` + ``trigger``,
   ``systemctl daemon-reload``; then it prints the next steps. It does not start the
   service: the config has to be filled in first.

``--root DIR`` installs the files into DIR as if it were ``/`` (an image being prepared,
and the tests) and runs none of the commands (user, venv, systemctl), listing them instead.
Running it again is safe: it updates the software, the unit and the rules it owns, and
keeps the configuration.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

USER = "aura-gateway"
DEFAULT_PREFIX = Path("/opt/aura-gateway")
UNIT_PREFIX = "/opt/aura-gateway"  # the path the shipped unit names
CONFIG_DIR = Path("/etc/aura-gateway")
STATE_DIR = Path("/var/lib/aura-gateway")
UNIT_PATH = Path("/etc/systemd/system/aura-gateway.service")
UDEV_DIR = Path("/etc/udev/rules.d")
TMPFILES_PATH = Path("/etc/tmpfiles.d/aura-gateway.conf")
NOLOGIN = "/usr/sbin/nologin"


class InstallError(Exception):
    pass


def checkout() -> Path:
    """The project folder this package runs from (a checkout, with systemd/ and config/)."""
    return Path(__file__).resolve().parents[1]


@dataclass
class Step:
    """One thing to do: ``what`` in words; ``run`` does it (None: nothing left to do)."""

    what: str
    run: Callable[[], None] | None = None
    command: list[str] | None = None  # a command: not run under --root
    note: str = ""


@dataclass
class Installer:
    prefix: Path = DEFAULT_PREFIX
    root: Path = Path("/")
    source: Path = field(default_factory=checkout)
    python: str = "python3"
    steps: list[Step] = field(default_factory=list)

    # ------------------------------------------------------------------ paths

    def at(self, path: Path) -> Path:
        """``path`` inside the install root."""
        return self.root / path.relative_to("/")

    @property
    def sandboxed(self) -> bool:
        return self.root.resolve() != Path("/")

    @property
    def executable(self) -> Path:
        return self.prefix / "venv" / "bin" / "aura-gateway"

    def _source_file(self, *parts: str) -> Path:
        path = self.source.joinpath(*parts)
        if not path.is_file():
            raise InstallError(
                f"{path} not found: run the installer from a checkout of aura-gateway "
                "(its systemd/ and config/ folders are what gets installed)"
            )
        return path

    # ------------------------------------------------------------------ the plan

    def plan(self) -> list[Step]:
        self.steps = []
        self._groups_and_user()
        self._directory(CONFIG_DIR, 0o755, None)
        for name, example, mode in (
            ("gateway.toml", "gateway.example.toml", 0o644),
            ("devices.toml", "devices.example.toml", 0o644),
            ("credentials.toml", "credentials.example.toml", 0o600),
        ):
            self._file(CONFIG_DIR / name, self._source_file("config", example).read_text(), mode)
        self._directory(STATE_DIR, 0o700, USER)
        self._software()
        self._file(UNIT_PATH, self.unit_text(), 0o644, replace=True)
        for rules, replace in (
            ("99-aura-gateway-receiver.rules", False),  # holds the receiver's USB ids
            ("99-aura-gateway-leds.rules", False),  # may name other LEDs
            ("99-aura-gateway-gpio.rules", True),
        ):
            text = self._source_file("systemd", rules).read_text()
            self._file(UDEV_DIR / rules, text, 0o644, replace=replace)
        tmpfiles = self._source_file("systemd", "aura-gateway.tmpfiles").read_text()
        self._file(TMPFILES_PATH, tmpfiles, 0o644, replace=True)
        self._command(["systemd-tmpfiles", "--create", TMPFILES_PATH.name])
        self._command(["udevadm", "control", "--reload"])
        subsystems = ("tty", "gpio", "leds")
        self._command(
            ["udevadm", "trigger", "--action=add", *(f"--subsystem-match={s}" for s in subsystems)]
        )
        self._command(["systemctl", "daemon-reload"])
        return self.steps

    def unit_text(self) -> str:
        text = self._source_file("systemd", "aura-gateway.service").read_text()
        return text.replace(UNIT_PREFIX + "/", str(self.prefix).rstrip("/") + "/")

    def _groups_and_user(self) -> None:
        if not _group_exists("gpio"):
            self._command(["groupadd", "--system", "gpio"], "the unit's SupplementaryGroups=")
        if not _user_exists(USER):
            options = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
            comment = "aura-gateway panic-button gateway"
            self._command(["useradd", *options, "--shell", NOLOGIN, "--comment", comment, USER])

    def _software(self) -> None:
        venv = self.prefix / "venv"
        if not self.at(venv / "bin" / "python").exists():
            self._command([self.python, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        self._command([*pip, "--upgrade", str(self.source)], "the software")
        readme = self._source_file("README.md").read_text()
        self._file(self.prefix / "README.md", readme, 0o644, replace=True)

    # ------------------------------------------------------------------ step kinds

    def _command(self, argv: list[str], note: str = "") -> None:
        def run() -> None:
            try:
                subprocess.run(argv, check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise InstallError(f"{' '.join(argv)} failed: {exc}") from exc

        self.steps.append(Step("run " + " ".join(argv), run, command=argv, note=note))

    def _directory(self, path: Path, mode: int, owner: str | None) -> None:
        target = self.at(path)
        who = owner or "root"
        if target.is_dir():
            self.steps.append(Step(f"keep {path}/ (exists)"))
            return

        def run() -> None:
            target.mkdir(mode=mode, parents=True, exist_ok=True)
            target.chmod(mode)
            self._chown(target, owner)

        self.steps.append(Step(f"create {path}/ (mode {mode:04o}, {who})", run))

    def _file(self, path: Path, text: str, mode: int, *, replace: bool = False) -> None:
        target = self.at(path)
        if target.exists():
            if not replace:
                self.steps.append(Step(f"keep {path} (exists; never overwritten)"))
                return
            if target.read_text() == text and (target.stat().st_mode & 0o777) == mode:
                self.steps.append(Step(f"keep {path} (up to date)"))
                return
        verb = "update" if target.exists() else "write"

        def run() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.install")
            # Created with its final mode: a secret is never readable for a moment.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, target)

        self.steps.append(Step(f"{verb} {path} (mode {mode:04o}, root)", run))

    def _chown(self, target: Path, owner: str | None) -> None:
        if owner is None or self.sandboxed:
            return  # under --root the user is the image's, not this machine's
        try:
            entry = pwd.getpwnam(owner)
        except KeyError as exc:
            raise InstallError(f"user {owner} does not exist") from exc
        os.chown(target, entry.pw_uid, entry.pw_gid)

    # ------------------------------------------------------------------ doing it

    def execute(self, out: Callable[[str], None] = print, *, dry_run: bool = False) -> None:
        steps = self.plan()
        if not dry_run and not self.sandboxed and os.geteuid() != 0:
            raise InstallError("run as root (sudo aura-gateway install ...), or use --dry-run")
        for step in steps:
            if step.run is None:
                out(f"  {step.what}")
            elif dry_run:
                out(f"  would {step.what}")
            elif step.command is not None and self.sandboxed:
                out(f"  skipped under --root: {step.what}")
            else:
                step.run()
                out(f"  {step.what}: done")
        out(next_steps(self, dry_run=dry_run))


def next_steps(installer: Installer, *, dry_run: bool) -> str:
    head = "Nothing was changed (--dry-run). After the install:" if dry_run else "Next steps:"
    return f"""
{head}
  1. sudoedit /etc/aura-gateway/credentials.toml   # AURA client id and secret, button keys
     sudoedit /etc/aura-gateway/gateway.toml /etc/aura-gateway/devices.toml
  2. sudo {installer.executable} check-config /etc/aura-gateway/gateway.toml
  3. the receiver's USB ids in /etc/udev/rules.d/99-aura-gateway-receiver.rules
     (or a /dev/serial/by-id/... port in gateway.toml), then replug it
  4. sudo systemctl enable --now aura-gateway
     systemctl status aura-gateway          # "online, 0 queued, N devices, ..."
     journalctl -u aura-gateway -f
  After editing devices.toml: sudo systemctl reload aura-gateway (a new button key in
  credentials.toml, or gateway.toml changes: sudo systemctl restart aura-gateway)."""


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def main(prefix: str, root: str, dry_run: bool, out: Callable[[str], None] = print) -> int:
    installer = Installer(prefix=Path(prefix), root=Path(root))
    if not installer.prefix.is_absolute():
        print(f"--prefix must be an absolute path, not {prefix}", file=sys.stderr)
        return 2
    try:
        installer.execute(out, dry_run=dry_run)
    except InstallError as exc:
        print(f"aura-gateway install: {exc}", file=sys.stderr)
        return 1
    return 0

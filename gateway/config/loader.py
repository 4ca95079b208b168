"""Load gateway.toml, devices.toml and credentials.toml, and refuse them with every problem.

Validation runs in two passes, schema then cross-references, over all three files, and
keeps going after a file has errors wherever the next file can still be found: the
technician gets the whole list in one run. ``ConfigError`` is always raised outside an
``except`` block, so no pydantic error (whose input values may hold the AURA secret) is
chained to it and shown in a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from gateway.config.checks import DeviceEntry, check_device_keys, check_devices, check_gateway
from gateway.config.explain import explain
from gateway.config.locate import TomlLocator
from gateway.config.models import (
    CredentialsFile,
    Device,
    DevicesFile,
    DeviceType,
    GatewayFile,
    GatewayPosition,
    GatewaySection,
)
from gateway.config.problems import ConfigError, ConfigProblem, sort_problems

logger = logging.getLogger(__name__)
T = TypeVar("T")

_DEVICE: TypeAdapter[Device] = TypeAdapter(Device)
_DEVICE_TYPE = TypeAdapter(DeviceType)
_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
# tomllib messages that quote a character of the input: cut before the quote for secrets.
_QUOTES_INPUT = ("Found invalid character", "Illegal character")


@dataclass(frozen=True)
class Config:
    """The three files, validated and cross-checked; paths are absolute.

    The path settings inside ``gateway.gateway`` are replaced by their resolved form too, so
    both spellings agree. For a reload, ``dataclasses.replace(config, devices=...)`` with the
    result of :func:`load_devices` rebuilds the id index.
    """

    path: Path
    gateway: GatewayFile
    devices: DevicesFile
    credentials: CredentialsFile
    devices_path: Path
    credentials_path: Path
    journal_path: Path
    status_path: Path = Path("/run/aura-gateway/status.json")
    control_path: Path = Path("/run/aura-gateway/control.sock")
    warnings: list[ConfigProblem] = field(default_factory=list)
    _by_id: dict[str, Device] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: the engine looks a device up on every press.
        object.__setattr__(self, "_by_id", {d.id: d for d in self.devices.devices})

    def device(self, device_id: str) -> Device | None:
        """The device with this id, ignoring case, or None."""
        return self._by_id.get(device_id.lower())

    def device_type(self, device: Device) -> DeviceType:
        """The type of a configured device; it exists, the loader checked it."""
        return self.devices.device_types[device.type]

    def device_key(self, device_id: str) -> bytes | None:
        """The button's MAC key from the credentials file, or None."""
        return self.credentials.device_key(device_id)


def load_config(path: str | Path) -> Config:
    """Load and check all three files; raise ConfigError listing every error found."""
    gw_path = Path(os.path.abspath(path))
    gw_problems: list[ConfigProblem] = []
    src = _read_toml(gw_path, gw_problems)
    if src is None:
        raise ConfigError(gw_problems)
    gateway: GatewayFile | None = None
    try:
        gateway = GatewayFile.model_validate(src.data)
    except ValidationError as exc:
        gw_problems += explain(exc, GatewayFile, gw_path, src.locator)
    if gateway is not None:
        gw_problems += check_gateway(gateway, gw_path, src.locator)
    position, position_known = _position(gateway, src.data)

    devices: DevicesFile | None = None
    dev_problems: list[ConfigProblem] = []
    devices_path = _setting_path(src, "devices_file")
    if devices_path is not None:
        if _exists(devices_path):
            devices, dev_problems = _load_devices(devices_path, position, position_known)
        else:
            gw_problems.append(_missing(src, "devices_file", devices_path, "devices file"))

    credentials: CredentialsFile | None = None
    cred_problems: list[ConfigProblem] = []
    credentials_path = _setting_path(src, "credentials_file")
    handed_over = systemd_credential()
    if handed_over is not None:
        # The unit's LoadCredential= copy wins over credentials_file (see the function).
        credentials_path = handed_over
        credentials, cred_problems = _load_credentials(handed_over, check_mode=False)
    elif credentials_path is not None:
        if _exists(credentials_path):
            credentials, cred_problems = _load_credentials(credentials_path)
        else:
            gw_problems.append(
                _missing(src, "credentials_file", credentials_path, "credentials file")
            )
    journal_path = _setting_path(src, "journal_path")
    status_path = _setting_path(src, "status_path")
    control_path = _setting_path(src, "control_path")
    if devices is not None and credentials is not None and devices_path is not None:
        dev_problems += check_device_keys(
            devices, credentials, devices_path, TomlLocator(devices_path.read_text())
        )

    problems = sort_problems(gw_problems) + sort_problems(dev_problems)
    problems += sort_problems(cred_problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors)
    # No errors means every part loaded; the asserts only narrow the types.
    assert gateway is not None and devices is not None and credentials is not None
    assert devices_path and credentials_path and journal_path and status_path and control_path
    section = gateway.gateway.model_copy(
        update={
            "devices_file": devices_path,
            "credentials_file": credentials_path,
            "journal_path": journal_path,
            "status_path": status_path,
            "control_path": control_path,
        }
    )
    # [audit] path and [metrics] textfile_dir: relative to gateway.toml's folder too.
    audit = gateway.audit.model_copy(update={"path": _beside(gw_path, gateway.audit.path)})
    metrics = gateway.metrics
    if metrics.textfile_dir is not None:
        textfile_dir = _beside(gw_path, metrics.textfile_dir)
        metrics = metrics.model_copy(update={"textfile_dir": textfile_dir})
    return Config(
        path=gw_path,
        gateway=gateway.model_copy(update={"gateway": section, "audit": audit, "metrics": metrics}),
        devices=devices,
        credentials=credentials,
        devices_path=devices_path,
        credentials_path=credentials_path,
        journal_path=journal_path,
        status_path=status_path,
        control_path=control_path,
        warnings=[p for p in problems if p.severity == "warning"],
    )


def load_devices(
    path: Path, gateway: GatewayFile, *, warnings: list[ConfigProblem] | None = None
) -> DevicesFile:
    """Load and check devices.toml alone, for a reload; the running gateway.toml stays.

    Raises ConfigError with every error. Warnings go to ``warnings`` when given, else to
    the log.
    """
    devices, problems = _load_devices(Path(os.path.abspath(path)), gateway.gateway.position, True)
    problems = sort_problems(problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors or devices is None:
        raise ConfigError(errors)
    for problem in problems:
        if warnings is not None:
            warnings.append(problem)
        else:
            logger.warning("%s", problem)
    return devices


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Toml:
    path: Path
    data: dict[str, Any]
    locator: TomlLocator


def _read_toml(path: Path, problems: list[ConfigProblem], *, secret: bool = False) -> _Toml | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(ConfigProblem(path, None, "", _os_reason(exc, path)))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem(path, None, "", f"not UTF-8 text (byte {exc.start})"))
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(_syntax_problem(path, str(exc), text, secret=secret))
        return None
    return _Toml(path, data, TomlLocator(text))


def _syntax_problem(path: Path, message: str, text: str, *, secret: bool) -> ConfigProblem:
    at = _TOML_AT.search(message)
    line: int | None = None
    where = ""
    if at is not None:
        message = message[: at.start()]
        if at[1]:
            line, where = int(at[1]), f" (column {at[2]})"
        else:
            line, where = max(1, len(text.splitlines())), " (at end of file)"
    if secret:
        message = next((m for m in _QUOTES_INPUT if message.startswith(m)), message)
    return ConfigProblem(path, line, "", f"TOML syntax error: {message}{where}")


def _os_reason(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory, not a file"
    if isinstance(exc, PermissionError):
        return f"cannot read {path}: permission denied for user id {os.geteuid()}"
    return f"cannot read {path}: {exc.strerror}"


def _exists(path: Path) -> bool:
    """False only when nothing is there; other faults are reported when the file is read."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _setting_path(src: _Toml, key: str) -> Path | None:
    """A path setting of [gateway], absolute (relative to gateway.toml's folder).

    Read from the raw data so the other files are still checked when gateway.toml has schema
    errors elsewhere; None when the setting itself is unusable (its error is reported).
    """
    section = src.data.get("gateway", {})
    if not isinstance(section, dict):
        return None
    value = section.get(key, str(GatewaySection.model_fields[key].default))
    if not isinstance(value, str):
        return None
    return Path(os.path.normpath(src.path.parent / value))


def _beside(gw_path: Path, path: Path) -> Path:
    """A path setting outside [gateway], made absolute the same way."""
    return Path(os.path.normpath(gw_path.parent / path))


def _missing(src: _Toml, key: str, path: Path, what: str) -> ConfigProblem:
    line = src.locator.line_of(("gateway", key))
    message = f"{what} not found: {path}"
    if line is None:
        default = GatewaySection.model_fields[key].default
        message += f" ({key} is not set in [gateway], so the default '{default}' was assumed)"
    return ConfigProblem(src.path, line, f"gateway.{key}", message)


def _position(
    gateway: GatewayFile | None, data: dict[str, Any]
) -> tuple[GatewayPosition | None, bool]:
    """The fallback position and whether it is known (gateway.toml may be half broken)."""
    if gateway is not None:
        return gateway.gateway.position, True
    section = data.get("gateway", {})
    raw = section.get("position") if isinstance(section, dict) else None
    if raw is None:
        return None, isinstance(section, dict)
    try:
        return GatewayPosition.model_validate(raw), True
    except ValidationError:
        return None, False  # reported by the full validation


# --------------------------------------------------------------------------- devices


def _load_devices(
    path: Path, position: GatewayPosition | None, position_known: bool
) -> tuple[DevicesFile | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    src = _read_toml(path, problems)
    if src is None:
        return None, problems
    devices: DevicesFile | None = None
    try:
        devices = DevicesFile.model_validate(src.data)
    except ValidationError as exc:
        problems += explain(exc, DevicesFile, path, src.locator)
    types, entries = _device_parts(src.data, devices)
    problems += check_devices(
        types, entries, position, path, src.locator, position_known=position_known
    )
    if not entries and not problems:
        problems.append(
            ConfigProblem(
                path,
                None,
                "devices",
                "no devices configured: presses from every button will be ignored",
                "warning",
            )
        )
    return devices, problems


def _device_parts(
    data: dict[str, Any], devices: DevicesFile | None
) -> tuple[dict[str, DeviceType | None] | None, list[DeviceEntry]]:
    """Device types and entries for the cross-checks, salvaged entry by entry when the file
    as a whole failed the schema."""
    if devices is not None:
        return dict(devices.device_types), [
            DeviceEntry(i, d.id, d.type, d) for i, d in enumerate(devices.devices)
        ]
    raw_types = data.get("device_types", {})
    types: dict[str, DeviceType | None] | None = None
    if isinstance(raw_types, dict):
        types = {name: _valid_or_none(_DEVICE_TYPE, t) for name, t in raw_types.items()}
    raw_devices = data.get("devices", [])
    entries: list[DeviceEntry] = []
    for i, raw in enumerate(raw_devices if isinstance(raw_devices, list) else []):
        if not isinstance(raw, dict):
            continue
        dev_id, dev_type = raw.get("id"), raw.get("type")
        entries.append(
            DeviceEntry(
                i,
                dev_id.lower() if isinstance(dev_id, str) else None,
                dev_type if isinstance(dev_type, str) else None,
                _valid_or_none(_DEVICE, raw),
            )
        )
    return types, entries


def _valid_or_none(adapter: TypeAdapter[T], value: Any) -> T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


# --------------------------------------------------------------------------- credentials

# The name of the systemd credential that carries credentials.toml: the unit says
# ``LoadCredential=aura-credentials:/etc/aura-gateway/credentials.toml``.
SYSTEMD_CREDENTIAL = "aura-credentials"


def systemd_credential() -> Path | None:
    """The credentials file as systemd handed it over, or None (then ``credentials_file``).

    Under the unit, systemd reads ``/etc/aura-gateway/credentials.toml`` (root's, mode
    0600) itself and gives the service a private, read-only copy in
    ``$CREDENTIALS_DIRECTORY/aura-credentials``: the service user needs no read access to
    the file in /etc. Run by hand (no ``CREDENTIALS_DIRECTORY``), the configured file is
    read as before, mode check included.
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / SYSTEMD_CREDENTIAL
    return path if _exists(path) else None


def _load_credentials(
    path: Path, *, check_mode: bool = True
) -> tuple[CredentialsFile | None, list[ConfigProblem]]:
    # The mode is checked before the file is read: a file others can read is refused whole.
    # Not for a systemd credential: systemd made that copy, readable by this service only.
    try:
        st = path.stat()
    except OSError as exc:
        return None, [ConfigProblem(path, None, "", _os_reason(exc, path))]
    if stat.S_ISDIR(st.st_mode):
        return None, [ConfigProblem(path, None, "", f"{path} is a directory, not a file")]
    mode = stat.S_IMODE(st.st_mode)
    if check_mode and mode & 0o077:
        return None, [
            ConfigProblem(
                path,
                None,
                "",
                f"mode {mode:04o} lets group/others access the AURA secret; refusing to use it: "
                f"run chmod 600 {path}",
            )
        ]
    problems: list[ConfigProblem] = []
    src = _read_toml(path, problems, secret=True)
    if src is None:
        return None, problems
    try:
        return CredentialsFile.model_validate(src.data), []
    except ValidationError as exc:
        return None, explain(exc, CredentialsFile, path, src.locator, secret=True)

"""Second pass: checks across keys and files that a schema cannot express.

Each check takes models that already passed the schema and returns problems placed on the
line of the key at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config.locate import KeyPath, TomlLocator, format_key
from gateway.config.models import (
    CredentialsFile,
    CustomerDevice,
    Device,
    DevicesFile,
    DeviceType,
    GatewayFile,
    GatewayPosition,
    GpsdInputConfig,
    LiveLocation,
    SerialInputConfig,
    SiteDevice,
)
from gateway.config.problems import ConfigProblem, Severity

LIVE_NEEDS_POSITION = (
    "live location needs a live source (device type has_gps = true, or travels_with_gateway "
    "= true with a gpsd input) or a fallback (fallback_location_id in the location policy, or "
    "[gateway.position] in gateway.toml)"
)
NO_FALLBACK_POSITION = (
    "no fallback location: AURA needs a location on every customer callout, so a press before "
    "this device's first fix (after a boot, indoors) could not be delivered; set "
    "fallback_location_id in the location policy or [gateway.position] in gateway.toml"
)


@dataclass(frozen=True)
class DeviceEntry:
    """One ``[[devices]]`` entry; id and type are kept even when the rest is invalid, so a
    duplicate id or an unknown type is reported in the same run as the schema errors."""

    index: int
    id: str | None  # lower-cased, as the model stores it; None when not a string
    type: str | None
    device: Device | None  # None when the entry failed the schema (already reported)


class _Reporter:
    def __init__(self, file: Path, locator: TomlLocator) -> None:
        self.file, self.locator = file, locator
        self.problems: list[ConfigProblem] = []

    def add(self, path: KeyPath, message: str, severity: Severity = "error") -> None:
        line = self.locator.best_line(path)
        self.problems.append(ConfigProblem(self.file, line, format_key(path), message, severity))


def check_gateway(gw: GatewayFile, file: Path, locator: TomlLocator) -> list[ConfigProblem]:
    """Settings that are each valid but wrong together, or valid URLs that will not work."""
    report = _Reporter(file, locator)
    url = gw.aura.base_url
    if url.username or url.password:
        # Never echo the URL: the user info in it is a secret.
        report.add(
            ("aura", "base_url"),
            "must not contain a user name or password; AURA credentials go in the credentials file",
        )
    elif url.path not in (None, "", "/") or url.query or url.fragment:
        report.add(
            ("aura", "base_url"),
            f"must be the host only, like 'https://{url.host}'; the path {url.path!r} belongs "
            "in api_prefix",
        )
    if gw.aura.backoff_initial_s > gw.aura.backoff_max_s:
        report.add(
            ("aura", "backoff_initial_s"),
            f"backoff_initial_s ({gw.aura.backoff_initial_s:g}) is above backoff_max_s "
            f"({gw.aura.backoff_max_s:g})",
        )
    names: dict[str, int] = {}
    ports: dict[str, int] = {}
    for i, inp in enumerate(gw.inputs):
        if inp.name in names:
            report.add(
                ("inputs", i, "name"),
                f"duplicate input name {inp.name!r}, already used by inputs[{names[inp.name]}]; "
                "give each input its own name",
            )
        names.setdefault(inp.name, i)
        if not isinstance(inp, SerialInputConfig):
            continue
        if inp.port in ports:
            report.add(
                ("inputs", i, "port"),
                f"port {inp.port!r} is already used by inputs[{ports[inp.port]}]",
            )
        ports.setdefault(inp.port, i)
    if sum(isinstance(inp, GpsdInputConfig) for inp in gw.inputs) > 1:
        report.add(("inputs",), "more than one gpsd input: the gateway has one position")
    return report.problems


def check_devices(
    types: Mapping[str, DeviceType | None] | None,
    entries: Sequence[DeviceEntry],
    position: GatewayPosition | None,
    file: Path,
    locator: TomlLocator,
    *,
    position_known: bool = True,
) -> list[ConfigProblem]:
    """Cross-references of the device registry.

    ``types`` maps each declared type name to its model, or to None when that type's own
    table is invalid (already reported); ``types`` itself is None when the whole
    ``device_types`` table is unusable. ``position`` is the gateway's fallback position;
    ``position_known`` is False when gateway.toml is too broken to tell, and the checks that
    need it are skipped.
    """
    report = _Reporter(file, locator)
    first_by_id: dict[str, int] = {}
    for entry in entries:
        i = entry.index
        if entry.id is not None and entry.id in first_by_id:
            j = first_by_id[entry.id]
            report.add(
                ("devices", i, "id"),
                f"duplicate device id {entry.id!r}: already used by devices[{j}] at "
                f"{file.name}:{locator.best_line(('devices', j, 'id'))} "
                "(ids are compared ignoring case)",
            )
        elif entry.id is not None:
            first_by_id[entry.id] = i
        if types is None or entry.type is None:
            continue
        if entry.type not in types:
            known = ", ".join(types) or "none; add a [device_types.<name>] table"
            report.add(
                ("devices", i, "type"), f"unknown device type {entry.type!r} (known: {known})"
            )
            continue
        dtype, dev = types[entry.type], entry.device
        if isinstance(dev, SiteDevice) and dev.predefined_location_id is None:
            report.add(("devices", i, "site_ref"), SITE_WITHOUT_ID, "warning")
        live = isinstance(dev, CustomerDevice) and isinstance(dev.location, LiveLocation)
        fallback = live and dev.location.fallback_location_id is not None  # type: ignore[union-attr]
        if live and dtype is not None and position_known and position is None and not fallback:
            if dtype.has_gps or dev.travels_with_gateway:  # type: ignore[union-attr]
                report.add(("devices", i, "location"), NO_FALLBACK_POSITION)
            else:
                report.add(("devices", i, "location"), LIVE_NEEDS_POSITION)
    return report.problems


SITE_WITHOUT_ID = (
    "no predefined_location_id: after a lost reply or a restart the gateway cannot find this "
    "site's callout among AURA's active ones, and relies on AURA returning it; set the Fixed "
    "Location id AURA assigned"
)

# Device ids the rtl_433 adapter gives: rtl433:<model>[:<channel>]:<id>.
RTL433_PREFIX = "rtl433:"

SPOOFABLE = (
    "auth = 'none': this button has no authentication, so anyone with a radio can replay or "
    "forge its press (spoofable); use an authenticated model where possible"
)


def check_device_keys(
    devices: DevicesFile,
    credentials: CredentialsFile,
    file: Path,
    locator: TomlLocator,
) -> list[ConfigProblem]:
    """Every authenticated button has its key; unauthenticated ones are flagged."""
    report = _Reporter(file, locator)
    for i, dev in enumerate(devices.devices):
        if dev.id.startswith(RTL433_PREFIX) and dev.auth != "none":
            report.add(
                ("devices", i, "auth"),
                'an rtl_433 device cannot authenticate its transmissions: write auth = "none" '
                "(it is spoofable)",
            )
        elif dev.auth == "none":
            report.add(("devices", i, "auth"), SPOOFABLE, "warning")
        elif dev.auth == "hmac" and credentials.device_key(dev.id) is None:
            report.add(
                ("devices", i, "id"),
                f"no key for device {dev.id!r}: add it under [device_keys] in the credentials "
                'file, or set auth = "none" for a fixed-code button (spoofable)',
            )
    return report.problems

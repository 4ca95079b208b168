"""The human summary ``aura-gateway check-config`` prints for a valid config.

It shows what the gateway will do with each button, never the credentials: only the
credentials file's path and mode, and for each button whether it authenticates (never its
key).
"""

from __future__ import annotations

import stat
from collections import Counter
from collections.abc import Sequence

from gateway.config.loader import Config
from gateway.config.models import (
    CustomerDevice,
    Device,
    FixedLocation,
    InputConfig,
    MqttInputConfig,
    SerialInputConfig,
    SiteDevice,
)


def summarize(config: Config) -> str:
    """What check-config prints: settings, inputs, every device and where its alarm goes."""
    gw, aura = config.gateway.gateway, config.gateway.aura
    devices = config.devices.devices
    lines = [
        f"config       {config.path}",
        f"gateway      {gw.name}",
        f"AURA         {_host(config)}  api prefix {aura.api_prefix}  "
        f"poll every {aura.poll_interval_s:g} s",
        f"credentials  {config.credentials_path} ({_mode(config)})",
        f"journal      {config.journal_path}",
        f"status file  {config.status_path}",
        f"position     {_position(config)}",
    ]
    lines += [f"input        {_input(inp)}" for inp in config.gateway.inputs]
    by_route = Counter(d.route for d in devices)
    by_type = Counter(d.type for d in devices)
    counts = f" (by route: {_counts(by_route)}; by type: {_counts(by_type)})" if devices else ""
    lines.append(f"devices      {len(devices)}{counts}")
    if devices:
        lines.append("")
        lines += _table(
            ("id", "type", "route", "customer/site", "location", "auth", "label"),
            [
                (d.id, d.type, d.route, _target(d), _location(config, d), _auth(d), d.label)
                for d in devices
            ],
        )
    if config.warnings:
        lines.append("")
        lines.append(f"{len(config.warnings)} warning(s):")
        lines += [f"  {w}" for w in config.warnings]
    return "\n".join(lines)


def _host(config: Config) -> str:
    # The loader refuses a base_url with user info, so the URL is safe to show.
    return str(config.gateway.aura.base_url).rstrip("/")


def _mode(config: Config) -> str:
    try:
        return f"mode {stat.S_IMODE(config.credentials_path.stat().st_mode):04o}"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"


def _position(config: Config) -> str:
    pos = config.gateway.gateway.position
    if pos is None:
        return "none (no fallback for live-location devices without a fresh fix)"
    return f"{pos.latitude:.5f}, {pos.longitude:.5f} ±{pos.accuracy:g} m"


def _input(inp: InputConfig) -> str:
    if isinstance(inp, SerialInputConfig):
        return f"{inp.name}: {inp.type} {inp.port} at {inp.baudrate} baud"
    if isinstance(inp, MqttInputConfig):
        topics = ", ".join(f"{s.topic} ({s.adapter})" for s in inp.subscriptions)
        tls = " over TLS" if inp.tls else ""
        return f"{inp.name}: mqtt {inp.host}:{inp.port}{tls}: {topics}"
    return f"{inp.name}: gpsd {inp.host}:{inp.port}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


def _target(device: Device) -> str:
    if isinstance(device, CustomerDevice):
        return f"customer {device.customer_id}"
    if isinstance(device, SiteDevice):
        return f"site {device.site_ref}"
    return f"AURA device {device.aura_device_id}"


def _location(config: Config, device: Device) -> str:
    if isinstance(device, CustomerDevice):
        if isinstance(device.location, FixedLocation):
            return f"fixed: predefined location {device.location.predefined_location_id}"
        if config.device_type(device).has_gps:
            fallback = "gateway position" if config.gateway.gateway.position else "last fix"
            return f"live: device GPS, else {fallback}"
        return "live: gateway position"
    if isinstance(device, SiteDevice):
        return "the site's registered location"
    return "from the device event"


def _auth(device: Device) -> str:
    # Only the mode: the key itself stays in the credentials file.
    return {"hmac": "hmac", "network": "by its radio network"}.get(device.auth, "none (spoofable)")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[c])) for r in (header, *rows)) for c in range(len(header))]
    return [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]

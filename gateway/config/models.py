"""Pydantic models of the three files a technician edits.

- ``gateway.toml``: gateway settings (AURA endpoint, journal, inputs, timing) and the
  names of the two other files.
- ``devices.toml``: device types and the device registry (which button belongs to
  which customer and how its press reaches AURA).
- ``credentials.toml``: the AURA client id and secret, readable by the owner only.

Every model forbids unknown keys so a typo is an error, not a silently ignored line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)

GESTURES = ("single", "double", "long", "hold")
Gesture = Literal["single", "double", "long", "hold"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- gateway.toml


class Timeouts(Strict):
    """HTTP timeouts towards AURA, in seconds. None is not accepted: every wait ends."""

    connect: float = Field(3.0, gt=0, le=60)
    read: float = Field(10.0, gt=0, le=120)
    write: float = Field(10.0, gt=0, le=120)
    pool: float = Field(3.0, gt=0, le=60)


class AuraPaths(Strict):
    """Paths under ``api_prefix``. Overridable where AURA's docs leave the path open."""

    update_location_and_return: str = Field(
        "/callouts/{callout_id}/location/callout",
        description="Update-location-and-return-callout; the docs name it but do not give the "
        "path, so confirm it with AURA and set it here.",
    )
    resolution_report: str = Field(
        "/callouts/{callout_id}/report",
        description="Generate-a-resolution-report (GET, only after close); the docs name it but "
        "do not give the path, so AURA must confirm it before go-live and it is set here.",
    )


class AuraSettings(Strict):
    base_url: HttpUrl = Field(description="AURA Panic API host, e.g. the staging host.")
    api_prefix: str = "/panic-api/v2"
    timeouts: Timeouts = Timeouts()
    paths: AuraPaths = AuraPaths()
    poll_interval_s: float = Field(
        10.0, ge=1, le=60, description="Location update / poll cadence of an open callout."
    )
    token_refresh_margin_s: float = Field(60.0, ge=0, le=600)
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=600)
    reconnect_max_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Longest wait between attempts while AURA cannot be reached at all "
        "(refused, no route, DNS): how soon alarms go out once it is back.",
    )

    @field_validator("api_prefix")
    @classmethod
    def _prefix_shape(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/"):
            raise ValueError("must start with '/' and not end with '/', e.g. '/panic-api/v2'")
        return v


class GatewayPosition(Strict):
    """Surveyed position of the installation: the fallback for live-location devices."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    accuracy: float = Field(50.0, gt=0, le=100_000, description="metres")


class SerialInputConfig(Strict):
    type: Literal["serial"]
    name: str = "receiver"
    port: str = Field(description="Stable path, e.g. /dev/serial/by-id/usb-...; a pty in tests.")
    baudrate: int = Field(115200, gt=0)
    watchdog_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="No frame from the receiver for this long means 'receiver lost' "
        "(it sends a status heartbeat every 10 s).",
    )
    repeat_window_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="A transmission heard again (same device and counter) within this "
        "window is a radio repeat; later, it is a replay and is rejected.",
    )
    ack_timeout_s: float = Field(0.5, gt=0, le=10)
    reopen_backoff_max_s: float = Field(10.0, gt=0, le=300)


InputConfig = Annotated[SerialInputConfig, Field(discriminator="type")]


class GatewaySection(Strict):
    name: str = Field("aura-gateway", min_length=1, max_length=64)
    devices_file: Path = Path("devices.toml")
    credentials_file: Path = Path("credentials.toml")
    journal_path: Path = Path("/var/lib/aura-gateway/journal.sqlite")
    status_path: Path = Field(
        Path("/run/aura-gateway/status.json"),
        description="Where the daemon keeps its current status for `aura-gateway status`.",
    )
    control_path: Path = Field(
        Path("/run/aura-gateway/control.sock"),
        description="Unix socket the technician's commands (cancel, rate, ack) talk to.",
    )
    journal_max_mb: float = Field(
        64.0,
        ge=1,
        le=4096,
        description="Size the journal is kept under: closed incidents' history is pruned, "
        "oldest first; alarms waiting for AURA never are.",
    )
    late_alarm_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A press raised this long after it was made gets a note for the "
        "control room saying when it was pressed and why it is late.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    position: GatewayPosition | None = None
    max_fix_age_s: float = Field(
        60.0, gt=0, le=3600, description="A device fix older than this is stale."
    )


class CancelSettings(Strict):
    """What an integration cancel (a cancel gesture or `aura-gateway incidents cancel`)
    tells AURA."""

    exception_reason_id: int | None = Field(
        None, gt=0, description="AURA's exception reason id, from the callout's reason list."
    )
    notes: str = Field("Cancelled at the gateway", max_length=500)


class FallbackSettings(Strict):
    """The local alarm when AURA refuses an alarm for good (403, 404, 400)."""

    command: list[str] = Field(
        default_factory=list,
        description="argv of a command run once per undeliverable alarm (a siren, a relay, "
        "an SMS gateway), with AURA_INCIDENT, AURA_DEVICE and AURA_REASON in its "
        "environment. Empty: no command.",
    )
    timeout_s: float = Field(30.0, gt=0, le=600)


class GatewayFile(Strict):
    gateway: GatewaySection = GatewaySection()
    aura: AuraSettings
    inputs: list[InputConfig] = Field(min_length=1)
    cancel: CancelSettings = CancelSettings()
    fallback: FallbackSettings = FallbackSettings()


# --------------------------------------------------------------------------- devices.toml


class DeviceType(Strict):
    """What a model of button can do; devices refer to it by name."""

    raise_gestures: list[Gesture] = Field(default_factory=lambda: ["single"], min_length=1)
    cancel_gestures: list[Gesture] = Field(
        default_factory=list,
        description="Gestures that cancel this customer's open callout (an integration "
        "cancel, never a safeCode); must not overlap raise_gestures.",
    )
    has_gps: bool = False

    @model_validator(mode="after")
    def _disjoint(self) -> DeviceType:
        both = sorted(set(self.raise_gestures) & set(self.cancel_gestures))
        if both:
            raise ValueError(
                f"gesture(s) {', '.join(both)} both raise and cancel: a press must mean one thing"
            )
        return self


class LiveLocation(Strict):
    policy: Literal["live"]


class FixedLocation(Strict):
    policy: Literal["fixed"]
    predefined_location_id: int = Field(gt=0)


# Said when a device asks for live coordinates and a fixed site at once, in either spelling.
BOTH_LOCATIONS = (
    "predefined_location_id conflicts with the location policy: AURA accepts live "
    'coordinates or predefinedLocationId, never both; use location = { policy = "fixed", '
    'predefined_location_id = ... } for a fixed site or location = { policy = "live" }'
)

LocationPolicy = Annotated[LiveLocation | FixedLocation, Field(discriminator="policy")]


class CustomerRoute(Strict):
    """``POST /customers/{customerId}/callouts``."""

    route: Literal["customer"]
    customer_id: int = Field(gt=0)
    response_type_id: int = Field(gt=0)
    callout_classification_id: int | None = Field(None, gt=0)
    location: LocationPolicy
    # A second spelling of the fixed site is caught here with a clear message rather than
    # as an unknown key: AURA takes live coordinates or predefinedLocationId, never both.
    # A field validator (not a model validator) so the error names this key and its line.
    predefined_location_id: int | None = None

    @field_validator("predefined_location_id")
    @classmethod
    def _one_location_kind(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError(BOTH_LOCATIONS)
        return v


class SiteRoute(Strict):
    """``POST /predefinedLocations/externalRef/{ref}/callouts``."""

    route: Literal["site"]
    site_ref: str = Field(min_length=1, max_length=128)
    response_type_id: int | None = Field(None, gt=0)
    callout_classification_id: int | None = Field(None, gt=0)
    installer_identifier: str | None = None
    # Lets reconciliation after a restart recognise this site's callout among the
    # source's active callouts; optional because AURA assigns it.
    predefined_location_id: int | None = Field(None, gt=0)


class DeviceEventRoute(Strict):
    """``POST /deviceEvent`` with the ids AURA issued at onboarding."""

    route: Literal["device"]
    aura_device_id: int = Field(gt=0)
    device_type_id: int = Field(gt=0)
    # The message_type codes are agreed with AURA per device type at onboarding; only the
    # raise has a documented example (1).
    raise_message_type: int = Field(1, ge=0)
    location_message_type: int | None = Field(None, ge=0)
    cancel_message_type: int | None = Field(None, ge=0)
    health_message_type: int | None = Field(None, ge=0)


class DeviceBase(Strict):
    id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Radio address as printed on the button (8 hex digits for receiver buttons).",
    )
    type: str = Field(min_length=1)
    label: str = ""
    auth: Literal["hmac", "none"] = Field(
        "hmac",
        description="'hmac': presses carry a MAC under the key in credentials.toml "
        "[device_keys]. 'none': a fixed-code button without authentication (spoofable); "
        "it must be said explicitly.",
    )

    @field_validator("id")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class CustomerDevice(DeviceBase, CustomerRoute):
    pass


class SiteDevice(DeviceBase, SiteRoute):
    pass


class EventDevice(DeviceBase, DeviceEventRoute):
    pass


Device = Annotated[CustomerDevice | SiteDevice | EventDevice, Field(discriminator="route")]


class DevicesFile(Strict):
    device_types: dict[str, DeviceType] = Field(default_factory=dict)
    devices: list[Device] = Field(default_factory=list)


# --------------------------------------------------------------------------- credentials.toml


class AuraCredentials(Strict):
    client_id: SecretStr = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1)


def _device_key(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("must be hex digits (32 or 64 of them)") from None
    if len(raw) not in (16, 32):
        raise ValueError(f"must be 16 or 32 bytes (32 or 64 hex digits), got {len(raw)} bytes")
    return SecretStr(text.lower())


class CredentialsFile(Strict):
    aura: AuraCredentials
    device_keys: dict[str, Annotated[SecretStr, AfterValidator(_device_key)]] = Field(
        default_factory=dict,
        description="Per-button keys, device id -> hex key, provisioned with the button.",
    )

    @field_validator("device_keys")
    @classmethod
    def _keys(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return {dev.lower(): key for dev, key in v.items()}

    def device_key(self, device_id: str) -> bytes | None:
        key = self.device_keys.get(device_id.lower())
        return bytes.fromhex(key.get_secret_value()) if key is not None else None

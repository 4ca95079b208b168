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


class TlsSettings(Strict):
    """TLS towards the broker: the CA that signed its certificate, and optionally our own."""

    ca_file: Path = Field(description="CA (PEM) the broker certificate must chain to.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM), if asked.")
    key_file: Path | None = Field(None, description="Client key (PEM), readable by the owner only.")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class BrokerSettings(Strict):
    """One MQTT broker connection. The password is in credentials.toml [mqtt_passwords]
    under the connection's name, never here."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, gt=0, lt=65536)
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Fixed client id: the broker keeps this gateway's session (and the "
        "presses queued for it) across restarts. Default: aura-gateway-<gateway name>-<input>.",
    )
    username: str | None = None
    tls: TlsSettings | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)


Z2M_PANIC_ACTIONS = {"emergency": "single", "sos": "single", "panic": "single"}


class JsonFields(Strict):
    """Where a generic JSON payload keeps each value (dotted paths reach into objects)."""

    device_id: str = "id"
    gesture: str | None = "gesture"
    counter: str | None = None
    latitude: str | None = None
    longitude: str | None = None
    accuracy: str | None = None
    battery: str | None = None


class Subscription(Strict):
    topic: str = Field(min_length=1, description="MQTT topic filter, wildcards allowed.")
    adapter: Literal["zigbee2mqtt", "rtl_433", "json"]
    fields: JsonFields = Field(
        default_factory=JsonFields, description="For the json adapter: the payload's field names."
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        for i, level in enumerate(v.split("/")):
            if ("#" in level and (level != "#" or i != len(v.split("/")) - 1)) or (
                "+" in level and level != "+"
            ):
                raise ValueError(
                    "'+' must be a whole level and '#' the whole last level, "
                    "e.g. 'zigbee2mqtt/+' or 'rtl_433/#'"
                )
        return v


class MqttInputConfig(BrokerSettings):
    type: Literal["mqtt"]
    name: str = "mqtt"
    subscriptions: list[Subscription] = Field(min_length=1)
    repeat_window_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="The same message from one device again within this window is the same "
        "transmission (rtl_433 prints every radio repeat; a QoS 1 redelivery), not a new press.",
    )
    watchdog_s: float = Field(
        60.0, gt=0, le=3600, description="No connection to the broker for this long is 'lost'."
    )


class GpsdInputConfig(Strict):
    """The gateway's own GPS through gpsd: a position for devices that travel with it."""

    type: Literal["gpsd"]
    name: str = "gps"
    host: str = "127.0.0.1"
    port: int = Field(2947, gt=0, lt=65536)
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    read_timeout_s: float = Field(
        5.0, gt=0, le=120, description="gpsd silent this long: reconnect (a receiver sends 1/s)."
    )
    reconnect_max_s: float = Field(10.0, gt=0, le=600)
    min_mode: Literal[2, 3] = Field(2, description="2: a 2D fix is good enough; 3: 3D only.")
    max_error_m: float = Field(
        100.0,
        gt=0,
        le=100_000,
        description="A fix whose horizontal error (eph, or epx/epy) is above this is not used.",
    )
    watchdog_s: float = Field(30.0, gt=0, le=3600)


InputConfig = Annotated[
    SerialInputConfig | MqttInputConfig | GpsdInputConfig, Field(discriminator="type")
]


class StatusMqttSettings(BrokerSettings):
    """Where the gateway publishes its health for a fleet (retained, with a Last Will)."""

    name: str = "status"
    topic: str = Field(
        "aura-gateway/{gateway}/status",
        min_length=1,
        description="{gateway} is replaced by [gateway] name; no wildcards.",
    )
    interval_s: float = Field(
        30.0, ge=1, le=3600, description="Republished at least this often, and on every change."
    )

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("a topic to publish on cannot contain '+' or '#'")
        return v


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


class LedSettings(Strict):
    """Status LEDs (and the relay/siren output) a technician reads at a glance."""

    backend: Literal["none", "sysfs", "gpiod", "mock"] = Field(
        "none",
        description="sysfs: the Linux LED class (/sys/class/leds); gpiod: GPIO lines through "
        "libgpiod; mock: records the pattern timeline (tests, demos); none: no LEDs.",
    )
    sysfs_root: Path = Path("/sys/class/leds")
    status_led: str = Field("aura:green:status", description="sysfs LED name, or gpiod line")
    alarm_led: str = Field("aura:red:alarm", description="sysfs LED name, or gpiod line")
    relay: str | None = Field(
        None,
        description="Output switched on while an alarm cannot be delivered (a siren or a "
        "relay to a local alarm panel): a sysfs LED name or a gpiod line. None: no relay.",
    )
    gpio_chip: str = Field("/dev/gpiochip0", description="gpiod: the chip the lines are on")


class MetricsSettings(Strict):
    """Prometheus metrics for the fleet: a loopback HTTP endpoint, node_exporter's textfile
    directory, or both."""

    listen: str | None = Field(
        None, description="host:port to serve /metrics on, loopback only, e.g. 127.0.0.1:9464"
    )
    textfile_dir: Path | None = Field(
        None,
        description="node_exporter textfile collector directory, e.g. "
        "/var/lib/prometheus/node-exporter; the file is replaced atomically.",
    )
    interval_s: float = Field(15.0, ge=1, le=600, description="textfile refresh period")

    @field_validator("listen")
    @classmethod
    def _loopback(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
            raise ValueError("metrics are served on loopback only (127.0.0.1 or ::1)")
        return v


class AuditSettings(Strict):
    """The append-only, hash-chained record of presses, decisions and AURA traffic."""

    enabled: bool = True
    path: Path = Field(
        Path("/var/lib/aura-gateway/audit"),
        description="Directory of the audit files (audit-<n>.jsonl), on the state disk.",
    )
    max_mb: float = Field(
        32.0, ge=1, le=4096, description="Total size kept; the oldest file goes first."
    )
    file_mb: float = Field(4.0, ge=0.1, le=512, description="A file is rotated at this size.")


class GatewayFile(Strict):
    gateway: GatewaySection = GatewaySection()
    aura: AuraSettings
    inputs: list[InputConfig] = Field(min_length=1)
    cancel: CancelSettings = CancelSettings()
    fallback: FallbackSettings = FallbackSettings()
    status_mqtt: StatusMqttSettings | None = None
    leds: LedSettings = LedSettings()
    metrics: MetricsSettings = MetricsSettings()
    audit: AuditSettings = AuditSettings()


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
    actions: dict[str, Gesture] = Field(
        default_factory=lambda: dict(Z2M_PANIC_ACTIONS),
        description="MQTT (zigbee2mqtt, json): which 'action' value is which gesture, e.g. "
        '{ emergency = "single", sos = "single", long = "long" }. Other actions are '
        "kept as the device's last activity, never a press.",
    )
    press_when: dict[str, str | int | bool] = Field(
        default_factory=lambda: {"alarm": 1},
        description="rtl_433: the fields a transmission must carry to be a press, e.g. "
        "{ alarm = 1 }; {} makes every transmission a press (fixed-code remotes). "
        "Heartbeats never are.",
    )

    # Gesture timing; defaults from the peers (Flic: click <= 1 s, double <= 0.5 s,
    # hold >= 1 s).
    compose_double: bool = Field(
        False,
        description="The button reports single presses only (raw clicks): the gateway "
        "makes two singles within double_window_s a double press. Off for buttons that "
        "tell single and double apart themselves (receiver firmware, most Zigbee buttons): "
        "their single presses then raise at once, without waiting for a second.",
    )
    double_window_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description="With compose_double: two single presses this close are a double press.",
    )
    long_press_s: float = Field(
        1.0,
        gt=0,
        le=30,
        description="A press held this long (where the source reports how long) is 'long'; "
        "held three times as long it is 'hold'.",
    )
    debounce_s: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Presses of one button closer than this are contact bounce: one press.",
    )
    cooldown_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="After a press pattern that means nothing (e.g. three quick presses on "
        "a button that raises on double), presses are ignored for this long.",
    )
    abort_window_s: float = Field(
        0.0,
        ge=0,
        le=30,
        description="Seconds after a raising press during which a cancel gesture withdraws "
        "the alarm before anything is sent (0: off, the alarm goes at once).",
    )
    # Supervision: buttons that check in (heartbeats, availability, any message).
    checkin_interval_s: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="How often this model checks in; None: it does not, and is not supervised.",
    )
    missed_checkins: int = Field(
        3, ge=1, le=100, description="Check-ins missed in a row before the device is 'silent'."
    )

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
    fallback_location_id: int | None = Field(
        None,
        gt=0,
        description="Fixed Location (predefinedLocationId) to send when no fresh live fix "
        "is known at press time.",
    )


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
    auth: Literal["hmac", "network", "none"] = Field(
        "hmac",
        description="'hmac': presses carry a MAC under the key in credentials.toml "
        "[device_keys]. 'network': the radio network authenticates the device (a Zigbee "
        "button joined with the network key) and its presses come over MQTT. 'none': a "
        "fixed-code button without authentication (spoofable); it must be said explicitly.",
    )
    checkin_interval_s: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="Overrides the device type's check-in interval for this device.",
    )
    travels_with_gateway: bool = Field(
        False,
        description="The button goes where the gateway goes (a vehicle): without a fresh "
        "fix of its own, the gateway's gpsd fix is its position.",
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
    mqtt_passwords: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="MQTT broker passwords by connection name (an input's name, or "
        "the status_mqtt name).",
    )
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

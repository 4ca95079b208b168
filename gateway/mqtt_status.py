"""The gateway's health on a fleet's MQTT broker: one retained message per gateway.

An operator watching hundreds of gateways subscribes to ``aura-gateway/+/status`` on the
broker the fleet already runs (Mosquitto, EMQX) and gets each gateway's latest status at
once, because it is retained. A gateway that vanishes (power cut, SIGKILL, network gone)
cannot say so itself: the broker does, with the Last Will registered at connect, which
replaces the retained status with "offline, connection lost". A gateway that stops
cleanly says "offline, stopped" itself before it disconnects, because a clean DISCONNECT
makes the broker discard the will.

What goes out is built by :func:`status_payload` from an allow-list, never by copying
``StatusModel.to_dict()``: a fleet broker is shared more widely than the gateway's own
status file, so no credentials, customer ids, device labels, coordinates, a control
room's words or an unknown device's message ever go there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.mqtt_link import MqttLink, Will
from gateway.status import StatusModel
from gateway.waits import wait_event

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.config.models import StatusMqttSettings

logger = logging.getLogger(__name__)

# A burst of changes (a press touches the journal, the uplink and the callout within
# milliseconds) goes out as one message: at most one publish per this many seconds.
COALESCE_S = 0.5
# How long a clean stop waits for the broker to acknowledge "offline, stopped". Bounded:
# a broker that does not answer must not hold up the gateway's shutdown.
GOODBYE_WAIT_S = 1.0
# Counters a fleet alarms on; the others are for a technician at the gateway.
FLEET_COUNTERS = ("presses_raised", "auth_failures", "replays", "journal_errors")


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("aura-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def status_payload(
    status: StatusModel, gateway_name: str, *, now: float | None = None
) -> dict[str, Any]:
    """The gateway's health for the fleet, from an allow-list of what is safe to share."""
    devices = status.devices_seen
    return {
        "state": "online",
        "gateway": gateway_name,
        "version": _version(),
        "published_wall": round(time.time() if now is None else now, 3),
        "summary": status.summary(),
        # The uplink's error names what failed (timeout, HTTP status), never a secret.
        "uplink": {"state": status.uplink, "error": status.uplink_error},
        "pending_alarms": status.pending_alarms,
        # Incident ids are the gateway's own random ids; the stage is AURA's status word.
        # The callout events are left out: their text is a control room's or responder's.
        "open_callouts": [
            {"incident": incident, "stage": stage}
            for incident, stage in sorted(status.open_callouts.items())
        ],
        # The count only: a refusal's text may quote what AURA said about the customer.
        "undeliverable": len(status.failed_incidents),
        "inputs": {
            name: {
                "state": health.state,
                "error": health.error,
                "last_frame_age_s": health.last_frame_age_s,
            }
            for name, health in sorted(status.inputs.items())
        },
        "devices_configured": status.devices,
        # Device ids only (radio addresses), never their labels, which name people.
        # Silent: missed its check-ins (supervision) or its bridge says it is unavailable.
        "devices_silent": sorted(
            dev for dev, h in devices.items() if h.silent or h.available is False
        ),
        "devices_battery_low": sorted(dev for dev, h in devices.items() if h.battery_low),
        "devices_tampered": sorted(dev for dev, h in devices.items() if h.tamper),
        # A count: an unknown device's id and message belong to whoever owns it.
        "unknown_devices": len(status.unknown_devices),
        "journal_fill_pct": status.journal.get("fill_pct"),
        "counters": {name: status.counters.get(name, 0) for name in FLEET_COUNTERS},
    }


def offline_payload(gateway_name: str, reason: str) -> dict[str, Any]:
    return {"state": "offline", "gateway": gateway_name, "reason": reason}


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class StatusPublisher:
    """Keeps the retained status on the fleet broker current; says goodbye on a clean stop."""

    def __init__(self, settings: StatusMqttSettings, status: StatusModel, config: Config) -> None:
        self.settings = settings
        self.status = status
        self.gateway_name = config.gateway.gateway.name
        self.topic = settings.topic.replace("{gateway}", _topic_level(self.gateway_name))
        password = config.credentials.mqtt_passwords.get(settings.name)
        self.link = MqttLink(
            settings,
            name=settings.name,
            client_id=_client_id(settings, config),
            password=password.get_secret_value() if password is not None else None,
            base_dir=config.path.parent,
            on_connected=self._connected,
            will=Will(self.topic, _encode(offline_payload(self.gateway_name, "connection lost"))),
        )
        self._changed = asyncio.Event()
        status.subscribe(self._on_change)

    def _on_change(self, _status: StatusModel) -> None:
        # Called on the event loop thread, often several times in a row: only mark it;
        # the loop in run() publishes, at most once per COALESCE_S.
        self._changed.set()

    async def run(self) -> None:
        """Publish until cancelled; then publish "offline, stopped" and disconnect."""
        # Not a TaskGroup: cancelling one would cancel the link (a clean DISCONNECT, so
        # no will) before the goodbye could be sent on it.
        link = asyncio.create_task(self.link.run(), name=f"mqtt-link:{self.link.name}")
        link.add_done_callback(lambda _task: self._changed.set())  # a dead link wakes us
        try:
            await self._republish(link)
        finally:
            try:
                await self._goodbye()
            finally:
                link.cancel()
                await asyncio.wait([link])

    async def _republish(self, link: asyncio.Task[None]) -> None:
        # The pause after each publish counts towards the interval: idle, a message goes
        # out every interval_s, not every interval_s + COALESCE_S.
        idle_s = max(0.0, self.settings.interval_s - COALESCE_S)
        while not link.done():
            with contextlib.suppress(TimeoutError):
                await wait_event(self._changed, idle_s)
            if link.done():
                break
            self._changed.clear()
            self._publish()
            # Changes during this pause go out together in the next message.
            await asyncio.sleep(COALESCE_S)
        link.result()  # the link never ends by itself: if it did, that is a bug to raise

    async def _connected(self) -> None:
        # Every connection, not only the first: after a connection loss the broker has
        # published our will, and the retained message says offline until we replace it.
        self._publish()

    def _publish(self) -> bool:
        payload = _encode(status_payload(self.status, self.gateway_name))
        return self.link.publish(self.topic, payload, qos=1, retain=True)

    async def _goodbye(self) -> None:
        client = self.link.client
        if client is None:
            return  # not connected: the will (or nothing, if never connected) stands
        info = client.publish(
            self.topic,
            _encode(offline_payload(self.gateway_name, "stopped")),
            qos=1,
            retain=True,
        )
        try:
            # The PUBACK, so the broker has it before the link's DISCONNECT drops the will.
            await asyncio.to_thread(info.wait_for_publish, GOODBYE_WAIT_S)
        except (ValueError, RuntimeError) as exc:
            logger.warning("event=status_offline_not_sent topic=%s error=%s", self.topic, exc)
            return
        if info.is_published():
            logger.info("event=status_offline_sent topic=%s", self.topic)
        else:
            logger.warning(
                "event=status_offline_not_sent topic=%s error=no PUBACK within %g s",
                self.topic,
                GOODBYE_WAIT_S,
            )


def _topic_level(name: str) -> str:
    """The gateway name as one topic level. paho refuses to publish on a topic with a
    wildcard (an exception that would end the daemon), and a '/' would add a level that
    an operator's ``aura-gateway/+/status`` never matches."""
    return "".join("_" if c in "+#/\0" else c for c in name)


def _client_id(settings: StatusMqttSettings, config: Config) -> str:
    """Distinct from every MQTT input's default id on the same gateway: two connections
    with one client id make the broker drop each in turn, forever."""
    if settings.client_id is not None:
        return settings.client_id
    gateway = config.gateway.gateway.name
    inputs = {i.name for i in config.gateway.inputs}
    suffix = settings.name if settings.name not in inputs else f"{settings.name}-status"
    return f"aura-gateway-{gateway}-{suffix}"[:64]

"""Buttons on a local MQTT broker (zigbee2mqtt, rtl_433, generic JSON).

QoS 1 on a persistent session, so presses published while the gateway restarts wait at
the broker. A message is acknowledged only once what it carried is in the journal; if the
journal refuses it, the connection is dropped so the broker delivers it again. A retained
message is old state the broker replays to every new subscriber: it never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time

import paho.mqtt.client as mqtt

from gateway.config import Config
from gateway.config.models import DeviceType, MqttInputConfig, Subscription
from gateway.inputs.adapters import PayloadError, Reading, topic_base
from gateway.inputs.adapters.json_payload import JsonPayload
from gateway.inputs.adapters.rtl433 import Rtl433
from gateway.inputs.adapters.zigbee2mqtt import Zigbee2Mqtt
from gateway.mqtt_link import CONNECTED, STARTING, Delivery, MqttLink
from gateway.router import Router
from gateway.signals import Fix
from gateway.signals import Press as PressSignal
from gateway.status import InputHealth, StatusModel

logger = logging.getLogger(__name__)

BATCH_MAX = 500  # messages handled in one journal transaction


class MqttInput:
    def __init__(
        self, config: MqttInputConfig, router: Router, status: StatusModel, gateway: Config
    ) -> None:
        self.name = config.name
        self.config = config
        self.router = router
        self.status = status
        self.gateway = gateway
        self.source = f"mqtt:{self.name}"
        self.health = status.inputs.setdefault(self.name, InputHealth())
        password = gateway.credentials.mqtt_passwords.get(self.name)
        client_id = config.client_id or f"aura-gateway-{gateway.gateway.gateway.name}-{self.name}"
        self.link = MqttLink(
            config,
            name=self.name,
            client_id=client_id[:64],
            password=password.get_secret_value() if password is not None else None,
            base_dir=gateway.path.parent,
            on_message=self._received,
            on_connected=self._subscribe,
            persistent=True,
            manual_ack=True,
        )
        self.link.state_changed = self.refresh_health
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._adapters = [(sub, _adapter(sub, self._type_of)) for sub in config.subscriptions]
        self._last_message: float | None = None
        self._down_since: float | None = time.monotonic()

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.link.run(), name=f"mqtt-link:{self.name}")
            tg.create_task(self._consume(), name=f"mqtt-consume:{self.name}")

    async def indicate(self, device_id: str, state: str) -> None:
        """MQTT buttons have no downlink here: their bridge shows nothing."""

    # ------------------------------------------------------------------ broker side

    def _received(self, delivery: Delivery) -> None:
        self._queue.put_nowait(delivery)

    async def _subscribe(self) -> None:
        # Subscribed on every connection, not only the first: a broker that lost our
        # session (restarted without persistence) would otherwise deliver nothing.
        granted = await self.link.subscribe([(sub.topic, 1) for sub in self.config.subscriptions])
        for sub, code in zip(self.config.subscriptions, granted, strict=False):
            if code >= 128:
                self.status.count("mqtt_subscriptions_refused")
                logger.error(
                    "event=mqtt_subscription_refused input=%s topic=%s code=%d",
                    self.name,
                    sub.topic,
                    code,
                )

    def _type_of(self, device_id: str) -> DeviceType | None:
        device = self.gateway.device(device_id)
        return self.gateway.device_type(device) if device is not None else None

    # ------------------------------------------------------------------ messages

    async def _consume(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < BATCH_MAX:
                batch.append(self._queue.get_nowait())
            await self._handle(batch)

    async def _handle(self, batch: list[Delivery]) -> None:
        self._last_message = time.monotonic()
        presses: list[tuple[int, PressSignal]] = []
        for i, delivery in enumerate(batch):
            for reading in self._read(delivery.message):
                press = await self._reading(reading, delivery.message)
                if press is not None:
                    presses.append((i, press))
        stored = [True] * len(batch)
        if presses:
            outcomes = await self.router.on_presses(
                [press for _, press in presses], repeat_window_s=self.config.repeat_window_s
            )
            for (i, _), outcome in zip(presses, outcomes, strict=True):
                if outcome is None:
                    stored[i] = False
        for delivery, ok in zip(batch, stored, strict=True):
            if ok:
                self.link.ack(delivery)
        if not all(stored):
            # Not stored, not acknowledged: reconnecting makes the broker deliver it again.
            logger.error(
                "event=mqtt_redeliver input=%s messages=%d", self.name, stored.count(False)
            )
            self.link.drop_connection()

    def _read(self, message: mqtt.MQTTMessage) -> list[Reading]:
        for sub, adapter in self._adapters:
            if mqtt.topic_matches_sub(sub.topic, message.topic):
                try:
                    return adapter.read(message.topic, message.payload)
                except PayloadError as exc:
                    self.status.count("mqtt_bad_payloads")
                    self.health.bad_frames += 1
                    logger.warning(
                        "event=mqtt_bad_payload input=%s topic=%s adapter=%s error=%s",
                        self.name,
                        message.topic,
                        sub.adapter,
                        exc,
                    )
                    return []
        return []

    async def _reading(self, reading: Reading, message: mqtt.MQTTMessage) -> PressSignal | None:
        """Keep what a message says about its device; the press, if it is one to decide on."""
        self.health.frames_ok += 1
        device = self.gateway.device(reading.device_id)
        if device is None:
            first = self.status.unknown_device(
                reading.device_id,
                self.source,
                press=reading.gesture is not None,
                detail=reading.detail,
            )
            if first or reading.gesture is not None:
                logger.warning(
                    "event=unknown_device input=%s device=%s press=%s detail=%r",
                    self.name,
                    reading.device_id,
                    reading.gesture is not None,
                    reading.detail,
                )
        else:
            # A signing button speaks only over its receiver: an MQTT message in its
            # name must not keep it looking alive.
            await self._device_state(reading, message.retain, trusted=device.auth != "hmac")
        if reading.gesture is None:
            return None
        if message.retain:
            # Old state replayed by the broker on subscribe: never an alarm (no phantoms).
            self.status.count("mqtt_retained_presses_ignored")
            logger.warning(
                "event=retained_press_ignored input=%s topic=%s device=%s",
                self.name,
                message.topic,
                reading.device_id,
            )
            return None
        if device is not None and device.auth == "hmac":
            # Registered as a signing button: an unsigned press in its name is a forgery.
            self.status.count("auth_failures")
            logger.warning(
                "event=frame_rejected input=%s device=%s reason=unsigned_press_for_hmac_device",
                self.name,
                reading.device_id,
            )
            return None
        assert reading.dedup_key is not None
        return PressSignal(
            source=self.source,
            device_id=reading.device_id,
            gesture=reading.gesture,
            dedup_key=reading.dedup_key,
            counter=reading.counter,
            battery_pct=reading.battery_pct,
            rssi_dbm=reading.rssi_dbm,
            frame_key=reading.frame_key,
        )

    async def _device_state(self, reading: Reading, retained: bool, trusted: bool) -> None:
        before = self.status.devices_seen.get(reading.device_id)
        was_tamper = before.tamper if before else False
        was_low = before.battery_low if before else False
        health = self.status.device_seen(
            reading.device_id,
            battery_pct=reading.battery_pct,
            tamper=reading.tamper,
            low=reading.battery_low,
            source=self.source,
            rssi_dbm=reading.rssi_dbm,
            linkquality=reading.linkquality,
            available=reading.available,
            spoofable=reading.spoofable,
            # Any fresh message (an rtl_433 heartbeat too) is a check-in for supervision;
            # a retained one is old news. Availability counts either way (device_watch.py).
            checkin=not retained and trusted,
        )
        if reading.fix is not None and not retained:
            lat, lon, acc = reading.fix
            await self.router.on_fix(Fix(self.source, reading.device_id, lat, lon, acc))
        if retained:
            return  # old state: shown, not news for a control room
        news = []
        if health.tamper and not was_tamper:
            news.append("was tampered with")
        if health.battery_low and not was_low:
            news.append("reports a low battery")
        if news:
            logger.warning(
                "event=device_status device=%s battery=%s tamper=%s battery_low=%s",
                reading.device_id,
                health.battery_pct,
                health.tamper,
                health.battery_low,
            )
            battery = f" (battery {health.battery_pct}%)" if health.battery_pct is not None else ""
            await self.router.note_device(
                reading.device_id,
                f"The panic button {reading.device_id} {' and '.join(news)}{battery}.",
            )

    # ------------------------------------------------------------------ health

    def refresh_health(self) -> None:
        now = time.monotonic()
        health = self.health
        before = health.state
        health.connected = self.link.connected
        health.error = self.link.error
        health.last_frame_age_s = (
            None if self._last_message is None else round(now - self._last_message, 1)
        )
        if self.link.state == CONNECTED:
            self._down_since = None
            health.state = "ok"
        else:
            if self._down_since is None:
                self._down_since = now
            if self.link.state == STARTING:
                health.state = "starting"
            elif self.link.state in ("unreachable", "no_answer"):
                long_down = now - self._down_since > self.config.watchdog_s
                health.state = "lost" if long_down else "disconnected"
            else:
                health.state = self.link.state  # refused, tls_error, config_error
        health.counters = {"connects": self.link.connects}
        if health.state != before:
            self.status.changed()


def _adapter(sub: Subscription, type_of: object) -> Zigbee2Mqtt | Rtl433 | JsonPayload:
    if sub.adapter == "zigbee2mqtt":
        return Zigbee2Mqtt(topic_base(sub.topic), type_of)  # type: ignore[arg-type]
    if sub.adapter == "rtl_433":
        return Rtl433(topic_base(sub.topic), type_of)  # type: ignore[arg-type]
    return JsonPayload(sub.fields, type_of)  # type: ignore[arg-type]

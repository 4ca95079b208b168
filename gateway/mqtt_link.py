"""One MQTT broker connection: a paho-mqtt client on its own network thread, bridged into
asyncio, reconnecting with backoff and saying in plain words why it is not connected.

paho-mqtt's own reconnect loop hides the reason a connection failed (a refused login, an
untrusted certificate, a plain client on a TLS port that never answers). Here every
attempt is made explicitly, so the status can tell a technician which one it is, and a
refusal waits the longest backoff rather than hammering the broker (no crash loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.backoff import Backoff
from gateway.config.models import BrokerSettings

logger = logging.getLogger(__name__)

# States a technician reads in `aura-gateway status`.
STARTING, CONNECTED, REFUSED, TLS_ERROR, UNREACHABLE, NO_ANSWER, CONFIG_ERROR = (
    "starting",
    "connected",
    "refused",
    "tls_error",
    "unreachable",
    "no_answer",
    "config_error",
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message and the connection it came on: only that connection may acknowledge it
    (message ids are per connection; a PUBACK on the next one could ack another message)."""

    message: mqtt.MQTTMessage
    client: mqtt.Client


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will the broker publishes for us if we vanish without saying goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class ConnectFailed(Exception):
    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


class MqttLink:
    def __init__(
        self,
        settings: BrokerSettings,
        *,
        name: str,
        client_id: str,
        password: str | None,
        base_dir: Path,
        on_message: Callable[[Delivery], None] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        will: Will | None = None,
        persistent: bool = False,
        manual_ack: bool = False,
    ) -> None:
        self.settings = settings
        self.name = name
        self.client_id = client_id
        self._password = password
        self._base_dir = base_dir
        self._on_message = on_message
        self._on_connected = on_connected
        self._will = will
        self._persistent = persistent
        self._manual_ack = manual_ack
        self.state = STARTING
        self.error: str | None = None
        self.connects = 0
        self.client: mqtt.Client | None = None
        self._lost: asyncio.Event | None = None
        self.state_changed: Callable[[], None] = lambda: None

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Connect, stay connected, reconnect; until cancelled. Never raises for the broker."""
        backoff = Backoff(0.2, self.settings.reconnect_max_s)
        while True:
            try:
                await self._session(backoff)
                delay = backoff.next_delay()
            except ConnectFailed as exc:
                self._set(exc.state, str(exc))
                # A refusal or a bad certificate will not fix itself in a second: wait long.
                slow = exc.state in (REFUSED, TLS_ERROR, CONFIG_ERROR)
                delay = self.settings.reconnect_max_s if slow else backoff.next_delay()
            except Exception as exc:  # the broker link must never take the daemon down
                logger.exception("event=mqtt_fault link=%s", self.name)
                self._set(UNREACHABLE, f"unexpected error: {type(exc).__name__}")
                delay = self.settings.reconnect_max_s
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        client = self._make_client()
        connack: asyncio.Future[Any] = loop.create_future()
        lost = asyncio.Event()

        def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
            loop.call_soon_threadsafe(_settle, connack, (flags, reason))

        def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            loop.call_soon_threadsafe(lost.set)

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            if self._on_message is not None:
                loop.call_soon_threadsafe(self._on_message, Delivery(message, client))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        timeout = self.settings.connect_timeout_s
        try:
            connecting = asyncio.ensure_future(
                asyncio.to_thread(
                    client.connect,
                    self.settings.host,
                    self.settings.port,
                    self.settings.keepalive_s,
                )
            )
            try:
                await asyncio.wait_for(asyncio.shield(connecting), timeout)
            except ssl.SSLCertVerificationError as exc:
                raise ConnectFailed(
                    TLS_ERROR,
                    f"broker certificate not trusted with ca_file: {exc.verify_message}",
                ) from None
            except ssl.SSLError as exc:
                raise ConnectFailed(TLS_ERROR, f"TLS handshake failed: {exc.reason}") from None
            except TimeoutError:
                # The thread goes on; should it still connect, that connection is closed at
                # once rather than left holding our client id.
                connecting.add_done_callback(lambda _f: _quietly(client.disconnect))
                raise ConnectFailed(
                    NO_ANSWER,
                    f"no answer from {self._where()} within {timeout:g} s",
                ) from None
            except OSError as exc:
                raise ConnectFailed(
                    UNREACHABLE, f"cannot reach {self._where()}: {exc.strerror or exc}"
                ) from None
            client.loop_start()
            try:
                flags, reason = await asyncio.wait_for(connack, timeout)
            except TimeoutError:
                # A plain client on a TLS port: the broker never says a word.
                raise ConnectFailed(
                    NO_ANSWER,
                    f"{self._where()} accepted the connection but sent no CONNACK within "
                    f"{timeout:g} s (TLS port without tls settings?)",
                ) from None
            if reason.is_failure:
                raise ConnectFailed(REFUSED, f"broker refused the connection: {reason}")
            self.client = client
            self._lost = lost
            self.connects += 1
            session = "resumed" if getattr(flags, "session_present", False) else "new"
            logger.info(
                "event=mqtt_connected link=%s broker=%s session=%s",
                self.name,
                self._where(),
                session,
            )
            if self._on_connected is not None:
                await self._on_connected()
            self._set(CONNECTED, None)
            backoff.reset()
            await lost.wait()
            self._set(UNREACHABLE, f"connection to {self._where()} lost")
        finally:
            self.client = None
            self._lost = None
            with contextlib.suppress(Exception):
                client.disconnect()  # before loop_stop: the other order costs a second
            with contextlib.suppress(Exception):
                client.loop_stop()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self._persistent,
            protocol=mqtt.MQTTv311,
        )
        client.manual_ack_set(self._manual_ack)
        client.connect_timeout = s.connect_timeout_s
        # Reconnecting is ours; paho must not queue publishes for a dead connection forever.
        client.max_queued_messages_set(1000)
        if s.username is not None:
            client.username_pw_set(s.username, self._password)
        if s.tls is not None:
            client.tls_set_context(self._tls_context())
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.settings.tls
        assert tls is not None
        ca = self._path(tls.ca_file)
        try:
            context = ssl.create_default_context(cafile=str(ca))
            if tls.cert_file is not None and tls.key_file is not None:
                context.load_cert_chain(
                    str(self._path(tls.cert_file)), str(self._path(tls.key_file))
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(CONFIG_ERROR, f"cannot load TLS files: {exc}") from None
        return context

    def _path(self, path: Path) -> Path:
        return path if path.is_absolute() else self._base_dir / path

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _set(self, state: str, error: str | None) -> None:
        if (state, error) == (self.state, self.error):
            return
        was = self.state
        self.state, self.error = state, error
        if state != CONNECTED:
            log = logger.error if state in (REFUSED, TLS_ERROR, CONFIG_ERROR) else logger.warning
            log("event=mqtt_%s link=%s error=%r", state, self.name, error)
        elif was != STARTING:
            logger.info("event=mqtt_recovered link=%s", self.name)
        self.state_changed()

    # ------------------------------------------------------------------ use

    async def subscribe(self, topics: list[tuple[str, int]]) -> list[int]:
        """Subscribe and wait for the broker's answer: the granted QoS per topic (128 =
        refused, e.g. by the broker's ACL)."""
        client = self.client
        assert client is not None
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[list[int]] = loop.create_future()

        def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            loop.call_soon_threadsafe(_settle, granted, [int(c.value) for c in codes])

        client.on_subscribe = on_subscribe
        rc, _ = client.subscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectFailed(UNREACHABLE, f"subscribe failed: {mqtt.error_string(rc)}")
        try:
            return await asyncio.wait_for(granted, self.settings.connect_timeout_s)
        except TimeoutError:
            raise ConnectFailed(NO_ANSWER, "the broker did not answer the subscription") from None

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        client = self.client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a message now that what it carried is durable. One that came on an
        earlier connection is not: the broker redelivers it, and the journal knows it."""
        client = self.client
        if client is not None and client is delivery.client and delivery.message.qos > 0:
            client.ack(delivery.message.mid, delivery.message.qos)

    def drop_connection(self) -> None:
        """Close the connection so the broker redelivers what we could not store."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            if self._lost is not None:
                self._lost.set()


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        action()


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)

"""The receiver on a serial port: frames in, signals to the router, acks and indications out.

A press is acknowledged to the receiver only after the router reports it durable; until
then the receiver keeps resending it (firmware_bridge/PROTOCOL.md). Presses of
authenticated buttons must carry a MAC under the button's key; a wrong tag is refused
(NAK "rejected", which ends the receiver's resends) and counted, never raised.
"""

from __future__ import annotations

import contextlib
import logging
import time

from firmware_bridge.auth import verify_press, verify_status
from firmware_bridge.frames import (
    Ack,
    DeviceFix,
    DeviceStatus,
    Frame,
    Hello,
    IndicationState,
    Nak,
    NakReason,
    Press,
)
from firmware_bridge.link import LinkDown, ReceiverLink
from gateway.clock import CLOCK
from gateway.config import Config
from gateway.config.models import SerialInputConfig
from gateway.router import PressOutcome, Router
from gateway.signals import Fix
from gateway.signals import Press as PressSignal
from gateway.status import InputHealth, StatusModel

logger = logging.getLogger(__name__)

INDICATIONS = {
    "help_called": IndicationState.HELP_CALLED,
    "help_on_the_way": IndicationState.HELP_ON_THE_WAY,
    "on_scene": IndicationState.ON_SCENE,
    "delivery_failing": IndicationState.DELIVERY_FAILING,
    "clear": IndicationState.CLEAR,
}


def device_key(device_id: int) -> str:
    """Receiver device ids are u32; the registry spells them as 8 lowercase hex digits."""
    return f"{device_id:08x}"


class SerialInput:
    def __init__(
        self, config: SerialInputConfig, router: Router, status: StatusModel, gateway: Config
    ) -> None:
        self.name = config.name
        self.config = config
        self.router = router
        self.status = status
        self.gateway = gateway
        self.health = status.inputs.setdefault(self.name, InputHealth())
        self.session: int | None = None  # from the receiver's HELLO
        self._started = time.monotonic()
        self._shown: dict[str, str] = {}  # device -> indication last sent
        self.link = ReceiverLink(
            config.port,
            config.baudrate,
            name=config.name,
            reopen_backoff_max_s=config.reopen_backoff_max_s,
        )

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def run(self) -> None:
        async with self.link:
            async for first in self.link.frames():
                # A burst (after a reopen, or many buttons at once) is handled as one batch:
                # one journal transaction for all its presses, presses before anything else.
                batch = [first, *self.link.ready_frames()]
                verdicts = await self._handle_batch(batch)
                self.refresh_health()
                # Not acked when the link is down: the receiver resends, the journal knows it.
                with contextlib.suppress(LinkDown):
                    for frame, verdict in zip(batch, verdicts, strict=True):
                        if verdict is None:
                            continue  # the receiver's own ACK/NAK: never answered
                        if verdict is True:
                            await self.link.ack(frame.seq)
                        elif verdict is False:
                            await self.link.nak(frame.seq, NakReason.STORE_FAILED)
                        else:
                            await self.link.nak(frame.seq, verdict)

    # ------------------------------------------------------------------ frames

    async def _handle_batch(self, batch: list[Frame]) -> list[bool | NakReason | None]:
        """True: ack. False: NAK "store failed" (resend later). A reason: NAK, no resend.
        None: no answer (the receiver acknowledging our indications and time)."""
        verdicts: list[bool | NakReason | None] = [True] * len(batch)
        presses: list[tuple[int, Press, PressSignal]] = []
        for i, frame in enumerate(batch):
            if isinstance(frame, Press):
                checked = self._press_signal(frame)
                if isinstance(checked, PressSignal):
                    presses.append((i, frame, checked))
                else:
                    verdicts[i] = checked
        if presses:
            outcomes = await self.router.on_presses(
                [signal for _, _, signal in presses], repeat_window_s=self.config.repeat_window_s
            )
            for (i, _, signal), outcome in zip(presses, outcomes, strict=True):
                self._press_heard(signal, outcome)
                verdicts[i] = await self._press_verdict(signal, outcome)
        for i, frame in enumerate(batch):
            if not isinstance(frame, Press):
                verdicts[i] = await self._handle(frame)
        return verdicts

    async def _handle(self, frame: Frame) -> bool | NakReason | None:
        if isinstance(frame, Ack | Nak):
            return None
        if isinstance(frame, DeviceFix):
            return await self._fix(frame)
        if isinstance(frame, DeviceStatus):
            return await self._device_status(frame)
        if isinstance(frame, Hello):
            if frame.session != self.session:
                logger.info(
                    "event=receiver_hello input=%s receiver=%08x firmware=%d.%d.%d session=%08x",
                    self.name,
                    frame.receiver_id,
                    frame.fw_major,
                    frame.fw_minor,
                    frame.fw_patch,
                    frame.session,
                )
            self.session = frame.session
            # A receiver that (re)announces itself gets the time, and whether to trust it.
            with contextlib.suppress(LinkDown):
                await self.link.send_time(int(time.time() * 1000), CLOCK.trusted())
            return True
        return True  # receiver status and anything newer: heard, nothing to store

    def _press_signal(self, frame: Press) -> PressSignal | NakReason:
        dev_id = device_key(frame.device_id)
        device = self.gateway.device(dev_id)
        if device is not None and device.auth == "network":
            # Its network authenticates it on another input; over this radio it is a forgery.
            return self._reject(
                frame.device_id, frame.counter, "not_a_receiver_device", frame.rssi_dbm
            )
        authenticated = device is not None and device.auth == "hmac"
        if authenticated:
            key = self.gateway.device_key(dev_id)
            if key is None or not verify_press(key, frame):
                return self._reject(frame.device_id, frame.counter, "bad_tag", frame.rssi_dbm)
        elif device is None:
            self.status.count("unknown_devices")
            self.status.unknown_device(
                dev_id,
                f"serial:{self.name}",
                press=True,
                detail=f"gesture {frame.gesture} counter {frame.counter} rssi {frame.rssi_dbm}",
            )
        return PressSignal(
            source=f"serial:{self.name}",
            device_id=dev_id,
            gesture=frame.gesture,
            # The same device and counter is the same transmission: a radio repeat, the
            # receiver resending, or a recording played back. The journal tells them apart.
            dedup_key=f"rf:{dev_id}:{frame.counter}",
            counter=frame.counter,
            battery_pct=frame.battery_pct,
            rssi_dbm=frame.rssi_dbm,
            frame_key=f"{self._session_text()}:{frame.seq}",
            authenticated=authenticated,
        )

    async def _press_verdict(
        self, signal: PressSignal, outcome: PressOutcome | None
    ) -> bool | NakReason:
        if outcome is None:
            return False
        if outcome.verdict == "replay":
            if self.session is None:
                # Before the receiver's HELLO its frame order is unknown: an older counter may
                # be a delayed frame it heard first. Ask for it again once the session is
                # known rather than refuse it for good.
                return False
            self.status.count("replays")
            return NakReason.REJECTED
        if outcome.verdict == "stored" and outcome.decision in ("raise", "attach"):
            await self.indicate(signal.device_id, "help_called")
        return True

    def _press_heard(self, signal: PressSignal, outcome: PressOutcome | None) -> None:
        """A registered button that pressed has spoken: its last seen, and a check-in for
        supervision. A replay (a recording played back) is not the button speaking."""
        if self.gateway.device(signal.device_id) is None:
            return  # counted as unknown in _press_signal
        if outcome is not None and outcome.verdict == "replay":
            return
        self.status.device_seen(
            signal.device_id,
            battery_pct=signal.battery_pct,
            source=signal.source,
            rssi_dbm=signal.rssi_dbm,
        )

    def _reject(self, device_id: int, counter: int, reason: str, rssi: int | None) -> NakReason:
        self.status.count("auth_failures")
        logger.warning(
            "event=frame_rejected input=%s device=%08x counter=%d reason=%s rssi=%s",
            self.name,
            device_id,
            counter,
            reason,
            rssi,
        )
        return NakReason.REJECTED

    async def _fix(self, frame: DeviceFix) -> bool:
        fix = Fix(
            source=f"serial:{self.name}",
            device_id=device_key(frame.device_id),
            latitude=frame.latitude,
            longitude=frame.longitude,
            accuracy_m=float(frame.accuracy_m),
            age_s=float(frame.age_s),
        )
        return await self.router.on_fix(fix)

    async def _device_status(self, frame: DeviceStatus) -> bool | NakReason:
        dev_id = device_key(frame.device_id)
        device = self.gateway.device(dev_id)
        if device is not None and device.auth == "hmac":
            key = self.gateway.device_key(dev_id)
            if key is None or not verify_status(key, frame):
                return self._reject(frame.device_id, frame.counter, "bad_tag", None)
        # A heartbeat: the button's check-in for supervision (through device_seen).
        self.status.device_seen(
            dev_id,
            battery_pct=frame.battery_pct,
            tamper=frame.tamper,
            low=frame.battery_low,
            source=f"serial:{self.name}",
        )
        if frame.tamper or frame.battery_low:
            logger.warning(
                "event=device_status device=%s battery=%s tamper=%s battery_low=%s",
                dev_id,
                frame.battery_pct,
                frame.tamper,
                frame.battery_low,
            )
            what = "was tampered with" if frame.tamper else "reports a low battery"
            battery = f" (battery {frame.battery_pct}%)" if frame.battery_pct is not None else ""
            await self.router.note_device(dev_id, f"The panic button {dev_id} {what}{battery}.")
        return True

    def _session_text(self) -> str:
        return f"{self.session:08x}" if self.session is not None else "nosession"

    # ------------------------------------------------------------------ downlink

    async def indicate(self, device_id: str, state: str) -> None:
        """Tell a button with an LED or buzzer how its alarm is doing (best effort)."""
        if self.gateway.device(device_id) is None or state not in INDICATIONS:
            return
        if self._shown.get(device_id) == state:
            return  # already showing it: a burst of presses is not a burst of downlinks
        with contextlib.suppress(LinkDown, ValueError):  # the alarm never depends on the LED
            await self.link.send_indication(int(device_id, 16), INDICATIONS[state])
            self._shown[device_id] = state

    # ------------------------------------------------------------------ health

    def refresh_health(self, now: float | None = None) -> None:
        """Receiver state for the status model: a dead receiver is not a quiet night."""
        now = time.monotonic() if now is None else now
        counters = self.link.counters
        health = self.health
        before = (health.state, health.bad_frames)
        last = self.link.last_frame_mono
        health.connected = self.link.connected
        health.last_frame_age_s = None if last is None else round(now - last, 1)
        if not self.link.connected:
            health.state = "disconnected"
        elif now - (self._started if last is None else last) > self.config.watchdog_s:
            health.state = "lost"
        else:
            health.state = "ok"
        health.frames_ok = counters.frames_ok
        # resyncs counts every discarded segment: CRC, decode and oversize errors alike.
        health.bad_frames = counters.resyncs
        health.counters = {
            "frames_ok": counters.frames_ok,
            "crc_errors": counters.crc_errors,
            "decode_errors": counters.decode_errors,
            "oversize": counters.oversize,
            "resyncs": counters.resyncs,
            "discarded_bytes": counters.discarded_bytes,
            "unknown_type": counters.unknown_type,
            "reopens": counters.reopens,
        }
        if health.bad_frames > before[1]:
            # Counted and skipped, never fatal; said once per burst, with the totals.
            logger.warning(
                "event=frames_skipped input=%s bad=%d crc=%d decode=%d oversize=%d bytes=%d ok=%d",
                self.name,
                health.bad_frames,
                counters.crc_errors,
                counters.decode_errors,
                counters.oversize,
                counters.discarded_bytes,
                counters.frames_ok,
            )
        if health.state != before[0]:
            log = logger.info if health.state == "ok" else logger.warning
            log(
                "event=receiver_%s input=%s last_frame_age_s=%s",
                health.state,
                self.name,
                health.last_frame_age_s,
            )
            self.status.changed()

"""The receiver on a serial port: frames in, signals to the router, acks out.

A press is acknowledged to the receiver only after the router reports it durable;
until then the receiver keeps resending it (firmware_bridge/PROTOCOL.md).
"""

from __future__ import annotations

import logging

from firmware_bridge.frames import DeviceFix, Hello, Press, ReceiverStatus
from firmware_bridge.link import LinkDown, ReceiverLink
from gateway.config.models import SerialInputConfig
from gateway.router import Router
from gateway.signals import Fix
from gateway.signals import Press as PressSignal
from gateway.status import InputHealth, StatusModel

logger = logging.getLogger(__name__)

NAK_STORE_FAILED = 3


def device_key(device_id: int) -> str:
    """Receiver device ids are u32; the registry spells them as 8 lowercase hex digits."""
    return f"{device_id:08x}"


class SerialInput:
    def __init__(self, config: SerialInputConfig, router: Router, status: StatusModel) -> None:
        self.name = config.name
        self.config = config
        self.router = router
        self.status = status
        self.health = status.inputs.setdefault(self.name, InputHealth())
        self.link = ReceiverLink(
            config.port,
            config.baudrate,
            name=config.name,
            reopen_backoff_max_s=config.reopen_backoff_max_s,
        )

    async def run(self) -> None:
        async with self.link:
            async for frame in self.link.frames():
                self._update_health()
                stored = await self._handle(frame)
                try:
                    if stored:
                        await self.link.ack(frame.seq)
                    else:
                        await self.link.nak(frame.seq, NAK_STORE_FAILED)
                except LinkDown:
                    pass  # not acked: the receiver resends and the journal recognises it

    async def _handle(self, frame: object) -> bool:
        if isinstance(frame, Press):
            signal = PressSignal(
                source=f"serial:{self.name}",
                device_id=device_key(frame.device_id),
                gesture=frame.gesture,
                # The same device and counter is the same transmission, whether a radio
                # repeat or the receiver resending a frame we had not acked yet.
                dedup_key=f"rf:{frame.device_id:08x}:{frame.counter}",
                counter=frame.counter,
                battery_pct=frame.battery_pct,
                rssi_dbm=frame.rssi_dbm,
            )
            return await self.router.on_press(signal)
        if isinstance(frame, DeviceFix):
            fix = Fix(
                source=f"serial:{self.name}",
                device_id=device_key(frame.device_id),
                latitude=frame.latitude,
                longitude=frame.longitude,
                accuracy_m=float(frame.accuracy_m),
                age_s=float(frame.age_s),
            )
            return await self.router.on_fix(fix)
        if isinstance(frame, Hello):
            logger.info(
                "event=receiver_hello input=%s receiver=%08x firmware=%d.%d.%d session=%08x",
                self.name,
                frame.receiver_id,
                frame.fw_major,
                frame.fw_minor,
                frame.fw_patch,
                frame.session,
            )
            return True
        if isinstance(frame, ReceiverStatus):
            return True
        return True

    def _update_health(self) -> None:
        counters = self.link.counters
        was = self.health.connected
        bad_before = self.health.bad_frames
        self.health.connected = self.link.connected
        self.health.frames_ok = counters.frames_ok
        # resyncs counts every discarded segment: CRC, decode and oversize errors alike.
        self.health.bad_frames = counters.resyncs
        if self.health.bad_frames > bad_before:
            # Counted and skipped, never fatal; said once per burst, with the totals.
            logger.warning(
                "event=frames_skipped input=%s bad=%d crc=%d decode=%d oversize=%d bytes=%d ok=%d",
                self.name,
                self.health.bad_frames,
                counters.crc_errors,
                counters.decode_errors,
                counters.oversize,
                counters.discarded_bytes,
                counters.frames_ok,
            )
        if was != self.health.connected:
            self.status.changed()

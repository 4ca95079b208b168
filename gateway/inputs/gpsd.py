"""The gateway's own GPS, read from gpsd's JSON protocol (a position for vehicle buttons).

Our own asyncio client rather than gpsd-py3: that library blocks forever on a silent
server (no timeouts) and turns a missing field into 0.0, which for lat/lon is a position in
the Gulf of Guinea. Here every wait has a timeout, gpsd being away is never an exception
out of :meth:`GpsdInput.run`, and a TPV without coordinates is no position at all.

What the router hears:

* a good TPV (mode >= ``min_mode``, coordinates present, horizontal error known to be
  within ``max_error_m`` or unknown) -> ``on_gateway_fix(fix)``;
* gpsd *says* the fix is gone or poor (mode too low, error too large, no coordinates)
  -> ``on_gateway_fix(None)``, once per loss: the position is unknown from now on;
* gpsd itself goes away (killed, restarted, socket silent) -> nothing. Feeding stops and
  the last fix goes stale by age (``[gateway] max_fix_age_s``) in the engine. A gpsd
  restart of a second or two must not throw away a fix that is still fresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

from gateway.backoff import Backoff
from gateway.clock import CLOCK
from gateway.config import Config
from gateway.config.models import GpsdInputConfig
from gateway.router import Router
from gateway.signals import GATEWAY_FIX, Fix
from gateway.status import InputHealth, StatusModel

logger = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true}\n'
# gpsd's longest messages (SKY with many satellites) are a few kB; a line longer than this
# is not gpsd talking.
LINE_LIMIT = 256 * 1024
COUNTERS = (
    "tpv_good",
    "tpv_no_fix",
    "tpv_poor_accuracy",
    "tpv_no_position",
    "tpv_without_time",
    "bad_lines",
    "reconnects",
)


class GpsdGone(Exception):
    """This connection is over: close it and connect again (never leaves run()).

    ``silent``: gpsd answered but then said nothing for ``read_timeout_s`` (no receiver
    data, or a half-open socket). gpsd is still there, so the health says "lost", not
    "disconnected", while we reconnect to make sure."""

    def __init__(self, reason: str, *, silent: bool = False) -> None:
        super().__init__(reason)
        self.silent = silent


def _number(msg: dict[str, Any], key: str) -> float | None:
    """A finite number, or None: a missing, null, NaN or non-numeric field is unknown,
    never 0.0."""
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def horizontal_error_m(tpv: dict[str, Any]) -> float | None:
    """gpsd's horizontal error estimate (95 %): ``eph``, else the larger of the longitude
    and latitude errors ``epx``/``epy`` when both are given, else unknown."""
    eph = _number(tpv, "eph")
    if eph is not None:
        return eph
    epx, epy = _number(tpv, "epx"), _number(tpv, "epy")
    if epx is not None and epy is not None:
        return max(epx, epy)
    return None


class GpsdInput:
    """One gpsd connection: TPV reports in, the gateway's fix (or its loss) to the router."""

    def __init__(
        self, config: GpsdInputConfig, router: Router, status: StatusModel, gateway: Config
    ) -> None:
        self.name = config.name
        self.config = config
        self.router = router
        self.status = status
        self.gateway = gateway  # unused: the gateway's GPS belongs to no device entry
        self.health = status.inputs.setdefault(self.name, InputHealth())
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.frames_ok = 0
        self._reachable = False  # gpsd answered the newest attempt like gpsd
        self._tried = False  # a connection attempt has finished (either way)
        self._connected_at: float | None = None  # first time gpsd answered
        self._last_line: float | None = None
        self._last_tpv: float | None = None
        self._fix_ok = False  # the newest TPV was good
        self._why: str | None = None  # the latest reason for no fix or no gpsd, in words
        # The router holds a fix from us that we have not withdrawn. Kept across
        # reconnects: a gpsd that comes back saying "no fix" still withdraws it.
        self._has_fix = False
        self._fed = False  # this connection has given the router a fix
        self._writer: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._reachable

    async def indicate(self, device_id: str, state: str) -> None:
        """gpsd has no buttons to tell anything."""

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        backoff = Backoff(0.2, self.config.reconnect_max_s)
        failures = 0  # in a row without a fix: the first is said at INFO, the rest at DEBUG
        while True:
            silent = False
            try:
                await self._session(backoff)
            except GpsdGone as exc:
                reason, silent = str(exc), exc.silent
            except OSError as exc:  # refused, reset, unreachable
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                # Last resort: the daemon must not die of its GPS.
                logger.exception("event=gps_fault input=%s", self.name)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                # Also on cancellation: the socket never outlives the task.
                self._close()
            failures = 1 if self._fed else failures + 1
            self._why = reason
            if not silent and self._reachable:
                self._reachable = False
                logger.warning("event=gps_connection_lost input=%s reason=%r", self.name, reason)
            self.counters["reconnects"] += 1
            # Not on_gateway_fix(None): gpsd being away says nothing about the sky. Feeding
            # stops and the last fix goes stale by age (max_fix_age_s); a gpsd restart of a
            # second or two does not throw away a fix that is still fresh.
            delay = backoff.next_delay()
            (logger.info if failures == 1 else logger.debug)(
                "event=gps_reconnect input=%s reason=%r in_s=%.1f", self.name, reason, delay
            )
            self.refresh_health()
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        cfg = self.config
        self._fed = False
        try:
            try:
                reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(cfg.host, cfg.port, limit=LINE_LIMIT),
                    cfg.connect_timeout_s,
                )
            except TimeoutError:
                raise GpsdGone(f"connect timeout after {cfg.connect_timeout_s:g} s") from None
            # gpsd greets at once; a server that accepts but never speaks is not gpsd, so
            # the greeting belongs to the connect timeout.
            hello = await self._read_line(reader, cfg.connect_timeout_s, "no VERSION greeting")
            message = _parse(hello)
            if message is None or message.get("class") != "VERSION":
                raise GpsdGone(f"not gpsd: {hello[:60]!r}")
            self._writer.write(WATCH)
            await self._writer.drain()
        finally:
            self._tried = True
        if not self._reachable:
            logger.info(
                "event=gps_connected input=%s host=%s port=%d gpsd=%s",
                self.name,
                cfg.host,
                cfg.port,
                message.get("release"),
            )
        self._reachable = True
        if self._connected_at is None:
            self._connected_at = time.monotonic()
        self.refresh_health()
        while True:
            line = await self._read_line(reader, cfg.read_timeout_s, "gpsd silent", silent=True)
            self._last_line = time.monotonic()
            message = _parse(line)
            if message is None:
                # One garbled line is skipped and counted, not a reason to reconnect.
                self.counters["bad_lines"] += 1
                logger.warning(
                    "event=gps_bad_line input=%s bad=%d line=%r",
                    self.name,
                    self.counters["bad_lines"],
                    line[:60],
                )
                self.refresh_health()
                continue
            self.frames_ok += 1
            if message.get("class") == "TPV" and self._on_tpv(message):
                self._fed = True
                backoff.reset()

    async def _read_line(
        self, reader: asyncio.StreamReader, limit_s: float, why: str, *, silent: bool = False
    ) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readline(), limit_s)
        except TimeoutError:
            raise GpsdGone(f"{why} for {limit_s:g} s", silent=silent) from None
        except ValueError:  # longer than LINE_LIMIT
            raise GpsdGone("line too long") from None
        if not line.endswith(b"\n"):
            raise GpsdGone("gpsd closed the connection")
        return line

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ fixes

    def _on_tpv(self, tpv: dict[str, Any]) -> bool:
        """Gate one TPV; True when it gave the router a fix."""
        cfg = self.config
        self._last_tpv = time.monotonic()
        # gpsd's "time" is not used for freshness: the engine ages fixes by the monotonic
        # time we received them. It tells the clock tracker what time it is, but only with
        # a fix (mode >= 2): without one a receiver's time may be its own guess.
        if not isinstance(tpv.get("time"), str):
            self.counters["tpv_without_time"] += 1
        mode = tpv.get("mode")
        mode = mode if isinstance(mode, int) and not isinstance(mode, bool) else 0
        gps_utc = _utc(tpv.get("time")) if mode >= 2 else None
        if gps_utc is not None:
            CLOCK.gps_time(gps_utc, self._last_tpv)
        lat, lon = _number(tpv, "lat"), _number(tpv, "lon")
        error = horizontal_error_m(tpv)
        if mode < cfg.min_mode:
            return self._reject("tpv_no_fix", f"mode {mode}")
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return self._reject("tpv_no_position", f"mode {mode} without coordinates")
        if error is not None and error > cfg.max_error_m:
            return self._reject("tpv_poor_accuracy", f"error {error:.0f} m")
        # Unknown error (a 2D fix from RMC alone often has no eph/epx/epy): accepted, but
        # reported as the worst error we accept. Claiming better would send a responder
        # looking in too small a circle; refusing would lose a fix gpsd calls good.
        accuracy = cfg.max_error_m if error is None else error
        self.counters["tpv_good"] += 1
        self._fix_ok = True
        self._why = None
        if not self._has_fix:
            logger.info("event=gps_fix input=%s mode=%d accuracy_m=%.0f", self.name, mode, accuracy)
        self._has_fix = True
        self.router.on_gateway_fix(
            Fix(
                source=f"gpsd:{self.name}",
                device_id=GATEWAY_FIX,
                latitude=lat,
                longitude=lon,
                accuracy_m=accuracy,
                age_s=0.0,
            )
        )
        self.refresh_health()
        return True

    def _reject(self, counter: str, why: str) -> bool:
        self.counters[counter] += 1
        self._fix_ok = False
        self._why = f"no usable fix: {why}"
        if self._has_fix:
            # gpsd says the position is gone: withdraw it now, once, not on every TPV.
            self._has_fix = False
            logger.warning("event=gps_fix_lost input=%s reason=%r", self.name, why)
            self.router.on_gateway_fix(None)
        self.refresh_health()
        return False

    # ------------------------------------------------------------------ health

    def _state(self, now: float) -> str:
        if not self._reachable:
            return "disconnected" if self._tried else "starting"
        assert self._connected_at is not None
        if self._last_tpv is None:
            # Answered, no TPV yet: the receiver gets watchdog_s to speak.
            return "starting" if now - self._connected_at <= self.config.watchdog_s else "lost"
        if now - self._last_tpv > self.config.watchdog_s:
            return "lost"  # gpsd is there, its receiver says nothing
        # "no_fix": the receiver speaks but has no usable fix (indoors, cold start).
        return "ok" if self._fix_ok else "no_fix"

    def refresh_health(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        health = self.health
        before = health.state
        health.connected = self._reachable
        health.state = self._state(now)
        health.last_frame_age_s = (
            None if self._last_line is None else round(now - self._last_line, 1)
        )
        health.frames_ok = self.frames_ok
        health.bad_frames = self.counters["bad_lines"]
        health.counters = dict(self.counters)
        if health.state == "lost":
            health.error = f"no report from the GPS for over {self.config.watchdog_s:g} s"
        else:
            health.error = None if health.state in ("ok", "starting") else self._why
        if health.state != before:
            log = logger.info if health.state in ("ok", "starting") else logger.warning
            log(
                "event=gps_%s input=%s last_frame_age_s=%s",
                health.state,
                self.name,
                health.last_frame_age_s,
            )
            self.status.changed()


def _utc(value: Any) -> float | None:
    """gpsd's ISO 8601 UTC time (``2026-05-04T10:11:12.000Z``) as a Unix time, or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    return message if isinstance(message, dict) else None

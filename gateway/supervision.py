"""Device supervision: which buttons have stopped checking in. Pure: no I/O, no wall clock.

A device type (or one device) may say how often it checks in (``checkin_interval_s``: a
heartbeat over the receiver, an availability message or any message over MQTT). After
``missed_checkins`` intervals without one, the device is *silent*: a button with a flat
battery or out of range would not raise an alarm, and someone must go and look. A bridge
that says a device is unavailable (zigbee2mqtt availability "offline") makes it silent at
once, supervised or not. A silent device that speaks again recovers on its own.

The supervisor is told the device ids that were silent when the gateway last stopped (the
journal keeps them): those stay silent after a restart until they speak. Every other
supervised device gets a full allowance from the supervisor's start, because nothing was
listening while the gateway was down.

Time is the monotonic clock in nanoseconds, given by the caller; only transitions are
returned, so the daemon writes the journal on a change, never on a heartbeat.
:meth:`Supervisor.next_deadline_ns` says when the next transition to silent can happen,
so the daemon sleeps until then (or forever, when nothing is supervised).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config import Config
from gateway.config.models import DevicesFile

SECOND_NS = 1_000_000_000

SILENT: Literal["silent"] = "silent"
RECOVERED: Literal["recovered"] = "recovered"

# Why a device is silent; a timer silence ends when supervision is switched off.
_TIMER, _OFFLINE, _BEFORE_RESTART = "timer", "offline", "restart"


@dataclass(frozen=True, slots=True)
class Transition:
    """A device went silent or recovered, with why in words for a technician."""

    device_id: str
    state: Literal["silent", "recovered"]
    reason: str

    @property
    def silent(self) -> bool:
        return self.state == SILENT


@dataclass(slots=True)
class _Watch:
    interval_s: float | None  # None: not supervised by time
    missed_checkins: int
    last_ns: int  # last check-in, or when the supervisor started watching it
    heard: bool = False  # heard since the supervisor started watching it
    silent: bool = False
    cause: str | None = None

    @property
    def limit_ns(self) -> int | None:
        if self.interval_s is None:
            return None
        return round(self.interval_s * SECOND_NS) * self.missed_checkins


def _seconds(ns: int) -> str:
    s = ns / SECOND_NS
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}"


def _registry(source: DevicesFile | Config) -> dict[str, tuple[float | None, int]]:
    """Device id -> (check-in interval or None, missed check-ins) for every device."""
    registry = source.devices if isinstance(source, Config) else source
    out: dict[str, tuple[float | None, int]] = {}
    for device in registry.devices:
        kind = registry.device_types[device.type]
        interval = device.checkin_interval_s
        if interval is None:
            interval = kind.checkin_interval_s
        out[device.id.lower()] = (interval, kind.missed_checkins)
    return out


class Supervisor:
    """Check-in deadlines for every registered device; transitions out, nothing else."""

    def __init__(
        self,
        registry: DevicesFile | Config,
        clock_ns: Callable[[], int],
        silent: Mapping[str, str | None] | Iterable[str] = (),
    ) -> None:
        """``silent``: the devices silent at the last stop (id -> reason, or just ids)."""
        self._clock_ns = clock_ns
        self._watch: dict[str, _Watch] = {}
        now = clock_ns()
        given = dict(silent) if isinstance(silent, Mapping) else dict.fromkeys(silent)
        before = {k.lower(): v for k, v in given.items()}
        self._reasons: dict[str, str] = {}
        for device_id, (interval, misses) in _registry(registry).items():
            watch = _Watch(interval, misses, now)
            if device_id in before:
                watch.silent, watch.cause = True, _BEFORE_RESTART
                said = before[device_id]
                self._reasons[device_id] = "silent since before the restart" + (
                    f": {said}" if said else ""
                )
            self._watch[device_id] = watch

    # ------------------------------------------------------------------ queries

    def supervised(self, device_id: str) -> bool:
        watch = self._watch.get(device_id.lower())
        return watch is not None and watch.interval_s is not None

    def is_silent(self, device_id: str) -> bool:
        watch = self._watch.get(device_id.lower())
        return watch is not None and watch.silent

    def silent(self) -> dict[str, str]:
        """The silent devices now, id -> reason."""
        return {dev: self._reasons.get(dev, "") for dev, w in self._watch.items() if w.silent}

    def next_deadline_ns(self) -> int | None:
        """When the next device can go silent (monotonic ns); None: none can, sleep on."""
        deadlines = [
            w.last_ns + limit
            for w in self._watch.values()
            if not w.silent and (limit := w.limit_ns) is not None
        ]
        return min(deadlines, default=None)

    # ------------------------------------------------------------------ events

    def heard(self, device_id: str, now_ns: int) -> Transition | None:
        """The device spoke (a heartbeat, a press, any message): a recovery if it was silent."""
        device_id = device_id.lower()
        watch = self._watch.get(device_id)
        if watch is None:
            return None  # not in the registry: the status lists it as unknown
        was_silent, quiet_ns = watch.silent, now_ns - watch.last_ns
        heard_before = watch.heard
        watch.last_ns, watch.heard = now_ns, True
        if not was_silent:
            return None
        watch.silent, watch.cause = False, None
        reason = self._reasons.pop(device_id, "")
        if heard_before:
            words = f"heard again after {_seconds(quiet_ns)} s"
        else:
            words = "heard again since the gateway started"
        return Transition(device_id, RECOVERED, f"{words} (was: {reason})" if reason else words)

    def offline(
        self, device_id: str, now_ns: int, reason: str = "its bridge reports it unavailable"
    ) -> Transition | None:
        """A bridge says the device is unavailable: silent now, supervised or not."""
        device_id = device_id.lower()
        watch = self._watch.get(device_id)
        if watch is None or watch.silent:
            return None
        watch.silent, watch.cause = True, _OFFLINE
        self._reasons[device_id] = reason
        return Transition(device_id, SILENT, reason)

    def check(self, now_ns: int) -> list[Transition]:
        """Devices whose last check-in (or the start) is interval x missed_checkins old."""
        out = []
        for device_id, watch in self._watch.items():
            limit = watch.limit_ns
            if watch.silent or limit is None:
                continue
            quiet_ns = now_ns - watch.last_ns
            if quiet_ns < limit:
                continue
            assert watch.interval_s is not None
            missed = int(quiet_ns // round(watch.interval_s * SECOND_NS))
            every = f"every {watch.interval_s:g} s"
            if watch.heard:
                reason = f"no check-in for {_seconds(quiet_ns)} s ({missed} missed, {every})"
            else:
                reason = (
                    f"not heard since the gateway started {_seconds(quiet_ns)} s ago "
                    f"({missed} check-ins missed, {every})"
                )
            watch.silent, watch.cause = True, _TIMER
            self._reasons[device_id] = reason
            out.append(Transition(device_id, SILENT, reason))
        return out

    def reload(self, registry: DevicesFile | Config) -> list[Transition]:
        """A new device registry: removed devices are forgotten, new ones start their timer
        now, kept ones keep their state with the new interval. A device silent only because
        its check-ins were overdue recovers if it is no longer supervised."""
        now = self._clock_ns()
        out = []
        watches: dict[str, _Watch] = {}
        for device_id, (interval, misses) in _registry(registry).items():
            watch = self._watch.get(device_id)
            if watch is None:
                watches[device_id] = _Watch(interval, misses, now)
                continue
            watch.interval_s, watch.missed_checkins = interval, misses
            if watch.silent and watch.cause == _TIMER and interval is None:
                watch.silent, watch.cause, watch.last_ns = False, None, now
                self._reasons.pop(device_id, None)
                out.append(Transition(device_id, RECOVERED, "no longer supervised"))
            watches[device_id] = watch
        for gone in set(self._watch) - set(watches):
            self._reasons.pop(gone, None)
        self._watch = watches
        return out

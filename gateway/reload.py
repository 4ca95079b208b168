"""``systemctl reload aura-gateway`` (SIGHUP): a new device registry, all at once or not at all.

The unit's ``ExecReload=/bin/kill -HUP $MAINPID`` lands here. The three files are read and
checked exactly as at start (``load_config``: schema, cross-references, every button's key
in the credentials), off the event loop. Then:

* **refused** (any error): every problem is logged as ``file:line key: message``
  (``event=reload_refused``), the running registry stays, open incidents and held presses
  are untouched, and the status (``config error (reload refused)``, the LEDs, systemd's
  STATUS line) says so until a reload succeeds;
* **accepted**: one new ``Config`` (the running one with the new devices, device types and
  button keys) replaces the old in the engine (and through it the router, uplink,
  follower, walk test and control commands), every input and device supervision, in one
  step of the event loop: no press is ever decided half under the old registry and half
  under the new. Open incidents go on (they are keyed by customer/site/device in the
  engine, and the uplink and follower carry on without the device entry); a removed
  button's presses are from then on an unknown device; a new one raises at once.
  ``event=reload_done devices=N added=[..] removed=[..] changed=[..]``.

What needs a restart is said, never half applied: the settings of gateway.toml (AURA,
inputs, paths, LEDs...) and credentials.toml's AURA and MQTT secrets
(``event=reload_needs_restart``). Under systemd the credentials are systemd's copy made at
start (``LoadCredential=``), so a newly provisioned button key needs a restart too (the
refusal says so).

systemd hears ``RELOADING=1`` before and ``READY=1`` after, either way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway import sdnotify
from gateway.config import Config, ConfigError, load_config
from gateway.config.loader import load_devices, systemd_credential
from gateway.status import StatusModel

logger = logging.getLogger(__name__)


def _ids(config: Config) -> set[str]:
    return {d.id for d in config.devices.devices}


def _list(ids: list[str]) -> str:
    return "[" + ",".join(ids) + "]"  # no spaces: one key=value field in the log


class Reloader:
    """Holds the running config and swaps it where it is used."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Any,
        inputs: list[Any],
        device_watch: Any,
        status: StatusModel,
        notify: Callable[[str], object] = sdnotify.notify,
        load: Callable[[Any], Config] = load_config,
    ) -> None:
        self.config = config
        self.engine = engine
        self.inputs = inputs
        self.device_watch = device_watch
        self.status = status
        self._notify = notify
        self._load = load
        self.requested = asyncio.Event()

    def request(self) -> None:
        """From the SIGHUP handler: reloads asked for while one runs are one more reload."""
        self.requested.set()

    async def run(self) -> None:
        while True:
            await self.requested.wait()
            self.requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """One reload; True when the new registry runs."""
        self._notify(
            f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
            "STATUS=reloading the device registry"
        )
        old = self.config
        logger.info("event=reload_started config=%s devices_file=%s", old.path, old.devices_path)
        try:
            new = await asyncio.to_thread(self._load, old.path)
        except ConfigError as exc:
            self._refused(exc)
            return False
        except Exception as exc:  # an unexpected fault must not take the daemon down
            logger.exception("event=reload_refused problems=1 error=%r", str(exc))
            self._set_error(f"reload failed: {exc}")
            return False
        if new.gateway != old.gateway:
            # gateway.toml changed too, but only a restart applies it: the new devices must
            # also hold against the settings that keep running (e.g. [gateway.position]).
            try:
                await asyncio.to_thread(load_devices, new.devices_path, old.gateway, warnings=[])
            except ConfigError as exc:
                self._refused(exc)
                return False
        self._apply(old, new)
        return True

    def _refused(self, exc: ConfigError) -> None:
        files = sorted({str(p.file) for p in exc.problems if p.file is not None})
        hint = ""
        keys_missing = any("no key for device" in p.message for p in exc.problems)
        if keys_missing and systemd_credential() is not None:
            hint = (
                "\nnote: systemd handed the credentials over at start (LoadCredential=); "
                "after adding a button's key to credentials.toml: systemctl restart aura-gateway"
            )
        logger.error(
            "event=reload_refused problems=%d files=%s kept=running_config\n%s%s",
            len(exc.problems),
            ",".join(files) or "-",
            exc,
            hint,
        )
        first = str(exc.problems[0]) if exc.problems else "unknown error"
        more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        self._set_error(first + more)

    def _set_error(self, error: str) -> None:
        self.status.config_error = error
        self.status.changed()
        self._notify(
            f"READY=1\nSTATUS=reload refused, running config kept: {error}; {self.status.summary()}"
        )

    def _apply(self, old: Config, new: Config) -> None:
        credentials = old.credentials.model_copy(
            update={"device_keys": new.credentials.device_keys}
        )
        swapped = dataclasses.replace(
            old,
            devices=new.devices,
            devices_path=new.devices_path,
            credentials=credentials,
            warnings=new.warnings,
        )
        before, after = _ids(old), _ids(swapped)
        added = sorted(after - before)
        removed = sorted(before - after)
        changed = sorted(
            d
            for d in before & after
            if old.device(d) != swapped.device(d) or old.device_key(d) != swapped.device_key(d)
        )
        types_changed = old.devices.device_types != swapped.devices.device_types
        # The swap: no await from here to the end, so no task sees half of it.
        self.config = swapped
        self.engine.config = swapped
        for item in self.inputs:
            item.gateway = swapped
        self.device_watch.reload(swapped)
        self.status.devices = len(swapped.devices.devices)
        self.status.config_error = None
        self.status.changed()
        for warning in new.warnings:
            logger.warning("event=config_warning %s", warning)
        logger.info(
            "event=reload_done devices=%d added=%s removed=%s changed=%s device_types=%s",
            len(swapped.devices.devices),
            _list(added),
            _list(removed),
            _list(changed),
            "changed" if types_changed else "same",
        )
        self._restart_notes(old, new)
        self._notify("READY=1\nSTATUS=" + self.status.summary())

    def _restart_notes(self, old: Config, new: Config) -> None:
        """Say what changed but runs on as before until a restart (never the values)."""
        sections = [
            name
            for name in type(old.gateway).model_fields
            if getattr(old.gateway, name) != getattr(new.gateway, name)
        ]
        secrets = [
            name
            for name in ("aura", "mqtt_passwords")
            if getattr(old.credentials, name) != getattr(new.credentials, name)
        ]
        if sections:
            logger.warning(
                "event=reload_needs_restart file=%s changed=%s "
                "note='these settings apply at the next restart: systemctl restart aura-gateway'",
                new.path,
                _list(sections),
            )
        if secrets:
            logger.warning(
                "event=reload_needs_restart file=%s changed=%s "
                "note='secrets apply at the next restart: systemctl restart aura-gateway'",
                new.credentials_path,
                _list(secrets),
            )

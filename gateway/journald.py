"""Logging to journald with structured fields, in pure Python (no systemd-python).

Under systemd the daemon's stderr is a stream into the journal, which keeps each line as a
plain ``MESSAGE``. Spoken natively instead (one datagram per record to
``/run/systemd/journal/socket``, the protocol of sd_journal_send), each entry also carries
fields a technician can filter on::

    journalctl -u aura-gateway DEVICE=00a1b2c3
    journalctl -u aura-gateway EVENT=callout_raised -o verbose
    journalctl -u aura-gateway INCIDENT=inc-7 + CALLOUT_ID=1234

``PRIORITY`` (from the level), ``SYSLOG_IDENTIFIER``, ``CODE_FILE``/``CODE_LINE``/
``CODE_FUNC``, ``LOGGER``, and from the ``key=value`` words of the message: ``EVENT``,
``DEVICE``, ``INCIDENT``, ``CALLOUT_ID``, ``ROUTE``, ``INPUT``. Only those: a field is
never anything the message does not already say, and the messages never carry a secret.

Used only when stderr *is* the journal (``$JOURNAL_STREAM`` names stderr's device and
inode, as systemd sets it); a record the socket refuses (journald restarting, a message
too large for one datagram) goes to the plain stderr handler instead, so nothing is lost.
Sending never blocks (``MSG_DONTWAIT``): when journald's queue is full a record is dropped
and counted, and ``event=log_dropped records=N`` says so once journald reads again.
systemd-python would need libsystemd-dev and a C build for this (README, TESTBED.md §1).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import sys
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "aura-gateway"

# Our log words -> journal fields (uppercase, as journald wants them).
FIELDS = {
    "event": "EVENT",
    "device": "DEVICE",
    "incident": "INCIDENT",
    "callout": "CALLOUT_ID",
    "callout_id": "CALLOUT_ID",
    "route": "ROUTE",
    "input": "INPUT",
}
_WORD = re.compile(r"(?<![\w.])(" + "|".join(FIELDS) + r")=('[^']*'|\"[^\"]*\"|[^\s,;]+)")

# syslog priorities (sd-daemon.h): journalctl -p filters on these.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


def priority(levelno: int) -> int:
    for level, value in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return value
    return 7  # debug


def stderr_is_journal(fd: int = 2) -> bool:
    """True when ``fd`` is the stream systemd connected to the journal (sd_journal_stream_fd
    sets ``JOURNAL_STREAM=<device>:<inode>`` for exactly that)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def fields_of(message: str) -> dict[str, str]:
    """The structured fields a message's ``key=value`` words give (first of each)."""
    found: dict[str, str] = {}
    for key, value in _WORD.findall(message):
        name = FIELDS[key]
        if name not in found:
            found[name] = value[1:-1] if value[:1] in "'\"" and len(value) > 1 else value
    return found


def encode(fields: dict[str, str]) -> bytes:
    """journald's native format: ``KEY=value\\n``, or for a value with a newline ``KEY\\n``,
    its length as 64-bit little endian, the value, ``\\n``."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournaldHandler(logging.Handler):
    """One datagram per record to journald's native socket; ``fallback`` when refused."""

    def __init__(
        self,
        socket_path: str | Path = JOURNAL_SOCKET,
        *,
        identifier: str = IDENTIFIER,
        fallback: logging.Handler | None = None,
    ) -> None:
        super().__init__()
        self.socket_path = str(socket_path)
        self.identifier = identifier
        self.fallback = fallback
        self._sock: socket.socket | None = None
        self.dropped = 0  # records journald had no room for, not yet reported
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def record_fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = self.format(record)
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        if record.threadName and record.threadName != "MainThread":
            fields["THREAD"] = record.threadName
        fields.update(fields_of(record.getMessage()))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode(self.record_fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            if self.dropped:
                self._send(self._dropped_notice())
                self.dropped = 0
            self._send(data)
        except BlockingIOError:
            # journald's queue is full (it is not reading): never wait for it, the caller is
            # the event loop. Not to stderr either, that is a stream into the same journald.
            # Counted, and said once journald takes datagrams again.
            self.dropped += 1
        except OSError:
            # journald away or the record too big for a datagram: the plain stream has it.
            if self.fallback is not None:
                self.fallback.handle(record)

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendto(data, socket.MSG_DONTWAIT, self.socket_path)

    def _dropped_notice(self) -> bytes:
        return encode(
            {
                "MESSAGE": f"{__name__}: event=log_dropped records={self.dropped}"
                " (journald's socket was full)",
                "PRIORITY": str(priority(logging.WARNING)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": __name__,
                "EVENT": "log_dropped",
            }
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


def use_journald_if_connected(
    logger: logging.Logger | None = None, *, socket_path: str | Path = JOURNAL_SOCKET
) -> bool:
    """Under systemd (stderr is the journal and its socket is there): put a
    :class:`JournaldHandler` in place of each stderr handler of ``logger`` (the root), the
    old handler staying as its fallback. True when it did."""
    logger = logger or logging.getLogger()
    if not stderr_is_journal() or not Path(socket_path).exists():
        return False
    replaced = False
    for handler in list(logger.handlers):
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            journald = JournaldHandler(socket_path, fallback=handler)
            journald.setLevel(handler.level)
            logger.removeHandler(handler)
            logger.addHandler(journald)
            replaced = True
    return replaced

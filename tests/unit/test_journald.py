"""The journald handler speaks the native protocol to a real datagram socket."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import journald
from gateway.journald import JournaldHandler, encode, fields_of, stderr_is_journal


def parse(data: bytes) -> dict[str, str]:
    """journald's side of the native format (what sd_journal_send writes)."""
    fields: dict[str, str] = {}
    while data:
        line_end = data.index(b"\n")
        head = data[:line_end]
        if b"=" in head:
            key, value = head.split(b"=", 1)
            data = data[line_end + 1 :]
        else:
            key = head
            (size,) = struct.unpack("<Q", data[line_end + 1 : line_end + 9])
            value = data[line_end + 9 : line_end + 9 + size]
            assert data[line_end + 9 + size : line_end + 10 + size] == b"\n"
            data = data[line_end + 10 + size :]
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal_socket() -> Iterator[tuple[Path, socket.socket]]:
    folder = Path(tempfile.mkdtemp(prefix="agj-", dir="/tmp"))
    path = folder / "socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()
    path.unlink()
    folder.rmdir()


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("gateway.test_journald")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_record_becomes_one_entry_with_fields(journal_socket: tuple[Path, socket.socket]) -> None:
    path, sock = journal_socket
    handler = JournaldHandler(path)
    _logger(handler).warning(
        "event=callout_raised incident=%s callout=%d device=%s route=%s delay_s=%.3f",
        "inc-1",
        880001,
        "00a1b2c3",
        "customer",
        0.02,
    )
    fields = parse(sock.recv(65536))
    handler.close()
    assert fields["MESSAGE"] == (
        "gateway.test_journald: event=callout_raised incident=inc-1 callout=880001 "
        "device=00a1b2c3 route=customer delay_s=0.020"
    )
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "aura-gateway"
    assert fields["EVENT"] == "callout_raised"
    assert fields["INCIDENT"] == "inc-1"
    assert fields["CALLOUT_ID"] == "880001"
    assert fields["DEVICE"] == "00a1b2c3"
    assert fields["ROUTE"] == "customer"
    assert fields["CODE_FILE"].endswith("test_journald.py")
    assert fields["CODE_FUNC"] == "test_a_record_becomes_one_entry_with_fields"
    assert int(fields["CODE_LINE"]) > 0
    assert fields["LOGGER"] == "gateway.test_journald"
    # Nothing else: no field says more than the message does.
    assert set(fields) == {
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "CODE_FILE", "CODE_LINE",
        "CODE_FUNC", "EVENT", "INCIDENT", "CALLOUT_ID", "DEVICE", "ROUTE",
    }  # fmt: skip


def test_multiline_messages_and_tracebacks_use_the_length_form(
    journal_socket: tuple[Path, socket.socket],
) -> None:
    path, sock = journal_socket
    handler = JournaldHandler(path)
    try:
        raise ValueError("boom")
    except ValueError:
        _logger(handler).exception("event=uplink_fault incident=%s", "inc-2")
    fields = parse(sock.recv(65536))
    handler.close()
    assert fields["PRIORITY"] == "3"
    assert fields["MESSAGE"].startswith("gateway.test_journald: event=uplink_fault incident=inc-2")
    assert "Traceback" in fields["MESSAGE"] and "ValueError: boom" in fields["MESSAGE"]
    assert fields["INCIDENT"] == "inc-2"


def test_priorities_follow_the_levels() -> None:
    assert [journald.priority(level) for level in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


def test_fields_of_quoted_values_and_first_wins() -> None:
    assert fields_of("event=device_silent device=abc reason='no check-in' device=zzz") == {
        "EVENT": "device_silent",
        "DEVICE": "abc",
    }
    assert fields_of("event=x input=receiver route='site'") == {
        "EVENT": "x",
        "INPUT": "receiver",
        "ROUTE": "site",
    }
    # A word that only ends in a field name is not that field.
    assert fields_of("old_incident=inc-1 prev.device=x") == {}


def test_encode_round_trips() -> None:
    fields = {"MESSAGE": "two\nlines", "PRIORITY": "6", "EMPTY": ""}
    assert parse(encode(fields)) == fields


def test_refused_datagram_goes_to_the_fallback(tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = JournaldHandler(tmp_path / "no-journald-here", fallback=Keep())
    _logger(handler).info("event=ready devices=%d", 4)
    handler.close()
    assert [r.getMessage() for r in records] == ["event=ready devices=4"]


def test_a_full_journald_queue_never_blocks_and_the_drops_are_reported(
    journal_socket: tuple[Path, socket.socket],
) -> None:
    path, sock = journal_socket  # journald that does not read: its queue fills up
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    handler = JournaldHandler(path, fallback=logging.NullHandler())
    logger = _logger(handler)

    def flood() -> None:
        for n in range(5000):
            logger.info("event=press n=%d %s", n, "x" * 200)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    flooder.join(10)
    assert not flooder.is_alive(), "logging blocked on journald's full socket"
    dropped = handler.dropped
    assert dropped > 0

    sock.setblocking(False)  # journald reads again
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(65536)
    logger.info("event=ready after=flood")
    sock.settimeout(2)
    notice, record = parse(sock.recv(65536)), parse(sock.recv(65536))
    handler.close()
    assert notice["EVENT"] == "log_dropped" and notice["PRIORITY"] == "4"
    assert f"records={dropped}" in notice["MESSAGE"]
    assert record["EVENT"] == "ready"
    assert handler.dropped == 0


def test_stderr_is_journal_only_when_journal_stream_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stderr_is_journal(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not stderr_is_journal(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not stderr_is_journal(stream.fileno())
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stderr_is_journal(stream.fileno())


def test_use_journald_if_connected_swaps_the_stderr_handler(
    journal_socket: tuple[Path, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = journal_socket
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    logger = logging.getLogger("gateway.test_journald.swap")
    stderr_handler = logging.StreamHandler()  # sys.stderr
    logger.handlers = [stderr_handler]
    logger.propagate = False
    assert journald.use_journald_if_connected(logger, socket_path=path)
    [handler] = logger.handlers
    assert isinstance(handler, JournaldHandler) and handler.fallback is stderr_handler
    logger.warning("event=reload_done devices=%d", 3)
    assert parse(sock.recv(65536))["EVENT"] == "reload_done"
    handler.close()
    # Not under systemd (JOURNAL_STREAM is another stream): nothing changes.
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    logger.handlers = [stderr_handler]
    assert not journald.use_journald_if_connected(logger, socket_path=path)
    assert logger.handlers == [stderr_handler]

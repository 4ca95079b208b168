"""The audit trail: an append-only, hash-chained record of what the gateway did and why.

Presses, the engine's decisions with their reasons, location choices and every request
to and answer from AURA, one JSON object a line in ``<dir>/audit-<n>.jsonl``::

    {"data":{...},"hash":"<64 hex>","kind":"press","mono_ns":123,"prev":"<64 hex>",
     "seq":42,"time":1764000000.123}

- ``seq`` counts records across all files (1, 2, 3, ...); ``time`` is the wall clock,
  ``mono_ns`` the monotonic clock of the boot the ``startup`` record names.
- ``prev`` is the ``hash`` of the record before it (64 zeros before the very first).
- ``hash`` is the SHA-256, in hex, of the record *without* ``hash`` written as canonical
  JSON: keys sorted, no spaces (``","`` and ``":"``), ASCII only (``\\uXXXX`` escapes),
  no NaN. The line itself is the canonical JSON of the whole record, so any altered
  byte, a deleted, inserted or reordered line shows: ``verify`` recomputes both.
- The first record of each file is its ``anchor``: ``data`` names the file, the file
  before it and that file's last seq, and its ``prev`` is that file's last hash, so the
  chain runs across files. A file is rotated at ``file_mb``; when all files together
  exceed ``max_mb`` the oldest go, after a ``rotated`` record saying through which seq,
  so ``verify`` tells rotation (verified "from seq N") from files deleted by hand.
- A line a power cut tore (no end of line) is never appended to: the next start opens a
  new file whose anchor declares the torn bytes (``torn_tail``).

Secrets never reach the file: values under keys such as ``clientSecret``, ``clientId``,
``accessToken``/``access_token``, ``token``, ``Authorization``, ``password`` and
``safeCode`` (a customer's duress code) are replaced by ``"[redacted]"``, and so is
anything that looks like a bearer token or a JWT anywhere in a text.

Writes go through one writer thread: ``record()`` only puts the event on a bounded queue
(never blocks; when the disk cannot keep up, events are counted and an ``audit_gap``
record says how many were lost). The writer batches for ``BATCH_S``, then writes and
flushes to the kernel; it does not fsync each record (only on rotation and at stop). The
journal (SQLite, fsync'd) is the durable record of every press and alarm; this trail is
the tamper-evident account of what happened, and a record lost in a power cut in its
last moment is the price of never slowing a press down.

A hash chain shows alteration inside what is there; it cannot show that the newest
records were cut off. ``aura_gateway_audit_last_seq`` in the metrics keeps the head
outside the box for that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
FIELDS = frozenset({"seq", "time", "mono_ns", "kind", "data", "prev", "hash"})
FILE_NAME = re.compile(r"audit-([0-9]+)\.jsonl")
REDACTED = "[redacted]"
MAX_DATA_CHARS = 16_384  # a bigger record keeps the digest of its body, not the body
BATCH_S = 0.05  # the writer gathers events this long before it writes: off the press path
QUEUE_MAX = 10_000
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Keys whose values are secret, compared lower-case without "_" and "-".
_SECRET_KEYS = frozenset(
    {
        "clientsecret",
        "clientid",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "token",
        "authorization",
        "proxyauthorization",
        "password",
        "passwd",
        "secret",
        "safecode",
        "apikey",
        "privatekey",
        "devicekey",
        "devicekeys",
        "mqttpasswords",
        "cookie",
        "setcookie",
    }
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def is_secret_key(key: str) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    return norm in _SECRET_KEYS or norm.endswith(("secret", "token", "password"))


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret replaced; other values as JSON can hold them."""
    if isinstance(value, dict):
        return {str(k): REDACTED if is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, str):
        if "eyJ" in value or _BEARER.search(value):
            value = _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", _JWT.sub(REDACTED, value))
        return value
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return redact(str(value))  # paths, enums, exceptions: as text, checked like text


def canonical(value: Any) -> str:
    """The one way a record is written: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the record without its ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("ascii")).hexdigest()


def _bounded(data: Any) -> Any:
    """Data as it is, or, when too big for one record, with its body (or all of it)
    replaced by the body's size and SHA-256: the record stays, the bulk does not."""
    text = canonical(data)
    if len(text) <= MAX_DATA_CHARS:
        return data
    if isinstance(data, dict) and "body" in data:
        body = canonical(data["body"])
        smaller = {**data, "body": {"truncated": True, "chars": len(body), "sha256": _sha(body)}}
        if len(canonical(smaller)) <= MAX_DATA_CHARS:
            return smaller
    return {"truncated": True, "chars": len(text), "sha256": _sha(text)}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def audit_files(directory: Path) -> list[tuple[int, Path]]:
    """The audit files in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m[1]), directory / n) for n in names if (m := FILE_NAME.fullmatch(n))]
    return sorted(found)


# --------------------------------------------------------------------------- writing

_STOP = object()


class AuditLog:
    """The writer: ``record()`` from any thread (the event loop), one thread writes."""

    enabled = True

    def __init__(
        self,
        directory: Path,
        *,
        file_bytes: int = 4 * 2**20,
        max_bytes: int = 32 * 2**20,
        batch_s: float = BATCH_S,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.directory = Path(directory)
        self.file_bytes = max(1024, int(file_bytes))
        self.max_bytes = max(self.file_bytes, int(max_bytes))
        self.batch_s = batch_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._drop_lock = threading.Lock()
        # Read by the metrics; written by the writer thread (and ``dropped`` by record()).
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_seq = 0
        # The writer thread's own state.
        self._file: IO[bytes] | None = None
        self._index = 0
        self._size = 0
        self._seq = 0
        self._prev = GENESIS
        self._lost = 0  # events not written because of a disk error
        self._gaps_told = 0
        self._failing = False

    @classmethod
    def from_settings(cls, settings: Any) -> AuditLog | NullAudit:
        """From ``[audit]`` (its path already made absolute by the config loader)."""
        if not settings.enabled:
            return NullAudit()
        return cls(
            Path(settings.path),
            file_bytes=int(settings.file_mb * 2**20),
            max_bytes=int(settings.max_mb * 2**20),
        )

    def start(self) -> AuditLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
            self._thread.start()
        return self

    def record(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one event; never blocks. ``data`` must not be changed afterwards."""
        if self._closed:
            return
        try:
            self._queue.put_nowait((kind, data, time.time(), time.monotonic_ns()))
        except queue.Full:
            with self._drop_lock:
                self.dropped += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is written to the file (tests, the CLI)."""
        if self._thread is None or self._closed:
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, fsync, stop the thread. Blocking: call it off the loop."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if self.batch_s and isinstance(item, tuple):
                time.sleep(self.batch_s)  # gather the rest of a burst; the loop keeps the GIL
            items = [item]
            with contextlib.suppress(queue.Empty):
                while True:
                    items.append(self._queue.get_nowait())
            stop = False
            waiting: list[threading.Event] = []
            for it in items:
                if it is _STOP:
                    stop = True
                elif isinstance(it, threading.Event):
                    waiting.append(it)
                else:
                    self._write(*it)
                    # Hand the GIL back after each record: a thread wanting it (the event
                    # loop with a press) would otherwise wait up to the 5 ms switch interval.
                    time.sleep(0)
            self._flush(sync=stop)
            for done in waiting:
                done.set()
            if stop:
                self._drop_file()
                return

    def _write(self, kind: str, data: Any, wall: float, mono_ns: int) -> None:
        try:
            if self._file is None:
                self._open()
            gap = self.dropped + self._lost - self._gaps_told
            if gap > 0:
                self._append(
                    "audit_gap",
                    {"lost": gap, "why": "events not written: queue full or disk error"},
                    wall,
                    mono_ns,
                )
                self._gaps_told += gap
            self._append(kind, data, wall, mono_ns)
            if self._size >= self.file_bytes:
                self._rotate()
            if self._failing:
                self._failing = False
                logger.info("event=audit_write_recovered dir=%s", self.directory)
        except Exception as exc:  # a disk error must never reach the press path
            self._lost += 1
            self.errors += 1
            if not self._failing:
                self._failing = True
                logger.error("event=audit_write_failed dir=%s error=%s", self.directory, exc)
            self._drop_file()

    def _append(self, kind: str, data: Any, wall: float, mono_ns: int) -> None:
        assert self._file is not None
        record = {
            "seq": self._seq + 1,
            "time": wall,
            "mono_ns": mono_ns,
            "kind": kind,
            "data": _bounded(redact(data)),
            "prev": self._prev,
        }
        record["hash"] = record_hash(record)
        line = canonical(record).encode("ascii") + b"\n"
        self._file.write(line)
        self._seq += 1
        self._size += len(line)
        self._prev = record["hash"]
        self.last_seq = self._seq
        self.written += 1

    def _flush(self, *, sync: bool = False) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            self.errors += 1
            logger.error("event=audit_write_failed dir=%s error=%s", self.directory, exc)
            self._drop_file()

    def _drop_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()

    def _open(self) -> None:
        """Carry on from what is on disk: append to the newest file if it ends cleanly,
        else (torn by a power cut, full, unreadable) start the next file, anchored."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        files = audit_files(self.directory)
        while files and files[-1][1].stat().st_size == 0:
            files.pop()[1].unlink()  # created, never written: nothing to keep
        if not files:
            self._start_file(1, None, None, GENESIS, 0)
            return
        index, path = files[-1]
        last, torn, size, clean = _last_record(path)
        if last is None and len(files) > 1 and torn == size:
            # Only a torn anchor (a power cut as the file began): chain on from the file
            # before it, declaring the torn bytes.
            last, _, _, clean = _last_record(files[-2][1])
        if last is None:
            logger.warning("event=audit_chain_unreadable file=%s", path)
            self._start_file(index + 1, path.name, None, GENESIS, 0, torn=torn or None)
        elif torn or size >= self.file_bytes or not clean:
            if not clean:
                # Lines after the last good record are damaged: `verify` will say where.
                logger.warning("event=audit_chain_damaged file=%s after_seq=%s", path, last["seq"])
            self._start_file(index + 1, path.name, last["seq"], last["hash"], last["seq"], torn)
        else:
            self._file = path.open("ab", buffering=256 * 1024)
            self._index, self._size = index, size
            self._seq, self._prev = int(last["seq"]), str(last["hash"])
        self._enforce_total()

    def _start_file(
        self,
        index: int,
        prev_file: str | None,
        prev_seq: int | None,
        prev_hash: str,
        seq: int,
        torn: int | None = None,
    ) -> None:
        path = self.directory / f"audit-{index}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._file = os.fdopen(fd, "ab", buffering=256 * 1024)
        self._index, self._size, self._seq, self._prev = index, 0, seq, prev_hash
        anchor: dict[str, Any] = {"file": path.name, "prev_file": prev_file, "prev_seq": prev_seq}
        if torn and prev_file is not None:
            anchor["torn_tail"] = {"file": prev_file, "bytes": torn}
            logger.warning("event=audit_torn_tail file=%s bytes=%d", prev_file, torn)
        self._append("anchor", anchor, time.time(), time.monotonic_ns())

    def _rotate(self) -> None:
        assert self._file is not None
        name = f"audit-{self._index}.jsonl"
        self._file.flush()
        os.fsync(self._file.fileno())  # a finished file is durable
        self._drop_file()
        self._start_file(self._index + 1, name, self._seq, self._prev, self._seq)
        self._enforce_total()

    def _enforce_total(self) -> None:
        """Delete the oldest files while all of them together are over ``max_bytes``; the
        ``rotated`` record saying so goes first, so verification can tell."""
        files = audit_files(self.directory)
        sizes = [p.stat().st_size for _, p in files]
        total = sum(sizes) + self._size - (sizes[-1] if sizes else 0)
        victims: list[Path] = []
        while total > self.max_bytes and len(victims) < len(files) - 1:
            victims.append(files[len(victims)][1])
            total -= sizes[len(victims) - 1]
        if not victims:
            return
        assert self._file is not None
        self._file.flush()  # the next file's anchor may still be in the buffer
        through = _first_seq(files[len(victims)][1])
        self._append(
            "rotated",
            {
                "deleted": [p.name for p in victims],
                "through_seq": None if through is None else through - 1,
                "max_mb": round(self.max_bytes / 2**20, 3),
            },
            time.time(),
            time.monotonic_ns(),
        )
        self._file.flush()
        os.fsync(self._file.fileno())
        for path in victims:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        logger.info("event=audit_rotated deleted=%s", ",".join(p.name for p in victims))


class NullAudit:
    """``[audit] enabled = false``: the same calls, nothing written."""

    enabled = False
    written = dropped = errors = last_seq = 0

    def start(self) -> NullAudit:
        return self

    def record(self, kind: str, data: dict[str, Any]) -> None:
        return None

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def close(self, timeout: float = 10.0) -> None:
        return None


def _last_record(path: Path) -> tuple[dict[str, Any] | None, int, int, bool]:
    """(the last readable record or None, bytes after the last end of line, file size,
    whether that record is the last complete line: False when unreadable lines follow)."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        chunk = min(size, 4 * MAX_DATA_CHARS + 65536)
        f.seek(size - chunk)
        data = f.read(chunk)
    end = data.rfind(b"\n")
    torn = len(data) - end - 1 if end >= 0 else len(data)
    last = True
    while end >= 0:
        start = data.rfind(b"\n", 0, end) + 1
        if start == 0 and chunk < size:
            break  # the line began before the chunk: not a record of ours
        record, _ = _parse(data[start:end])
        if record is not None:
            return record, torn, size, last
        last = False
        end = start - 1
    return None, torn, size, False


def _first_seq(path: Path) -> int | None:
    with contextlib.suppress(OSError), path.open("rb") as f:
        record, _ = _parse(f.readline().rstrip(b"\n"))
        if record is not None:
            return int(record["seq"])
    return None


# --------------------------------------------------------------------------- reading


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A record and "", or None and why not. Strict: the line must be exactly canonical."""
    try:
        text = raw.decode("ascii")
        record = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "not a readable record: bytes were altered or corrupted"
    if not isinstance(record, dict) or set(record) != FIELDS:
        return None, "not an audit record: fields are missing or were added"
    ints = (record["seq"], record["mono_ns"])
    if (
        not all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
        or not isinstance(record["time"], int | float)
        or isinstance(record["time"], bool)
        or not isinstance(record["kind"], str)
        or not isinstance(record["data"], dict)
        or not all(
            isinstance(record[k], str) and _HEX64.fullmatch(record[k]) for k in ("prev", "hash")
        )
    ):
        return None, "not an audit record: a field has the wrong type"
    try:
        if canonical(record) != text:
            return None, "not written the canonical way: the line was altered"
    except ValueError:
        return None, "not an audit record: a number is not finite"
    return record, ""


@dataclass
class Break:
    """Where the chain breaks: file, line (1-based) and seq (the expected one if unread)."""

    file: str
    line: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{self.file} line {self.line}{seq}: {self.reason}"


@dataclass
class Verification:
    directory: Path
    ok: bool = False
    records: int = 0
    files: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    complete: bool = False  # starts at the very first record (nothing rotated away)
    kinds: Counter[str] = field(default_factory=Counter)
    torn: list[dict[str, Any]] = field(default_factory=list)
    error: Break | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "directory": str(self.directory),
            "records": self.records,
            "files": list(self.files),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "complete": self.complete,
            "kinds": dict(sorted(self.kinds.items())),
            "torn_tails": list(self.torn),
            "error": None
            if self.error is None
            else {
                "file": self.error.file,
                "line": self.error.line,
                "seq": self.error.seq,
                "reason": self.error.reason,
            },
        }

    def summary(self) -> str:
        if not self.ok:
            assert self.error is not None
            head = f"audit BROKEN in {self.directory}: {self.error}"
            if self.records:
                head += f"\n{self.records} records before it verified (seq {self.first_seq}-"
                head += f"{self.last_seq})"
            return head
        lines = [
            f"audit OK: {self.records} records verified in {len(self.files)} file"
            f"{'' if len(self.files) == 1 else 's'} ({self.directory})",
            f"seq {self.first_seq}-{self.last_seq}, {_when(self.first_time)} to "
            f"{_when(self.last_time)}",
        ]
        if not self.complete:
            lines.append(f"verified from record seq {self.first_seq} (older records rotated away)")
        for torn in self.torn:
            lines.append(
                f"{torn['file']} ends with {torn['bytes']} bytes torn by a crash or power cut,"
                " declared by the next file's anchor"
            )
        lines.append("records: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())))
        return "\n".join(lines)


def _when(wall: float | None) -> str:
    if wall is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


INCOMPLETE = "the last line is incomplete"


def verify(directory: Path, *, settle_s: float = 0.3) -> Verification:
    """Check every line, hash, ``prev`` link, seq and anchor of the audit files, read-only.

    A newest file ending in half a line is read again after ``settle_s``: the running
    daemon may be writing that line at this moment.
    """
    result = _verify_once(directory)
    if settle_s > 0 and result.error is not None and result.error.reason.startswith(INCOMPLETE):
        time.sleep(settle_s)
        result = _verify_once(directory)
    return result


def _verify_once(directory: Path) -> Verification:
    result = Verification(Path(directory))
    files = audit_files(result.directory)
    result.files = [p.name for _, p in files]
    if not files:
        result.error = Break(str(result.directory), 0, None, "no audit files here")
        return result
    prev_hash: str | None = None
    prev_name: str | None = None
    expected: int | None = None
    pending_torn: dict[str, Any] | None = None
    rotated_from: int | None = None
    rotated_through = -1
    oldest: tuple[str, int] | None = None

    def fail(name: str, line: int, seq: int | None, reason: str) -> Verification:
        result.error = Break(name, line, seq, reason)
        return result

    for position, (_, path) in enumerate(files):
        name, newest = path.name, position == len(files) - 1
        torn: dict[str, Any] | None = None
        line_no = 0
        with path.open("rb") as f:
            for raw in f:
                line_no += 1
                if not raw.endswith(b"\n"):
                    if newest:
                        return fail(
                            name,
                            line_no,
                            expected,
                            f"{INCOMPLETE} ({len(raw)} bytes without an end):"
                            " truncated, or torn by a power cut the daemon has not restarted"
                            " from yet",
                        )
                    torn = {"file": name, "bytes": len(raw)}
                    break
                record, why = _parse(raw[:-1])
                if record is None:
                    return fail(name, line_no, expected, why)
                seq = record["seq"]
                if record_hash(record) != record["hash"]:
                    return fail(name, line_no, seq, "the hash does not match the record: altered")
                data = record["data"]
                if line_no == 1:
                    if record["kind"] != "anchor":
                        return fail(name, 1, seq, "the first record of a file is not its anchor")
                    if data.get("file") != name:
                        return fail(
                            name,
                            1,
                            seq,
                            f"the anchor names {data.get('file')!r}: renamed or replaced",
                        )
                    if prev_hash is None and oldest is None:
                        oldest = (name, seq)
                        if not (
                            record["prev"] == GENESIS and seq == 1 and not data.get("prev_file")
                        ):
                            rotated_from = seq
                    else:
                        if data.get("prev_file") != prev_name:
                            return fail(
                                name,
                                1,
                                seq,
                                f"the anchor follows {data.get('prev_file')!r}, but the file"
                                f" before it is {prev_name!r}: a file is missing or out of place",
                            )
                        if data.get("torn_tail") != pending_torn:
                            return fail(
                                name,
                                1,
                                seq,
                                f"the anchor declares torn tail {data.get('torn_tail')}, the"
                                f" file before it ends with {pending_torn}: bytes were altered",
                            )
                        if pending_torn is not None:
                            result.torn.append(pending_torn)
                elif record["kind"] == "anchor":
                    return fail(name, line_no, seq, "an anchor inside a file: records were moved")
                if prev_hash is not None and record["prev"] != prev_hash:
                    return fail(
                        name,
                        line_no,
                        seq,
                        "prev is not the hash of the record before it: a record was deleted,"
                        " inserted or reordered",
                    )
                if expected is not None and seq != expected:
                    return fail(
                        name,
                        line_no,
                        seq,
                        f"seq {seq} where {expected} was expected: a record was deleted or"
                        " reordered",
                    )
                if record["kind"] == "rotated" and isinstance(data.get("through_seq"), int):
                    rotated_through = max(rotated_through, data["through_seq"])
                prev_hash, expected = record["hash"], seq + 1
                result.records += 1
                result.kinds[record["kind"]] += 1
                if result.first_seq is None:
                    result.first_seq, result.first_time = seq, record["time"]
                result.last_seq, result.last_time = seq, record["time"]
        pending_torn, prev_name = torn, name
    if oldest is None:
        return fail(files[-1][1].name, 1, None, "no complete record in the audit files")
    if rotated_from is not None and rotated_through < rotated_from - 1:
        told = (
            "no rotation is recorded"
            if rotated_through < 0
            else (f"rotation removed records through seq {rotated_through} only")
        )
        return fail(
            oldest[0],
            1,
            oldest[1],
            f"the records before seq {rotated_from} are missing and {told}: older audit files"
            " were deleted",
        )
    result.complete = rotated_from is None
    result.ok = True
    return result


def read_records(directory: Path, last: int | None = None) -> list[dict[str, Any]]:
    """Records as written (unverified), oldest first; with ``last``, only the newest N."""
    files = audit_files(Path(directory))
    if last is None:
        return [r for _, path in files for r in _records_of(path)]
    kept: list[dict[str, Any]] = []
    for _, path in reversed(files):
        kept = _records_of(path) + kept
        if len(kept) >= last:
            break
    return kept[-last:] if last > 0 else []


def _records_of(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open("rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    record = json.loads(raw.decode("ascii"))
                    if isinstance(record, dict):
                        out.append(record)
    return out


# --------------------------------------------------------------------------- for the CLI

DEFAULT_DIR = "/var/lib/aura-gateway/audit"  # AuditSettings.path's default (a test ties them)


class AuditPathError(Exception):
    """gateway.toml cannot be read, or its [audit] path is not a path."""


def audit_dir(config_path: str | Path) -> Path:
    """``[audit] path`` from gateway.toml alone (standard library, no credentials.toml: a
    member of the service's group may verify), relative to gateway.toml's folder."""
    import tomllib

    path = Path(os.path.abspath(config_path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditPathError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        why = f"{path} is not valid TOML ({exc}); see: aura-gateway check-config"
        raise AuditPathError(why) from exc
    section = data.get("audit", {})
    value = section.get("path", DEFAULT_DIR) if isinstance(section, dict) else None
    if not isinstance(value, str) or not value:
        raise AuditPathError(f"{path}: audit.path is not a path; see: aura-gateway check-config")
    return Path(os.path.normpath(path.parent / value))


def describe(record: dict[str, Any]) -> str:
    """One line for `aura-gateway audit show`."""
    data = record.get("data") or {}
    kind = str(record.get("kind"))
    if kind == "press":
        what = f"{data.get('device')} {data.get('gesture')} {data.get('verdict')}"
    elif kind == "decision":
        who = data.get("device") or data.get("held")
        what = f"{who} {data.get('decision')} {data.get('incident') or ''}: {data.get('reason')}"
    elif kind == "location":
        what = f"{data.get('incident')}: {data.get('reason')}"
    elif kind == "aura_request":
        what = f"{data.get('method')} {data.get('path')}"
    elif kind == "aura_response":
        outcome = data.get("status") or data.get("error_class")
        what = f"{data.get('method')} {data.get('path')} -> {outcome} ({data.get('elapsed_ms')} ms)"
    else:
        what = canonical(data)
    what = what if len(what) <= 120 else what[:117] + "..."
    wall = record.get("time")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall))
        if isinstance(wall, int | float)
        else "?"
    )
    return f"{record.get('seq', '?'):>7} {when} {kind:<13} {what}"

"""The audit trail: the chain verifies, and any change to it shows, with its place."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway import audit as audit_mod
from gateway.audit import (
    GENESIS,
    REDACTED,
    AuditLog,
    audit_dir,
    audit_files,
    canonical,
    read_records,
    record_hash,
    redact,
    verify,
)
from gateway.audit_events import exchange_recorder
from gateway.aura.client import AuraClient
from gateway.cli import main as cli_main
from gateway.config.models import AuditSettings, AuraCredentials, AuraSettings


def write(directory: Path, n: int, **kw: Any) -> AuditLog:
    log = AuditLog(directory, batch_s=0, **kw).start()
    for i in range(n):
        log.record("press", {"device": f"dev{i % 3}", "i": i, "reason": "single press raises"})
    assert log.flush()
    return log


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    directory = tmp_path / "audit"
    write(directory, 6).close()
    return directory


# --------------------------------------------------------------------------- the format


def test_a_chain_verifies_and_says_what_it_holds(trail: Path) -> None:
    result = verify(trail)
    assert result.ok, result.error
    assert (result.records, result.first_seq, result.last_seq) == (7, 1, 7)
    assert result.complete
    assert dict(result.kinds) == {"anchor": 1, "press": 6}
    assert "audit OK: 7 records verified in 1 file" in result.summary()


def test_each_record_is_canonical_json_hashed_without_its_hash(trail: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    records = [json.loads(line) for line in lines_of(path)]
    assert records[0]["prev"] == GENESIS and records[0]["kind"] == "anchor"
    assert records[0]["data"] == {"file": "audit-1.jsonl", "prev_file": None, "prev_seq": None}
    for line, record, before in zip(lines_of(path), records, [None, *records], strict=False):
        assert set(record) == {"seq", "time", "mono_ns", "kind", "data", "prev", "hash"}
        assert line == canonical(record).encode() + b"\n"
        body = canonical({k: v for k, v in record.items() if k != "hash"}).encode()
        assert record["hash"] == hashlib.sha256(body).hexdigest()
        assert record["hash"] == record_hash(record)
        if before is not None:
            assert record["prev"] == before["hash"]
            assert record["seq"] == before["seq"] + 1


def test_every_single_byte_altered_anywhere_is_caught(trail: Path, tmp_path: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    original = path.read_bytes()
    copy = tmp_path / "copy"
    for index in range(len(original)):
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        altered = bytearray(original)
        altered[index] ^= 0x01
        (copy / path.name).write_bytes(bytes(altered))
        result = verify(copy)
        assert not result.ok, f"byte {index} altered and not noticed"
        line = original.count(b"\n", 0, index) + 1
        # A changed end of line joins two lines: the break is named on the first of them.
        assert result.error is not None and result.error.line == line, (index, result.error)


@pytest.mark.parametrize(
    ("field", "old", "new", "reason"),
    [
        ("data", b'"i":3', b'"i":4', "hash does not match"),
        ("hash", None, None, "hash does not match"),
        ("prev", None, None, "hash does not match"),
        ("kind", b'"kind":"press"', b'"kind":"prest"', "hash does not match"),
        ("spacing", b'"i":3', b'"i": 3', "canonical"),
    ],
)
def test_an_altered_field_is_named_with_file_line_and_seq(
    trail: Path, field: str, old: bytes | None, new: bytes | None, reason: str
) -> None:
    [path] = [p for _, p in audit_files(trail)]
    lines = lines_of(path)
    line = lines[4]  # seq 5: the press with i = 3
    if old is None:
        record = json.loads(line)
        value = record[field]
        old, new = value.encode(), (("1" if value[0] != "1" else "2") + value[1:]).encode()
    assert new is not None
    lines[4] = line.replace(old, new, 1)
    assert lines[4] != line
    path.write_bytes(b"".join(lines))
    result = verify(trail)
    assert not result.ok and result.error is not None
    assert (result.error.file, result.error.line, result.error.seq) == ("audit-1.jsonl", 5, 5)
    assert reason in result.error.reason
    assert "audit-1.jsonl line 5 (seq 5)" in result.summary()


def test_a_deleted_line_breaks_the_chain_at_the_next_one(trail: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    lines = lines_of(path)
    del lines[3]
    path.write_bytes(b"".join(lines))
    result = verify(trail)
    assert result.error is not None
    assert (result.error.line, result.error.seq) == (4, 5)
    assert "deleted, inserted or reordered" in result.error.reason
    assert result.records == 3  # the three before it verified


def test_reordered_lines_are_caught(trail: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    lines = lines_of(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))
    result = verify(trail)
    assert result.error is not None and result.error.line == 3


def test_a_forged_record_with_its_own_good_hash_still_breaks_the_next_link(trail: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    lines = lines_of(path)
    record = json.loads(lines[2])
    record["data"]["reason"] = "nothing happened"
    record["hash"] = record_hash(record)
    lines[2] = canonical(record).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    result = verify(trail)
    assert result.error is not None
    assert (result.error.line, result.error.seq) == (4, 4)


def test_a_truncated_last_line_fails(trail: Path) -> None:
    [path] = [p for _, p in audit_files(trail)]
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    result = verify(trail)
    assert result.error is not None
    assert (result.error.line, result.error.seq) == (7, 7)
    assert "incomplete" in result.error.reason


def test_an_empty_folder_is_not_a_pass(tmp_path: Path) -> None:
    result = verify(tmp_path)
    assert not result.ok and "no audit files" in str(result.error)


# --------------------------------------------------------------------------- files


def test_restart_continues_the_chain_in_the_same_file(tmp_path: Path) -> None:
    write(tmp_path, 3).close()
    write(tmp_path, 3).close()
    result = verify(tmp_path)
    assert result.ok and result.records == 7 and result.files == ["audit-1.jsonl"]


def test_rotation_runs_the_chain_across_files(tmp_path: Path) -> None:
    log = write(tmp_path, 60, file_bytes=2048, max_bytes=10**6)
    log.close()
    result = verify(tmp_path)
    assert result.ok, result.error
    assert len(result.files) > 2 and result.complete
    assert result.records == 60 + len(result.files)  # one anchor a file
    second = json.loads(lines_of(tmp_path / "audit-2.jsonl")[0])
    last_of_first = json.loads(lines_of(tmp_path / "audit-1.jsonl")[-1])
    assert second["kind"] == "anchor" and second["prev"] == last_of_first["hash"]
    assert second["data"] == {
        "file": "audit-2.jsonl",
        "prev_file": "audit-1.jsonl",
        "prev_seq": last_of_first["seq"],
    }


def test_rotated_away_files_verify_from_the_oldest_kept(tmp_path: Path) -> None:
    log = write(tmp_path, 200, file_bytes=2048, max_bytes=6144)
    log.close()
    files = audit_files(tmp_path)
    assert files[0][0] > 1, "the oldest files should have been rotated away"
    assert sum(p.stat().st_size for _, p in files) <= 6144 + 2048
    result = verify(tmp_path)
    assert result.ok, result.error
    assert not result.complete
    first = json.loads(lines_of(files[0][1])[0])["seq"]
    assert result.first_seq == first
    assert f"verified from record seq {first} (older records rotated away)" in result.summary()
    rotated = [r for r in read_records(tmp_path) if r["kind"] == "rotated"]
    assert rotated and rotated[-1]["data"]["through_seq"] == first - 1


def test_an_oldest_file_deleted_by_hand_fails(tmp_path: Path) -> None:
    write(tmp_path, 60, file_bytes=2048, max_bytes=10**6).close()
    (tmp_path / "audit-1.jsonl").unlink()
    result = verify(tmp_path)
    assert result.error is not None
    assert result.error.file == "audit-2.jsonl" and result.error.line == 1
    assert "no rotation is recorded" in result.error.reason


def test_a_middle_file_deleted_fails_at_the_next_anchor(tmp_path: Path) -> None:
    write(tmp_path, 60, file_bytes=2048, max_bytes=10**6).close()
    (tmp_path / "audit-2.jsonl").unlink()
    result = verify(tmp_path)
    assert result.error is not None
    assert (result.error.file, result.error.line) == ("audit-3.jsonl", 1)
    assert "a file is missing" in result.error.reason


def test_a_tail_torn_by_a_power_cut_is_declared_by_the_next_start(tmp_path: Path) -> None:
    write(tmp_path, 4).close()
    path = tmp_path / "audit-1.jsonl"
    with path.open("ab") as f:
        f.write(b'{"data":{"device":"dev1"')  # half a record: the power went
    assert not verify(tmp_path).ok  # until the daemon starts again
    write(tmp_path, 2).close()
    result = verify(tmp_path)
    assert result.ok, result.error
    assert result.files == ["audit-1.jsonl", "audit-2.jsonl"]
    assert result.torn == [{"file": "audit-1.jsonl", "bytes": 24}]
    assert "torn" in result.summary()
    # The torn bytes cannot be changed unnoticed either.
    with path.open("ab") as f:
        f.write(b"x")
    assert "torn tail" in str(verify(tmp_path).error)


def test_a_power_cut_as_a_file_began_chains_on_from_the_file_before(tmp_path: Path) -> None:
    write(tmp_path, 4).close()
    (tmp_path / "audit-2.jsonl").write_bytes(b'{"data":{"fi')  # the anchor, torn
    write(tmp_path, 2).close()
    result = verify(tmp_path)
    assert result.ok, result.error
    assert result.files == ["audit-1.jsonl", "audit-2.jsonl", "audit-3.jsonl"]
    assert result.torn == [{"file": "audit-2.jsonl", "bytes": 12}]
    assert (result.first_seq, result.last_seq) == (1, 8)


def test_a_damaged_newest_file_is_not_appended_to_and_seq_goes_on(tmp_path: Path) -> None:
    write(tmp_path, 4).close()
    path = tmp_path / "audit-1.jsonl"
    lines = lines_of(path)
    lines[-1] = b"garbage\n"
    path.write_bytes(b"".join(lines))
    write(tmp_path, 1).close()
    assert path.read_bytes().endswith(b"garbage\n")  # left as found, for the record
    anchor = json.loads(lines_of(tmp_path / "audit-2.jsonl")[0])
    assert anchor["seq"] == 5 and anchor["data"]["prev_seq"] == 4
    result = verify(tmp_path)
    assert result.error is not None
    assert (result.error.file, result.error.line, result.error.seq) == ("audit-1.jsonl", 5, 5)


def test_verify_waits_for_a_line_being_written_now(tmp_path: Path) -> None:
    import threading

    write(tmp_path, 2).close()
    path = tmp_path / "audit-1.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[:-30])
    finish = threading.Timer(0.1, lambda: path.write_bytes(whole))
    finish.start()
    try:
        assert verify(tmp_path, settle_s=0.5).ok
    finally:
        finish.join()


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "clientSecret": "s3cr3t-client",
    "client_secret": "s3cr3t-client-2",
    "clientId": "client-ident",
    "accessToken": "tok-access-1",
    "access_token": "tok-access-2",
    "token": "tok-plain",
    "refresh_token": "tok-refresh",
    "Authorization": "Bearer tok-header",
    "safeCode": "4711",
    "password": "hunter2",
}


def test_every_kind_of_secret_is_redacted(tmp_path: Path) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJnYXRld2F5In0.c2lnbmF0dXJl"
    data = {
        **SECRETS,
        "nested": [{"safe_code": "1234", "ok": "kept"}],
        "text": f"answer said Bearer tok-in-text and {jwt}",
        "note": "kept",
    }
    cleaned = redact(data)
    for key in SECRETS:
        assert cleaned[key] == REDACTED
    assert cleaned["nested"] == [{"safe_code": REDACTED, "ok": "kept"}]
    assert cleaned["text"] == f"answer said Bearer {REDACTED} and {REDACTED}"
    assert cleaned["note"] == "kept"
    log = AuditLog(tmp_path, batch_s=0).start()
    log.record("aura_request", data)
    log.close()
    raw = (tmp_path / "audit-1.jsonl").read_bytes()
    for value in [*SECRETS.values(), "1234", "tok-in-text", jwt]:
        assert value.encode() not in raw, value
    assert verify(tmp_path).ok


async def test_the_client_exchange_is_recorded_without_secret_token_or_safe_code(
    tmp_path: Path,
) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.sig-part-xyz"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"accessToken": token, "expiresIn": 3600})
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={"id": 7, "status": "Cancelled"})
        return httpx.Response(201, json={"message": "ok", "callout": {"id": 7, "status": "New"}})

    settings = AuraSettings(base_url="https://aura.example")
    credentials = AuraCredentials(
        client_id=SecretStr("the-client-id"), client_secret=SecretStr("the-client-secret")
    )
    client = AuraClient(settings, credentials, transport=httpx.MockTransport(answer))
    log = AuditLog(tmp_path, batch_s=0).start()
    client.observers.append(exchange_recorder(log.record))
    try:
        await client.raise_callout(
            {"route": "customer", "customer_id": 1001, "body": {"responseTypeId": 1}}
        )
        await client.cancel(7, safe_code="9876")
    finally:
        await client.aclose()
    log.close()
    raw = (tmp_path / "audit-1.jsonl").read_bytes()
    for secret in (b"the-client-id", b"the-client-secret", token.encode(), b"9876"):
        assert secret not in raw
    records = read_records(tmp_path)
    kinds = [(r["kind"], r["data"]["path"]) for r in records if r["kind"].startswith("aura")]
    assert kinds == [
        ("aura_request", "/oauth/token"),
        ("aura_response", "/oauth/token"),
        ("aura_request", "/customers/1001/callouts"),
        ("aura_response", "/customers/1001/callouts"),
        ("aura_request", "/callouts/7/cancel"),
        ("aura_response", "/callouts/7/cancel"),
    ]
    token_answer = records[2]["data"]
    assert token_answer["status"] == 200 and token_answer["body"]["accessToken"] == REDACTED
    assert records[5]["data"]["body"] == {"safeCode": REDACTED}
    assert records[4]["data"]["body"]["callout"] == {"id": 7, "status": "New"}
    assert verify(tmp_path).ok


def test_a_huge_body_keeps_its_digest_not_its_bulk(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, batch_s=0).start()
    body = {"callouts": [{"id": i, "status": "open"} for i in range(5000)]}
    log.record("aura_response", {"method": "GET", "path": "/callouts/activeCallouts", "body": body})
    log.close()
    [record] = [r for r in read_records(tmp_path) if r["kind"] == "aura_response"]
    assert record["data"]["path"] == "/callouts/activeCallouts"
    assert record["data"]["body"]["truncated"] is True
    assert len(record["data"]["body"]["sha256"]) == 64


# --------------------------------------------------------------------------- never in the way


async def test_the_writer_never_blocks_the_loop_even_on_a_stalled_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path, batch_s=0, queue_max=100).start()
    log.record("startup", {})
    assert log.flush()
    real_append = AuditLog._append

    def stalled(self: AuditLog, *args: Any) -> None:
        time.sleep(0.05)  # a disk that takes 50 ms a record
        real_append(self, *args)

    monkeypatch.setattr(AuditLog, "_append", stalled)
    started = time.perf_counter()
    for i in range(1000):
        log.record("press", {"i": i})
    spent = time.perf_counter() - started
    assert spent < 0.1, f"1000 records took {spent * 1000:.0f} ms on the loop"
    # The loop stays responsive while the writer is busy.
    t0 = time.perf_counter()
    await asyncio.sleep(0.01)
    assert time.perf_counter() - t0 < 0.1
    assert log.dropped >= 1000 - 100 - 1  # the queue is bounded: the rest is counted
    monkeypatch.setattr(AuditLog, "_append", real_append)
    log.record("press", {"after": True})
    await asyncio.to_thread(log.close)
    gaps = [r for r in read_records(tmp_path) if r["kind"] == "audit_gap"]
    assert gaps and gaps[0]["data"]["lost"] == log.dropped
    assert verify(tmp_path).ok


def test_a_disk_that_refuses_is_counted_never_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = AuditLog(blocker / "audit", batch_s=0).start()
    log.record("press", {"i": 1})
    assert log.flush()
    assert log.errors == 1 and log.written == 0
    log.close()


def test_writes_batch_and_flush_without_fsync_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    monkeypatch.setattr(audit_mod.os, "fsync", lambda fd: syncs.append(fd))
    log = AuditLog(tmp_path).start()  # the real batching delay
    for i in range(50):
        log.record("press", {"i": i})
    assert log.flush()
    assert syncs == []  # flushed to the kernel, not fsync'd
    log.close()
    assert len(syncs) == 1  # once, at the stop
    assert verify(tmp_path).records == 51


# --------------------------------------------------------------------------- config, CLI


def test_audit_dir_comes_from_gateway_toml_relative_to_its_folder(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[audit]\npath = "trail"\n')
    assert audit_dir(config) == tmp_path / "trail"
    config.write_text("[gateway]\n")
    assert audit_dir(config) == Path(audit_mod.DEFAULT_DIR)
    assert str(AuditSettings.model_fields["path"].default) == audit_mod.DEFAULT_DIR


def test_the_loader_resolves_a_relative_audit_path(tmp_path: Path) -> None:
    from gateway.config import load_config

    examples = Path(__file__).resolve().parents[2] / "config"
    for name in ("gateway", "devices", "credentials"):
        shutil.copy(examples / f"{name}.example.toml", tmp_path / f"{name}.toml")
    os.chmod(tmp_path / "credentials.toml", 0o600)
    text = (tmp_path / "gateway.toml").read_text()
    text = text.replace('path = "/var/lib/aura-gateway/audit"', 'path = "state/audit"')
    (tmp_path / "gateway.toml").write_text(text)
    config = load_config(tmp_path / "gateway.toml")
    assert config.gateway.audit.path == tmp_path / "state" / "audit"


def test_cli_verify_and_show(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "verify", "--dir", str(trail)]) == 0
    assert "audit OK: 7 records" in capsys.readouterr().out
    assert cli_main(["audit", "verify", "--dir", str(trail), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["last_seq"] == 7 and report["error"] is None
    assert cli_main(["audit", "show", "--dir", str(trail), "--last", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 2 and shown[-1].split()[0] == "7"
    path = trail / "audit-1.jsonl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    assert cli_main(["audit", "verify", "--dir", str(trail)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit BROKEN") and "audit-1.jsonl line" in out

"""Audit log: chaining, checkpoints, tamper detection at the right index, and no numbers in it."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import (
    AuditChainError,
    AuditDataError,
    AuditKind,
    AuditLog,
    contains_phone_like,
    verify_audit_log,
)
from reffection_ari.evidence._util import canonical_json

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"audit-test").digest())
PUB = KEY.public_key()


class Clock:
    def __init__(self) -> None:
        self.t = 1_772_445_600.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def write_log(path: Path, n: int = 10, every: int = 4) -> None:
    with AuditLog(path, KEY, "k1", checkpoint_every=every, clock=Clock(), fsync=False) as log:
        for i in range(n):
            log.append(AuditKind.REVEAL, {"call_id": f"call_{i:04d}", "token": "tkn1_abc", "seq": i})


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_and_checkpoints(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=10, every=4)
    entries = [json.loads(x) for x in lines(p)]
    # 10 entries + checkpoints after 4, 8 + closing checkpoint
    assert [e["kind"] for e in entries].count("checkpoint") == 3
    assert entries[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert [e["index"] for e in entries] == list(range(13))
    report = verify_audit_log(p, PUB, require_closed=True)
    assert (report.entries, report.checkpoints, report.closed, report.unsigned_tail) == (13, 3, True, 0)
    assert report.kinds == {"reveal": 10, "checkpoint": 3}


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=3)
    with AuditLog(p, KEY, "k1", checkpoint_every=100, fsync=False) as log:
        assert log.head[0] == 4
        log.append("key_rotated", {"old_kid": "k1", "new_kid": "k2"})
    assert verify_audit_log(p, {"k1": PUB}, require_closed=True).entries == 6


def test_reopen_cuts_a_torn_last_line_and_refuses_a_broken_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=3)
    with p.open("ab") as fh:
        fh.write(b'{"index": 4, "ts"')  # crash mid-write
    with AuditLog(p, KEY, "k1", fsync=False) as log:
        assert log.head[0] == 4
    verify_audit_log(p, PUB, require_closed=True)
    data = lines(p)
    data[1] = data[1].replace(b"call_0001", b"call_9999")
    p.write_bytes(b"".join(data))
    with pytest.raises(EvidenceError) as err:
        AuditLog(p, KEY, "k1")
    assert err.value.code == "chain_broken"


def _edit(ls: list[bytes]) -> list[bytes]:
    ls[5] = ls[5].replace(b"call_", b"call_x")
    return ls


def _delete(ls: list[bytes]) -> list[bytes]:
    del ls[5]
    return ls


def _insert(ls: list[bytes]) -> list[bytes]:
    ls.insert(5, ls[2])
    return ls


def _reorder(ls: list[bytes]) -> list[bytes]:
    ls[5], ls[6] = ls[6], ls[5]
    return ls


def _garbage(ls: list[bytes]) -> list[bytes]:
    ls[5] = b"not json\n"
    return ls


@pytest.mark.parametrize("tamper", [_edit, _delete, _insert, _reorder, _garbage])
def test_naive_tampering_is_named_at_its_index(
    tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]]
) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=10, every=4)
    p.write_bytes(b"".join(tamper(lines(p))))
    with pytest.raises(AuditChainError) as err:
        verify_audit_log(p, PUB)
    assert err.value.code == "chain_broken"
    assert err.value.index == 5


def _rehash(entries: list[dict[str, object]]) -> bytes:
    prev = "0" * 64
    out = []
    for i, e in enumerate(entries):
        e["index"], e["prev_hash"] = i, prev
        body = {k: e[k] for k in ("index", "ts", "kind", "data", "prev_hash")}
        e["hash"] = prev = hashlib.sha256(canonical_json(body)).hexdigest()
        out.append(canonical_json(e) + b"\n")
    return b"".join(out)


def test_consistent_rewrite_is_caught_by_the_next_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=10, every=4)
    entries = [json.loads(x) for x in lines(p)]
    # entries 0-3, cp 4, entries 5-8, cp 9, entry 10-11, closing cp 12: delete entry 6 and rehash all
    del entries[6]
    p.write_bytes(_rehash(entries))
    with pytest.raises(AuditChainError) as err:
        verify_audit_log(p, PUB)
    assert err.value.code == "bad_checkpoint"
    assert err.value.index == 8 and err.value.since == 4


def test_truncation_shows_as_not_closed(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=10, every=4)
    p.write_bytes(b"".join(lines(p)[:11]))
    report = verify_audit_log(p, PUB)
    assert not report.closed and report.unsigned_tail == 1 and report.last_checkpoint_index == 9
    with pytest.raises(AuditChainError) as err:
        verify_audit_log(p, PUB, require_closed=True)
    assert err.value.code == "not_closed"


def test_wrong_or_unknown_key(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    write_log(p, n=5, every=4)
    with pytest.raises(AuditChainError) as err:
        verify_audit_log(p, Ed25519PrivateKey.generate().public_key())
    assert (err.value.code, err.value.index) == ("bad_checkpoint", 4)
    with pytest.raises(AuditChainError) as err:
        verify_audit_log(p, {"k9": PUB})
    assert (err.value.code, err.value.index) == ("unknown_key", 4)


@pytest.mark.parametrize(
    "data",
    [
        {"number": "+447700900123"},
        {"note": "called 447700900123 today"},
        {"n": "+44 (7700) 900-123"},
        {"nested": [{"x": "tel 7700900123"}]},
        {"path": "/rec/447700900123.wav"},
        {"n": 447700900123},
        {"+447700900123": "key"},
    ],
)
def test_phone_like_data_is_refused_and_nothing_written(tmp_path: Path, data: dict[str, object]) -> None:
    p = tmp_path / "audit.jsonl"
    with AuditLog(p, KEY, "k1", fsync=False) as log:
        with pytest.raises(AuditDataError) as err:
            log.append(AuditKind.REVEAL, data)
        assert err.value.code == "pii_in_audit"
        assert "7700900" not in str(err.value)
        assert log.head[0] == 0


@pytest.mark.parametrize(
    "text",
    [
        "call_1772445600",
        "5f2b3c1234567890abcdef1234567890",
        "12345678-1234-4234-9234-123456789012",
        "2026-03-02T10:00:09.123456+00:00",
        "2026-03-02 10:00:09Z",
        "tkn1_0123456789abcdef",
        "rcpt_1234567",
        "sha256:1234567abcdef",
        "campaign 2026",
        "1772445600.123",
        "/var/spool/asterisk/monitor/1772445600.123.wav",
    ],
)
def test_ids_hashes_and_times_are_not_phone_like(text: str) -> None:
    assert not contains_phone_like(text)


def test_bad_kinds_and_closed_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", KEY, "k1", fsync=False)
    for kind in ("checkpoint", "Bad Kind", ""):
        with pytest.raises(ValueError):
            log.append(kind, {})
    log.close()
    log.close()
    with pytest.raises(EvidenceError) as err:
        log.append("reveal", {})
    assert err.value.code == "audit_closed"


async def test_append_async(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", KEY, "k1", fsync=False)
    entry = await log.append_async("dnc_changed", {"subscriber_ref": "sub_abc", "action": "add"})
    log.close()
    assert entry.index == 0 and verify_audit_log(tmp_path / "a.jsonl", PUB).kinds["dnc_changed"] == 1


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    """The daemon's log object and an operator command's, open at once on one file."""
    path = tmp_path / "audit.jsonl"
    daemon = AuditLog(path, KEY, "k1", checkpoint_every=3, clock=Clock(), fsync=False)
    daemon.append("reveal", {"call_id": "c1"})
    operator = AuditLog(path, KEY, "k1", checkpoint_every=3, clock=Clock(), fsync=False)
    operator.append("dnc_changed", {"subscriber_ref": "ab", "dnc": True})
    daemon.append("reveal", {"call_id": "c2"})  # chains on the operator's entry
    operator.close()
    daemon.append("reveal", {"call_id": "c3"})
    daemon.close()
    report = verify_audit_log(path, PUB, require_closed=True)
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds[:3] == ["reveal", "dnc_changed", "reveal"] and kinds[-1] == "checkpoint"
    assert report.kinds["reveal"] == 3 and report.kinds["dnc_changed"] == 1


def test_a_writer_refuses_to_chain_on_an_edited_entry_of_another(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    daemon = AuditLog(path, KEY, "k1", clock=Clock(), fsync=False)
    daemon.append("reveal", {"call_id": "c1"})
    with open(path, "ab") as fh:  # a forged line appended behind the writer's back
        fh.write(b'{"index": 1, "ts": "x", "kind": "reveal", "data": {}, "prev_hash": "0", "hash": "0"}\n')
    with pytest.raises(EvidenceError) as err:
        daemon.append("reveal", {"call_id": "c2"})
    assert err.value.code == "chain_broken"
    with pytest.raises(EvidenceError):
        daemon.close()  # no closing checkpoint on a broken chain either; the file is closed anyway
    daemon.close()  # idempotent


def _append_many(path: str, tag: str, n: int, start: Any) -> None:
    log = AuditLog(path, KEY, "k1", checkpoint_every=7, fsync=False)
    start.wait(30)  # all writers begin together
    for i in range(n):
        log.append("reveal", {"call_id": f"{tag}{i}"})
    log.close()


def test_processes_appending_at_once_keep_one_valid_chain(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_append_many, args=(str(path), tag, 1000, start)) for tag in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = verify_audit_log(path, PUB, require_closed=True)
    assert report.kinds["reveal"] == 3000
    ids = [json.loads(line)["data"].get("call_id") for line in path.read_text().splitlines()]
    assert len({i for i in ids if i}) == 3000

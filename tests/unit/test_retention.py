"""Retention: recording deletion (audited), the sweeper's period, and erasure from the outbox."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import (
    AuditLog,
    DeliveryWorker,
    LeadOutbox,
    OutboxState,
    RetentionSweeper,
    delete_recording,
    erase_from_outbox,
    verify_audit_log,
)
from reffection_ari.evidence.sinks import DeliveryFailed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proc"))
from evidence_leads import NUMBER, OTHER_NUMBER, fixed_key, make_lead

DAY = 86400.0
NOW = 1_772_445_600.0


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl", fixed_key(1), "k1", clock=lambda: NOW, fsync=False)


def audit_entries(log: AuditLog) -> list[dict[str, object]]:
    log.close()
    verify_audit_log(log.path, fixed_key(1).public_key(), require_closed=True)
    return [e for e in map(json.loads, log.path.read_text().splitlines()) if e["kind"] != "checkpoint"]


def test_delete_recording_hashes_unlinks_and_audits(tmp_path: Path, audit: AuditLog) -> None:
    rec = tmp_path / "call_abc.wav"
    rec.write_bytes(b"RIFF....")
    r = delete_recording(rec, audit, "call_abc", "declined")
    assert not rec.exists() and r.existed and r.sha256 == hashlib.sha256(b"RIFF....").hexdigest()
    again = delete_recording(rec, audit, "call_abc", "declined")
    assert not again.existed
    [e1, e2] = audit_entries(audit)
    assert e1["kind"] == "recording_deleted"
    assert e1["data"] == {
        "call_id": "call_abc",
        "reason": "declined",
        "existed": True,
        "sha256": r.sha256,
        "size_bytes": 8,
    }
    assert e2["data"]["existed"] is False  # type: ignore[index]


def test_sweeper_keeps_recent_and_held_deletes_expired(tmp_path: Path, audit: AuditLog) -> None:
    d = tmp_path / "rec"
    d.mkdir()
    ages = {"call_old": 31, "call_edge": 30, "call_new": 29, "call_held": 90}
    for name, age in ages.items():
        p = d / f"{name}.wav"
        p.write_bytes(name.encode())
        os.utime(p, (NOW - age * DAY, NOW - age * DAY))
    (d / "notes.txt").write_text("not a recording")
    os.utime(d / "notes.txt", (0, 0))
    sweeper = RetentionSweeper(d, 30, audit, clock=lambda: NOW, hold=lambda call_id: call_id == "call_held")
    deleted = sweeper.sweep()
    assert sorted(x.call_id for x in deleted) == ["call_edge", "call_old"]
    assert sorted(p.name for p in d.iterdir()) == ["call_held.wav", "call_new.wav", "notes.txt"]
    assert {e["data"]["reason"] for e in audit_entries(audit)} == {"retention_expired"}  # type: ignore[index]
    assert sweeper.sweep() == []


class OkSink:
    async def deliver(self, lead_id: str, payload: object) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_erasure_scrubs_undelivered_and_reports_delivered(tmp_path: Path, audit: AuditLog) -> None:
    outbox = LeadOutbox(tmp_path / "outbox.db", clock=lambda: NOW)
    for lead_id, number in [
        ("lead_sent", NUMBER),
        ("lead_wait", NUMBER),
        ("lead_other", OTHER_NUMBER),
        ("lead_dead", NUMBER),
    ]:
        await outbox.store(make_lead(lead_id, number=number))
    worker = DeliveryWorker(outbox, OkSink(), clock=lambda: NOW)
    [c1, c2, c3, c4] = outbox.claim_due(worker.owner)
    assert outbox.mark_delivered("lead_sent", worker.owner)
    outbox.mark_failed("lead_dead", worker.owner, "HTTP 400", next_attempt_at=None, dead_reason="rejected")
    outbox.mark_failed("lead_other", worker.owner, "HTTP 500", next_attempt_at=NOW)
    # lead_wait is still "delivering" (in flight) when the erasure arrives
    report = erase_from_outbox(outbox, number_e164=NUMBER, audit=audit, request_id="erq_1")
    assert sorted((e.lead_id, e.previous_state) for e in report.erased) == [
        ("lead_dead", OutboxState.DEAD),
        ("lead_wait", OutboxState.DELIVERING),
    ]
    assert report.already_delivered == ("lead_sent",) and report.in_flight == ("lead_wait",)
    raw = " ".join(r[0] for r in outbox._db.execute("SELECT payload FROM outbox").fetchall())
    assert raw.count(NUMBER) == 0 and raw.count(OTHER_NUMBER) == 1
    for lead_id in ("lead_wait", "lead_dead"):
        e = outbox.get(lead_id)
        assert (e.state, e.dead_reason) == (OutboxState.DEAD, "erased")
    # the in-flight worker's late success does not resurrect it; retry is refused
    assert outbox.mark_delivered("lead_wait", worker.owner) is False
    with pytest.raises(EvidenceError) as err:
        outbox.retry("lead_wait")
    assert err.value.code == "erased"
    assert outbox.get("lead_other").state == OutboxState.PENDING
    # idempotent: a second request touches nothing new
    assert erase_from_outbox(outbox, number_e164=NUMBER).erased == ()
    [entry] = audit_entries(audit)
    assert entry["kind"] == "erasure" and NUMBER[1:] not in json.dumps(entry)
    assert entry["data"]["already_delivered"] == ["lead_sent"]  # type: ignore[index]
    del c1, c2, c3, c4


async def test_erasure_by_lead_id(tmp_path: Path) -> None:
    outbox = LeadOutbox(tmp_path / "outbox.db")
    await outbox.store(make_lead("lead_a"))
    await outbox.store(make_lead("lead_b"))
    report = erase_from_outbox(outbox, lead_ids=["lead_a", "lead_zzz"])
    assert [e.lead_id for e in report.erased] == ["lead_a"] and report.touched == 1
    assert outbox.get("lead_b").state == OutboxState.PENDING
    with pytest.raises(ValueError):
        erase_from_outbox(outbox)


async def test_dead_letter_worker_audits_without_numbers(tmp_path: Path, audit: AuditLog) -> None:
    class Refuse(OkSink):
        async def deliver(self, lead_id: str, payload: object) -> None:
            raise DeliveryFailed("HTTP 410", retryable=False, status=410)

    outbox = LeadOutbox(tmp_path / "outbox.db")
    await outbox.store(make_lead("lead_a"))
    await outbox.store(make_lead("lead_b"))
    worker = DeliveryWorker(outbox, Refuse(), audit=audit)
    await worker.run_once()
    kinds = [(e["kind"], e["data"]["lead_id"]) for e in audit_entries(audit)]  # type: ignore[index]
    assert sorted(kinds) == [("lead_dead_lettered", "lead_a"), ("lead_dead_lettered", "lead_b")]

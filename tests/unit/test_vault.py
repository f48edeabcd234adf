"""SqliteVault: keyed index, DNC, attempts, reveal hook, erasure report, persistence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reffection_ari.errors import TokenError
from reffection_ari.tokens import SqliteVault, Vault

from .tokens_support import LEEDS, LONDON, NANP, RU_MOBILE, Wired, num, wire


@pytest.fixture
def w(tmp_path: Path) -> Wired:
    return wire(tmp_path)


def test_is_a_vault_and_uses_wal(w: Wired, tmp_path: Path) -> None:
    assert isinstance(w.vault, Vault)
    db = sqlite3.connect(tmp_path / "vault.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_subscriber_ids_are_random_96_bit(w: Wired) -> None:
    a = w.vault.ensure_subscriber(num(LONDON))
    b = w.vault.ensure_subscriber(num(LEEDS))
    assert len(a) == 12 and a != b
    assert w.vault.ensure_subscriber(num(LONDON)) == a


def test_index_is_keyed_not_plaintext(w: Wired, tmp_path: Path) -> None:
    w.vault.ensure_subscriber(num(LONDON))
    w.vault.set_dnc(num(NANP), True, "test")
    db = sqlite3.connect(tmp_path / "vault.db")
    (lookup,) = db.execute("SELECT lookup FROM subscribers").fetchone()
    assert b"7946" not in lookup and len(lookup) == 16
    import hashlib

    assert lookup != hashlib.blake2b(LONDON.encode(), digest_size=16).digest()
    assert lookup != hashlib.sha256(LONDON.encode()).digest()[:16]
    (dnc_lookup,) = db.execute("SELECT lookup FROM dnc").fetchone()
    assert b"555" not in dnc_lookup


def test_other_lookup_key_is_refused(w: Wired, tmp_path: Path) -> None:
    other = wire(tmp_path / "o")
    w.vault.close()
    with pytest.raises(TokenError) as ei:
        SqliteVault(tmp_path / "vault.db", other.ring.lookup_key())
    assert ei.value.code == "vault_key_mismatch"


def test_get_and_time_zones(w: Wired) -> None:
    sid = w.vault.ensure_subscriber(num(RU_MOBILE), consent_source="form", consent_at=123.0)
    rec = w.vault.get(sid)
    assert rec.number.e164 == RU_MOBILE and rec.region == "RU" and rec.consent_source == "form"
    assert len(rec.time_zones) > 1
    w.vault.set_time_zone(sid, "Europe/Moscow")
    assert w.vault.get(sid).time_zones == ("Europe/Moscow",)
    assert "916" not in repr(rec)


def test_dnc_by_id_and_by_number_including_unknown_numbers(w: Wired) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    w.vault.set_dnc(sid, True, "opt-out key")
    assert w.vault.is_dnc(sid) and w.vault.is_dnc(num(LONDON)) and w.vault.get(sid).dnc
    w.vault.set_dnc(num(LONDON), False, "operator")
    assert not w.vault.is_dnc(sid)
    w.vault.set_dnc(num(NANP), True, "import")  # not a subscriber yet
    later = w.vault.ensure_subscriber(num(NANP))
    assert w.vault.is_dnc(later)
    entries = list(w.vault.dnc_entries())
    assert [(e[0], e[1]) for e in entries] == [(later, "import")]
    with pytest.raises(TokenError):
        w.vault.set_dnc(b"\x00" * 12, True, "x")


def test_attempt_history(w: Wired) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    w.vault.record_attempt(sid, "spring", 100.0, "no_answer")
    w.vault.record_attempt(sid, "autumn", 200.0, "busy")
    w.vault.record_attempt(sid, "spring", 300.0, "answered")
    assert [a.outcome for a in w.vault.attempts_since(sid, 150.0)] == ["busy", "answered"]
    assert [a.at for a in w.vault.attempts_since(sid, 0.0, campaign="spring")] == [100.0, 300.0]


def test_reveal_runs_the_audit_hook_first(w: Wired) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    seen: list[tuple[bytes, str, str]] = []
    w.vault.set_reveal_hook(lambda s, p, c: seen.append((s, p, c)))
    assert w.vault.reveal(sid, purpose="lead", call_id="call-1").e164 == LONDON
    assert seen == [(sid, "lead", "call-1")]

    def veto(s: bytes, p: str, c: str) -> None:
        raise RuntimeError("audit log unavailable")

    w.vault.set_reveal_hook(veto)
    with pytest.raises(RuntimeError):
        w.vault.reveal(sid, purpose="lead", call_id="call-2")
    with pytest.raises(ValueError):
        w.vault.reveal(sid, purpose="", call_id="call-3")


def test_erase_report_and_dnc_retention(w: Wired) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    w.vault.set_dnc(sid, True, "opt-out")
    w.vault.record_attempt(sid, "c", 1.0, "answered")
    rep = w.vault.erase(num(LONDON))
    assert rep.found and rep.subscriber_id == sid and rep.attempts_deleted == 1 and rep.dnc_retained
    assert w.vault.find_by_number(num(LONDON)) is None and w.vault.is_dnc(num(LONDON))
    with pytest.raises(TokenError) as ei:
        w.vault.get(sid)
    assert ei.value.code == "erased"
    assert not w.vault.erase(num(LEEDS)).found
    sid2 = w.vault.ensure_subscriber(num(LEEDS))
    w.vault.set_dnc(sid2, True, "x")
    assert not w.vault.erase(sid2, keep_dnc=False).dnc_retained
    assert not w.vault.is_dnc(num(LEEDS))
    assert "7946" not in repr(rep)


def test_persistence_across_reopen(w: Wired, tmp_path: Path) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    w.vault.close()
    again = SqliteVault(tmp_path / "vault.db", w.ring.lookup_key())
    assert again.get(sid).number.e164 == LONDON


def test_file_mode_is_owner_only(w: Wired, tmp_path: Path) -> None:
    assert (tmp_path / "vault.db").stat().st_mode & 0o077 == 0


def test_bulk_import_commits_in_batches_and_rolls_back_the_open_batch(w: Wired, tmp_path: Path) -> None:
    from reffection_ari.tokens import BulkItem

    other = sqlite3.connect(tmp_path / "vault.db")

    def committed() -> int:
        return int(other.execute("SELECT count(*) FROM subscribers").fetchone()[0])

    with pytest.raises(RuntimeError, match="boom"), w.vault.bulk_import(rows_per_commit=2):
        ids = w.vault.bulk_ensure([BulkItem(num(LONDON)), BulkItem(num(LEEDS))], "run-1")
        assert committed() == 2  # batch full: committed, visible to other connections
        w.vault.bulk_ensure([BulkItem(num(NANP))], "run-1")
        assert committed() == 2  # open batch: not yet
        raise RuntimeError("boom")
    assert committed() == 2  # the open batch rolled back, the committed one stayed
    # re-running is idempotent by number: committed numbers keep their ids
    with w.vault.bulk_import():
        again = w.vault.bulk_ensure([BulkItem(num(LONDON)), BulkItem(num(NANP)), BulkItem(num(LONDON))], "run-2")
        with pytest.raises(RuntimeError, match="nest"), w.vault.bulk_import():
            pass
    assert again[0] == ids[0] and again[1] is not None and again[2] is None
    assert committed() == 3
    w.vault.ensure_subscriber(num(RU_MOBILE))  # normal transactions work again after the session
    assert committed() == 4

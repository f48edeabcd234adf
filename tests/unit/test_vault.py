"""SqliteVault: keyed index, DNC, attempts, reveal hook, erasure report, persistence."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from reffection_ari.errors import TokenError
from reffection_ari.tokens import BulkItem, Keyring, SqliteVault, Vault

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


def _vault_bytes(tmp_path: Path) -> bytes:
    """The vault file and its WAL as an attacker copying them would get them."""
    return b"".join(p.read_bytes() for p in tmp_path.glob("vault.db*") if p.is_file())


def _digit_forms(e164: str) -> list[bytes]:
    n = num(e164)
    national = n.e164[len(str(n.country_code)) + 1 :]
    return [e164.encode(), e164[1:].encode(), national.encode(), national[-7:].encode()]


def test_numbers_are_sealed_at_rest(w: Wired, tmp_path: Path) -> None:
    w.vault.ensure_subscriber(num(LONDON))
    with w.vault.bulk_import():
        w.vault.bulk_ensure([BulkItem(num(LEEDS)), BulkItem(num(RU_MOBILE))], "run-1")
    data = _vault_bytes(tmp_path)
    for e164 in (LONDON, LEEDS, RU_MOBILE):
        for form in _digit_forms(e164):
            assert form not in data, form
    db = sqlite3.connect(tmp_path / "vault.db")
    assert "e164" not in {r[1] for r in db.execute("PRAGMA table_info(subscribers)")}
    # ...and they still open, through the keyring only
    sid = w.vault.find_by_number(num(RU_MOBILE))
    assert sid is not None and w.vault.get(sid).number.e164 == RU_MOBILE


def test_a_number_moved_to_another_row_does_not_open(w: Wired, tmp_path: Path) -> None:
    a = w.vault.ensure_subscriber(num(LONDON))
    b = w.vault.ensure_subscriber(num(LEEDS))
    db = sqlite3.connect(tmp_path / "vault.db", isolation_level=None)
    (sealed_a,) = db.execute("SELECT number FROM subscribers WHERE id=?", (a,)).fetchone()
    db.execute("UPDATE subscribers SET number=? WHERE id=?", (sealed_a, b))
    db.close()
    assert w.vault.get(a).number.e164 == LONDON
    with pytest.raises(TokenError) as err:
        w.vault.get(b)
    assert err.value.code == "vault_integrity"
    assert "7946" not in str(err.value) and "4960" not in str(err.value)


def test_erasure_overwrites_the_sealed_number(w: Wired, tmp_path: Path) -> None:
    sid = w.vault.ensure_subscriber(num(LONDON))
    db = sqlite3.connect(tmp_path / "vault.db", isolation_level=None)
    (sealed,) = db.execute("SELECT number FROM subscribers WHERE id=?", (sid,)).fetchone()
    w.vault.erase(sid)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert bytes(sealed) not in _vault_bytes(tmp_path)


def test_a_vault_written_with_clear_numbers_is_sealed_when_opened(tmp_path: Path) -> None:
    ring = Keyring.generate(tmp_path / "keyring.json")
    key = ring.lookup_key()
    path = tmp_path / "vault.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE subscribers (id BLOB NOT NULL UNIQUE, lookup BLOB NOT NULL UNIQUE, e164 TEXT NOT NULL,"
        " region TEXT NOT NULL, time_zone TEXT, consent_source TEXT, consent_at REAL, created_at REAL NOT NULL,"
        " seen_run TEXT); CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    )
    check = f"{key.kid}:" + hashlib.blake2b(b"rf-vault-check", key=key.key(), digest_size=8).hexdigest()
    db.execute("INSERT INTO meta VALUES('lookup_check', ?)", (check,))
    ids = {}
    for i, e164 in enumerate((LONDON, NANP)):
        ids[e164] = bytes([i + 1]) * 12
        lookup = hashlib.blake2b(e164.encode(), key=key.key(), digest_size=16).digest()
        db.execute(
            "INSERT INTO subscribers(id, lookup, e164, region, created_at) VALUES (?,?,?,?,?)",
            (ids[e164], lookup, e164, num(e164).region, 1.0),
        )
    db.close()
    assert LONDON.encode() in _vault_bytes(tmp_path)

    vault = SqliteVault(path, key)
    for e164, sid in ids.items():
        assert vault.get(sid).number.e164 == e164
        assert vault.find_by_number(num(e164)) == sid
    vault.close()
    data = _vault_bytes(tmp_path)
    for e164 in (LONDON, NANP):
        for form in _digit_forms(e164):
            assert form not in data, form
    reopened = SqliteVault(path, key)  # sealing happens once
    assert reopened.get(ids[NANP]).number.e164 == NANP

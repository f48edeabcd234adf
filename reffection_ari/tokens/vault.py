"""The vault: the only place a subscriber's number lives, keyed by a random subscriber id.

:class:`Vault` is the interface (a PostgreSQL backend can implement it for several dialer
nodes); :class:`SqliteVault` is the embedded default.

* Lookups by number go through a keyed BLAKE2b index (the ``lookup`` key), never the plaintext,
  so the index cannot be reversed by enumerating the (small) number space without the key.
* The DNC list is keyed by the same index and outlives erasure: erasing a subscriber who opted out
  must not make them callable again after a re-import.
* Erasure deletes the row and attempts and leaves a tombstone of the random id, so the dead token
  reports ``erased`` instead of ``unknown_subscriber``.
* Numbers are sealed at rest: AES-SIV under a key derived (HKDF-SHA256, its own label) from the
  lookup key, with the row's subscriber id as associated data, so a copied vault file shows no
  number and a number blob moved to another row fails to open (``vault_integrity``). Deleted rows
  are overwritten (``secure_delete``). Vault files from before this are sealed in place when
  opened. See docs/tokens.md.

Threading/asyncio: every call is one short SQLite statement or transaction (sub-millisecond on the
WAL database), serialised by a lock, so it is acceptable to call from the event loop; bulk imports
(:meth:`SqliteVault.bulk_ensure`) belong in a worker thread or the CLI.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple, Protocol, TypeAlias, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._files import create_private
from .._sqlite import immediate
from ..errors import TokenError
from ..phone import PhoneNumber
from .codec import SUBSCRIBER_ID_BYTES
from .keyring import LookupKey

__all__ = [
    "Attempt",
    "BulkItem",
    "ErasureReport",
    "RevealHook",
    "SqliteVault",
    "SubscriberRecord",
    "Vault",
]

RevealHook = Callable[[bytes, str, str], None]
"""``on_reveal(subscriber_id, purpose, call_id)``; raising aborts the reveal."""

Target: TypeAlias = bytes | PhoneNumber


@dataclass(frozen=True)
class SubscriberRecord:
    subscriber_id: bytes = field(repr=False)
    number: PhoneNumber
    region: str
    time_zones: tuple[str, ...]
    consent_source: str | None
    consent_at: float | None
    dnc: bool
    created_at: float


@dataclass(frozen=True)
class Attempt:
    campaign: str
    at: float
    outcome: str


@dataclass(frozen=True)
class ErasureReport:
    """What :meth:`Vault.erase` did. ``subscriber_id`` is the random id (not personal data)."""

    found: bool
    subscriber_id: bytes | None = field(repr=False)
    attempts_deleted: int
    dnc_retained: bool

    @property
    def subscriber_ref(self) -> str | None:
        return self.subscriber_id.hex() if self.subscriber_id else None


class BulkItem(NamedTuple):
    """One row of a bulk import. A NamedTuple (immutable, cheap): ``tokenize`` builds one per row."""

    number: PhoneNumber
    consent_source: str | None = None
    consent_at: float | None = None


@runtime_checkable
class Vault(Protocol):
    """Storage interface for subscribers, DNC and attempts."""

    def ensure_subscriber(
        self, number: PhoneNumber, *, consent_source: str | None = None, consent_at: float | None = None
    ) -> bytes:
        """The subscriber id for ``number``, creating a random one if unknown."""
        ...

    def bulk_ensure(self, items: Sequence[BulkItem], run_id: str) -> list[bytes | None]:
        """Like :meth:`ensure_subscriber` per item; ``None`` for a number already seen in
        ``run_id`` (a duplicate within one import)."""
        ...

    def find_by_number(self, number: PhoneNumber) -> bytes | None: ...

    def get(self, subscriber_id: bytes) -> SubscriberRecord:
        """Raises TokenError ``unknown_subscriber`` or ``erased``."""
        ...

    def set_time_zone(self, subscriber_id: bytes, zone: str | None) -> None: ...

    def reveal(self, subscriber_id: bytes, *, purpose: str, call_id: str) -> PhoneNumber: ...

    def set_dnc(self, target: Target, on: bool, source: str) -> bytes | None:
        """Returns the subscriber id, or None for a number not in the vault (yet)."""
        ...

    def is_dnc(self, target: Target) -> bool: ...

    def dnc_entries(self) -> Iterator[tuple[bytes | None, str, float]]:
        """(subscriber id or None when the number is not in the vault, source, time)."""
        ...

    def record_attempt(self, subscriber_id: bytes, campaign: str, at: float, outcome: str) -> None: ...

    def attempts_since(self, subscriber_id: bytes, since: float, campaign: str | None = None) -> list[Attempt]: ...

    def erase(self, target: Target, *, keep_dnc: bool = True) -> ErasureReport: ...

    def close(self) -> None: ...


# ``subscribers`` is a rowid table: rows append in import order and only the two small unique
# indexes (random id, keyed lookup) take random inserts. (Vaults created before this keep their
# WITHOUT ROWID table; every statement works on both.)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS subscribers (
    id BLOB NOT NULL UNIQUE,
    lookup BLOB NOT NULL UNIQUE,
    number BLOB NOT NULL,
    region TEXT NOT NULL,
    time_zone TEXT,
    consent_source TEXT,
    consent_at REAL,
    created_at REAL NOT NULL,
    seen_run TEXT
);
CREATE TABLE IF NOT EXISTS dnc (
    lookup BLOB PRIMARY KEY,
    source TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    subscriber_id BLOB NOT NULL,
    campaign TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_sub ON attempts(subscriber_id, at);
CREATE TABLE IF NOT EXISTS erased (
    id BLOB PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""
_SEAL_INFO: Final = b"reffection-ari vault number v1"
_CHUNK: Final = 900  # stays far below SQLite's bound-parameter limit
_CACHE_KIB: Final = 16384  # page cache: a fixed bound, also during bulk_import (flat memory)


@dataclass
class _BulkSession:
    rows_per_commit: int
    pending: int = 0


class SqliteVault:
    """SQLite (WAL) vault. ``lookup_key`` comes from :meth:`Keyring.lookup_key`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        lookup_key: LookupKey,
        *,
        on_reveal: RevealHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._key = lookup_key.key()
        self._kid = lookup_key.kid
        self._on_reveal = on_reveal
        self._clock = clock
        self._lock = threading.RLock()
        new = not self._path.exists()
        if new:
            create_private(self._path)
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.execute("PRAGMA secure_delete=ON")  # an erased number is overwritten, not just unlinked
        self._bulk: _BulkSession | None = None
        self._db.executescript(_SCHEMA)
        seal_key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_SEAL_INFO).derive(self._key)
        self._sealer = AESSIV(seal_key)
        # A key check value (not the key) detects a vault opened with another keyring's lookup key,
        # which would silently create duplicate subscribers.
        check = f"{self._kid}:" + hashlib.blake2b(b"rf-vault-check", key=self._key, digest_size=8).hexdigest()
        row = self._db.execute("SELECT v FROM meta WHERE k='lookup_check'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta(k, v) VALUES('lookup_check', ?)", (check,))
        elif row[0] != check:
            raise TokenError(
                f"vault is indexed with lookup key {row[0].split(':')[0]}, and the keyring's "
                f"{self._kid} does not match it",
                code="vault_key_mismatch",
            )
        if "e164" in {r[1] for r in self._db.execute("PRAGMA table_info(subscribers)")}:
            self._seal_legacy_numbers()

    def set_reveal_hook(self, hook: RevealHook | None) -> None:
        self._on_reveal = hook

    def __repr__(self) -> str:
        return f"SqliteVault(path={str(self._path)!r})"

    # helpers -------------------------------------------------------------------------------

    def _seal(self, subscriber_id: bytes, e164: str) -> bytes:
        return self._sealer.encrypt(e164.encode("ascii"), [subscriber_id])

    def _open(self, subscriber_id: bytes, sealed: bytes) -> str:
        try:
            return self._sealer.decrypt(sealed, [subscriber_id]).decode("ascii")
        except (InvalidTag, UnicodeDecodeError, TypeError):
            raise TokenError("the vault row does not authenticate", code="vault_integrity") from None

    def _seal_legacy_numbers(self) -> None:
        """Vault files written before numbers were sealed keep them in a clear ``e164`` column:
        seal every row in one transaction, drop the column, then VACUUM and truncate the WAL so
        no clear copy stays in free pages."""
        with immediate(self._db) as db:
            if "e164" not in {r[1] for r in db.execute("PRAGMA table_info(subscribers)")}:
                return  # another process sealed it while we waited for the lock
            db.execute("ALTER TABLE subscribers ADD COLUMN number BLOB")
            rows = db.execute("SELECT id, e164 FROM subscribers").fetchall()
            db.executemany(
                "UPDATE subscribers SET number=? WHERE id=?", [(self._seal(bytes(i), e), i) for i, e in rows]
            )
            db.execute("ALTER TABLE subscribers DROP COLUMN e164")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _lookup(self, number: PhoneNumber) -> bytes:
        return hashlib.blake2b(number.e164.encode(), key=self._key, digest_size=16).digest()

    @contextmanager
    def bulk_import(self, rows_per_commit: int = 100_000) -> Iterator[None]:
        """Group :meth:`bulk_ensure` calls into transactions of about ``rows_per_commit`` rows.
        The page cache keeps its fixed 16 MiB bound (64 MiB measured ~25% faster at 1M rows but
        made peak RSS grow with the file up to that bound). Committing every 5,000 rows rewrote the same
        random index pages into the WAL each time; batching writes each dirty page about once per
        batch.

        Crash story: each batch commits atomically; a crash loses at most the open batch, and
        re-running the import is idempotent by number (committed numbers keep their subscriber
        ids, so the re-run yields the same tokens). Output produced by a run that did not finish
        must be discarded (``tokenize`` writes its file under a temporary name and renames it only
        after the last commit). Durability settings are unchanged (WAL, ``synchronous=NORMAL``).
        The vault lock is held for the whole session: other threads wait."""
        if rows_per_commit < 1:
            raise ValueError("rows_per_commit must be >= 1")
        with self._lock:
            if self._bulk is not None:
                raise RuntimeError("bulk_import sessions do not nest")
            with immediate(self._db):
                self._bulk = _BulkSession(rows_per_commit)
                try:
                    yield
                finally:
                    self._bulk = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._bulk is not None:  # inside bulk_import: its transaction is ours
                yield self._db
                return
            with immediate(self._db) as db:
                yield db

    def _resolve_target(self, target: Target) -> tuple[bytes | None, bytes | None]:
        """(subscriber id, lookup) for an id or a number; either may be None if unknown."""
        if isinstance(target, PhoneNumber):
            lk = self._lookup(target)
            row = self._db.execute("SELECT id FROM subscribers WHERE lookup=?", (lk,)).fetchone()
            return (row[0] if row else None), lk
        row = self._db.execute("SELECT lookup FROM subscribers WHERE id=?", (bytes(target),)).fetchone()
        return bytes(target), (row[0] if row else None)

    # subscribers ---------------------------------------------------------------------------

    def ensure_subscriber(
        self, number: PhoneNumber, *, consent_source: str | None = None, consent_at: float | None = None
    ) -> bytes:
        lk = self._lookup(number)
        with self._tx() as db:
            row = db.execute("SELECT id FROM subscribers WHERE lookup=?", (lk,)).fetchone()
            if row is not None:
                if consent_source is not None:
                    db.execute(
                        "UPDATE subscribers SET consent_source=?, consent_at=? WHERE id=?",
                        (consent_source, consent_at, row[0]),
                    )
                return bytes(row[0])
            sid = os.urandom(SUBSCRIBER_ID_BYTES)
            db.execute(
                "INSERT INTO subscribers(id, lookup, number, region, consent_source, consent_at, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (sid, lk, self._seal(sid, number.e164), number.region, consent_source, consent_at, self._clock()),
            )
            return sid

    def bulk_ensure(self, items: Sequence[BulkItem], run_id: str) -> list[bytes | None]:
        key = self._key
        blake = hashlib.blake2b
        seal = self._seal
        lookups = [blake(it.number.e164.encode(), key=key, digest_size=16).digest() for it in items]
        out: list[bytes | None] = [None] * len(items)
        now = self._clock()
        with self._tx() as db:
            for start in range(0, len(items), _CHUNK):
                chunk = lookups[start : start + _CHUNK]
                first: dict[bytes, int] = {}
                for i, lk in enumerate(chunk, start):
                    first.setdefault(lk, i)
                marks = ",".join("?" * len(first))
                existing = {
                    bytes(lk): (bytes(sid), seen)
                    for lk, sid, seen in db.execute(
                        f"SELECT lookup, id, seen_run FROM subscribers WHERE lookup IN ({marks})", list(first)
                    )
                }
                fresh = os.urandom(SUBSCRIBER_ID_BYTES * len(first))
                inserts = []
                touches = []
                for n, (lk, i) in enumerate(first.items()):
                    hit = existing.get(lk)
                    if hit is not None:
                        if hit[1] == run_id:
                            continue  # seen in an earlier chunk of this run: duplicate
                        out[i] = hit[0]
                        touches.append((run_id, lk))
                        continue
                    sid = fresh[n * SUBSCRIBER_ID_BYTES : (n + 1) * SUBSCRIBER_ID_BYTES]
                    it = items[i]
                    num = it.number
                    inserts.append(
                        (
                            sid,
                            lk,
                            seal(sid, num.e164),
                            num.region,
                            it.consent_source,
                            it.consent_at,
                            now,
                            run_id,
                        )
                    )
                    out[i] = sid
                if inserts:
                    inserts.sort()  # key order: B-tree pages are touched once per chunk, not per row
                    db.executemany(
                        "INSERT INTO subscribers(id, lookup, number, region, consent_source,"
                        " consent_at, created_at, seen_run) VALUES (?,?,?,?,?,?,?,?)",
                        inserts,
                    )
                if touches:
                    db.executemany("UPDATE subscribers SET seen_run=? WHERE lookup=?", touches)
            bulk = self._bulk
            if bulk is not None:
                bulk.pending += len(items)
                if bulk.pending >= bulk.rows_per_commit:
                    db.execute("COMMIT")
                    db.execute("BEGIN IMMEDIATE")
                    bulk.pending = 0
        return out

    def find_by_number(self, number: PhoneNumber) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM subscribers WHERE lookup=?", (self._lookup(number),)).fetchone()
        return bytes(row[0]) if row else None

    def get(self, subscriber_id: bytes) -> SubscriberRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT s.number, s.region, s.time_zone, s.consent_source, s.consent_at, s.created_at,"
                " d.lookup IS NOT NULL FROM subscribers s LEFT JOIN dnc d ON d.lookup = s.lookup"
                " WHERE s.id=?",
                (subscriber_id,),
            ).fetchone()
            if row is None:
                gone = self._db.execute("SELECT 1 FROM erased WHERE id=?", (subscriber_id,)).fetchone()
                if gone:
                    raise TokenError("subscriber was erased", code="erased")
                raise TokenError("no such subscriber", code="unknown_subscriber")
        sealed, region, zone, csrc, cat, created, dnc = row
        number = PhoneNumber.parse(self._open(subscriber_id, sealed))
        return SubscriberRecord(
            subscriber_id=subscriber_id,
            number=number,
            region=region,
            time_zones=(zone,) if zone else number.time_zones,
            consent_source=csrc,
            consent_at=cat,
            dnc=bool(dnc),
            created_at=created,
        )

    def set_time_zone(self, subscriber_id: bytes, zone: str | None) -> None:
        """Pin a subscriber's zone when the partner knows it (address, previous calls); by default
        zones derive from the number (phonenumbers metadata), which for mobiles may be several."""
        with self._lock:
            cur = self._db.execute("UPDATE subscribers SET time_zone=? WHERE id=?", (zone, subscriber_id))
        if cur.rowcount == 0:
            raise TokenError("no such subscriber", code="unknown_subscriber")

    def reveal(self, subscriber_id: bytes, *, purpose: str, call_id: str) -> PhoneNumber:
        """The audited way to hand a number to a third party: the hook runs first and may veto."""
        if not purpose or not call_id:
            raise ValueError("reveal needs a purpose and a call id")
        record = self.get(subscriber_id)
        if self._on_reveal is not None:
            self._on_reveal(subscriber_id, purpose, call_id)
        return record.number

    # DNC -----------------------------------------------------------------------------------

    def set_dnc(self, target: Target, on: bool, source: str) -> bytes | None:
        with self._tx() as db:
            sid, lk = self._resolve_target(target)
            if lk is None:
                raise TokenError("no such subscriber", code="unknown_subscriber")
            if on:
                db.execute(
                    "INSERT INTO dnc(lookup, source, at) VALUES (?,?,?) ON CONFLICT(lookup) DO NOTHING",
                    (lk, source, self._clock()),
                )
            else:
                db.execute("DELETE FROM dnc WHERE lookup=?", (lk,))
        return sid

    def is_dnc(self, target: Target) -> bool:
        with self._lock:
            _sid, lk = self._resolve_target(target)
            if lk is None:
                return False
            return self._db.execute("SELECT 1 FROM dnc WHERE lookup=?", (lk,)).fetchone() is not None

    def dnc_entries(self) -> Iterator[tuple[bytes | None, str, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, d.source, d.at FROM dnc d LEFT JOIN subscribers s ON s.lookup = d.lookup ORDER BY d.at"
            ).fetchall()
        for sid, source, at in rows:
            yield (bytes(sid) if sid is not None else None), source, at

    # attempts ------------------------------------------------------------------------------

    def record_attempt(self, subscriber_id: bytes, campaign: str, at: float, outcome: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO attempts(subscriber_id, campaign, at, outcome) VALUES (?,?,?,?)",
                (subscriber_id, campaign, at, outcome),
            )

    def attempts_since(self, subscriber_id: bytes, since: float, campaign: str | None = None) -> list[Attempt]:
        sql = "SELECT campaign, at, outcome FROM attempts WHERE subscriber_id=? AND at>=?"
        args: list[object] = [subscriber_id, since]
        if campaign is not None:
            sql += " AND campaign=?"
            args.append(campaign)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY at", args).fetchall()
        return [Attempt(c, a, o) for c, a, o in rows]

    # erasure -------------------------------------------------------------------------------

    def erase(self, target: Target, *, keep_dnc: bool = True) -> ErasureReport:
        """Delete the subscriber and its attempts; every token for it then fails ``erased``.
        The DNC entry is kept unless ``keep_dnc=False`` (suppression outlives erasure)."""
        with self._tx() as db:
            sid, lk = self._resolve_target(target)
            found = sid is not None and lk is not None
            attempts = 0
            if found:
                assert sid is not None
                attempts = db.execute("DELETE FROM attempts WHERE subscriber_id=?", (sid,)).rowcount
                db.execute("DELETE FROM subscribers WHERE id=?", (sid,))
                db.execute("INSERT OR IGNORE INTO erased(id, at) VALUES (?,?)", (sid, self._clock()))
            dnc_retained = False
            if lk is not None:
                if keep_dnc:
                    dnc_retained = db.execute("SELECT 1 FROM dnc WHERE lookup=?", (lk,)).fetchone() is not None
                else:
                    db.execute("DELETE FROM dnc WHERE lookup=?", (lk,))
        return ErasureReport(found, sid if found else None, attempts, dnc_retained)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM subscribers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""The durable lead outbox: a confirm is acknowledged only after the lead is committed here.

``LeadOutbox`` is a SQLite file in WAL mode with ``synchronous=FULL``: when :meth:`store`
returns, the lead survives a crash or power loss. :class:`DeliveryWorker` then hands it to a
:class:`~reffection_ari.evidence.sinks.DeliverySink` at least once, with exponential backoff and
jitter, and dead-letters it after ``max_attempts`` or a permanent refusal.

States: ``pending`` → ``delivering`` (claimed under a lease; a crashed worker's lease expires
and the lead is retried) → ``delivered`` | ``dead``. ``retry`` moves a dead lead back to
``pending``. After delivery the stored copy of the number is scrubbed (the advertiser has it;
the partner's vault keeps the original); erasure scrubs it from undelivered leads too.

One delivery worker per SQLite file (the embedded single-node setup), enforced: the worker holds
an exclusive lock on ``<outbox>.worker-lock`` while it runs (:meth:`LeadOutbox.claim_worker`), so a
second daemon or worker on the same file fails with ``outbox_busy`` instead of delivering twice.
Holding that lock, it reclaims every lease on start: no other worker can hold one.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from .._files import create_private
from .._sqlite import immediate
from ..errors import EvidenceError
from ..lead import Lead
from ._util import Clock, canonical_json
from .audit import AuditKind, AuditLog
from .leadjson import lead_summary, lead_to_json
from .sinks import DeliveryFailed, DeliverySink

log = logging.getLogger(__name__)


class OutboxState(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    lead_id         TEXT PRIMARY KEY,
    call_id         TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    advertiser      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    recording_path  TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_owner     TEXT,
    last_error      TEXT,
    dead_reason     TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    delivered_at    REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""

_ENTRY_COLUMNS = (
    "lead_id, call_id, campaign, advertiser, state, attempts, next_attempt_at, last_error, "
    "dead_reason, created_at, updated_at, delivered_at"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A row's bookkeeping, without the payload (safe to print)."""

    lead_id: str
    call_id: str
    campaign: str
    advertiser: str
    state: OutboxState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    dead_reason: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class ClaimedLead:
    """A lead leased to a worker for one delivery attempt."""

    lead_id: str
    call_id: str
    attempts: int  # including this one
    payload: dict[str, Any]

    def __repr__(self) -> str:
        return f"ClaimedLead(lead_id={self.lead_id!r}, attempts={self.attempts})"


@dataclass(frozen=True, slots=True)
class ErasedLead:
    lead_id: str
    call_id: str
    previous_state: OutboxState


def _entry(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(row[0], row[1], row[2], row[3], OutboxState(row[4]), *row[5:])


class LeadOutbox:
    """SQLite-backed :class:`~reffection_ari.lead.LeadSink`; see the module docstring.

    Every method is safe to call from several threads; the async ones run SQLite off the loop.
    """

    def __init__(self, path: str | Path, *, clock: Clock = time.time, scrub_delivered: bool = True) -> None:
        self.path = Path(path)
        self._worker_lock: IO[str] | None = None
        self._clock = clock
        self.scrub_delivered = scrub_delivered
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        create_private(self.path)  # undelivered leads hold numbers
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._tx():
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(stmt)

    def __repr__(self) -> str:
        return f"LeadOutbox(path={str(self.path)!r})"

    def claim_worker(self) -> None:
        """Become this file's only delivery worker (idempotent; released by :meth:`close` or when
        the process dies). Raises ``EvidenceError(outbox_busy)`` while another process holds it."""
        with self._lock:
            if self._worker_lock is not None:
                return
            path = self.path.with_name(self.path.name + ".worker-lock")
            create_private(path)
            fh = open(path, "r+")  # held until close()
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = fh.read().strip() or "?"
                fh.close()
                raise EvidenceError(
                    f"another delivery worker (pid {holder}) holds this outbox", code="outbox_busy"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            self._worker_lock = fh

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._worker_lock is not None:
                self._worker_lock.close()
                self._worker_lock = None

    def __enter__(self) -> LeadOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (takes the write lock up front: no upgrade deadlocks)."""
        with self._lock, immediate(self._db) as db:
            yield db

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the storing thread/loop) after each newly stored or retried lead."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for cb in list(self._listeners):
            cb()

    # -- storing -------------------------------------------------------------------------------

    def store_sync(self, lead: Lead) -> bool:
        """Commit the lead; True if new, False if this lead id was already stored (idempotent)."""
        payload = canonical_json(lead_to_json(lead)).decode("utf-8")
        now = self._clock()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO outbox (lead_id, call_id, campaign, advertiser, payload,"
                " recording_path, state, attempts, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                (
                    lead.lead_id,
                    lead.call_id,
                    lead.campaign,
                    lead.advertiser,
                    payload,
                    lead.recording.path if lead.recording else None,
                    now,
                    now,
                    now,
                ),
            )
            return cur.rowcount == 1

    async def store(self, lead: Lead) -> None:
        """``LeadSink``: returns once the lead is committed (fsynced). Idempotent by lead id."""
        new = await asyncio.to_thread(self.store_sync, lead)
        log.info("lead stored lead_id=%s call_id=%s new=%s", lead.lead_id, lead.call_id, new)
        if new:
            self._notify()

    # -- worker side ---------------------------------------------------------------------------

    def reclaim_leases(self) -> int:
        """Return every ``delivering`` lead to ``pending`` (worker start: their worker is gone)."""
        now = self._clock()
        with self._tx() as db:
            return db.execute(
                "UPDATE outbox SET state='pending', lease_until=NULL, lease_owner=NULL, next_attempt_at=?,"
                " updated_at=? WHERE state='delivering'",
                (now, now),
            ).rowcount

    def claim_due(self, owner: str, *, limit: int = 16, lease_s: float = 60.0) -> builtins.list[ClaimedLead]:
        """Lease up to ``limit`` due leads (pending and due, or delivering with an expired lease)."""
        now = self._clock()
        with self._tx() as db:
            rows = db.execute(
                "SELECT lead_id, call_id, attempts, payload FROM outbox"
                " WHERE (state='pending' AND next_attempt_at<=?) OR (state='delivering' AND lease_until<=?)"
                " ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            for lead_id, *_ in rows:
                db.execute(
                    "UPDATE outbox SET state='delivering', attempts=attempts+1, lease_until=?, lease_owner=?,"
                    " updated_at=? WHERE lead_id=?",
                    (now + lease_s, owner, now, lead_id),
                )
        return [ClaimedLead(r[0], r[1], r[2] + 1, json.loads(r[3])) for r in rows]

    def mark_delivered(self, lead_id: str, owner: str) -> bool:
        """False when the lease was lost meanwhile (erased, or reclaimed by another worker)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute(
                "SELECT payload FROM outbox WHERE lead_id=? AND state='delivering' AND lease_owner=?",
                (lead_id, owner),
            ).fetchone()
            if row is None:
                return False
            payload = row[0]
            if self.scrub_delivered:
                payload = _scrub(payload)
            db.execute(
                "UPDATE outbox SET state='delivered', delivered_at=?, updated_at=?, lease_until=NULL,"
                " lease_owner=NULL, last_error=NULL, payload=? WHERE lead_id=?",
                (now, now, payload, lead_id),
            )
            return True

    def mark_failed(
        self,
        lead_id: str,
        owner: str,
        error: str,
        *,
        next_attempt_at: float | None,
        dead_reason: str = "max_attempts",
    ) -> bool:
        """Schedule a retry at ``next_attempt_at`` or, when None, dead-letter with ``dead_reason``."""
        now = self._clock()
        with self._tx() as db:
            if next_attempt_at is None:
                cur = db.execute(
                    "UPDATE outbox SET state='dead', dead_reason=?, last_error=?, updated_at=?,"
                    " lease_until=NULL, lease_owner=NULL"
                    " WHERE lead_id=? AND state='delivering' AND lease_owner=?",
                    (dead_reason, error, now, lead_id, owner),
                )
            else:
                cur = db.execute(
                    "UPDATE outbox SET state='pending', next_attempt_at=?, last_error=?, updated_at=?,"
                    " lease_until=NULL, lease_owner=NULL"
                    " WHERE lead_id=? AND state='delivering' AND lease_owner=?",
                    (next_attempt_at, error, now, lead_id, owner),
                )
            return cur.rowcount == 1

    def next_due_at(self) -> float | None:
        """When the earliest pending lead (or expiring lease) becomes due; None when idle."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(CASE state WHEN 'pending' THEN next_attempt_at ELSE lease_until END) FROM outbox"
                " WHERE state IN ('pending', 'delivering')"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- operator side -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        out = {s.value: 0 for s in OutboxState}
        out.update({r[0]: r[1] for r in rows})
        return out

    def list(
        self, state: OutboxState | str | None = None, *, limit: int | None = None
    ) -> builtins.list[OutboxEntry]:
        sql = f"SELECT {_ENTRY_COLUMNS} FROM outbox"
        args: builtins.list[Any] = []
        if state is not None:
            sql += " WHERE state=?"
            args.append(str(OutboxState(state)))
        sql += " ORDER BY created_at, lead_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_entry(r) for r in self._db.execute(sql, args).fetchall()]

    def get(self, lead_id: str) -> OutboxEntry:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM outbox WHERE lead_id=?", (lead_id,)
            ).fetchone()
        if row is None:
            raise EvidenceError(f"no lead {lead_id!r} in the outbox", code="unknown_lead")
        return _entry(row)

    def show(self, lead_id: str) -> tuple[OutboxEntry, dict[str, Any]]:
        """The row and its payload with the number redacted (for operators)."""
        entry = self.get(lead_id)
        with self._lock:
            row = self._db.execute("SELECT payload FROM outbox WHERE lead_id=?", (lead_id,)).fetchone()
        return entry, lead_summary(json.loads(row[0]))

    def retry(self, lead_id: str) -> OutboxEntry:
        """Dead (or pending) → pending, due now, with a fresh attempt budget.

        Refused for delivered leads (``not_retryable``) and erased ones (``erased``)."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT state, dead_reason FROM outbox WHERE lead_id=?", (lead_id,)).fetchone()
            if row is None:
                raise EvidenceError(f"no lead {lead_id!r} in the outbox", code="unknown_lead")
            if row[1] == "erased":
                raise EvidenceError(f"lead {lead_id!r} was erased; it cannot be delivered", code="erased")
            if row[0] not in ("dead", "pending"):
                raise EvidenceError(
                    f"lead {lead_id!r} is {row[0]}; only dead or pending leads are retried",
                    code="not_retryable",
                )
            db.execute(
                "UPDATE outbox SET state='pending', attempts=0, next_attempt_at=?, dead_reason=NULL,"
                " updated_at=? WHERE lead_id=?",
                (now, now, lead_id),
            )
        self._notify()
        return self.get(lead_id)

    def purge(
        self,
        *,
        states: Iterable[OutboxState | str] = (OutboxState.DELIVERED,),
        older_than_s: float | None = None,
        lead_ids: Iterable[str] | None = None,
    ) -> int:
        """Delete delivered/dead rows (never pending or delivering ones); returns the count."""
        wanted = {OutboxState(s) for s in states}
        if wanted - {OutboxState.DELIVERED, OutboxState.DEAD}:
            raise EvidenceError("only delivered or dead leads can be purged", code="not_purgeable")
        sql = f"DELETE FROM outbox WHERE state IN ({','.join('?' * len(wanted))})"
        args: builtins.list[Any] = [s.value for s in wanted]
        if older_than_s is not None:
            sql += " AND updated_at<=?"
            args.append(self._clock() - older_than_s)
        ids = None if lead_ids is None else list(lead_ids)
        with self._tx() as db:
            if ids is None:
                return db.execute(sql, args).rowcount
            return sum(db.execute(sql + " AND lead_id=?", [*args, i]).rowcount for i in ids)

    def erase(
        self, *, number_e164: str | None = None, lead_ids: Iterable[str] | None = None
    ) -> builtins.list[ErasedLead]:
        """Scrub the number from matching leads not yet delivered and dead-letter them (``erased``).

        Delivered leads are left alone (their stored number is already scrubbed); the caller
        reports them so the erasure can be forwarded to the advertiser.
        """
        if number_e164 is None and lead_ids is None:
            raise ValueError("give number_e164 or lead_ids")
        ids = set(lead_ids or ())
        now = self._clock()
        touched: builtins.list[ErasedLead] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT lead_id, call_id, state, payload, dead_reason FROM outbox WHERE state != 'delivered'"
            ).fetchall()
            for lead_id, call_id, state, payload, dead_reason in rows:
                if dead_reason == "erased":
                    continue
                match = lead_id in ids or (
                    number_e164 is not None and json.loads(payload).get("number_e164") == number_e164
                )
                if not match:
                    continue
                db.execute(
                    "UPDATE outbox SET state='dead', dead_reason='erased', payload=?, lease_until=NULL,"
                    " lease_owner=NULL, updated_at=? WHERE lead_id=?",
                    (_scrub(payload), now, lead_id),
                )
                touched.append(ErasedLead(lead_id, call_id, OutboxState(state)))
        return touched

    def delivered_matching(
        self, *, number_e164: str | None = None, lead_ids: Iterable[str] = ()
    ) -> builtins.list[str]:
        """Delivered lead ids among ``lead_ids`` or for ``number_e164`` (matched by digest)."""
        ids = list(lead_ids)
        with self._lock:
            out = [
                i
                for i in ids
                if self._db.execute(
                    "SELECT 1 FROM outbox WHERE lead_id=? AND state='delivered'", (i,)
                ).fetchone()
            ]
            if number_e164 is not None:
                for lead_id, payload in self._db.execute(
                    "SELECT lead_id, payload FROM outbox WHERE state='delivered'"
                ).fetchall():
                    obj = json.loads(payload)
                    if lead_id not in out and (
                        obj.get("number_e164") == number_e164
                        or obj.get("number_sha256") == number_digest(lead_id, number_e164)
                    ):
                        out.append(lead_id)
        return out


def number_digest(lead_id: str, number_e164: str) -> str:
    """What a scrubbed row keeps of the number: enough to find it for an erasure request."""
    return hashlib.sha256(f"{lead_id}:{number_e164}".encode()).hexdigest()


def _scrub(payload: str) -> str:
    obj = json.loads(payload)
    number = obj.get("number_e164")
    if number is not None:
        obj["number_sha256"] = number_digest(str(obj.get("lead_id")), number)
    obj["number_e164"] = None
    return canonical_json(obj).decode("utf-8")


class DeliveryWorker:
    """Delivers outbox leads to one sink: at least once, backoff with jitter, dead letters.

    The n-th failed attempt waits ``min(max_delay, base_delay * 2**(n-1))`` scaled by a random
    factor in ``[1 - jitter, 1]``; after ``max_attempts`` attempts (or a permanent refusal)
    the lead is dead. :meth:`run_once` is one pass (tests drive it with a fake clock);
    :meth:`run` loops until ``stop`` is set, waking on new leads.
    """

    def __init__(
        self,
        outbox: LeadOutbox,
        sink: DeliverySink,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
        clock: Clock = time.time,
        lease_s: float = 60.0,
        batch: int = 16,
        audit: AuditLog | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        if max_attempts < 1 or not 0.0 <= jitter <= 1.0:
            raise ValueError("max_attempts >= 1 and 0 <= jitter <= 1")
        self.outbox = outbox
        self.sink = sink
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._clock = clock
        self.lease_s = lease_s
        self.batch = batch
        self.audit = audit
        self.poll_interval = poll_interval
        self.owner = f"w_{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()  # set while waiting for work: observability and tests
        outbox.add_listener(self._wake.set)
        self.delivered = 0
        self.dead = 0

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after ``attempts`` failed ones."""
        delay = min(self.max_delay, self.base_delay * (2.0 ** max(0, attempts - 1)))
        return delay * (1.0 - self.jitter * self._rng.random())

    async def run_once(self) -> int:
        """Attempt every lead due now (up to ``batch`` concurrently); returns how many were tried."""
        claimed = await asyncio.to_thread(
            self.outbox.claim_due, self.owner, limit=self.batch, lease_s=self.lease_s
        )
        if claimed:
            await asyncio.gather(*(self._attempt(c) for c in claimed))
        return len(claimed)

    async def _attempt(self, c: ClaimedLead) -> None:
        try:
            await self.sink.deliver(c.lead_id, c.payload)
        except DeliveryFailed as exc:
            await self._failed(c, exc.message, exc.retryable)
        except Exception as exc:  # a sink bug must not kill the worker; the lead is retried
            log.exception("sink raised unexpectedly lead_id=%s", c.lead_id)
            await self._failed(c, f"sink error: {type(exc).__name__}", True)
        else:
            if await asyncio.to_thread(self.outbox.mark_delivered, c.lead_id, self.owner):
                self.delivered += 1
                log.info("lead delivered lead_id=%s call_id=%s attempts=%d", c.lead_id, c.call_id, c.attempts)
                await self._audit(AuditKind.LEAD_DELIVERED, c, {})
            else:
                log.warning("lead delivered after its lease was lost lead_id=%s", c.lead_id)

    async def _failed(self, c: ClaimedLead, error: str, retryable: bool) -> None:
        if retryable and c.attempts < self.max_attempts:
            delay = self.backoff(c.attempts)
            await asyncio.to_thread(
                self.outbox.mark_failed, c.lead_id, self.owner, error, next_attempt_at=self._clock() + delay
            )
            log.warning(
                "lead delivery failed lead_id=%s attempts=%d retry_in=%.3fs error=%s",
                c.lead_id,
                c.attempts,
                delay,
                error,
            )
            return
        reason = "max_attempts" if retryable else "rejected"
        if await asyncio.to_thread(
            self.outbox.mark_failed, c.lead_id, self.owner, error, next_attempt_at=None, dead_reason=reason
        ):
            self.dead += 1
            log.error(
                "lead dead-lettered lead_id=%s attempts=%d reason=%s error=%s",
                c.lead_id,
                c.attempts,
                reason,
                error,
            )
            await self._audit(AuditKind.LEAD_DEAD_LETTERED, c, {"reason": reason, "error": error})

    async def _audit(self, kind: AuditKind, c: ClaimedLead, extra: dict[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.append_async(
                kind, {"lead_id": c.lead_id, "call_id": c.call_id, "attempts": c.attempts, **extra}
            )
        except Exception:
            log.exception("audit append failed kind=%s lead_id=%s", kind, c.lead_id)

    async def _wait(self, stop: asyncio.Event | None) -> None:
        due = await asyncio.to_thread(self.outbox.next_due_at)
        timeout = (
            self.poll_interval if due is None else max(0.0, min(self.poll_interval, due - self._clock()))
        )
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        self.idle.set()
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.idle.clear()
            for w in waiters:
                w.cancel()
        self._wake.clear()

    async def run(self, stop: asyncio.Event | None = None, *, reclaim: bool = True) -> None:
        """Deliver until ``stop`` is set (or cancelled)."""
        await asyncio.to_thread(self.outbox.claim_worker)
        if reclaim:
            await asyncio.to_thread(self.outbox.reclaim_leases)
        while stop is None or not stop.is_set():
            if await self.run_once() == 0:
                await self._wait(stop)

    async def drain(self, *, reclaim: bool = True) -> None:
        """Deliver until nothing is pending or delivering (every lead delivered or dead)."""
        await asyncio.to_thread(self.outbox.claim_worker)
        if reclaim:
            await asyncio.to_thread(self.outbox.reclaim_leases)
        while True:
            if await self.run_once():
                continue
            if await asyncio.to_thread(self.outbox.next_due_at) is None:
                return
            await self._wait(None)

    async def aclose(self) -> None:
        await self.sink.aclose()

"""The audit log: append-only JSONL, hash-chained, with Ed25519-signed checkpoints.

Each line is ``{index, ts, kind, data, prev_hash, hash}`` where ``hash`` is SHA-256 of the
canonical JSON of the other five fields and ``prev_hash`` is the previous entry's ``hash``
(64 zeros for entry 0). Editing, deleting, inserting or reordering a line breaks the chain at
that index. Someone who rewrites the chain consistently (recomputing every later hash) is caught
at the next checkpoint, an entry of kind ``checkpoint`` whose Ed25519 signature covers
``prev_hash``, i.e. everything before it. A checkpoint is written every ``checkpoint_every``
entries and at close (``closing: true``), so a log that does not end in a closing checkpoint is
either still open or truncated; :class:`AuditReport` says which entries no signature covers yet.

Entries never carry a phone number: :meth:`AuditLog.append` rejects data with phone-like digit
runs (defence in depth; callers log call ids, lead ids and tokens).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import EvidenceError
from ._util import Clock, b64url_decode, b64url_encode, canonical_json, rfc3339

GENESIS_HASH = "0" * 64
CHECKPOINT = "checkpoint"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class AuditKind(StrEnum):
    """The kinds the product writes; :meth:`AuditLog.append` also takes other snake_case kinds."""

    REVEAL = "reveal"
    RECEIPT_ISSUED = "receipt_issued"
    LEAD_STORED = "lead_stored"
    LEAD_DELIVERED = "lead_delivered"
    LEAD_DEAD_LETTERED = "lead_dead_lettered"
    LEAD_RETRIED = "lead_retried"
    RECORDING_DELETED = "recording_deleted"
    KEY_ROTATED = "key_rotated"
    KEY_RETIRED = "key_retired"
    DNC_CHANGED = "dnc_changed"
    ERASURE = "erasure"
    POLICY_REFUSED = "policy_refused"


class AuditDataError(EvidenceError):
    """Audit data looks like it contains a phone number (``pii_in_audit``)."""

    code = "pii_in_audit"


# ISO date-times, UUIDs and Asterisk uniqueids are digit-heavy but not numbers: blank them first.
_SAFE_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?<![\d.])1\d{9}\.\d{1,6}(?![\d]|\.\d)"  # Asterisk uniqueid / linkedid: <epoch>.<sequence>
)
_RUN_RE = re.compile(r"[0-9+().\-\s]+")
_TRIM = " \t\r\n."  # a sentence's full stop or a file extension's dot ends a number
_MIN_DIGITS = 7


def contains_phone_like(text: str) -> bool:
    """True when ``text`` has a run of 7+ digits (with phone punctuation) standing on its own.

    Runs glued to letters or underscores (hashes, ids like ``call_1700000000``) are not numbers;
    a bare ``79161234567``, ``+7 (916) 123-45-67`` or ``/rec/12345678901.wav`` is.
    """
    text = _SAFE_RE.sub("_", text)
    for m in _RUN_RE.finditer(text):
        run = m.group()
        if sum(c.isdigit() for c in run) < _MIN_DIGITS:
            continue
        start = m.start() + (len(run) - len(run.lstrip(_TRIM)))
        end = m.end() - (len(run) - len(run.rstrip(_TRIM)))
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if before.isalnum() or before == "_" or after.isalnum() or after == "_":
            continue
        return True
    return False


def check_no_phone_numbers(data: Any, path: str = "data") -> None:
    """Raise :class:`AuditDataError` naming the offending field (never its value)."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            if not isinstance(k, str):
                raise AuditDataError(f"{path}: keys must be strings")
            if contains_phone_like(k):
                raise AuditDataError(f"{path}: a key looks like a phone number")
            check_no_phone_numbers(v, f"{path}.{k}")
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            check_no_phone_numbers(v, f"{path}[{i}]")
    elif isinstance(data, bool) or data is None:
        return
    elif isinstance(data, int | float):
        if abs(data) >= 10 ** (_MIN_DIGITS - 1):
            raise AuditDataError(f"{path}: numbers of 7+ digits are refused; use a string id or an ISO time")
    elif isinstance(data, str):
        if contains_phone_like(data):
            raise AuditDataError(f"{path}: looks like it contains a phone number")
    else:
        raise AuditDataError(f"{path}: unsupported type {type(data).__name__}")


def entry_hash(index: int, ts: str, kind: str, data: Mapping[str, Any], prev_hash: str) -> str:
    body = {"index": index, "ts": ts, "kind": kind, "data": data, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def checkpoint_message(index: int, ts: str, prev_hash: str) -> bytes:
    """What a checkpoint signs: its position, time and the head of the chain before it."""
    return f"reffection-audit-checkpoint/1\n{index}\n{ts}\n{prev_hash}".encode("ascii")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    index: int
    ts: str
    kind: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ts": self.ts,
            "kind": self.kind,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class AuditLog:
    """The audit log writer. ``append`` is durable (fsync) when it returns.

    Several processes may append to one log (the daemon, and an operator's ``erase``, ``dnc``,
    ``keys`` or ``outbox`` command beside it): each append holds an exclusive ``flock`` on the
    file, first chains on whatever the others appended since (checking every link), then writes.
    Reopening an existing log checks its chain first and refuses to extend a broken one; a torn
    last line (a crash mid-write) is cut off.
    """

    def __init__(
        self,
        path: str | Path,
        signing_key: Ed25519PrivateKey,
        kid: str,
        *,
        checkpoint_every: int = 100,
        clock: Clock = time.time,
        fsync: bool = True,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.path = Path(path)
        self._key = signing_key
        self.kid = kid
        self.checkpoint_every = checkpoint_every
        self._clock = clock
        self._fsync = fsync
        self._lock = threading.Lock()
        self._next_index = 0
        self._head = GENESIS_HASH
        self._since_checkpoint = 0
        self._end = 0  # file offset up to which the chain has been read or written
        self._fh = open(self.path, "a+b")  # held for the log's lifetime; read by _catch_up
        try:
            with self._exclusive():
                pass  # reads and checks the chain written so far
        except BaseException:
            self._fh.close()
            raise

    def __repr__(self) -> str:
        return f"AuditLog(path={str(self.path)!r}, kid={self.kid!r}, next_index={self._next_index})"

    @property
    def head(self) -> tuple[int, str]:
        """(next index, hash of the last entry)."""
        return self._next_index, self._head

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the file lock and bring the chain head up to date with the file."""
        fd = self._fh.fileno()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._catch_up(fd)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _catch_up(self, fd: int) -> None:
        """Chain on the entries other writers appended after ``self._end`` (all of them when
        the log was just opened). A torn last line -- a writer that crashed mid-line; with the
        lock held nobody is writing -- is cut off."""
        size = os.fstat(fd).st_size
        if size == self._end:
            return
        if size < self._end:
            raise _broken(self._next_index, "the log was truncated under a running writer")
        raw = os.pread(fd, size - self._end, self._end)
        if not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            os.truncate(self.path, self._end + cut)
            os.fsync(fd)
            raw = raw[:cut]
        for line in raw.splitlines():
            i = self._next_index
            entry = _parse_line(line, i)
            _check_link(entry, i, self._head)
            self._head = entry.hash
            self._since_checkpoint = 0 if entry.kind == CHECKPOINT else self._since_checkpoint + 1
            self._next_index = i + 1
        self._end += len(raw)

    def _write(self, kind: str, data: dict[str, Any], *, sync: bool = True) -> AuditEntry:
        index = self._next_index
        ts = rfc3339(self._clock()) or ""
        if kind == CHECKPOINT:
            sig = self._key.sign(checkpoint_message(index, ts, self._head))
            data = {**data, "kid": self.kid, "sig": b64url_encode(sig)}
        h = entry_hash(index, ts, kind, data, self._head)
        entry = AuditEntry(index, ts, kind, data, self._head, h)
        line = canonical_json(entry.to_json()) + b"\n"
        self._fh.write(line)
        self._fh.flush()
        if self._fsync and sync:
            os.fsync(self._fh.fileno())
        self._end += len(line)
        self._head = h
        self._next_index = index + 1
        self._since_checkpoint = 0 if kind == CHECKPOINT else self._since_checkpoint + 1
        return entry

    def append(self, kind: str | AuditKind, data: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry (and a checkpoint when due). Raises :class:`AuditDataError` on
        phone-like data and ``ValueError`` on a bad kind; nothing is written then."""
        return self.append_many([(kind, data)])[0]

    def append_many(self, items: Sequence[tuple[str | AuditKind, Mapping[str, Any] | None]]) -> list[AuditEntry]:
        """Append several entries in order with one fsync (bulk operator commands such as a DNC
        import). All are checked first: one bad item and nothing is written."""
        payloads: list[tuple[str, dict[str, Any]]] = []
        for kind, data in items:
            kind = str(kind)
            if kind == CHECKPOINT or not _KIND_RE.match(kind):
                raise ValueError(f"invalid audit kind {kind!r}")
            payload = dict(data or {})
            check_no_phone_numbers(payload)
            payloads.append((kind, json.loads(canonical_json(payload))))  # what verification will see
        entries: list[AuditEntry] = []
        with self._lock:
            if self._fh.closed:
                raise EvidenceError("audit log is closed", code="audit_closed")
            with self._exclusive():
                for i, (kind, payload) in enumerate(payloads):
                    last = i == len(payloads) - 1
                    entries.append(self._write(kind, payload, sync=last))
                    if self._since_checkpoint >= self.checkpoint_every:
                        self._write(CHECKPOINT, {"closing": False}, sync=last)
        return entries

    async def append_async(self, kind: str | AuditKind, data: Mapping[str, Any] | None = None) -> AuditEntry:
        """:meth:`append` off the event loop (the fsync can take milliseconds)."""
        return await asyncio.to_thread(self.append, kind, data)

    def checkpoint(self, *, closing: bool = False) -> AuditEntry:
        with self._lock, self._exclusive():
            return self._write(CHECKPOINT, {"closing": closing})

    def close(self) -> None:
        """Write the closing checkpoint and close the file. Idempotent."""
        with self._lock:
            if self._fh.closed:
                return
            try:
                with self._exclusive():
                    self._write(CHECKPOINT, {"closing": True})
            finally:
                self._fh.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Outcome of a successful :func:`verify_audit_log`."""

    entries: int
    checkpoints: int
    last_checkpoint_index: int | None
    head_hash: str
    closed: bool  # the last entry is a closing checkpoint
    unsigned_tail: int  # entries after the last checkpoint (0 when closed)
    kinds: dict[str, int]


class AuditChainError(EvidenceError):
    """The audit log fails verification at position ``index``; ``since`` is the last checkpoint
    that still verified (the damage lies after it)."""

    code = "chain_broken"

    def __init__(
        self, message: str, *, index: int, since: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.index = index
        self.since = since


def _broken(
    index: int, reason: str, *, since: int | None = None, code: str = "chain_broken"
) -> AuditChainError:
    return AuditChainError(f"audit log entry {index}: {reason}", index=index, since=since, code=code)


def _parse_line(line: bytes, position: int) -> AuditEntry:
    try:
        obj = json.loads(line)
        entry = AuditEntry(
            int(obj["index"]),
            str(obj["ts"]),
            str(obj["kind"]),
            dict(obj["data"]),
            str(obj["prev_hash"]),
            str(obj["hash"]),
        )
    except (ValueError, KeyError, TypeError):
        raise _broken(position, "not a valid audit entry") from None
    return entry


def _check_link(entry: AuditEntry, position: int, prev: str) -> None:
    if entry.index != position:
        raise _broken(position, f"index {entry.index} found where {position} belongs")
    if entry.prev_hash != prev:
        raise _broken(position, "prev_hash does not match the previous entry")
    if entry_hash(entry.index, entry.ts, entry.kind, entry.data, entry.prev_hash) != entry.hash:
        raise _broken(position, "content does not match its hash")


def verify_audit_log(
    path: str | Path,
    public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey],
    *,
    require_closed: bool = False,
) -> AuditReport:
    """Walk the chain and check every checkpoint signature.

    Raises :class:`EvidenceError` with ``.index`` = the first position that fails: code
    ``chain_broken`` (bad JSON, index, link or hash), ``bad_checkpoint`` (signature fails: the
    chain before it was rewritten somewhere after ``.since``, the previous good checkpoint),
    ``unknown_key`` (checkpoint kid not trusted) or ``not_closed`` (``require_closed`` and the
    log does not end in a closing checkpoint).
    """
    keys = public_key if isinstance(public_key, Mapping) else None
    prev = GENESIS_HASH
    count = checkpoints = 0
    last_cp: int | None = None
    closed = False
    kinds: dict[str, int] = {}
    with open(path, "rb") as fh:
        for position, line in enumerate(fh):
            if not line.endswith(b"\n"):
                raise _broken(position, "torn last line")
            entry = _parse_line(line, position)
            _check_link(entry, position, prev)
            if entry.kind == CHECKPOINT:
                kid = entry.data.get("kid")
                if keys is not None:
                    key = keys.get(str(kid), keys.get("*"))
                    if key is None:
                        raise _broken(
                            position,
                            f"checkpoint signed by untrusted kid {kid!r}",
                            since=last_cp,
                            code="unknown_key",
                        )
                else:
                    assert isinstance(public_key, Ed25519PublicKey)
                    key = public_key
                try:
                    key.verify(
                        b64url_decode(str(entry.data.get("sig", ""))),
                        checkpoint_message(entry.index, entry.ts, entry.prev_hash),
                    )
                except (InvalidSignature, ValueError):
                    raise _broken(
                        position,
                        "checkpoint signature does not verify (the chain before it was rewritten)",
                        since=last_cp,
                        code="bad_checkpoint",
                    ) from None
                checkpoints += 1
                last_cp = position
                closed = bool(entry.data.get("closing"))
            else:
                closed = False
            kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
            prev = entry.hash
            count += 1
    tail = count - (last_cp + 1 if last_cp is not None else 0)
    if require_closed and not closed:
        raise _broken(
            count,
            f"log does not end in a closing checkpoint ({tail} unsigned entries)",
            since=last_cp,
            code="not_closed",
        )
    return AuditReport(count, checkpoints, last_cp, prev, closed, tail, kinds)

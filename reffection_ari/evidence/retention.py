"""Retention: delete recordings when their purpose ends, and erase numbers from the outbox.

- A declined or no-consent call's recording is deleted at call end: :func:`delete_recording`.
- A confirmed lead's recording is evidence; it is kept ``keep_days`` and then deleted by
  :class:`RetentionSweeper`. The receipt keeps the recording's SHA-256, so metadata outlives it.
- Erasing a subscriber (the vault row is the caller's job) also scrubs the number from leads not
  yet delivered: :func:`erase_from_outbox` reports what it touched, including leads already
  delivered, whose erasure must be forwarded to the advertiser.

Every deletion and erasure is audited; audit entries carry call/lead ids, never the number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ._util import Clock, fsync_dir, sha256_file
from .audit import AuditKind, AuditLog
from .outbox import ErasedLead, LeadOutbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordingDeletion:
    call_id: str
    reason: str
    existed: bool
    sha256: str | None
    size_bytes: int | None


def delete_recording(
    path: str | Path, audit: AuditLog | None, call_id: str, reason: str
) -> RecordingDeletion:
    """Hash, unlink (durably) and audit one recording. A missing file is audited as such."""
    p = Path(path)
    try:
        size = p.stat().st_size
        digest = sha256_file(p)
        p.unlink()
        fsync_dir(p.parent)
        result = RecordingDeletion(call_id, reason, True, digest, size)
    except FileNotFoundError:
        result = RecordingDeletion(call_id, reason, False, None, None)
    if audit is not None:
        audit.append(
            AuditKind.RECORDING_DELETED,
            {
                "call_id": call_id,
                "reason": reason,
                "existed": result.existed,
                "sha256": result.sha256,
                "size_bytes": result.size_bytes,
            },
        )
    log.info("recording deleted call_id=%s reason=%s existed=%s", call_id, reason, result.existed)
    return result


def call_id_of(path: Path) -> str:
    """Recordings are named ``<call_id>.<ext>``."""
    return path.name.split(".", 1)[0]


class RetentionSweeper:
    """Deletes recordings whose last modification is older than ``keep_days`` (audited).

    Declined calls' recordings are already gone at call end, so what remains are confirmed
    leads' recordings and calls in progress (recent mtime: never swept). ``hold(call_id)``
    returning True keeps a file (legal hold, lead not yet delivered, ...).
    """

    def __init__(
        self,
        recordings_dir: str | Path,
        keep_days: float,
        audit: AuditLog | None,
        clock: Clock = time.time,
        *,
        suffixes: Iterable[str] = (".wav", ".gsm", ".ulaw", ".alaw", ".sln", ".mp3", ".ogg", ".opus"),
        hold: Callable[[str], bool] | None = None,
    ) -> None:
        if keep_days < 0:
            raise ValueError("keep_days must be >= 0")
        self.recordings_dir = Path(recordings_dir)
        self.keep_days = keep_days
        self.audit = audit
        self._clock = clock
        self.suffixes = frozenset(suffixes)
        self.hold = hold

    def expired(self) -> list[Path]:
        cutoff = self._clock() - self.keep_days * 86400.0
        if not self.recordings_dir.is_dir():
            return []
        out = []
        for p in sorted(self.recordings_dir.iterdir()):
            if not p.is_file() or p.suffix.lower() not in self.suffixes:
                continue
            if p.stat().st_mtime <= cutoff and not (self.hold and self.hold(call_id_of(p))):
                out.append(p)
        return out

    def sweep(self) -> list[RecordingDeletion]:
        return [delete_recording(p, self.audit, call_id_of(p), "retention_expired") for p in self.expired()]

    async def run(self, stop: asyncio.Event, *, interval_s: float = 3600.0) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.sweep)
            except OSError:
                log.exception("retention sweep failed dir=%s", self.recordings_dir)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure touched. ``already_delivered``: tell the advertiser (GDPR art. 19)."""

    erased: tuple[ErasedLead, ...]
    already_delivered: tuple[str, ...]
    in_flight: tuple[str, ...] = field(default=())  # were being delivered: may have reached the advertiser

    @property
    def touched(self) -> int:
        return len(self.erased)


def erase_from_outbox(
    outbox: LeadOutbox,
    *,
    number_e164: str | None = None,
    lead_ids: Iterable[str] | None = None,
    audit: AuditLog | None = None,
    request_id: str | None = None,
) -> ErasureReport:
    """Remove the number from undelivered leads (marked dead, reason ``erased``) and report."""
    ids = None if lead_ids is None else list(lead_ids)
    erased = outbox.erase(number_e164=number_e164, lead_ids=ids)
    delivered = outbox.delivered_matching(number_e164=number_e164, lead_ids=ids or ())
    report = ErasureReport(
        tuple(erased),
        tuple(delivered),
        tuple(e.lead_id for e in erased if e.previous_state == "delivering"),
    )
    if audit is not None:
        audit.append(
            AuditKind.ERASURE,
            {
                "request_id": request_id,
                "scope": "outbox",
                "lead_ids": [e.lead_id for e in erased],
                "already_delivered": list(delivered),
                "in_flight": list(report.in_flight),
            },
        )
    log.info("erasure outbox touched=%d already_delivered=%d", len(erased), len(delivered))
    return report

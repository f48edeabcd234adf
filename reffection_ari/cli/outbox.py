"""`reffection-ari outbox list|show|retry|purge`: operate the lead outbox. Numbers are never shown."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import EvidenceError
from ..evidence.audit import AuditKind
from ..evidence.outbox import LeadOutbox, OutboxState
from ._common import add_audit_arg, add_keyring_arg, audit_log


def register(sub: Any) -> None:
    p = sub.add_parser("outbox", help="the durable lead outbox")
    osub = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = osub.add_parser(name, help=help_)
        sp.add_argument("--db", required=True, metavar="PATH", help="outbox SQLite file")
        return sp

    ls = add("list", "list leads and their delivery state")
    ls.add_argument("--state", choices=[s.value for s in OutboxState])
    ls.add_argument("--limit", type=int)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)
    sh = add("show", "show one lead (number redacted)")
    sh.add_argument("lead_id")
    sh.set_defaults(func=cmd_show)
    rt = add("retry", "move dead leads back to pending (a running worker picks them up)")
    rt.add_argument("lead_ids", nargs="*", metavar="LEAD_ID")
    rt.add_argument("--all-dead", action="store_true", help="every dead lead except erased ones")
    _audited(rt)
    rt.set_defaults(func=cmd_retry)
    pg = add("purge", "delete delivered (and optionally dead) leads")
    pg.add_argument("lead_ids", nargs="*", metavar="LEAD_ID")
    pg.add_argument(
        "--state",
        action="append",
        choices=["delivered", "dead"],
        help="states to purge (default: delivered); repeatable",
    )
    pg.add_argument("--older-than-days", type=float, help="only rows last updated before this")
    _audited(pg)
    pg.set_defaults(func=cmd_purge)


def _audited(p: argparse.ArgumentParser) -> None:
    """Retrying or purging leads changes personal data: recorded in the audit log, whose
    checkpoints are signed with the keyring's receipt key."""
    add_audit_arg(p)
    add_keyring_arg(p)


def _open(args: argparse.Namespace) -> LeadOutbox:
    if not Path(args.db).exists():
        raise EvidenceError(f"no outbox at {args.db}", code="unknown_outbox")
    return LeadOutbox(args.db)


def _ts(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_list(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        entries = outbox.list(args.state, limit=args.limit)
    finally:
        outbox.close()
    if args.json:
        for e in entries:
            print(
                json.dumps(
                    {
                        "lead_id": e.lead_id,
                        "call_id": e.call_id,
                        "campaign": e.campaign,
                        "state": str(e.state),
                        "attempts": e.attempts,
                        "dead_reason": e.dead_reason,
                        "last_error": e.last_error,
                        "created_at": _ts(e.created_at),
                    }
                )
            )
        return 0
    print(f"{'LEAD_ID':<36} {'STATE':<10} {'ATT':>3} {'CREATED':<20} {'CAMPAIGN':<16} REASON")
    for e in entries:
        reason = e.dead_reason or e.last_error or ""
        if e.dead_reason and e.last_error:
            reason = f"{e.dead_reason}: {e.last_error}"
        print(
            f"{e.lead_id:<36} {e.state:<10} {e.attempts:>3} {_ts(e.created_at):<20} {e.campaign:<16} {reason}"
        )
    print(f"{len(entries)} lead(s)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        entry, payload = outbox.show(args.lead_id)
    finally:
        outbox.close()
    out = {
        "lead_id": entry.lead_id,
        "call_id": entry.call_id,
        "campaign": entry.campaign,
        "advertiser": entry.advertiser,
        "state": str(entry.state),
        "attempts": entry.attempts,
        "next_attempt_at": _ts(entry.next_attempt_at),
        "last_error": entry.last_error,
        "dead_reason": entry.dead_reason,
        "created_at": _ts(entry.created_at),
        "delivered_at": _ts(entry.delivered_at),
        "payload": payload,
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    outbox = _open(args)
    try:
        ids = list(args.lead_ids)
        if args.all_dead:
            ids += [e.lead_id for e in outbox.list(OutboxState.DEAD) if e.dead_reason != "erased"]
        if not ids:
            raise EvidenceError("name lead ids or pass --all-dead", code="nothing_to_retry")
        with audit_log(args) as audit:
            for lead_id in ids:
                outbox.retry(lead_id)
                if audit is not None:
                    audit.append(AuditKind.LEAD_RETRIED, {"lead_id": lead_id, "via": "cli"})
                print(f"{lead_id} pending")
    finally:
        outbox.close()
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    outbox = _open(args)
    states = args.state or ["delivered"]
    try:
        with audit_log(args) as audit:
            n = outbox.purge(
                states=states,
                older_than_s=None if args.older_than_days is None else args.older_than_days * 86400.0,
                lead_ids=args.lead_ids or None,
            )
            if audit is not None:
                audit.append(
                    "outbox_purged",
                    {"count": n, "states": states, "lead_ids": list(args.lead_ids),
                     "older_than_days": args.older_than_days},
                )  # fmt: skip
    finally:
        outbox.close()
    print(f"purged {n} lead(s)")
    return 0


"""`reffection-ari dnc add|remove|check|import|export`: the vault's do-not-call list.

Entries are addressed by number or by token (with ``--audience``). ``export`` writes subscriber
references (random ids) and tokens are not re-derivable from it; it never writes numbers: a DNC
list leaving the vault must not become a number list. Numbers stay inside; to suppress a number
elsewhere, share it through the partner's own process, not this tool.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from typing import Any

from ..errors import NumberError, ReffectionError
from ..evidence.audit import AuditKind
from ..phone import PhoneNumber
from ..tokens import TokenCodec, TokenService
from ._common import add_audit_arg, add_keyring_arg, add_vault_arg, audit_log, open_service

_IMPORT_AUDIT_BATCH = 1000  # audit entries written per fsync during an import


def register(sub: Any) -> None:
    p = sub.add_parser("dnc", help="do-not-call list in the vault")
    dsub = p.add_subparsers(dest="dnc_command", required=True, metavar="ACTION")
    for name, helptext in (
        ("add", "put a number/token on DNC"),
        ("remove", "take it off"),
        ("check", "show"),
    ):
        c = dsub.add_parser(name, help=helptext)
        c.add_argument("target", help="a phone number (E.164 or national with --default-region) or a token")
        _common(c)
        if name != "check":
            c.add_argument("--source", default="cli", help="why/where the request came from")
            add_audit_arg(c)
        c.set_defaults(func={"add": cmd_add, "remove": cmd_remove, "check": cmd_check}[name])
    i = dsub.add_parser("import", help="CSV with a 'phone' or 'token' column; adds each row")
    i.add_argument("input", metavar="CSV")
    i.add_argument("--source", default="import")
    _common(i)
    add_audit_arg(i)
    i.set_defaults(func=cmd_import)
    e = dsub.add_parser("export", help="CSV of DNC entries: subscriber ref, source, time (never numbers)")
    e.add_argument("-o", "--output", default="-")
    add_keyring_arg(e)
    add_vault_arg(e)
    e.set_defaults(func=cmd_export)


def _common(p: Any) -> None:
    p.add_argument("--audience", help="audience the tokens were issued to (needed for tokens)")
    p.add_argument("--default-region", metavar="CC")
    add_keyring_arg(p)
    add_vault_arg(p)


def _target(service: TokenService, text: str, args: argparse.Namespace) -> bytes | PhoneNumber:
    text = text.strip()
    if TokenCodec.looks_like_token(text):
        if not args.audience:
            raise ReffectionError("a token needs --audience", code="bad_request")
        platform, _, campaign = args.audience.partition("/")
        return service.decode(text, platform, campaign=campaign or None).subscriber_id
    return PhoneNumber.parse(text, args.default_region)


def _dnc_entry(sid: bytes | None, on: bool, source: str) -> dict[str, Any]:
    """The audit record of one change: the subscriber's random id (none for a number that is
    not in the vault yet), never the number."""
    return {"subscriber_ref": sid.hex() if sid else None, "dnc": on, "source": source, "via": "cli"}


def _set(args: argparse.Namespace, on: bool) -> None:
    service = open_service(args)
    with audit_log(args, service.codec.keyring) as audit:
        sid = service.vault.set_dnc(_target(service, args.target, args), on, args.source)
        if audit is not None:
            audit.append(AuditKind.DNC_CHANGED, _dnc_entry(sid, on, args.source))


def cmd_add(args: argparse.Namespace) -> int:
    _set(args, True)
    print("on DNC", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _set(args, False)
    print("removed from DNC", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    service = open_service(args)
    on = service.vault.is_dnc(_target(service, args.target, args))
    print("dnc: yes" if on else "dnc: no")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    service = open_service(args)
    added = failed = 0
    with audit_log(args, service.codec.keyring) as audit, open(args.input, newline="", encoding="utf-8") as fh:
        pending: list[tuple[str, dict[str, Any]]] = []
        reader = csv.DictReader(fh)
        for row in reader:
            text = (row.get("phone") or row.get("token") or "").strip()
            try:
                sid = service.vault.set_dnc(_target(service, text, args), True, args.source)
                added += 1
            except (NumberError, ReffectionError) as exc:
                failed += 1
                print(f"line {reader.line_num}: {exc.code}", file=sys.stderr)
                continue
            entry = _dnc_entry(sid, True, args.source)
            pending.append((AuditKind.DNC_CHANGED, {**entry, "via": "import", "line": reader.line_num}))
            if audit is not None and len(pending) >= _IMPORT_AUDIT_BATCH:
                audit.append_many(pending)
                pending.clear()
        if audit is not None and pending:
            audit.append_many(pending)
    print(f"dnc import: {added} added, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    service = open_service(args)
    out = sys.stdout if args.output == "-" else open(args.output, "w", newline="", encoding="utf-8")
    try:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["subscriber_ref", "source", "at"])
        for sid, source, at in service.vault.dnc_entries():
            when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
            w.writerow([sid.hex() if sid else "(not in vault)", source, when])
    finally:
        if out is not sys.stdout:
            out.close()
    return 0

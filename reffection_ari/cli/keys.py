"""`reffection-ari keys generate|rotate|retire|list|export-public`: the partner's key file.

Output is metadata only (kid, purpose, status, created); key material is never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from ..evidence.audit import AuditKind
from ..tokens import Keyring
from ._common import add_audit_arg, add_keyring_arg, audit_log


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="manage the key file (tokens, lookup index, receipt signing)")
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    g = ksub.add_parser("generate", help="create a new key file (mode 0600)")
    add_keyring_arg(g)
    g.add_argument("--force", action="store_true", help="overwrite an existing key file")
    g.set_defaults(func=cmd_generate)

    r = ksub.add_parser("rotate", help="new active key; the old one stays resolve/verify-only")
    add_keyring_arg(r)
    r.add_argument("--purpose", choices=("token", "receipt"), default="token")
    add_audit_arg(r)
    r.set_defaults(func=cmd_rotate)

    t = ksub.add_parser("retire", help="destroy a non-active key: its tokens stop resolving (unknown_key)")
    add_keyring_arg(t)
    t.add_argument("kid")
    add_audit_arg(t)
    t.set_defaults(func=cmd_retire)

    ls = ksub.add_parser("list", help="list keys (metadata only)")
    add_keyring_arg(ls)
    ls.set_defaults(func=cmd_list)

    e = ksub.add_parser("export-public", help="print the receipt-verification public keys")
    add_keyring_arg(e)
    e.add_argument("--format", choices=("jwk", "pem"), default="jwk")
    e.set_defaults(func=cmd_export_public)


def _print_keys(ring: Keyring) -> None:
    for k in ring.list():
        created = dt.datetime.fromtimestamp(k.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{k.kid:<14} {k.purpose:<8} {k.status:<13} {created}")
    for kid in ring.retired():
        print(f"{kid:<14} {kid.rsplit('-', 1)[0]:<8} {'retired':<13} -")


def cmd_generate(args: argparse.Namespace) -> int:
    ring = Keyring.generate(Path(args.keyring), overwrite=args.force)
    print(f"created {ring.path} (mode 0600)", file=sys.stderr)
    _print_keys(ring)
    return 0


def _active_kid(ring: Keyring, purpose: str) -> str:
    return next(k.kid for k in ring.list() if k.purpose == purpose and k.status == "active")


def cmd_rotate(args: argparse.Namespace) -> int:
    ring = Keyring.load(Path(args.keyring))
    previous = _active_kid(ring, args.purpose)
    with audit_log(args, ring) as audit:
        info = ring.rotate(args.purpose)
        if audit is not None:
            audit.append(AuditKind.KEY_ROTATED, {"purpose": args.purpose, "kid": info.kid, "previous": previous})
    print(f"rotated {args.purpose}: {info.kid} is now active", file=sys.stderr)
    _print_keys(ring)
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    ring = Keyring.load(Path(args.keyring))
    with audit_log(args, ring) as audit:
        ring.retire(args.kid)
        if audit is not None:
            audit.append(AuditKind.KEY_RETIRED, {"kid": args.kid})
    print(f"retired {args.kid}: its material is destroyed", file=sys.stderr)
    _print_keys(ring)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _print_keys(Keyring.load(Path(args.keyring)))
    return 0


def cmd_export_public(args: argparse.Namespace) -> int:
    print(Keyring.load(Path(args.keyring)).export_public(args.format))
    return 0

"""Shared CLI plumbing: where the keyring, vault and audit log live."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ReffectionError
from ..evidence.audit import AuditLog
from ..tokens import Keyring, SqliteVault, TokenCodec, TokenService

DEFAULT_KEYRING = "./keyring.json"
DEFAULT_VAULT = "./vault.db"


def add_keyring_arg(p: Any) -> None:
    p.add_argument(
        "--keyring",
        default=os.environ.get("REFFECTION_KEYRING", DEFAULT_KEYRING),
        metavar="PATH",
        help="key file (default: $REFFECTION_KEYRING or ./keyring.json)",
    )


def add_vault_arg(p: Any) -> None:
    p.add_argument(
        "--vault",
        default=os.environ.get("REFFECTION_VAULT", DEFAULT_VAULT),
        metavar="PATH",
        help="SQLite vault (default: $REFFECTION_VAULT or ./vault.db)",
    )


def open_service(args: argparse.Namespace) -> TokenService:
    ring = Keyring.load(Path(args.keyring))
    vault = SqliteVault(Path(args.vault), ring.lookup_key())
    return TokenService(TokenCodec(ring), vault)


def add_audit_arg(p: Any) -> None:
    """For commands that change keys, the DNC list or leads: the change goes into the audit log."""
    p.add_argument(
        "--audit-log",
        default=os.environ.get("REFFECTION_AUDIT_LOG"),
        metavar="PATH",
        help="the daemon's audit log, where this change is recorded (default: $REFFECTION_AUDIT_LOG)",
    )
    p.add_argument("--no-audit", action="store_true", help="make the change without an audit entry")


@contextmanager
def audit_log(args: argparse.Namespace, keyring: Keyring | None = None) -> Iterator[AuditLog | None]:
    """Open the audit log *before* the change, so a missing or broken log stops the command
    before anything happened. ``--no-audit`` is an explicit, visible opt-out. Checkpoints are
    signed with the receipt key of ``keyring`` (default: the one ``--keyring`` names)."""
    if args.no_audit:
        print("warning: --no-audit: this change is not recorded in any audit log", file=sys.stderr)
        yield None
        return
    if not args.audit_log:
        raise ReffectionError(
            "this command changes keys, the DNC list or leads: pass --audit-log PATH (the daemon's"
            " audit_log) or --no-audit",
            code="audit_required",
        )
    if keyring is None:
        keyring = Keyring.load(Path(args.keyring))
    key, kid = keyring.receipt_signing_key()
    log = AuditLog(args.audit_log, key, kid)
    try:
        yield log
    finally:
        log.close()

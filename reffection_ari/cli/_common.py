"""Shared CLI plumbing for the token commands: where the keyring and vault live."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

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

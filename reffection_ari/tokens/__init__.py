"""Pseudonymisation: tokens (AES-SIV over random subscriber ids), the keyring and the vault.

The platform only ever sees tokens; numbers stay in the partner's vault. See docs/tokens.md.
"""

from .codec import TOKEN_LENGTH, TOKEN_PREFIX, DecodedToken, TokenCodec, validate_audience
from .keyring import KeyInfo, Keyring
from .service import ResolvedSubscriber, TokenService, audience_for
from .vault import Attempt, BulkItem, ErasureReport, SqliteVault, SubscriberRecord, Vault

__all__ = [
    "TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "Attempt",
    "BulkItem",
    "DecodedToken",
    "ErasureReport",
    "KeyInfo",
    "Keyring",
    "ResolvedSubscriber",
    "SqliteVault",
    "SubscriberRecord",
    "TokenCodec",
    "TokenService",
    "Vault",
    "audience_for",
    "validate_audience",
]

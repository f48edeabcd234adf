"""The exception hierarchy: every failure a caller can act on carries a stable reason ``code``.

Codes are part of the public contract (the platform API returns them verbatim), so they are
plain snake_case strings and never contain personal data or key material.
"""

from __future__ import annotations


class ReffectionError(Exception):
    """Base class. ``code`` is the machine-readable reason; ``str(exc)`` is for humans."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(ReffectionError):
    """Configuration is invalid; ``key`` is the dotted path of the offending setting."""

    code = "bad_config"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class TokenError(ReffectionError):
    """A token cannot be resolved.

    Codes: ``malformed_token``, ``unknown_key``, ``bad_token``, ``expired_token``,
    ``wrong_audience``, ``unknown_subscriber``, ``erased``; from the vault itself
    ``vault_key_mismatch`` and ``vault_integrity`` (a sealed number that does not authenticate).
    """

    code = "bad_token"


class NumberError(ReffectionError):
    """A phone number is not a valid, dialable E.164 number (``invalid_number``)."""

    code = "invalid_number"


class KeyringError(ReffectionError):
    """The keyring file is missing, unreadable, too permissive, or inconsistent."""

    code = "keyring_error"


class PolicyRefusal(ReffectionError):
    """A pre-dial rule refused the call (``dnc``, ``outside_calling_window``, ``attempt_limit``,
    ``rate_limited``, ``concurrency_limit``, ...). No channel was created."""

    code = "policy"


class CallError(ReffectionError):
    """An operation on a call is not allowed in its current state (``unknown_call``,
    ``not_consented``, ``not_bridged``, ``call_ended``, ``shutting_down``, ...)."""

    code = "call_error"


class SandboxError(ReffectionError):
    """The embedded Asterisk sandbox cannot be built, started or stopped."""

    code = "sandbox_error"


class EvidenceError(ReffectionError):
    """A receipt, recording hash or audit chain does not verify (``bad_signature``,
    ``wrong_audience``, ``recording_mismatch``, ``chain_broken``, ...)."""

    code = "evidence_error"

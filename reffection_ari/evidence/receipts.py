"""Consent receipts: the lead's evidence as a compact JWS anyone can verify offline.

A receipt is a plain RFC 7515 compact JWS (``alg`` = ``EdDSA``, Ed25519 per RFC 8037) over JSON
claims modelled on Kantara Consent Receipt v1.1 and the IETF vCon consent draft. Advertisers
verify it with the partner's published public key and ``sha256sum`` of the recording; no
software from us is needed (docs/receipts.md has the recipe and every claim).

The receipt binds to the subscriber's number without containing it: ``number_sha256`` is
SHA-256 of ``"<jti>:<E.164>"``. Whoever holds the lead (and so the number) can check the
binding; a receipt cannot be replayed for another number; two receipts for the same number
are not linkable by that field. The number space is small, so the hash is a pseudonym, not
anonymisation: treat a receipt as personal data, like the lead it travels with.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import EvidenceError
from ..lead import ConsentResult, Lead
from ._util import Clock, b64url_decode, b64url_encode, canonical_json, rfc3339, sha256_file
from .leadjson import agent_to_json, consent_to_json, keypress_to_json, prompt_to_json, recording_to_json

RECEIPT_TYP = "consent-receipt+jwt"
RECEIPT_VERSION = "reffection.consent-receipt/1"
MAX_CLOCK_SKEW_S = 300.0

PURPOSES: tuple[tuple[str, str], ...] = (
    ("hear_ad_message", "Hear the advertiser's message on this call"),
    ("disclose_number", "Disclose the subscriber's phone number to the advertiser named in 'aud'"),
    ("call_recording", "Record the call as evidence of this consent"),
)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key trusted for receipts issued (``iat``) inside ``[not_before, not_after]``.

    A retired key keeps verifying receipts signed while it was valid; it only rejects newer ones.
    """

    key: Ed25519PublicKey
    kid: str
    not_before: float | None = None
    not_after: float | None = None

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, not_before={self.not_before}, not_after={self.not_after})"


KeySet = Mapping[str, "Ed25519PublicKey | VerificationKey"]
"""kid → key. The kid ``"*"`` (what a bare PEM file loads as) matches any header kid."""


def number_binding(jti: str, number_e164: str) -> str:
    """``number_sha256`` claim: hex SHA-256 of ``"<jti>:<E.164>"``."""
    return hashlib.sha256(f"{jti}:{number_e164}".encode()).hexdigest()


class ReceiptSigner:
    """Issues receipts for confirmed leads with one Ed25519 key (the keyring's active signing key)."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        kid: str,
        issuer: str,
        *,
        withdraw_url: str | None = None,
        how_to_withdraw: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._key = private_key
        self.kid = kid
        self.issuer = issuer
        self.withdraw_url = withdraw_url
        self.how_to_withdraw = how_to_withdraw
        self._clock = clock

    def __repr__(self) -> str:
        return f"ReceiptSigner(kid={self.kid!r}, issuer={self.issuer!r})"

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def claims(
        self,
        lead: Lead,
        *,
        recording_sha256: str | None = None,
        policy_checks: Sequence[Mapping[str, Any] | str] | None = None,
        withdraw_url: str | None = None,
        how_to_withdraw: str | None = None,
        receipt_id: str | None = None,
    ) -> dict[str, Any]:
        """The claims :meth:`issue` signs; refuses a lead without given and confirmed consent."""
        ev = lead.evidence
        if ev.consent is not ConsentResult.GIVEN or ev.confirmed_at is None:
            raise EvidenceError(
                f"call {lead.call_id}: no confirmed consent to evidence", code="not_consented"
            )
        jti = receipt_id or f"rcpt_{uuid.uuid4().hex}"
        checks = ev.policy_checks if policy_checks is None else policy_checks
        how = how_to_withdraw or self.how_to_withdraw
        url = withdraw_url or self.withdraw_url
        return {
            "ver": RECEIPT_VERSION,
            "jti": jti,
            "iss": self.issuer,
            "aud": lead.advertiser,
            "iat": int(self._clock()),
            "lead_id": lead.lead_id,
            "call_id": lead.call_id,
            "campaign": lead.campaign,
            "advertiser": lead.advertiser,
            "number_sha256": number_binding(jti, lead.number_e164),
            "lead_created_at": rfc3339(lead.created_at),
            "purposes": [
                {"id": pid, "description": text, "legal_basis": "consent", "consent_type": "explicit"}
                for pid, text in PURPOSES
            ],
            "consent": consent_to_json(ev),
            "prompts": [prompt_to_json(p) for p in ev.prompts],
            "keypresses": [keypress_to_json(k) for k in ev.keypresses],
            "agent": agent_to_json(ev),
            "recording": recording_to_json(lead.recording, sha256=recording_sha256),
            "policy_checks": [{"check": c} if isinstance(c, str) else dict(c) for c in checks],
            "withdraw": {"url": url, "how": how},
        }

    def issue(
        self,
        lead: Lead,
        *,
        recording_sha256: str | None = None,
        policy_checks: Sequence[Mapping[str, Any] | str] | None = None,
        withdraw_url: str | None = None,
        how_to_withdraw: str | None = None,
    ) -> str:
        """Sign the lead's receipt; returns the compact JWS to put in ``Lead.receipt``."""
        claims = self.claims(
            lead,
            recording_sha256=recording_sha256,
            policy_checks=policy_checks,
            withdraw_url=withdraw_url,
            how_to_withdraw=how_to_withdraw,
        )
        return self.sign_claims(claims)

    def sign_claims(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "EdDSA", "kid": self.kid, "typ": RECEIPT_TYP}
        signing_input = f"{b64url_encode(canonical_json(header))}.{b64url_encode(canonical_json(claims))}"
        sig = self._key.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(sig)}"


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) without checking the signature: for diagnostics only."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise EvidenceError("a receipt is three base64url parts separated by dots", code="malformed_receipt")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvidenceError(
            f"receipt is not valid base64url JSON: {type(exc).__name__}", code="malformed_receipt"
        ) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise EvidenceError("receipt header and claims must be JSON objects", code="malformed_receipt")
    return header, claims


def _pick_key(keys: KeySet, kid: str) -> VerificationKey:
    found = keys.get(kid, keys.get("*"))
    if found is None:
        raise EvidenceError(f"no trusted public key with kid {kid!r}", code="unknown_key")
    if isinstance(found, VerificationKey):
        return found
    return VerificationKey(found, kid)


def verify_receipt(
    token: str,
    public_keys: KeySet | Ed25519PublicKey | VerificationKey,
    *,
    audience: str | None = None,
    recording_path: str | Path | None = None,
    number_e164: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify a receipt and return its claims.

    Checks, in order: structure and header (``malformed_receipt``), key lookup (``unknown_key``),
    signature (``bad_signature``), the key's validity at ``iat`` (``key_expired``,
    ``key_not_yet_valid``), ``iat`` not in the future (``issued_in_future``), audience
    (``wrong_audience``), the recording's SHA-256 (``recording_mismatch``) and the number
    binding (``number_mismatch``). All raise :class:`EvidenceError` with that code.
    """
    token = token.strip()
    header, claims = decode_unverified(token)
    if header.get("alg") != "EdDSA":
        raise EvidenceError(
            f"unsupported alg {header.get('alg')!r}; receipts use EdDSA", code="malformed_receipt"
        )
    if header.get("typ") != RECEIPT_TYP:
        raise EvidenceError(f"typ is {header.get('typ')!r}, not {RECEIPT_TYP!r}", code="malformed_receipt")
    if header.get("crit") is not None:
        raise EvidenceError("unsupported critical header parameters", code="malformed_receipt")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise EvidenceError("receipt header has no kid", code="malformed_receipt")
    if isinstance(public_keys, Ed25519PublicKey):
        vkey = VerificationKey(public_keys, kid)
    elif isinstance(public_keys, VerificationKey):
        vkey = public_keys
    else:
        vkey = _pick_key(public_keys, kid)
    head_b64, claims_b64, sig_b64 = token.split(".")
    try:
        vkey.key.verify(b64url_decode(sig_b64), f"{head_b64}.{claims_b64}".encode("ascii"))
    except (InvalidSignature, ValueError):
        raise EvidenceError(f"signature does not verify with key {kid!r}", code="bad_signature") from None
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise EvidenceError("receipt has no numeric iat", code="malformed_receipt")
    if vkey.not_after is not None and iat > vkey.not_after:
        raise EvidenceError(
            f"key {kid!r} was no longer valid when the receipt was issued", code="key_expired"
        )
    if vkey.not_before is not None and iat < vkey.not_before:
        raise EvidenceError(
            f"key {kid!r} was not yet valid when the receipt was issued", code="key_not_yet_valid"
        )
    current = time.time() if now is None else now
    if iat > current + MAX_CLOCK_SKEW_S:
        raise EvidenceError("receipt is issued in the future", code="issued_in_future")
    if audience is not None and claims.get("aud") != audience:
        raise EvidenceError(
            f"receipt is for audience {claims.get('aud')!r}, not {audience!r}", code="wrong_audience"
        )
    if recording_path is not None:
        rec = claims.get("recording")
        expected = rec.get("sha256") if isinstance(rec, dict) else None
        if expected is None:
            raise EvidenceError("receipt names no recording", code="recording_mismatch")
        actual = sha256_file(recording_path)
        if actual != expected:
            raise EvidenceError("recording SHA-256 differs from the receipt's", code="recording_mismatch")
    if number_e164 is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or claims.get("number_sha256") != number_binding(jti, number_e164):
            raise EvidenceError("receipt is not bound to this number", code="number_mismatch")
    return claims


def public_key_jwk(
    key: Ed25519PublicKey, kid: str, *, not_before: float | None = None, not_after: float | None = None
) -> dict[str, Any]:
    """RFC 8037 OKP JWK for publishing; ``nbf``/``exp`` (optional) bound the key's issuing period."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk: dict[str, Any] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw),
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    }
    if not_before is not None:
        jwk["nbf"] = int(not_before)
    if not_after is not None:
        jwk["exp"] = int(not_after)
    return jwk


def _jwk_to_key(jwk: Mapping[str, Any]) -> VerificationKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise EvidenceError("JWK is not an Ed25519 OKP public key", code="bad_public_key")
    if "d" in jwk:
        raise EvidenceError("JWK contains a private key; publish only the public part", code="bad_public_key")
    try:
        key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    except ValueError:
        raise EvidenceError("JWK 'x' is not a 32-byte Ed25519 key", code="bad_public_key") from None
    kid = jwk.get("kid")
    return VerificationKey(key, kid if isinstance(kid, str) and kid else "*", jwk.get("nbf"), jwk.get("exp"))


def parse_public_keys(data: bytes, *, kid: str | None = None) -> dict[str, VerificationKey]:
    """Keys from a PEM SubjectPublicKeyInfo, a JWK or a JWKS (``{"keys": [...]}``) document.

    A PEM carries no kid: it is trusted for ``kid`` if given, otherwise for any kid (``"*"``).
    """
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in text:
            raise EvidenceError("this is a private key; use the public key", code="bad_public_key")
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError:
            raise EvidenceError("PEM is not a public key", code="bad_public_key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise EvidenceError("PEM public key is not Ed25519", code="bad_public_key")
        return {kid or "*": VerificationKey(key, kid or "*")}
    try:
        doc = json.loads(text)
    except ValueError:
        raise EvidenceError("public key is neither PEM nor JSON (JWK/JWKS)", code="bad_public_key") from None
    jwks = doc.get("keys") if isinstance(doc, dict) and "keys" in doc else [doc]
    if not isinstance(jwks, list):
        raise EvidenceError("JWKS 'keys' must be a list", code="bad_public_key")
    out: dict[str, VerificationKey] = {}
    for item in jwks:
        if not isinstance(item, dict):
            raise EvidenceError("JWKS entries must be objects", code="bad_public_key")
        vk = _jwk_to_key(item)
        out[vk.kid] = vk
    return out


def load_public_keys(path: str | Path, *, kid: str | None = None) -> dict[str, VerificationKey]:
    """:func:`parse_public_keys` of a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvidenceError(f"cannot read public key file: {exc.strerror}", code="bad_public_key") from None
    return parse_public_keys(data, kid=kid)

"""Consent receipts: what they claim, that anyone can verify them, and every way they fail."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import (
    RECEIPT_TYP,
    ReceiptSigner,
    VerificationKey,
    decode_unverified,
    load_public_keys,
    number_binding,
    parse_public_keys,
    public_key_jwk,
    verify_receipt,
)
from reffection_ari.lead import ConsentResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proc"))
from evidence_leads import NUMBER, OTHER_NUMBER, fixed_key, make_lead, write_recording

NOW = 1_772_445_700.0  # 2026-03-02


def signer(seed: int = 1, kid: str = "k2026") -> ReceiptSigner:
    return ReceiptSigner(
        fixed_key(seed),
        kid,
        "example-partner",
        withdraw_url="https://partner.example/optout",
        how_to_withdraw="Call 0800 or press 9 on any call",
        clock=lambda: NOW,
    )


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[str, Path]:
    rec_path = tmp_path / "call_lead_0001.wav"
    rec = write_recording(rec_path)
    return signer().issue(make_lead(recording=rec)), rec_path


def test_claims_carry_the_design_fields(recorded: tuple[str, Path]) -> None:
    token, rec_path = recorded
    header, claims = decode_unverified(token)
    assert header == {"alg": "EdDSA", "kid": "k2026", "typ": RECEIPT_TYP}
    assert claims["iss"] == "example-partner" and claims["aud"] == "acme-insurance"
    assert claims["iat"] == int(NOW) and claims["jti"].startswith("rcpt_")
    assert [p["id"] for p in claims["purposes"]] == ["hear_ad_message", "disclose_number", "call_recording"]
    assert (
        claims["consent"]["result"] == "given"
        and claims["consent"]["caller_id_presented"] == "Example Partner"
    )
    assert [(p["id"], p["version"]) for p in claims["prompts"]] == [("disclosure", "3"), ("question", "2")]
    assert claims["keypresses"] == [
        {"leg": "subscriber", "digit": "1", "at": "2026-03-02T10:00:09.000Z", "offset_ms": 9000}
    ]
    assert claims["agent"] == {
        "id": "agent-17",
        "confirmed_at": "2026-03-02T10:00:40.000Z",
        "confirm_source": "dtmf",
    }
    assert claims["recording"]["sha256"] == hashlib.sha256(rec_path.read_bytes()).hexdigest()
    assert claims["recording"]["format"] == "wav/8000/16/mono"
    assert {"check": "dnc", "result": "pass"} in claims["policy_checks"]
    assert claims["withdraw"]["url"] == "https://partner.example/optout"
    assert claims["number_sha256"] == number_binding(claims["jti"], NUMBER)


def test_receipt_never_contains_the_number_or_token(recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    text = json.dumps(decode_unverified(token))
    assert NUMBER not in text and NUMBER[1:] not in text and "tkn1_" not in text


def test_verify_accepts_with_recording_audience_and_number(recorded: tuple[str, Path]) -> None:
    token, rec_path = recorded
    claims = verify_receipt(
        token,
        {"k2026": fixed_key(1).public_key()},
        audience="acme-insurance",
        recording_path=rec_path,
        number_e164=NUMBER,
        now=NOW,
    )
    assert claims["lead_id"] == "lead_0001"


def test_plain_jws_verifies_with_the_primitive_alone(recorded: tuple[str, Path]) -> None:
    """The docs' recipe: split, base64url-decode, Ed25519-verify "header.payload"."""
    token, _ = recorded
    h, p, s = token.split(".")
    sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    fixed_key(1).public_key().verify(sig, f"{h}.{p}".encode())
    assert json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["aud"] == "acme-insurance"


def _flip(token: str, part: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[len(raw) // 2] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: _flip(t, 1), "bad_signature"),
        (lambda t: _flip(t, 2), "bad_signature"),
        (lambda t: t.rsplit(".", 1)[0], "malformed_receipt"),
        (lambda t: "x" + t, "malformed_receipt"),
        (lambda t: t.replace(".", "!", 1), "malformed_receipt"),
    ],
)
def test_tampered_receipt_fails(recorded: tuple[str, Path], mutate: Callable[[str], str], code: str) -> None:
    token, _ = recorded
    with pytest.raises(EvidenceError) as err:
        verify_receipt(mutate(token), fixed_key(1).public_key(), now=NOW)
    assert err.value.code == code


def test_edited_claim_resigned_with_another_key_fails(recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    _, claims = decode_unverified(token)
    claims["aud"] = "someone-else"
    forged = signer(seed=2).sign_claims(claims)
    with pytest.raises(EvidenceError) as err:
        verify_receipt(forged, {"k2026": fixed_key(1).public_key()}, now=NOW)
    assert err.value.code == "bad_signature"


def test_wrong_key_unknown_kid_wrong_audience(recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: verify_receipt(token, {"k2026": fixed_key(9).public_key()}, now=NOW), "bad_signature"),
        (lambda: verify_receipt(token, {"other": fixed_key(1).public_key()}, now=NOW), "unknown_key"),
        (
            lambda: verify_receipt(token, fixed_key(1).public_key(), audience="globex", now=NOW),
            "wrong_audience",
        ),
        (
            lambda: verify_receipt(token, fixed_key(1).public_key(), number_e164=OTHER_NUMBER, now=NOW),
            "number_mismatch",
        ),
        (lambda: verify_receipt(token, fixed_key(1).public_key(), now=NOW - 3600), "issued_in_future"),
    ]
    for call, code in cases:
        with pytest.raises(EvidenceError) as err:
            call()
        assert err.value.code == code


def test_key_validity_window(recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    pub = fixed_key(1).public_key()
    verify_receipt(token, VerificationKey(pub, "k2026", not_before=NOW - 10, not_after=NOW + 10), now=NOW)
    # a retired key still verifies what it signed while valid, even long after retirement
    verify_receipt(token, VerificationKey(pub, "k2026", not_after=NOW), now=NOW + 86400 * 365)
    with pytest.raises(EvidenceError) as err:
        verify_receipt(token, VerificationKey(pub, "k2026", not_after=NOW - 1), now=NOW)
    assert err.value.code == "key_expired"
    with pytest.raises(EvidenceError) as err:
        verify_receipt(token, VerificationKey(pub, "k2026", not_before=NOW + 1), now=NOW)
    assert err.value.code == "key_not_yet_valid"


def test_swapped_recording_one_byte_fails(recorded: tuple[str, Path]) -> None:
    token, rec_path = recorded
    data = bytearray(rec_path.read_bytes())
    data[1234] ^= 0x80
    rec_path.write_bytes(bytes(data))
    with pytest.raises(EvidenceError) as err:
        verify_receipt(token, fixed_key(1).public_key(), recording_path=rec_path, now=NOW)
    assert err.value.code == "recording_mismatch"


def test_header_alg_and_typ_are_enforced() -> None:
    s = signer()
    claims = s.claims(make_lead())
    # an attacker relabels a validly signed JWS: the header is signed too, so craft unsigned variants
    for header in (
        {"alg": "none", "kid": "k2026", "typ": RECEIPT_TYP},
        {"alg": "EdDSA", "kid": "k2026", "typ": "JWT"},
        {"alg": "EdDSA", "typ": RECEIPT_TYP},
    ):
        h = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        p = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        with pytest.raises(EvidenceError) as err:
            verify_receipt(f"{h}.{p}.", fixed_key(1).public_key(), now=NOW)
        assert err.value.code == "malformed_receipt"


def test_refuses_to_issue_without_confirmed_consent() -> None:
    for lead in (make_lead(consent=ConsentResult.DECLINED), make_lead(confirmed=False)):
        with pytest.raises(EvidenceError) as err:
            signer().issue(lead)
        assert err.value.code == "not_consented"


def test_number_binding_differs_per_receipt() -> None:
    a, b = (decode_unverified(signer().issue(make_lead()))[1] for _ in range(2))
    assert a["jti"] != b["jti"] and a["number_sha256"] != b["number_sha256"]


def test_recording_hash_override_and_no_recording() -> None:
    claims = decode_unverified(signer().issue(make_lead(), recording_sha256="ab" * 32))[1]
    assert claims["recording"] == {"sha256": "ab" * 32}
    token = signer().issue(make_lead())
    with pytest.raises(EvidenceError) as err:
        verify_receipt(token, fixed_key(1).public_key(), recording_path=__file__, now=NOW)
    assert err.value.code == "recording_mismatch"


def test_public_key_files_pem_jwk_jwks(tmp_path: Path, recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    pub = fixed_key(1).public_key()
    pem = tmp_path / "k.pem"
    pem.write_bytes(
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    jwk = tmp_path / "k.jwk"
    jwk.write_text(json.dumps(public_key_jwk(pub, "k2026", not_after=NOW + 5)))
    jwks = tmp_path / "k.jwks"
    jwks.write_text(
        json.dumps({"keys": [public_key_jwk(fixed_key(3).public_key(), "old"), public_key_jwk(pub, "k2026")]})
    )
    for f in (pem, jwk, jwks):
        assert verify_receipt(token, load_public_keys(f), now=NOW)["aud"] == "acme-insurance"
    assert load_public_keys(jwk)["k2026"].not_after == int(NOW + 5)
    assert set(load_public_keys(jwks)) == {"old", "k2026"}
    assert set(load_public_keys(pem, kid="k2026")) == {"k2026"}


def test_private_key_files_are_refused() -> None:
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = {**public_key_jwk(priv.public_key(), "k"), "d": "AAAA"}
    for data in (pem, json.dumps(jwk).encode(), b"garbage"):
        with pytest.raises(EvidenceError) as err:
            parse_public_keys(data)
        assert err.value.code == "bad_public_key"
        assert "AAAA" not in str(err.value)


def test_signer_repr_has_no_key_material() -> None:
    s = signer()
    assert "k2026" in repr(s) and "PrivateKey" not in repr(s)


def test_lead_replace_keeps_receipt_round_trip(recorded: tuple[str, Path]) -> None:
    token, _ = recorded
    lead = replace(make_lead(), receipt=token)
    assert lead.receipt == token and NUMBER not in repr(lead)

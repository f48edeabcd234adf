"""Keyring: permissions, purposes, rotation/retirement, and key material never leaking."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reffection_ari.cli import main
from reffection_ari.errors import KeyringError
from reffection_ari.evidence import verify_audit_log
from reffection_ari.evidence.receipts import parse_public_keys
from reffection_ari.tokens import Keyring, TokenCodec


def _secrets(path: Path) -> list[str]:
    """Every key's material, in the encodings an accident might print it in."""
    doc = json.loads(path.read_text())
    out = []
    for k in doc["keys"]:
        for v in k["material"].values():
            raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
            out += [v, raw.hex(), base64.b64encode(raw).decode().rstrip("="), repr(raw)[2:40]]
    return out


def test_generate_writes_0600_with_one_key_per_purpose(tmp_path: Path) -> None:
    ring = Keyring.generate(tmp_path / "k.json")
    assert (os.stat(tmp_path / "k.json").st_mode & 0o777) == 0o600
    assert {(k.kid, k.purpose, k.status) for k in ring.list()} == {
        ("token-1", "token", "active"),
        ("lookup-1", "lookup", "active"),
        ("receipt-1", "receipt", "active"),
    }
    with pytest.raises(KeyringError):
        Keyring.generate(tmp_path / "k.json")


def test_purposes_use_independent_material(tmp_path: Path) -> None:
    Keyring.generate(tmp_path / "k.json")
    doc = json.loads((tmp_path / "k.json").read_text())
    values = [v for k in doc["keys"] for v in k["material"].values()]
    assert len(values) == len(set(values)) == 4


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610, 0o601])
def test_load_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    Keyring.generate(tmp_path / "k.json")
    os.chmod(tmp_path / "k.json", mode)
    with pytest.raises(KeyringError) as ei:
        Keyring.load(tmp_path / "k.json")
    assert "chmod 600" in str(ei.value) and f"{mode:04o}" in str(ei.value)


def test_load_accepts_owner_only(tmp_path: Path) -> None:
    Keyring.generate(tmp_path / "k.json")
    os.chmod(tmp_path / "k.json", 0o400)
    assert Keyring.load(tmp_path / "k.json").active_token_key().kid == "token-1"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other"),
        lambda d: d["keys"][0]["material"].update(siv="AAAA"),
        lambda d: d["keys"][0].update(status="resolve_only"),
        lambda d: d["keys"].append(dict(d["keys"][0])),
        lambda d: d["keys"][0].update(purpose="nope"),
    ],
)
def test_load_rejects_inconsistent_files(tmp_path: Path, mutate: object) -> None:
    Keyring.generate(tmp_path / "k.json")
    doc = json.loads((tmp_path / "k.json").read_text())
    assert callable(mutate)
    mutate(doc)
    (tmp_path / "k.json").write_text(json.dumps(doc))
    with pytest.raises(KeyringError) as ei:
        Keyring.load(tmp_path / "k.json")
    for s in _secrets_from_doc(doc):
        assert s not in str(ei.value)


def _secrets_from_doc(doc: dict[str, list[dict[str, dict[str, str]]]]) -> list[str]:
    return [v for k in doc["keys"] for v in k.get("material", {}).values() if len(v) > 8]


def test_rotate_and_retire(tmp_path: Path) -> None:
    ring = Keyring.generate(tmp_path / "k.json")
    ring.rotate("token")
    ring.rotate("receipt")
    reloaded = Keyring.load(tmp_path / "k.json")
    status = {k.kid: k.status for k in reloaded.list()}
    assert status == {
        "token-1": "resolve_only",
        "lookup-1": "active",
        "receipt-1": "verify_only",
        "token-2": "active",
        "receipt-2": "active",
    }
    with pytest.raises(KeyringError):
        reloaded.retire("token-2")  # active
    with pytest.raises(KeyringError):
        reloaded.rotate("lookup")
    reloaded.retire("token-1")
    again = Keyring.load(tmp_path / "k.json")
    assert "token-1" not in {k.kid for k in again.list()} and again.retired() == ["token-1"]
    assert again.token_key(1) is None
    assert again.rotate("token").kid == "token-3"  # numbers are never reused


def test_receipt_key_and_public_export(tmp_path: Path) -> None:
    ring = Keyring.generate(tmp_path / "k.json")
    key, kid = ring.receipt_signing_key()
    assert isinstance(key, Ed25519PrivateKey) and kid == "receipt-1"
    sig = key.sign(b"claims")
    jwks = json.loads(ring.export_public("jwk"))
    (jwk,) = jwks["keys"]
    assert jwk["kid"] == "receipt-1" and jwk["crv"] == "Ed25519" and "d" not in jwk
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pub = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    pub.verify(sig, b"claims")
    assert "PUBLIC KEY" in ring.export_public("pem") and "PRIVATE" not in ring.export_public("pem")


def test_key_material_never_in_repr_logs_exceptions_or_cli(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.json"
    caplog.set_level(logging.DEBUG)
    assert main(["keys", "generate", "--keyring", str(path)]) == 0
    audited = ["--audit-log", str(tmp_path / "audit.jsonl")]
    assert main(["keys", "rotate", "--keyring", str(path), *audited]) == 0
    assert main(["keys", "list", "--keyring", str(path)]) == 0
    assert main(["keys", "export-public", "--keyring", str(path)]) == 0
    assert main(["keys", "retire", "token-1", "--keyring", str(path), *audited]) == 0
    os.chmod(path, 0o644)
    assert main(["keys", "list", "--keyring", str(path)]) == 2
    os.chmod(path, 0o600)
    ring = Keyring.load(path)
    texts = [repr(ring), str(ring), repr(ring.list()), repr(ring.active_token_key()), repr(ring.lookup_key())]
    texts += [repr(TokenCodec(ring)), str(vars(ring.active_token_key()))]
    try:
        ring.retire("token-2")
    except KeyringError as exc:
        texts += [str(exc), repr(exc)]
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text, (tmp_path / "audit.jsonl").read_text()]
    blob = "\n".join(texts)
    for secret in _secrets(path):
        assert secret not in blob
    assert "token-2" in out.out  # metadata is printed


def test_rotation_and_retirement_are_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, log = tmp_path / "k.json", tmp_path / "audit.jsonl"
    assert main(["keys", "generate", "--keyring", str(path)]) == 0
    assert main(["keys", "rotate", "--keyring", str(path)]) == 2  # no audit log named
    assert "audit_required" in capsys.readouterr().err
    assert Keyring.load(path).active_token_key().kid == "token-1"  # nothing rotated
    assert main(["keys", "rotate", "--keyring", str(path), "--audit-log", str(log)]) == 0
    assert main(["keys", "rotate", "--purpose", "receipt", "--keyring", str(path), "--audit-log", str(log)]) == 0
    assert main(["keys", "retire", "token-1", "--keyring", str(path), "--audit-log", str(log)]) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["kind"], e["data"]) for e in entries if e["kind"] != "checkpoint"] == [
        ("key_rotated", {"purpose": "token", "kid": "token-2", "previous": "token-1"}),
        ("key_rotated", {"purpose": "receipt", "kid": "receipt-2", "previous": "receipt-1"}),
        ("key_retired", {"kid": "token-1"}),
    ]
    keys = {kid: vk.key for kid, vk in parse_public_keys(Keyring.load(path).export_public("jwk").encode()).items()}
    assert verify_audit_log(log, keys, require_closed=True).kinds["key_rotated"] == 2

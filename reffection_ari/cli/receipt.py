"""`reffection-ari receipt verify`: check a consent receipt offline and print its claims."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import EvidenceError
from ..evidence.receipts import VerificationKey, load_public_keys, verify_receipt


def register(sub: Any) -> None:
    p = sub.add_parser("receipt", help="consent receipts")
    rsub = p.add_subparsers(dest="receipt_command", required=True, metavar="ACTION")
    v = rsub.add_parser("verify", help="verify a receipt (signature, key validity, audience, recording)")
    v.add_argument(
        "receipt", metavar="RECEIPT_FILE_OR_-", help="file holding the compact JWS, or - for stdin"
    )
    v.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="KEY",
        help="PEM, JWK or JWKS file of the issuer's public key(s); repeatable",
    )
    v.add_argument("--kid", help="key id a PEM key is trusted for (default: any)")
    v.add_argument("--audience", help="require this audience (the advertiser)")
    v.add_argument("--recording", metavar="FILE", help="require the recording's SHA-256 to match")
    v.set_defaults(func=cmd_verify)


def _read_receipt(src: str) -> str:
    if src == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(src, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise EvidenceError(f"cannot read receipt file: {exc}", code="malformed_receipt") from None
    text = text.strip()
    if text.startswith("{"):  # a lead JSON: take its receipt
        try:
            text = str(json.loads(text)["receipt"])
        except (ValueError, KeyError, TypeError):
            raise EvidenceError("JSON input has no 'receipt' field", code="malformed_receipt") from None
    return text


def cmd_verify(args: argparse.Namespace) -> int:
    keys: dict[str, VerificationKey] = {}
    for path in args.public_key:
        keys.update(load_public_keys(path, kid=args.kid))
    claims = verify_receipt(
        _read_receipt(args.receipt), keys, audience=args.audience, recording_path=args.recording
    )
    json.dump(claims, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    checks = (
        ["signature", "key validity"]
        + (["audience"] if args.audience else [])
        + (["recording sha256"] if args.recording else [])
    )
    print(
        f"receipt OK ({', '.join(checks)}): jti={claims.get('jti')} aud={claims.get('aud')}", file=sys.stderr
    )
    return 0

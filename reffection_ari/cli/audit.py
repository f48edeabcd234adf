"""`reffection-ari audit verify`: check the audit log's hash chain and signed checkpoints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import EvidenceError
from ..evidence.audit import verify_audit_log
from ..evidence.receipts import load_public_keys


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit log")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser("verify", help="verify the hash chain and checkpoint signatures")
    v.add_argument("--log", required=True, metavar="PATH", help="audit log (JSONL)")
    v.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="KEY",
        help="PEM, JWK or JWKS file; repeatable (one per kid that signed checkpoints)",
    )
    v.add_argument(
        "--require-closed",
        action="store_true",
        help="fail unless the log ends with a closing checkpoint (detects truncation)",
    )
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in args.public_key:
        keys.update({kid: vk.key for kid, vk in load_public_keys(path).items()})
    try:
        report = verify_audit_log(args.log, keys, require_closed=args.require_closed)
    except OSError as exc:
        raise EvidenceError(f"cannot read audit log: {exc.strerror}", code="chain_broken") from None
    kinds = ", ".join(f"{k}={n}" for k, n in sorted(report.kinds.items()))
    print(
        f"audit log OK: {report.entries} entries, {report.checkpoints} signed checkpoints, "
        f"last checkpoint at {report.last_checkpoint_index}, head {report.head_hash[:16]}"
    )
    print(f"kinds: {kinds}")
    if not report.closed:
        print(
            f"warning: not closed; {report.unsigned_tail} entries after the last checkpoint are covered "
            "only by the hash chain (log still open, or truncated)",
            file=sys.stderr,
        )
    return 0

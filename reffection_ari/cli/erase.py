"""``reffection-ari erase -c config.yaml (--number N | --token T --audience A)``: a data subject's
erasure request. Deletes the subscriber from the vault (every token for them then fails
``erased``), removes the number from leads not yet delivered, writes one audit entry per store,
and prints what it touched. The DNC entry is kept (suppression outlives erasure) unless
``--drop-dnc`` is given."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from ..errors import ReffectionError


def register(sub: Any) -> None:
    parser = sub.add_parser("erase", help="erase a subscriber (vault, undelivered leads), audited")
    parser.add_argument("-c", "--config", required=True, help="the daemon's YAML configuration")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--number", help="the subscriber's number (any format; --region for national)")
    target.add_argument("--token", help="a token issued for the subscriber (needs --audience)")
    parser.add_argument("--audience", help="the platform the token was issued to")
    parser.add_argument("--region", help="region for a national-format number, e.g. GB")
    parser.add_argument("--drop-dnc", action="store_true", help="also remove the do-not-call entry")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..evidence import AuditLog, LeadOutbox, erase_from_outbox
    from ..phone import PhoneNumber
    from ..tokens import Keyring, SqliteVault, TokenCodec, TokenService

    config = load_config(args.config)
    keyring = Keyring.load(config.keyring)
    vault = SqliteVault(config.vault, keyring.lookup_key())
    signing_key, kid = keyring.receipt_signing_key()
    audit = AuditLog(config.audit_log, signing_key, kid)
    outbox = LeadOutbox(config.delivery.outbox)
    request_id = f"erasure_{uuid.uuid4().hex[:12]}"
    try:
        if args.token:
            if not args.audience:
                raise ReffectionError("--token needs --audience", code="bad_request")
            tokens = TokenService(TokenCodec(keyring), vault)
            decoded = tokens.codec.decode(args.token, [args.audience], check_expiry=False)
            number = vault.get(decoded.subscriber_id).number
            target: Any = decoded.subscriber_id
        else:
            number = PhoneNumber.parse(args.number, args.region or config.default_region)
            target = number
        leads = erase_from_outbox(outbox, number_e164=number.e164, audit=audit, request_id=request_id)
        report = vault.erase(target, keep_dnc=not args.drop_dnc)
        audit.append(
            "erasure",
            {"request_id": request_id, "scope": "vault", "found": report.found,
             "subscriber_ref": report.subscriber_ref, "attempts_deleted": report.attempts_deleted,
             "dnc_retained": report.dnc_retained},
        )  # fmt: skip
    finally:
        outbox.close()
        audit.close()
        vault.close()
    print(f"erasure {request_id}: subscriber {'erased' if report.found else 'not found'} in the vault")
    print(f"  attempts deleted: {report.attempts_deleted}; DNC entry kept: {'yes' if report.dnc_retained else 'no'}")
    print(f"  undelivered leads cleared: {len(leads.erased)}; already delivered (tell the advertiser): "
          f"{len(leads.already_delivered)}")  # fmt: skip
    for lead_id in leads.already_delivered:
        print(f"    delivered lead {lead_id}")
    return 0

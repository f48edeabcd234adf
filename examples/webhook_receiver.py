"""An advertiser's lead receiver: checks the webhook HMAC and the consent receipt, de-duplicates.

    python examples/webhook_receiver.py --secret-file hook.secret --public-key partner.jwks \\
        --audience acme-insurance --store leads.jsonl --port 8081

Contract (docs/receipts.md, docs/operations-outbox-audit.md):
- 401 for a bad/stale signature (the sender dead-letters the lead: fix the secret, then retry);
- 422 for a receipt that does not verify (dead-lettered too: it is not evidence of consent);
- 200 for a new lead and for a repeat of an idempotency key already stored (deliveries are at
  least once), written and fsynced to ``--store`` *before* answering.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import load_public_keys, verify_receipt, verify_webhook

log = logging.getLogger("webhook_receiver")


def make_app(secret: bytes, keys_path: str, audience: str, store: Path) -> web.Application:
    keys = load_public_keys(keys_path)
    seen: set[str] = set()
    if store.exists():
        for line in store.read_text().splitlines():
            try:
                seen.add(json.loads(line)["lead_id"])
            except (ValueError, KeyError):
                continue  # a torn last line

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_webhook(
                secret,
                request.headers.get("X-Reffection-Timestamp"),
                request.headers.get("X-Reffection-Signature"),
                body,
            )
        except EvidenceError as exc:
            return web.json_response({"error": exc.code}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        if key in seen:
            return web.json_response({"status": "duplicate", "lead_id": key})
        try:
            lead = json.loads(body)
            # binds the receipt to this advertiser and to the number the lead carries
            claims = verify_receipt(lead["receipt"], keys, audience=audience, number_e164=lead["number_e164"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "malformed_lead"}, status=422)
        except EvidenceError as exc:
            return web.json_response({"error": exc.code}, status=422)
        if claims["lead_id"] != key or lead["lead_id"] != key:
            return web.json_response({"error": "lead_id_mismatch"}, status=422)
        with store.open("ab") as fh:
            fh.write(body + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        seen.add(key)
        log.info("lead accepted lead_id=%s call_id=%s receipt=%s", key, lead["call_id"], claims["jti"])
        return web.json_response({"status": "stored", "lead_id": key})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/leads", receive)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secret-file", required=True, help="file holding the shared webhook secret")
    ap.add_argument("--public-key", required=True, help="the partner's PEM / JWK / JWKS public key file")
    ap.add_argument("--audience", required=True, help="your advertiser id, as the receipts name it")
    ap.add_argument("--store", default="leads.jsonl")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = Path(args.secret_file).read_bytes().strip()
    web.run_app(
        make_app(secret, args.public_key, args.audience, Path(args.store)), host=args.host, port=args.port
    )


if __name__ == "__main__":
    main()

"""Evidence throughput: receipts vs the raw Ed25519 primitive, and outbox commit + delivery.

usage: python bench/evidence.py [--seconds 1.0] [--leads 500]

Receipt sign/verify rates are measured in the same run as bare ``Ed25519PrivateKey.sign`` /
``Ed25519PublicKey.verify`` on the same message size, so the JSON/base64 overhead is visible.
The outbox figures are end to end on this host: ``store`` (one fsynced SQLite commit per lead,
``synchronous=FULL``) and delivery to an aiohttp receiver on 127.0.0.1 that checks every HMAC.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "proc"))
from evidence_leads import make_lead, write_recording

from reffection_ari.evidence import (
    DeliveryWorker,
    LeadOutbox,
    ReceiptSigner,
    WebhookSink,
    verify_receipt,
    verify_webhook,
)


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def crypto_rows(seconds: float, tmp: Path) -> list[tuple[str, float]]:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    lead = make_lead(recording=write_recording(tmp / "call_bench.wav"))
    signer = ReceiptSigner(key, "bench", "example-partner")
    token = signer.issue(lead)
    head_claims = token.rsplit(".", 1)[0].encode()
    sig = key.sign(head_claims)
    return [
        (f"raw Ed25519 sign ({len(head_claims)} B message)", rate(lambda: key.sign(head_claims), seconds)),
        ("receipt issue (claims + JSON + sign)", rate(lambda: signer.issue(lead), seconds)),
        ("raw Ed25519 verify (same message)", rate(lambda: pub.verify(sig, head_claims), seconds)),
        (
            "receipt verify (parse + verify + checks)",
            rate(lambda: verify_receipt(token, pub, audience="acme-insurance"), seconds),
        ),
    ]


async def outbox_rows(n: int, tmp: Path) -> list[tuple[str, float]]:
    secret = b"bench-secret"
    received = 0
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        body = await request.read()
        verify_webhook(
            secret,
            request.headers.get("X-Reffection-Timestamp"),
            request.headers.get("X-Reffection-Signature"),
            body,
        )
        received += 1
        if received >= n:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/leads", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    signer = ReceiptSigner(Ed25519PrivateKey.generate(), "bench", "example-partner")
    base = make_lead()
    leads = [replace(base, lead_id=f"lead_{i:06d}", receipt=signer.issue(base)) for i in range(n)]
    outbox = LeadOutbox(tmp / "outbox.db")
    try:
        t0 = time.perf_counter()
        for lead in leads:
            await outbox.store(lead)
        t_store = time.perf_counter() - t0
        worker = DeliveryWorker(outbox, WebhookSink(f"http://127.0.0.1:{port}/leads", secret), batch=32)
        t1 = time.perf_counter()
        await worker.drain()
        t_deliver = time.perf_counter() - t1
        await worker.aclose()
        assert received == n and outbox.counts()["delivered"] == n
        outbox2 = LeadOutbox(tmp / "outbox2.db")
        t2 = time.perf_counter()
        await asyncio.gather(*(outbox2.store(replace(lead, lead_id=lead.lead_id + "c")) for lead in leads[:200]))
        t_conc = time.perf_counter() - t2
        outbox2.close()
    finally:
        outbox.close()
        await runner.cleanup()
    return [
        ("outbox store, sequential (fsynced commit each)", n / t_store),
        ("outbox store, 200 concurrent callers", 200 / t_conc),
        ("deliver to loopback webhook (batch 32, HMAC checked)", n / t_deliver),
        ("store + deliver end to end", n / (t_store + t_deliver)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per crypto measurement")
    ap.add_argument("--leads", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = crypto_rows(args.seconds, Path(d)) + asyncio.run(outbox_rows(args.leads, Path(d)))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'per second':>12}")
    print(f"{'-' * width}  {'-' * 12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12,.0f}")


if __name__ == "__main__":
    main()

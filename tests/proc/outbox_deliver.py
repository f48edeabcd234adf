"""Child process: run a delivery worker on an outbox until every lead is delivered or dead.

usage: outbox_deliver.py DB URL SECRET MAX_ATTEMPTS
Prints ``done delivered=<n> dead=<n>`` at the end. Backoff is tiny (base 0.01 s) so tests stay fast.
"""

from __future__ import annotations

import asyncio
import sys

from reffection_ari.evidence import DeliveryWorker, LeadOutbox, WebhookSink


async def main(db: str, url: str, secret: str, max_attempts: str) -> None:
    outbox = LeadOutbox(db)
    worker = DeliveryWorker(
        outbox,
        WebhookSink(url, secret, timeout=60.0),
        max_attempts=int(max_attempts),
        base_delay=0.01,
        max_delay=0.05,
    )
    sys.stdout.write("started\n")
    sys.stdout.flush()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
        outbox.close()
    sys.stdout.write(f"done delivered={worker.delivered} dead={worker.dead}\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

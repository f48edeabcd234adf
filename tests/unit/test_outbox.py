"""Outbox: durable idempotent store, claim/lease, backoff, dead letters, retry, purge, sinks."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import (
    DeliveryFailed,
    DeliveryWorker,
    JsonlFileSink,
    LeadOutbox,
    OutboxState,
    WebhookSink,
    lead_to_json,
    sign_webhook,
    verify_webhook,
)
from reffection_ari.lead import LeadSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proc"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from evidence_leads import NUMBER, make_lead


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class ScriptedSink:
    """Fails according to a script of outcomes, then succeeds; records every attempt."""

    def __init__(self, script: list[DeliveryFailed | None] | None = None) -> None:
        self.script = list(script or [])
        self.attempts: list[str] = []
        self.delivered: list[Mapping[str, Any]] = []
        self.got = asyncio.Event()

    async def deliver(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        self.attempts.append(lead_id)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.delivered.append(payload)
        self.got.set()

    async def aclose(self) -> None:
        return None


RETRY = DeliveryFailed("HTTP 500", retryable=True, status=500)
REJECT = DeliveryFailed("HTTP 400", retryable=False, status=400)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path, clock: FakeClock) -> Iterator[LeadOutbox]:
    box = LeadOutbox(tmp_path / "outbox.db", clock=clock)
    yield box
    box.close()


def worker(outbox: LeadOutbox, sink: ScriptedSink, clock: FakeClock, **kw: Any) -> DeliveryWorker:
    kw.setdefault("rng", random.Random(7))
    return DeliveryWorker(outbox, sink, clock=clock, base_delay=1.0, max_delay=8.0, **kw)


async def test_store_is_durable_idempotent_and_a_lead_sink(outbox: LeadOutbox, tmp_path: Path) -> None:
    sink: LeadSink = outbox
    await sink.store(make_lead("lead_a"))
    await sink.store(make_lead("lead_a"))
    assert outbox.store_sync(make_lead("lead_a")) is False
    assert [e.lead_id for e in outbox.list()] == ["lead_a"]
    # committed: a fresh connection (as after a crash) sees it, in WAL mode with synchronous=FULL
    db = sqlite3.connect(tmp_path / "outbox.db")
    assert db.execute("SELECT state FROM outbox").fetchall() == [("pending",)]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert outbox._db.execute("PRAGMA synchronous").fetchone() == (2,)


async def test_backoff_then_delivered(outbox: LeadOutbox, clock: FakeClock) -> None:
    sink = ScriptedSink([RETRY, RETRY])
    w = worker(outbox, sink, clock, jitter=0.0)
    await outbox.store(make_lead("lead_a"))
    assert await w.run_once() == 1
    e = outbox.get("lead_a")
    assert (e.state, e.attempts, e.next_attempt_at - clock.t) == (OutboxState.PENDING, 1, 1.0)
    assert await w.run_once() == 0  # not due yet
    clock.t += 1.0
    assert await w.run_once() == 1
    assert outbox.get("lead_a").next_attempt_at - clock.t == 2.0  # exponential
    clock.t += 2.0
    assert await w.run_once() == 1
    e = outbox.get("lead_a")
    assert (e.state, e.attempts, e.delivered_at) == (OutboxState.DELIVERED, 3, clock.t)
    assert sink.attempts == ["lead_a"] * 3 and sink.delivered[0]["number_e164"] == NUMBER


def test_backoff_is_capped_and_jittered(outbox: LeadOutbox, clock: FakeClock) -> None:
    w = worker(outbox, ScriptedSink(), clock, jitter=0.5)
    delays = [w.backoff(n) for n in range(1, 10)]
    assert all(0.5 * min(8.0, 2 ** (n - 1)) <= d <= min(8.0, 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert max(delays) <= 8.0 and len(set(delays)) == len(delays)


async def test_dead_letter_after_budget_then_retry(outbox: LeadOutbox, clock: FakeClock) -> None:
    sink = ScriptedSink([RETRY] * 3)
    w = worker(outbox, sink, clock, max_attempts=3)
    await outbox.store(make_lead("lead_a"))
    for _ in range(3):
        await w.run_once()
        clock.t += 100
    e = outbox.get("lead_a")
    assert (e.state, e.attempts, e.dead_reason, e.last_error) == (
        OutboxState.DEAD,
        3,
        "max_attempts",
        "HTTP 500",
    )
    assert await w.run_once() == 0 and w.dead == 1
    outbox.retry("lead_a")
    assert outbox.get("lead_a").state == OutboxState.PENDING and outbox.get("lead_a").attempts == 0
    await w.run_once()
    assert outbox.get("lead_a").state == OutboxState.DELIVERED and len(sink.delivered) == 1


async def test_permanent_refusal_dead_letters_at_once(outbox: LeadOutbox, clock: FakeClock) -> None:
    w = worker(outbox, ScriptedSink([REJECT]), clock)
    await outbox.store(make_lead("lead_a"))
    await w.run_once()
    e = outbox.get("lead_a")
    assert (e.state, e.attempts, e.dead_reason) == (OutboxState.DEAD, 1, "rejected")


async def test_sink_bug_is_retried_not_fatal(outbox: LeadOutbox, clock: FakeClock) -> None:
    class Buggy(ScriptedSink):
        async def deliver(self, lead_id: str, payload: Mapping[str, Any]) -> None:
            raise KeyError("oops")

    await outbox.store(make_lead("lead_a"))
    await worker(outbox, Buggy(), clock).run_once()
    e = outbox.get("lead_a")
    assert (e.state, e.last_error) == (OutboxState.PENDING, "sink error: KeyError")


async def test_expired_lease_is_reclaimed_and_late_ack_ignored(outbox: LeadOutbox, clock: FakeClock) -> None:
    await outbox.store(make_lead("lead_a"))
    [claimed] = outbox.claim_due("dead-worker", lease_s=30)
    assert outbox.claim_due("w2", lease_s=30) == []
    clock.t += 31
    [again] = outbox.claim_due("w2", lease_s=30)
    assert again.attempts == 2 and claimed.attempts == 1
    assert outbox.mark_delivered("lead_a", "dead-worker") is False
    assert outbox.mark_delivered("lead_a", "w2") is True


async def test_reclaim_on_start(outbox: LeadOutbox, clock: FakeClock) -> None:
    await outbox.store(make_lead("lead_a"))
    outbox.claim_due("crashed", lease_s=600)
    sink = ScriptedSink()
    stop = asyncio.Event()
    w = worker(outbox, sink, clock)
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(sink.got.wait(), 5)
    stop.set()  # run() finishes the pass in progress (marking the lead) before it returns
    await asyncio.wait_for(task, 5)
    assert len(sink.delivered) == 1 and outbox.get("lead_a").state == OutboxState.DELIVERED


async def test_one_delivery_worker_per_outbox_file(outbox: LeadOutbox, clock: FakeClock, tmp_path: Path) -> None:
    """A second worker (another daemon on the same files) would reclaim the first one's leases and
    deliver twice: it is refused instead, with the holder's pid, until the first lets go."""
    import os

    await outbox.store(make_lead("lead_a"))
    outbox.claim_worker()
    other = LeadOutbox(tmp_path / "outbox.db", clock=clock)
    sink = ScriptedSink()
    with pytest.raises(EvidenceError) as err:
        await worker(other, sink, clock).drain()
    assert err.value.code == "outbox_busy" and str(os.getpid()) in str(err.value)
    assert sink.delivered == [] and outbox.get("lead_a").state == OutboxState.PENDING
    outbox.close()  # the first worker is gone
    await worker(other, sink, clock).drain()
    assert len(sink.delivered) == 1
    other.close()


async def test_run_wakes_on_store(outbox: LeadOutbox, clock: FakeClock) -> None:
    sink = ScriptedSink()
    stop = asyncio.Event()
    w = worker(outbox, sink, clock, poll_interval=3600)
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(w.idle.wait(), 5)  # the worker found nothing and sleeps for an hour
    await outbox.store(make_lead("lead_a"))
    await asyncio.wait_for(sink.got.wait(), 5)  # poll_interval is an hour: only the wake-up delivers
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_delivered_number_is_scrubbed_but_findable(outbox: LeadOutbox, clock: FakeClock) -> None:
    await outbox.store(make_lead("lead_a"))
    await worker(outbox, ScriptedSink(), clock).run_once()
    _, payload = outbox.show("lead_a")
    raw = outbox._db.execute("SELECT payload FROM outbox").fetchone()[0]
    assert NUMBER not in raw and json.loads(raw)["number_e164"] is None
    assert payload["number_e164"] is None
    assert outbox.delivered_matching(number_e164=NUMBER) == ["lead_a"]


async def test_show_redacts_retry_refusals_and_purge(outbox: LeadOutbox, clock: FakeClock) -> None:
    await outbox.store(make_lead("lead_a"))
    await outbox.store(make_lead("lead_b"))
    entry, payload = outbox.show("lead_a")
    assert entry.state == OutboxState.PENDING and payload["number_e164"] == "<redacted>"
    assert NUMBER not in repr(entry)
    await worker(outbox, ScriptedSink([None, REJECT]), clock).run_once()
    with pytest.raises(EvidenceError) as err:
        outbox.retry("lead_a")
    assert err.value.code == "not_retryable"
    with pytest.raises(EvidenceError) as err:
        outbox.retry("nope")
    assert err.value.code == "unknown_lead"
    with pytest.raises(EvidenceError) as err:
        outbox.purge(states=["pending"])
    assert err.value.code == "not_purgeable"
    assert outbox.purge(older_than_s=10) == 0
    clock.t += 11
    assert outbox.purge(older_than_s=10) == 1
    assert outbox.counts() == {"pending": 0, "delivering": 0, "delivered": 0, "dead": 1}
    assert outbox.purge(states=["dead"], lead_ids=["lead_b"]) == 1


# -- sinks --------------------------------------------------------------------------------------


async def test_jsonl_sink_appends_once_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    sink = JsonlFileSink(path)
    await sink.store(make_lead("lead_a"))
    with path.open("ab") as fh:
        fh.write(b'{"lead_id": "lead_torn"')  # a crash mid-line by someone
    await JsonlFileSink(path).store(make_lead("lead_a"))  # a new process: still idempotent
    await sink.store(make_lead("lead_b"))
    await sink.store(make_lead("lead_b"))
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}") and "torn" not in x]
    assert [r["lead_id"] for r in rows] == ["lead_a", "lead_b"]
    assert rows[0] == json.loads(json.dumps(lead_to_json(make_lead("lead_a"))))
    with pytest.raises(DeliveryFailed):
        await sink.deliver("lead_x", {"lead_id": "other"})


def test_webhook_signature_round_trip() -> None:
    body = b'{"lead_id":"lead_a"}'
    sig = sign_webhook(b"s3cret", 1000, body)
    verify_webhook(b"s3cret", "1000", sig, body, now=1010)
    verify_webhook(b"s3cret", "1000", f"v1=deadbeef, {sig}", body, now=1010)
    for args, code in [
        ((b"other", "1000", sig, body, 1010), "bad_webhook_signature"),
        ((b"s3cret", "1000", sig, body + b" ", 1010), "bad_webhook_signature"),
        ((b"s3cret", "1001", sig, body, 1010), "bad_webhook_signature"),
        ((b"s3cret", "1000", sig, body, 2000), "stale_webhook"),
        ((b"s3cret", None, sig, body, 1000), "bad_webhook_signature"),
    ]:
        secret, ts, s, b, now = args
        with pytest.raises(EvidenceError) as err:
            verify_webhook(secret, ts, s, b, now=now)
        assert err.value.code == code


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (408, True), (429, True), (400, False), (410, False), (302, False)],
)
async def test_webhook_status_classification(status: int, retryable: bool) -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        verify_webhook(
            b"s",
            request.headers["X-Reffection-Timestamp"],
            request.headers["X-Reffection-Signature"],
            await request.read(),
        )
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    app = web.Application()
    app.router.add_post("/hook", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        sink = WebhookSink(str(server.make_url("/hook")), "s", timeout=5)
        try:
            with pytest.raises(DeliveryFailed) as err:
                await sink.deliver("lead_a", {"lead_id": "lead_a"})
        finally:
            await sink.aclose()
    assert err.value.retryable is retryable and err.value.status == status
    assert seen[0].headers["Idempotency-Key"] == "lead_a" and len(seen) == 1
    assert "s3cret" not in repr(sink)


async def test_webhook_timeout_and_refused_connection_are_retryable() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", slow)
    async with TestServer(app, host="127.0.0.1") as server:
        sink = WebhookSink(str(server.make_url("/hook")), "s", timeout=0.05)
        with pytest.raises(DeliveryFailed) as err:
            await sink.deliver("lead_a", {"lead_id": "lead_a"})
        assert err.value.retryable and err.value.message == "webhook timed out"
        release.set()
        port = server.port
        await sink.aclose()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", "s", timeout=2)
    with pytest.raises(DeliveryFailed) as err:
        await sink.deliver("lead_a", {"lead_id": "lead_a"})
    await sink.aclose()
    assert err.value.retryable and "connection failed" in err.value.message


async def test_example_receiver_accepts_dedupes_and_refuses(tmp_path: Path) -> None:
    from dataclasses import replace

    from cryptography.hazmat.primitives import serialization
    from evidence_leads import fixed_key
    from webhook_receiver import make_app

    from reffection_ari.evidence import ReceiptSigner

    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        fixed_key(1)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    lead = make_lead("lead_ex")
    lead = replace(lead, receipt=ReceiptSigner(fixed_key(1), "k1", "example-partner").issue(lead))
    store = tmp_path / "received.jsonl"
    app = make_app(b"s3cret", str(pub), "acme-insurance", store)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/leads"))
        good = WebhookSink(url, "s3cret")
        await good.deliver(lead.lead_id, lead_to_json(lead))
        await good.deliver(lead.lead_id, lead_to_json(lead))  # redelivery: 200 duplicate
        forged = lead_to_json(replace(lead, lead_id="lead_forged"))  # receipt names another lead
        with pytest.raises(DeliveryFailed) as err:
            await good.deliver("lead_forged", forged)
        assert (err.value.status, err.value.retryable) == (422, False)
        bad = WebhookSink(url, "wrong")
        with pytest.raises(DeliveryFailed) as err:
            await bad.deliver(lead.lead_id, lead_to_json(lead))
        assert (err.value.status, err.value.retryable) == (401, False)
        await good.aclose()
        await bad.aclose()
    assert [json.loads(x)["lead_id"] for x in store.read_text().splitlines()] == ["lead_ex"]


def test_outbox_file_is_owner_only(tmp_path: Path) -> None:
    """Undelivered leads hold numbers: the file is 0600 whatever the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        LeadOutbox(tmp_path / "outbox.sqlite").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "outbox.sqlite").stat().st_mode) == 0o600

"""Fault tests with real processes and a real HTTP receiver on loopback.

Child processes (tests/proc/) store and deliver leads; the parent runs an aiohttp receiver on
127.0.0.1 (random port) that checks the HMAC and the receipt and de-duplicates by idempotency
key, as an advertiser would. Synchronisation is by reading the children's output and awaiting
events, with timeouts; backoff is 10 ms so nothing waits on real time for long.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization

from reffection_ari.cli import main as cli_main
from reffection_ari.errors import EvidenceError
from reffection_ari.evidence import (
    AuditLog,
    LeadOutbox,
    OutboxState,
    ReceiptSigner,
    verify_receipt,
    verify_webhook,
)
from reffection_ari.tokens import Keyring

PROC = Path(__file__).resolve().parents[1] / "proc"
sys.path.insert(0, str(PROC))
from evidence_leads import NUMBER, fixed_key, make_lead, write_recording  # noqa: E402

SECRET = "whsec_test_only"
TIMEOUT = 30.0


class Receiver:
    """An advertiser's endpoint: verify HMAC + receipt, accept each idempotency key once."""

    def __init__(self, *, fail_first: int = 0, hold: bool = False) -> None:
        self.fail_remaining = fail_first
        self.hold = hold
        self.requests: list[str] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.duplicates: Counter[str] = Counter()
        self.arrived = asyncio.Event()
        self._never = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_webhook(
                SECRET.encode(),
                request.headers.get("X-Reffection-Timestamp"),
                request.headers.get("X-Reffection-Signature"),
                body,
            )
        except EvidenceError:
            return web.Response(status=401)
        key = request.headers["Idempotency-Key"]
        self.requests.append(key)
        self.arrived.set()
        if self.fail_remaining > 0:
            self.fail_remaining -= 1
            return web.Response(status=500)
        payload = json.loads(body)
        verify_receipt(
            payload["receipt"],
            {"k1": fixed_key(1).public_key()},
            audience=payload["advertiser"],
            number_e164=payload["number_e164"],
        )
        if key in self.accepted:
            self.duplicates[key] += 1
        else:
            self.accepted[key] = payload
        if self.hold:
            await self._never.wait()
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> Any:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/leads", rx.handle)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield rx, str(server.make_url("/leads"))


async def run_proc(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def deliver(db: Path, url: str, max_attempts: int = 8) -> str:
    rc, out, err = await run_proc(str(PROC / "outbox_deliver.py"), str(db), url, SECRET, str(max_attempts))
    assert rc == 0, err
    assert NUMBER not in err and NUMBER[1:] not in err  # the worker's logs carry no number
    return out.strip().splitlines()[-1]


async def store_then_sigkill(db: Path, lead_id: str, recording: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROC / "outbox_store.py"),
        str(db),
        lead_id,
        str(recording),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
    assert line.decode().strip() == f"stored {lead_id}"
    proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL


async def test_sigkill_after_commit_then_new_worker_delivers_exactly_once(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    db, rec = tmp_path / "outbox.db", tmp_path / "call_lead_k1.wav"
    await store_then_sigkill(db, "lead_k1", rec)
    assert rx.requests == []
    assert await deliver(db, url) == "done delivered=1 dead=0"
    assert await deliver(db, url) == "done delivered=0 dead=0"  # a second restart: nothing left to send
    assert rx.requests == ["lead_k1"] and list(rx.accepted) == ["lead_k1"]
    payload = rx.accepted["lead_k1"]
    assert payload["number_e164"] == NUMBER
    # the delivered receipt verifies against the recording the child hashed, and not after one byte changes
    verify_receipt(payload["receipt"], fixed_key(1).public_key(), recording_path=rec)
    data = bytearray(rec.read_bytes())
    data[-1] ^= 1
    rec.write_bytes(bytes(data))
    with pytest.raises(EvidenceError) as err:
        verify_receipt(payload["receipt"], fixed_key(1).public_key(), recording_path=rec)
    assert err.value.code == "recording_mismatch"


async def test_sigkill_during_delivery_redelivers_and_receiver_dedupes(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    db = tmp_path / "outbox.db"
    await store_then_sigkill(db, "lead_k2", tmp_path / "call_lead_k2.wav")
    rx.hold = True  # accept the lead but never answer: the worker dies before it learns the outcome
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROC / "outbox_deliver.py"),
        str(db),
        url,
        SECRET,
        "8",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(rx.arrived.wait(), TIMEOUT)
    proc.kill()
    await asyncio.wait_for(proc.communicate(), TIMEOUT)
    rx.hold = False
    with LeadOutbox(db) as outbox:
        assert outbox.get("lead_k2").state == OutboxState.DELIVERING
    assert await deliver(db, url) == "done delivered=1 dead=0"
    # at least once on the wire, exactly once as the receiver's delivered set
    assert rx.requests == ["lead_k2", "lead_k2"]
    assert list(rx.accepted) == ["lead_k2"] and rx.duplicates["lead_k2"] == 1


async def test_receiver_500s_then_recovers(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    rx, url = receiver
    rx.fail_remaining = 4
    db = tmp_path / "outbox.db"
    await store_then_sigkill(db, "lead_k3", tmp_path / "call_lead_k3.wav")
    assert await deliver(db, url, max_attempts=8) == "done delivered=1 dead=0"
    assert rx.requests == ["lead_k3"] * 5 and list(rx.accepted) == ["lead_k3"]
    with LeadOutbox(db) as outbox:
        e = outbox.get("lead_k3")
    assert (e.state, e.attempts) == (OutboxState.DELIVERED, 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_receiver_down_dead_letter_cli_list_retry_delivers(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rx, url = receiver
    db = tmp_path / "outbox.db"
    await store_then_sigkill(db, "lead_k4", tmp_path / "call_lead_k4.wav")
    down = f"http://127.0.0.1:{_free_port()}/leads"
    assert await deliver(db, down, max_attempts=3) == "done delivered=0 dead=1"
    cli = ["-m", "reffection_ari", "outbox"]
    rc, out, _ = await run_proc(*cli, "list", "--db", str(db), "--state", "dead")
    assert rc == 0
    [row] = [line for line in out.splitlines() if line.startswith("lead_k4")]
    assert "dead" in row and "max_attempts" in row and " 3 " in row
    rc, out, _ = await run_proc(*cli, "show", "--db", str(db), "lead_k4")
    assert rc == 0 and json.loads(out)["payload"]["number_e164"] == "<redacted>" and NUMBER not in out
    rc, _, err = await run_proc(*cli, "retry", "--db", str(db), "lead_k4")  # no audit log named
    assert rc == 2 and "audit_required" in err
    ring, log = tmp_path / "keyring.json", tmp_path / "audit.jsonl"
    Keyring.generate(ring)
    audited = ["--keyring", str(ring), "--audit-log", str(log)]
    rc, out, _ = await run_proc(*cli, "retry", "--db", str(db), "lead_k4", *audited)
    assert (rc, out.strip()) == (0, "lead_k4 pending")
    first = json.loads(log.read_text().splitlines()[0])
    assert (first["kind"], first["data"]) == ("lead_retried", {"lead_id": "lead_k4", "via": "cli"})
    assert await deliver(db, url) == "done delivered=1 dead=0"
    assert list(rx.accepted) == ["lead_k4"]
    rc, out, _ = await run_proc(*cli, "list", "--db", str(db), "--json")
    assert [json.loads(x)["state"] for x in out.splitlines()] == ["delivered"]
    rc, out, _ = await run_proc(*cli, "purge", "--db", str(db), *audited)
    assert (rc, out.strip()) == (0, "purged 1 lead(s)")
    purged = [json.loads(line) for line in log.read_text().splitlines() if '"outbox_purged"' in line]
    assert [e["data"]["count"] for e in purged] == [1]


# -- verification CLIs: the reason codes an operator or advertiser sees --------------------------


@pytest.fixture
def receipt_files(tmp_path: Path) -> dict[str, Path]:
    rec = tmp_path / "call_demo.wav"
    lead = make_lead("lead_demo", recording=write_recording(rec))
    token = ReceiptSigner(fixed_key(1), "k1", "example-partner").issue(lead)
    files = {
        "rec": rec,
        "receipt": tmp_path / "receipt.jws",
        "lead": tmp_path / "lead.json",
        "pub": tmp_path / "pub.pem",
        "other": tmp_path / "other.pem",
    }
    files["receipt"].write_text(token)
    files["lead"].write_text(json.dumps({"receipt": token}))
    for name, seed in (("pub", 1), ("other", 2)):
        files[name].write_bytes(
            fixed_key(seed)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return files


async def test_receipt_verify_cli_process_ok_and_rejects_one_changed_byte(
    receipt_files: dict[str, Path],
) -> None:
    f = receipt_files
    args = [
        "-m",
        "reffection_ari",
        "receipt",
        "verify",
        str(f["receipt"]),
        "--public-key",
        str(f["pub"]),
        "--audience",
        "acme-insurance",
        "--recording",
        str(f["rec"]),
    ]
    rc, out, err = await run_proc(*args)
    assert rc == 0, err
    assert json.loads(out)["lead_id"] == "lead_demo" and "receipt OK" in err
    data = bytearray(f["rec"].read_bytes())
    data[100] ^= 0x01
    f["rec"].write_bytes(bytes(data))
    rc, _, err = await run_proc(*args)
    assert rc == 2 and "error [recording_mismatch]" in err


def _flip_claims(token: str) -> str:
    h, p, s = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    raw[10] ^= 0x01
    return ".".join([h, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), s])


def test_receipt_verify_cli_reason_codes(
    receipt_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    f = receipt_files
    tampered = f["receipt"].with_name("tampered.jws")
    tampered.write_text(_flip_claims(f["receipt"].read_text()))
    base = ["receipt", "verify"]
    cases = [
        ([str(f["lead"]), "--public-key", str(f["pub"])], 0, None),
        ([str(tampered), "--public-key", str(f["pub"])], 2, "bad_signature"),
        ([str(f["receipt"]), "--public-key", str(f["other"])], 2, "bad_signature"),
        ([str(f["receipt"]), "--public-key", str(f["pub"]), "--kid", "k9"], 2, "unknown_key"),
        ([str(f["receipt"]), "--public-key", str(f["pub"]), "--audience", "globex"], 2, "wrong_audience"),
    ]
    for args, rc, code in cases:
        assert cli_main(base + args) == rc
        err = capsys.readouterr().err
        if code:
            assert f"error [{code}]" in err
    swapped = f["rec"].with_name("swapped.wav")
    swapped.write_bytes(b"\xff" + f["rec"].read_bytes()[1:])  # first byte differs
    assert (
        cli_main([*base, str(f["receipt"]), "--public-key", str(f["pub"]), "--recording", str(swapped)]) == 2
    )
    assert "error [recording_mismatch]" in capsys.readouterr().err


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert", "reorder"])
def test_audit_verify_cli_names_the_bad_index(
    tmp_path: Path, tamper: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path, pub = tmp_path / "audit.jsonl", tmp_path / "pub.pem"
    pub.write_bytes(
        fixed_key(1)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with AuditLog(log_path, fixed_key(1), "k1", checkpoint_every=5, fsync=False) as log:
        for i in range(12):
            log.append("receipt_issued", {"lead_id": f"lead_{i:03d}", "call_id": f"call_{i:03d}"})
    args = ["audit", "verify", "--log", str(log_path), "--public-key", str(pub), "--require-closed"]
    assert cli_main(args) == 0
    assert "audit log OK: 15 entries, 3 signed checkpoints" in capsys.readouterr().out
    lines = log_path.read_bytes().splitlines(keepends=True)
    if tamper == "edit":
        lines[7] = lines[7].replace(b"lead_006", b"lead_666")
    elif tamper == "delete":
        del lines[7]
    elif tamper == "insert":
        lines.insert(7, lines[1])
    else:
        lines[7], lines[8] = lines[8], lines[7]
    log_path.write_bytes(b"".join(lines))
    assert cli_main(args) == 2
    assert "error [chain_broken]: audit log entry 7:" in capsys.readouterr().err


def test_outbox_context_manager_is_available(tmp_path: Path) -> None:
    with LeadOutbox(tmp_path / "o.db") as outbox:
        outbox.store_sync(replace(make_lead("lead_x")))
        assert outbox.counts()["pending"] == 1

"""``reffection-ari demo``: one complete consented call on the embedded Asterisk sandbox.

Builds and starts the sandbox, generates keys, tokenises a subscriber's number for the platform,
starts the daemon (with ``examples/config.yaml``), a sipp subscriber (answers, speaks, presses 1)
and a sipp agent (answers, presses the confirm key, hangs up), places the call through the
platform API with only the token, waits for the delivered lead, prints it and verifies its
receipt against the recording. Exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .config import Config, load_yaml, parse_config
from .daemon import Daemon
from .errors import ReffectionError
from .evidence import verify_receipt
from .evidence.receipts import VerificationKey
from .phone import PhoneNumber
from .sandbox import Sandbox, SippUAS, dtmf, hangup, pause, speech, uas
from .tokens import Keyring, SqliteVault, TokenCodec, TokenService

log = logging.getLogger(__name__)

DEMO_NUMBER = "+442079460123"  # Ofcom drama range (020 7946 0xxx): valid, never assigned
SUBSCRIBER_PORT = 15070
AGENT_PORT = 15080


def examples_dir() -> Path:
    env = os.environ.get("REFFECTION_EXAMPLES_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "examples"
    if not (path / "config.yaml").is_file():
        raise ReffectionError(f"examples/config.yaml not found under {path}", code="examples_missing")
    return path


def load_demo_config(workdir: Path, sandbox: Sandbox) -> tuple[Config, dict[str, Any]]:
    raw = load_yaml((examples_dir() / "config.yaml").read_text())
    raw["recordings"]["host_dir"] = str(sandbox.recordings_dir)
    return parse_config(raw, base_dir=workdir), raw


@dataclass
class DemoResult:
    call_id: str
    lead: dict[str, Any]
    recording: Path
    states: list[str]


async def run_demo(workdir: Path, sandbox: Sandbox, *, out: Any = print) -> DemoResult:
    config, raw = load_demo_config(workdir, sandbox)
    for stale in (config.keyring, config.vault, config.delivery.outbox, config.audit_log, config.delivery.jsonl):
        for path in workdir.glob(f"{stale.name}*") if stale else ():
            path.unlink()  # the demo owns its work directory: every run starts from nothing
    keyring = Keyring.generate(config.keyring, overwrite=True)
    vault = SqliteVault(config.vault, keyring.lookup_key())
    try:
        token = TokenService(TokenCodec(keyring), vault).issue(
            PhoneNumber.parse(DEMO_NUMBER), "platform-a", consent_source="demo-signup-form"
        )
    finally:
        vault.close()
    out(f"token issued to platform-a: {token}  (the platform never sees the number)")
    api_key = raw["api"]["keys"][0]["key"]
    base = f"http://{config.api.host}:{config.api.port}"
    daemon = Daemon(config)
    await daemon.start()
    trace = workdir / "sip"
    subscriber = SippUAS(
        uas("subscriber", steps=[speech(), pause(4500), dtmf("1")]), SUBSCRIBER_PORT, trace_dir=trace
    )
    agent = SippUAS(
        uas("agent", steps=[pause(3000), dtmf("#"), pause(1500), hangup()]), AGENT_PORT, trace_dir=trace
    )
    states: list[str] = []
    try:
        await subscriber.start()
        await agent.start()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            stream = await http.get(f"{base}/v1/events")
            async with http.post(f"{base}/v1/calls", json={"token": token, "campaign": "acme-winter"}) as r:
                body = await r.json()
                if r.status != 202:
                    raise ReffectionError(f"call refused: {body}", code="demo_failed")
            call_id = body["call_id"]
            out(f"POST /v1/calls -> 202 call_id={call_id}")
            final = await _follow(stream, call_id, states, out)
            stream.close()
            async with http.get(f"{base}/v1/calls/{call_id}") as r:
                view = await r.json()
        if final not in ("ended", "transferred") or view.get("lead_id") is None:
            raise ReffectionError(f"call finished without a lead: {view}", code="demo_failed")
        lead = await _wait_for_lead(config.delivery.jsonl or workdir / "leads.jsonl", view["lead_id"])
    finally:
        await subscriber.stop()
        await agent.stop()
        await daemon.stop()
    recording = sandbox.recordings_dir / f"{call_id}.wav"  # the partner's copy; advertisers get its hash
    signing_key, kid = keyring.receipt_signing_key()
    claims = verify_receipt(
        lead["receipt"],
        VerificationKey(signing_key.public_key(), kid),
        audience=lead["advertiser"],
        recording_path=recording,
        number_e164=lead["number_e164"],
    )
    data = recording.read_bytes()
    out("")
    out("=== consented lead (the only place the number appears) ===")
    out(f"lead_id:    {lead['lead_id']}")
    out(f"number:     {lead['number_e164']}")
    out(f"campaign:   {lead['campaign']}  advertiser: {lead['advertiser']}")
    out(f"consent:    {claims['consent']}")
    out(f"recording:  {recording}  {len(data)} bytes  sha256={lead['recording']['sha256']}")
    out(f"receipt:    verified (EdDSA, kid={kid}, aud={claims['aud']}, recording and number binding match)")
    out(f"workdir:    {workdir}")
    return DemoResult(call_id=call_id, lead=lead, recording=recording, states=states)


async def _follow(stream: aiohttp.ClientResponse, call_id: str, states: list[str], out: Any) -> str:
    """Print the call's state changes from the live event stream until it is over."""
    deadline = time.monotonic() + 90
    async for raw_line in stream.content:
        line = raw_line.decode().strip()
        if not line.startswith("data:"):
            if time.monotonic() > deadline:
                break
            continue
        event = json.loads(line[5:])
        if event["call_id"] != call_id:
            continue
        states.append(event["state"])
        reason = f" ({event['reason']})" if event.get("reason") else ""
        out(f"  event: {event['old_state']} -> {event['state']}{reason}")
        if event["state"] in ("ended", "failed", "transferred"):
            return str(event["state"])
    raise ReffectionError("the call did not finish within 90 s", code="demo_timeout")


async def _wait_for_lead(path: Path, lead_id: str, timeout: float = 20.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record.get("lead_id") == lead_id:
                    return dict(record)
        await asyncio.sleep(0.1)  # polling the delivery file with a deadline
    raise ReffectionError(f"lead {lead_id} was not delivered to {path} in {timeout:.0f}s", code="demo_failed")


def main(workdir: str | None, keep_sandbox: bool) -> int:
    sandbox = Sandbox()
    built = sandbox.ensure_built()
    if built:
        print(f"sandbox built in {built:.0f}s ({sandbox.version()})")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="reffection-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    if keep_sandbox and sandbox.pid() is None:
        print(f"asterisk started in {sandbox.start():.2f}s (left running)")
    with sandbox.lease(), sandbox.sip_peers():
        asyncio.run(run_demo(work, sandbox))
    return 0

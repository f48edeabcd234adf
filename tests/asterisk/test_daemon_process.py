"""The daemon as a real process on the real sandbox: SIGKILL after a confirm, restart, SIGTERM.

- SIGKILL after the lead is committed but before the advertiser accepted it: the restarted
  daemon delivers it exactly once (by idempotency key) and ends the call the dead process left
  in Asterisk (no channel left behind).
- SIGTERM during a call: no new calls, the active call ends with reason ``shutdown``, the process
  exits 0 within the grace period, and Asterisk keeps no channel of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from reffection_ari.demo import DEMO_NUMBER, examples_dir
from reffection_ari.evidence import verify_webhook
from reffection_ari.phone import PhoneNumber
from reffection_ari.sandbox import Sandbox, SippUAS, dtmf, pause, speech, uas
from reffection_ari.tokens import Keyring, SqliteVault, TokenCodec, TokenService

from .conftest import free_port

SECRET = "whsec-daemon-process-test-0123"
TIMEOUT = 40.0


class Receiver:
    """The advertiser's webhook: 500 while ``failing``, then accept each lead id once."""

    def __init__(self) -> None:
        self.failing = True
        self.attempts: Counter[str] = Counter()
        self.accepted: dict[str, dict[str, Any]] = {}
        self.duplicates: Counter[str] = Counter()
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verify_webhook(
            SECRET.encode(),
            request.headers.get("X-Reffection-Timestamp"),
            request.headers.get("X-Reffection-Signature"),
            body,
        )
        lead_id = request.headers["Idempotency-Key"]
        self.attempts[lead_id] += 1
        self.changed.set()
        if self.failing:
            return web.Response(status=500)
        if lead_id in self.accepted:
            self.duplicates[lead_id] += 1
        else:
            self.accepted[lead_id] = json.loads(body)
        return web.Response(status=204)

    async def wait(self, predicate: Any, timeout: float = TIMEOUT) -> None:
        async def _wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)


@asynccontextmanager
async def receiver_server(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/leads", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/leads"
    finally:
        await runner.cleanup()


class DaemonProcess:
    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, api: str) -> None:
        log = open(self.log_path, "ab")  # noqa: ASYNC230 - handed to the child process
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reffection_ari", "run", "-c", str(self.config_path),
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        async with aiohttp.ClientSession() as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
                try:
                    async with http.get(f"{api}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert loop.time() < deadline, "daemon did not become healthy"
                await asyncio.sleep(0.05)  # polling readiness with a deadline

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def _write_config(tmp: Path, sandbox: Sandbox, webhook: str, api_port: int) -> tuple[Path, str, str]:
    raw = yaml.safe_load((examples_dir() / "config.yaml").read_text())
    raw["node"] = f"proc{uuid.uuid4().hex[:6]}"
    raw["api"]["port"] = api_port
    raw["recordings"]["host_dir"] = str(sandbox.recordings_dir)
    raw["delivery"] = {"outbox": "outbox.sqlite", "webhook_url": webhook, "webhook_secret": SECRET,
                       "max_attempts": 50}  # fmt: skip
    raw["shutdown_grace"] = 5
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    keyring = Keyring.generate(tmp / "keyring.json")
    vault = SqliteVault(tmp / "vault.sqlite", keyring.lookup_key())
    try:
        token = TokenService(TokenCodec(keyring), vault).issue(PhoneNumber.parse(DEMO_NUMBER), "platform-a")
    finally:
        vault.close()
    return path, token, str(raw["api"]["keys"][0]["key"])


async def _ari_objects(sandbox: Sandbox, prefix: str, kind: str = "channels") -> list[str]:
    auth = base64.b64encode(f"{sandbox.ari_user}:{sandbox.ari_password}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {auth}"}) as http:
        async with http.get(f"{sandbox.ari_url}/ari/{kind}") as r:
            return [c["id"] for c in await r.json() if c["id"].startswith(prefix)]


async def _ari_channels(sandbox: Sandbox, prefix: str) -> list[str]:
    return await _ari_objects(sandbox, prefix, "channels")


async def _wait_call_gone_from_asterisk(sandbox: Sandbox, call_id: str) -> None:
    """A hung-up channel leaves the application before Asterisk destroys it: poll with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while await _ari_channels(sandbox, call_id) or await _ari_objects(sandbox, call_id, "bridges"):
        assert loop.time() < deadline, "the call's channels or bridges were not ended"
        await asyncio.sleep(0.05)  # polling Asterisk with a deadline


async def _wait_state(http: aiohttp.ClientSession, api: str, call_id: str, states: set[str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        async with http.get(f"{api}/v1/calls/{call_id}") as r:
            view = await r.json()
        if view.get("state") in states:
            return dict(view)
        assert loop.time() < deadline, f"call stuck in {view.get('state')}"
        await asyncio.sleep(0.05)  # polling the API with a deadline


@pytest.mark.usefixtures("sip_peers")
async def test_sigkill_after_confirm_then_restart_delivers_once_and_ends_the_call(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    receiver = Receiver()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    async with receiver_server(receiver) as webhook:
        config, token, key = _write_config(tmp_path, sandbox, webhook, api_port)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        subscriber = SippUAS(uas("sub", steps=[speech(), pause(4000), dtmf("1"), pause(60000)]), 15070)
        agent = SippUAS(uas("agent", steps=[pause(2500), dtmf("#"), pause(60000)]), 15080)
        try:
            await subscriber.start()
            await agent.start()
            await daemon.start(api)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
                async with http.post(f"{api}/v1/calls", json={"token": token, "campaign": "acme-winter"}) as r:
                    assert r.status == 202, await r.text()
                    call_id = (await r.json())["call_id"]
                view = await _wait_state(http, api, call_id, {"lead_stored", "ended", "failed"})
                assert view["state"] == "lead_stored", view
                lead_id = view["lead_id"]
                # the receiver refuses: the lead is committed but not delivered
                await receiver.wait(lambda: receiver.attempts[lead_id] >= 1)
            daemon.signal(signal.SIGKILL)
            await daemon.wait(10)
            assert await _ari_channels(sandbox, call_id), "the killed daemon's call is still in Asterisk"
            assert await _ari_objects(sandbox, call_id, "bridges"), "and so is its bridge"

            receiver.failing = False
            restarted = DaemonProcess(config, tmp_path / "daemon2.log")
            await restarted.start(api)
            try:
                await receiver.wait(lambda: lead_id in receiver.accepted)
                assert receiver.accepted[lead_id]["number_e164"] == DEMO_NUMBER
                assert not receiver.duplicates
                assert len(receiver.accepted) == 1
                # the restarted daemon ended the call the dead one left behind
                await _wait_call_gone_from_asterisk(sandbox, call_id)
                log = (tmp_path / "daemon2.log").read_text()
                assert f"ended orphaned call after restart call_id={call_id}" in log
            finally:
                restarted.signal(signal.SIGTERM)
                assert await restarted.wait(15) == 0
        finally:
            await daemon.kill()
            await subscriber.stop()
            await agent.stop()


@pytest.mark.usefixtures("sip_peers")
async def test_sigterm_ends_active_calls_cleanly(sandbox: Sandbox, tmp_path: Path) -> None:
    receiver = Receiver()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    async with receiver_server(receiver) as webhook:
        config, token, key = _write_config(tmp_path, sandbox, webhook, api_port)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        subscriber = SippUAS(uas("sub", steps=[speech(), pause(60000)]), 15070)
        try:
            await subscriber.start()
            await daemon.start(api)
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
                async with http.post(f"{api}/v1/calls", json={"token": token, "campaign": "acme-winter"}) as r:
                    call_id = (await r.json())["call_id"]
                await _wait_state(http, api, call_id, {"disclosure", "consent"})
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(15) == 0
            await _wait_call_gone_from_asterisk(sandbox, call_id)
            log = (tmp_path / "daemon.log").read_text()
            assert f"call finished call_id={call_id} state=ended reason=shutdown" in log
            assert receiver.attempts == Counter()  # no lead without a confirm
        finally:
            await daemon.kill()
            await subscriber.stop()

"""Fixtures for the consent-call tests: a real daemon on the sandbox Asterisk, driven like a platform.

``dialer`` gives each test a fresh work dir, keyring, vault and outbox, the example config with a
unique node (so a unique ARI app), shortened timeouts and a free API port, a running in-process
:class:`~reffection_ari.daemon.Daemon`, an open SSE stream, captured log records, and sipp peers.

Teardown proves the invariants every path must keep: once the test's calls are over, Asterisk has no
channel and no bridge whose id starts with one of its call ids (checked before the daemon stops, so
the shutdown cannot tidy a leak away, and again after), and no lead exists that the test did not
expect (outbox and JSONL sink).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
import yaml

from reffection_ari.config import Config, parse_config
from reffection_ari.daemon import Daemon
from reffection_ari.errors import SandboxError
from reffection_ari.evidence import LeadOutbox
from reffection_ari.phone import PhoneNumber
from reffection_ari.sandbox import Sandbox, SippUAS, Step, uas
from reffection_ari.sandbox.scenarios import Scenario
from reffection_ari.tokens import Keyring, TokenCodec, TokenService

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
NUMBER = "+442079460123"  # Ofcom drama range: valid, never assigned
KEY_A = "demo-platform-a-key-0123456789abcdef"  # examples/config.yaml's platform-a key
KEY_B = "test-platform-b-key-0123456789abcdef"
SUBSCRIBER_PORT, AGENT_PORT, ADVERTISER_PORT = 15070, 15080, 15090
TERMINAL = ("ended", "failed", "transferred")

#: Campaigns of the test config. ``acme-winter`` is the example's ivr campaign with short timeouts;
#: ``acme-quick`` has shorter ring/wrap-up timeouts and one call at a time.
IVR, QUICK, AGENT_MODE, TRANSFER = "acme-winter", "acme-quick", "acme-agent", "acme-transfer"
EU, EU_SLOW = "acme-eu", "acme-eu-slow"  # the eu rule pack; the slow one allows 1 call per 10 seconds
EU_HOLIDAY = "acme-eu-holiday"  # the eu pack with Friday 2026-12-04 as a no-call date
TWO_KEY = "acme-two-key"  # consent is "1#": a two-key answer with an inter-digit timeout
LOCAL_PREFIX = "+4420794610"


_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember whether the test body passed: teardown asserts invariants only then."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_PASSED] = report.passed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ari_auth(sandbox: Sandbox) -> dict[str, str]:
    token = base64.b64encode(f"{sandbox.ari_user}:{sandbox.ari_password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True, slots=True)
class ApiResult:
    status: int
    body: Any
    text: str

    @property
    def code(self) -> str | None:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        return err.get("code") if isinstance(err, dict) else None


class _Records(logging.Handler):
    """Every log record of the test, rendered at emit time, before any masking filter."""

    def __init__(self) -> None:
        super().__init__(level=0)
        self.records: list[tuple[str, str]] = []  # (logger name/level, rendered text)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.records.append((f"{record.name}/{record.levelname}", text))


@dataclass
class Dialer:
    """A running daemon plus the platform's view of it (API, SSE) and the SIP peers of one test."""

    sandbox: Sandbox
    config: Config
    keyring: Keyring
    workdir: Path
    daemon: Daemon
    http: aiohttp.ClientSession
    logs: _Records
    base: str
    api_responses: list[ApiResult] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    sse_raw: list[str] = field(default_factory=list)
    call_ids: set[str] = field(default_factory=set)
    expected_leads: set[str] = field(default_factory=set)  # call ids allowed to have a lead
    peers: list[SippUAS] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # ---- partner side ------------------------------------------------------------------------
    @property
    def tokens(self) -> TokenService:
        assert self.daemon.partner is not None
        return self.daemon.partner.tokens

    def issue(self, number: str = NUMBER, audience: str = "platform-a", *, days_ago: int = 0) -> str:
        """A token as the partner would issue it; ``days_ago`` issues it in the past (1-day TTL)."""
        if not days_ago:
            return self.tokens.issue(PhoneNumber.parse(number), audience, consent_source="test")
        past = time.time() - days_ago * 86400
        codec = TokenCodec(self.keyring, clock=lambda: past)
        service = TokenService(codec, self.tokens.vault, ttl_days=1, bucket_days=1)
        return service.issue(PhoneNumber.parse(number), audience, consent_source="test")

    # ---- platform side -----------------------------------------------------------------------
    async def api(self, method: str, path: str, json_body: Any = None, *, key: str = KEY_A) -> ApiResult:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.http.request(method, self.base + path, json=json_body, headers=headers) as r:
            text = await r.text()
        try:
            body: Any = json.loads(text)
        except json.JSONDecodeError:
            body = None
        result = ApiResult(r.status, body, text)
        self.api_responses.append(result)
        if isinstance(body, dict) and isinstance(body.get("call_id"), str):
            self.call_ids.add(body["call_id"])
        return result

    async def place(self, token: str, campaign: str = IVR) -> str:
        r = await self.api("POST", "/v1/calls", {"token": token, "campaign": campaign})
        assert r.status == 202, r.text
        return str(r.body["call_id"])

    async def confirm(self, call_id: str, agent_id: str | None = None) -> ApiResult:
        body = {"agent_id": agent_id} if agent_id else None
        return await self.api("POST", f"/v1/calls/{call_id}/confirm", body)

    async def metric(self, name: str) -> float:
        """Sum of a Prometheus series (all label sets) from ``GET /metrics``."""
        r = await self.api("GET", "/metrics")
        total = 0.0
        for line in r.text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def read_sse(self, response: aiohttp.ClientResponse, opened: asyncio.Future[None]) -> None:
        async for raw in response.content:
            line = raw.decode()
            self.sse_raw.append(line)
            if line.startswith(": stream open") and not opened.done():
                opened.set_result(None)
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            async with self._changed:
                self.events.append(event)
                self.call_ids.add(event["call_id"])
                self._changed.notify_all()

    def states(self, call_id: str) -> list[str]:
        return [e["state"] for e in self.events if e["call_id"] == call_id]

    async def wait_state(self, call_id: str, states: Iterable[str], timeout: float = 15.0) -> dict[str, Any]:
        """The first event of ``call_id`` entering one of ``states`` (awaits the SSE stream)."""
        wanted = set(states)

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e["call_id"] == call_id and e["state"] in wanted), None)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise AssertionError(
                f"call {call_id} did not reach {sorted(wanted)} within {timeout}s; states: {self.states(call_id)}"
            ) from None
        event = found()
        assert event is not None
        return event

    async def wait_end(self, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait_state(call_id, TERMINAL, timeout)

    # ---- leads -------------------------------------------------------------------------------
    @property
    def jsonl(self) -> Path:
        return self.config.delivery.jsonl or self.workdir / "leads.jsonl"

    def leads(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        # only complete lines: the sink may be writing the next one right now
        return [json.loads(line) for line in self.jsonl.read_text().splitlines(keepends=True) if line.endswith("\n")]

    async def wait_lead(self, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The lead of ``call_id`` once the outbox worker has delivered it to the JSONL sink."""
        self.expected_leads.add(call_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for lead in self.leads():
                if lead.get("call_id") == call_id:
                    return lead
            if loop.time() > deadline:
                raise AssertionError(f"no lead delivered for {call_id} within {timeout}s")
            await asyncio.sleep(0.05)  # polling the sink's file with a deadline

    def recording_path(self, call_id: str) -> Path:
        return self.config.recordings.host_dir / f"{call_id}.wav"

    async def recording_exists(self, call_id: str, timeout: float = 10.0) -> bool:
        """Whether the call's recording file appears (MixMonitor's thread creates it just after
        the AMI action returns)."""
        path = self.recording_path(call_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not path.exists():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)  # polling the file system with a deadline
        return True

    async def recording_deleted(self, call_id: str, timeout: float = 5.0) -> bool:
        """Whether retention deletes the call's recording (it happens just after the final event)."""
        path = self.recording_path(call_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while path.exists():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)  # polling the file system with a deadline
        return True

    # ---- SIP peers ---------------------------------------------------------------------------
    async def sipp(self, scenario: Scenario, port: int, patience: float = 20.0) -> SippUAS:
        """Start a sipp peer; while another process's peer holds the port, wait for it (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            uas_ = SippUAS(scenario, port, trace_dir=self.workdir / "sip")
            try:
                await uas_.start()
            except SandboxError as exc:
                if exc.code != "sipp_failed" or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)  # the fixed port is another test process's for now
                continue
            self.peers.append(uas_)
            return uas_

    async def sip_seen(self, peer: SippUAS, text: str, timeout: float = 10.0) -> bool:
        """Whether ``text`` shows up in the peer's SIP trace in time (a hangup is sent after the event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in peer.messages():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)  # polling sipp's trace file with a deadline
        return True

    async def subscriber(self, *steps: Step, answer: Literal["answer", "busy", "ring"] = "answer") -> SippUAS:
        return await self.sipp(uas("subscriber", answer=answer, steps=list(steps)), SUBSCRIBER_PORT)

    async def agent(self, *steps: Step, answer: Literal["answer", "busy", "ring"] = "answer") -> SippUAS:
        return await self.sipp(uas("agent", answer=answer, steps=list(steps)), AGENT_PORT)

    async def advertiser(self, *steps: Step) -> SippUAS:
        return await self.sipp(uas("advertiser", steps=list(steps)), ADVERTISER_PORT)

    # ---- Asterisk ----------------------------------------------------------------------------
    async def leftovers(self) -> tuple[list[str], list[str]]:
        """Ids of channels and bridges in Asterisk that belong to this test's calls."""
        headers = ari_auth(self.sandbox)
        async with aiohttp.ClientSession(headers=headers) as ari:
            async with ari.get(f"{self.sandbox.ari_url}/ari/channels") as r:
                r.raise_for_status()
                channels = await r.json()
            async with ari.get(f"{self.sandbox.ari_url}/ari/bridges") as r:
                r.raise_for_status()
                bridges = await r.json()
        app = self.config.app_name
        ids = tuple(self.call_ids)

        def ours(obj: dict[str, Any]) -> bool:
            dialplan = obj.get("dialplan") or {}
            in_app = dialplan.get("app_name") == "Stasis" and str(dialplan.get("app_data", "")).startswith(app)
            return bool(ids and str(obj["id"]).startswith(ids)) or in_app

        return [c["id"] for c in channels if ours(c)], [b["id"] for b in bridges if ours(b)]

    async def wait_no_leftovers(self, timeout: float = 10.0) -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        channels, bridges = await self.leftovers()
        while (channels or bridges) and loop.time() < deadline:
            await asyncio.sleep(0.1)  # polling Asterisk's state with a deadline
            channels, bridges = await self.leftovers()
        return channels, bridges

    async def force_clean(self, channels: list[str], bridges: list[str]) -> None:
        """Remove leftovers so one failure does not cascade into the next test."""
        async with aiohttp.ClientSession(headers=ari_auth(self.sandbox)) as ari:
            for cid in channels:
                async with ari.delete(f"{self.sandbox.ari_url}/ari/channels/{cid}"):
                    pass
            for bid in bridges:
                async with ari.delete(f"{self.sandbox.ari_url}/ari/bridges/{bid}"):
                    pass


def build_config(sandbox: Sandbox, workdir: Path, node: str) -> Config:
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    raw["node"] = node
    raw["ari"].update(url=sandbox.ari_url, username=sandbox.ari_user, password=sandbox.ari_password)
    raw["ami"].update(host=sandbox.ami_host, port=sandbox.ami_port, username=sandbox.ami_user,
                      secret=sandbox.ami_secret)  # fmt: skip
    raw["api"]["port"] = free_port()
    raw["api"]["keys"].append({"name": "platform-b", "audience": "platform-b", "key": KEY_B})
    raw["recordings"]["host_dir"] = str(sandbox.recordings_dir)
    raw["shutdown_grace"] = 5
    base = raw["campaigns"][IVR]
    base["timeouts"] = {"first_digit": 2, "retries": 1, "subscriber_ring": 10, "agent_ring": 6, "wrap_up": 5,
                        "max_call": 60}  # fmt: skip
    quick = copy.deepcopy(base)
    quick["timeouts"].update(subscriber_ring=5, agent_ring=3, wrap_up=2)
    quick["policy"]["max_concurrent"] = 1
    agent_mode = copy.deepcopy(base)
    agent_mode["consent_mode"] = "agent"
    transfer = copy.deepcopy(base)
    transfer["transfer_dial"] = "PJSIP/advertiser"
    eu = copy.deepcopy(base)
    eu["policy"] = {"pack": "eu", "max_concurrent": 3, "max_cps": 5}
    eu_slow = copy.deepcopy(base)
    eu_slow["policy"] = {"pack": "eu", "max_concurrent": 10, "max_cps": 0.1}  # a burst fits in its window
    eu_holiday = copy.deepcopy(eu)
    eu_holiday["policy"]["no_call_dates"] = ["2026-12-04"]
    two_key = copy.deepcopy(base)
    two_key["keys"] = {**two_key["keys"], "yes": "1#"}
    two_key["timeouts"]["inter_digit"] = 2
    raw["campaigns"].update({QUICK: quick, AGENT_MODE: agent_mode, TRANSFER: transfer, EU: eu, EU_SLOW: eu_slow,
                             TWO_KEY: two_key, EU_HOLIDAY: eu_holiday})  # fmt: skip
    # Subscribers in +44 20 7946 10xx are Local channels answered by the sandbox dialplan: policy
    # tests can place many calls without SIP peers.
    raw["routes"].insert(0, {"prefix": LOCAL_PREFIX, "dial": "Local/{digits}@bench-subscriber"})
    return parse_config(raw, base_dir=workdir)


@pytest.fixture
def sip_peers(sandbox: Sandbox) -> Iterator[None]:
    """The sipp ports the sandbox's PJSIP endpoints point at, held for the test (one process at a time)."""
    with sandbox.sip_peers():
        yield


@pytest.fixture
async def dialer(sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Dialer]:
    node = f"t{uuid.uuid4().hex[:10]}"
    config = build_config(sandbox, tmp_path, node)
    keyring = Keyring.generate(config.keyring)
    logs = _Records()
    root = logging.getLogger()
    old_levels = (root.level, logging.getLogger("panoramisk").level)
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)
    # as configure_logging() does in production: panoramisk dumps raw AMI headers at debug
    logging.getLogger("panoramisk").setLevel(logging.INFO)
    lock = sandbox.sip_peers()  # the PJSIP endpoints point at fixed sipp ports: one process at a time
    await asyncio.to_thread(lock.__enter__)
    clock_marker = request.node.get_closest_marker("wall_clock")
    if clock_marker is not None:
        # The daemon's wall clock starts at the marker's time and advances in real time.
        start, origin = clock_marker.args[0], time.monotonic()
        daemon = Daemon(config, clock=lambda: start + timedelta(seconds=time.monotonic() - origin))
    else:
        daemon = Daemon(config)
    stopped = False
    http = aiohttp.ClientSession()
    sse_task: asyncio.Task[None] | None = None
    d: Dialer | None = None
    try:
        await daemon.start()
        d = Dialer(sandbox=sandbox, config=config, keyring=keyring, workdir=tmp_path, daemon=daemon, http=http,
                   logs=logs, base=f"http://{config.api.host}:{config.api.port}")  # fmt: skip
        stream = await http.get(f"{d.base}/v1/events", headers={"Authorization": f"Bearer {KEY_A}"})
        assert stream.status == 200
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sse_task = asyncio.create_task(d.read_sse(stream, opened))
        await asyncio.wait_for(opened, 5)
        yield d

        passed = request.node.stash.get(_PASSED, False)
        problems: list[str] = []
        if passed:  # after a failure the calls may still run: only tidy up then
            channels, bridges = await d.wait_no_leftovers()
            if channels or bridges:
                problems.append(f"left in Asterisk before stop: channels={channels} bridges={bridges}")
        await daemon.stop()
        stopped = True
        channels, bridges = await d.wait_no_leftovers()
        if channels or bridges:
            problems.append(f"left in Asterisk after stop: channels={channels} bridges={bridges}")
            await d.force_clean(channels, bridges)
        with LeadOutbox(config.delivery.outbox) as outbox:
            stored = {e.call_id for e in outbox.list()}
        delivered = {lead["call_id"] for lead in d.leads()}
        unexpected = (stored | delivered) - d.expected_leads
        if unexpected:
            problems.append(f"leads without an expected confirm: calls {sorted(unexpected)}")
        if passed and problems:
            pytest.fail("; ".join(problems), pytrace=False)
    finally:
        if sse_task is not None:
            sse_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await sse_task
        if not stopped:
            await daemon.stop()
        for uas_ in d.peers if d is not None else []:
            await uas_.stop()
        await http.close()
        lock.__exit__(None, None, None)
        root.removeHandler(logs)
        root.setLevel(old_levels[0])
        logging.getLogger("panoramisk").setLevel(old_levels[1])

"""Fakes and a wired :class:`CallService` for the daemon-side unit tests (no real Asterisk).

* :class:`SvcFakeAri` — the shared fake ARI server, made to behave like an originate to a real
  trunk: the channel is created *ringing* and enters Stasis only when the test answers it
  (:meth:`SvcFakeAri.answer`); playbacks never finish on their own (the test finishes the ids the
  service asked for); channel names look like Asterisk's (``PJSIP/<endpoint>-<n>``, never the
  dialled number); every REST request wakes :meth:`SvcFakeAri.wait_request`.
* :class:`FakeAmi` — duck-typed AMI: MixMonitor writes a small WAV where the host sees the
  recordings and announces its end with ``TestEvent State: MIXMONITOR_END`` like Debian's build.
* :class:`FakePartner` — the partner protocol with one registered test subscriber.
* :func:`harness` — all of it wired, optionally with the platform API in an aiohttp test client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reffection_ari.ami import AmiClient, AmiError
from reffection_ari.api import create_app
from reffection_ari.ari import AriClient, AriConfig
from reffection_ari.config import ApiKey, CampaignSettings, RecordingSettings, load_config
from reffection_ari.errors import PolicyRefusal, ReffectionError, TokenError
from reffection_ari.lead import ConsentEvidence, Lead, RecordingInfo
from reffection_ari.service import EVENT_FILTER, CallService, CallView, PreparedCall
from tests.fake_ari import FakeAri, Request
from tests.leakguard import register_number, registered_formats

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
NUMBER = register_number("+442079460018")  # Ofcom drama range: valid, never assigned
NEEDLES = [text for _kind, text in registered_formats(NUMBER)]
DIAL_STRING = f"PJSIP/{NUMBER}@partner-trunk"
APP = "reffection-node1"
KEY_A = "platform-a-key-0123456789abcdef"
KEY_B = "platform-b-key-0123456789abcdef"
API_KEYS = (
    ApiKey(name="a", audience="platform-a", sha256=hashlib.sha256(KEY_A.encode()).digest()),
    ApiKey(name="b", audience="platform-b", sha256=hashlib.sha256(KEY_B.encode()).digest()),
)
TOKEN_A = "rf1.tokenA-for-platform-a"
TOKEN_B = "rf1.tokenB-for-platform-b"
WAIT = 3.0  # seconds: generous upper bound for any awaited step (never a fixed sleep)


def contains_number(text: str) -> bool:
    return any(n in text for n in NEEDLES)


def campaigns() -> dict[str, CampaignSettings]:
    """The example's ivr campaign (platform-a) and a copy for platform-b."""
    a = load_config(EXAMPLE).campaigns["acme-winter"]
    b = dataclasses.replace(a, name="beta-spring", audience="platform-b")
    return {a.name: a, b.name: b}


# ---- fake ARI -------------------------------------------------------------------------------------
_PJSIP = re.compile(r"^(?P<tech>[A-Za-z]+)/(?:[^@]*@)?(?P<endpoint>[^/]+)$")


class SvcFakeAri(FakeAri):
    def __init__(self) -> None:
        super().__init__(auto_finish_playbacks=False)
        self.app_args: dict[str, list[str]] = {}
        self.on_gone: list[Callable[[str], None]] = []  # channel name -> (AMI fake)
        self._changed = asyncio.Event()

    # -- request notification
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        async def notified(req: web.Request) -> web.StreamResponse:
            self._notify()  # the request is recorded by now; the service staged its ids before it
            result: web.StreamResponse = await handler(req)
            return result

        try:
            return await super()._middleware(request, notified)
        finally:
            self._notify()

    async def wait_request(self, pred: Callable[[Request], bool], timeout: float = WAIT) -> Request:
        """The first recorded REST request matching ``pred`` (waiting for it if need be)."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                for r in self.requests:
                    if pred(r):
                        return r
                await changed.wait()

    # -- Asterisk-like channels
    def _new_channel(self, cid: str, endpoint: str, app: str | None) -> dict[str, Any]:
        ch = super()._new_channel(cid, endpoint, app)
        m = _PJSIP.match(endpoint)
        base = f"{m['tech']}/{m['endpoint']}" if m else "Local/x@y"
        ch["name"] = f"{base}-{int(ch['name'].rsplit('-', 1)[1], 16):08x}"
        if app:
            ch["dialplan"]["app_data"] = app
        return ch

    async def _originate(self, request: web.Request) -> web.Response:
        """Like a trunk: the channel rings (no StasisStart until :meth:`answer`)."""
        endpoint = self._param(request, "endpoint")
        app = self._param(request, "app")
        if not endpoint or not app:
            return self._err(400, "Endpoint and app must be specified")
        cid = self._param(request, "channelId") or f"fake-{next(self._ids)}"
        if cid in self.channels:
            return self._err(409, "Channel with given unique ID already exists")
        args = self._param(request, "appArgs")
        self.app_args[cid] = args.split(",") if args else []
        ch = self._new_channel(cid, endpoint, app)
        ch["state"] = "Ring"
        return web.json_response(ch)

    async def _hangup(self, request: web.Request) -> web.Response:
        ch = self.channels.get(request.match_info["id"])
        resp = await super()._hangup(request)
        if ch is not None:
            self._left(ch)
        return resp

    def _left(self, ch: dict[str, Any]) -> None:
        """A destroyed channel leaves its bridges (as in Asterisk) and ends its MixMonitor."""
        for br in self.bridges.values():
            if ch["id"] in br["channels"]:
                br["channels"].remove(ch["id"])
        for cb in self.on_gone:
            cb(ch["name"])

    async def answer(self, channel_id: str) -> None:
        """The far end answered: the channel enters the app (StasisStart)."""
        ch = self.channels[channel_id]
        ch["state"] = "Up"
        ch["dialplan"]["app_data"] = ",".join([self.channel_app[channel_id], *self.app_args[channel_id]])
        sent = await self.push({"type": "StasisStart", "channel": ch, "args": self.app_args[channel_id]}, APP)
        assert sent, "StasisStart not delivered"

    async def gone(self, channel_id: str, cause: int = 16) -> None:
        """The far end hung up (or the dial failed): ChannelDestroyed with the Q.850 cause."""
        ch = self.channels[channel_id]
        await self._emit(channel_id, {"type": "ChannelDestroyed", "channel": ch, "cause": cause,
                                      "cause_txt": "test"})  # fmt: skip
        self.vanish(channel_id)

    def vanish(self, channel_id: str) -> None:
        """The channel is gone without an event reaching the app (e.g. while disconnected)."""
        ch = self.channels.pop(channel_id)
        self.channel_app.pop(channel_id, None)
        self._left(ch)

    def plays(self, channel_id: str) -> list[str]:
        prefix = f"/ari/channels/{channel_id}/play/"
        return [r.path[len(prefix) :] for r in self.requests if r.method == "POST" and r.path.startswith(prefix)]


# ---- fake AMI -------------------------------------------------------------------------------------
def _write_wav(path: Path, frames: bytes) -> None:
    """What MixMonitor writes here: 8 kHz, 16-bit mono."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)


class FakeAmi:
    """Duck-typed :class:`~reffection_ari.ami.AmiClient` (the part the call service uses)."""

    def __init__(self, asterisk_dir: str, host_dir: Path) -> None:
        self.asterisk_dir = asterisk_dir.rstrip("/")
        self.host_dir = host_dir
        self.connected = True
        self.fail_start = False
        #: after a hangup the recording thread, not StopMixMonitor, closes the file: this much later,
        #: appending the audio still buffered (StopMixMonitor closes the file before it answers)
        self.close_after_hangup = 0.0
        self.actions: list[dict[str, str]] = []
        self.active: dict[str, str] = {}  # channel name -> file without extension
        self.stopped: set[str] = set()  # channels whose recording StopMixMonitor closed
        self._listeners: list[tuple[str, Callable[[dict[str, str]], None]]] = []

    def add_listener(self, event: str, listener: Callable[[dict[str, str]], None]) -> None:
        self._listeners.append((event.lower(), listener))

    async def mix_monitor(self, channel: str, file: str, *, mixmon_id_var: str = "MIXMON_ID") -> None:
        self.actions.append({"Action": "MixMonitor", "Channel": channel, "File": file})
        if self.fail_start:
            raise AmiError("AMI MixMonitor failed: No such channel")
        assert file.startswith(self.asterisk_dir + "/"), file
        host = self.host_dir / file[len(self.asterisk_dir) + 1 :]
        _write_wav(host, b"\x00\x00" * 800)
        self.active[channel] = file.removesuffix(".wav")

    async def stop_mix_monitor(self, channel: str) -> None:
        """Like Asterisk: the file is closed before the answer; the end is announced when the channel goes."""
        self.actions.append({"Action": "StopMixMonitor", "Channel": channel})
        if channel not in self.active or channel in self.stopped:
            raise AmiError("AMI StopMixMonitor failed: Could not stop monitoring channel")
        self.stopped.add(channel)

    def channel_gone(self, name: str) -> None:
        if name not in self.active:
            return
        if not self.close_after_hangup or name in self.stopped:
            self.stopped.discard(name)
            self._end(name)
            return
        host = self.host_dir / (self.active[name][len(self.asterisk_dir) + 1 :] + ".wav")

        def close() -> None:
            with wave.open(str(host), "rb") as r:
                frames = r.readframes(r.getnframes())
            _write_wav(host, frames + b"\x01\x00" * 800)
            self._end(name)

        asyncio.get_running_loop().call_later(self.close_after_hangup, close)

    def _end(self, channel: str) -> None:
        headers = {"Event": "TestEvent", "State": "MIXMONITOR_END", "File": self.active.pop(channel)}
        asyncio.get_running_loop().call_soon(self._dispatch, headers)

    def _dispatch(self, headers: dict[str, str]) -> None:
        for wanted, listener in self._listeners:
            if wanted in ("*", headers["Event"].lower()):
                listener(headers)


# ---- fake partner ---------------------------------------------------------------------------------
class FakeLease:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


@dataclass
class FakePartner:
    """One registered subscriber reachable by ``TOKEN_A`` (platform-a) and ``TOKEN_B`` (platform-b)."""

    number: str = NUMBER
    subscriber_id: bytes = b"\x01" * 12
    refusals: dict[str, ReffectionError] = field(default_factory=dict)
    leases: list[FakeLease] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    opt_outs: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    leads: list[Lead] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    lead_gate: asyncio.Event | None = None  # build_lead waits for it (a slow sink)
    lead_started: asyncio.Event = field(default_factory=asyncio.Event)
    lead_error: Exception | None = None

    def prepare(self, token: str, audience: str, campaign: CampaignSettings) -> PreparedCall:
        if token in self.refusals:
            raise self.refusals[token]
        owner = {TOKEN_A: "platform-a", TOKEN_B: "platform-b"}.get(token)
        if owner is None:
            raise TokenError("token does not authenticate", code="bad_token")
        if owner != audience:
            raise TokenError("token was issued to another audience", code="wrong_audience")
        self.prepared.append(token)
        lease = FakeLease()
        self.leases.append(lease)
        return PreparedCall(subscriber_id=self.subscriber_id, dial_string=f"PJSIP/{self.number}@partner-trunk",
                            trunk="partner-trunk", policy_checks=({"check": "dnc", "passed": True},),
                            lease=lease)  # fmt: skip

    def opt_out(self, subscriber_id: bytes, call_id: str) -> None:
        self.opt_outs.append(call_id)

    def record_outcome(self, subscriber_id: bytes, campaign: str, outcome: str, at: datetime) -> None:
        self.outcomes.append((campaign, outcome))

    async def build_lead(
        self,
        *,
        call_id: str,
        token: str,
        audience: str,
        subscriber_id: bytes,
        campaign: CampaignSettings,
        evidence: ConsentEvidence,
        recording: RecordingInfo | None,
    ) -> Lead:
        self.lead_started.set()
        if self.lead_gate is not None:
            await self.lead_gate.wait()
        if self.lead_error is not None:
            raise self.lead_error
        lead = Lead(lead_id=f"lead_{call_id}", call_id=call_id, token=token, audience=audience,
                    campaign=campaign.name, advertiser=campaign.advertiser, number_e164=self.number,
                    evidence=evidence, recording=recording, created_at=datetime.now(UTC))  # fmt: skip
        self.leads.append(lead)
        return lead

    def recording_deleted(self, call_id: str, reason: str) -> None:
        self.deleted.append((call_id, reason))


def refuse(partner: FakePartner, token: str, code: str) -> None:
    error: ReffectionError = (
        TokenError("refused", code=code) if code.endswith("token") else PolicyRefusal("refused", code=code)
    )
    partner.refusals[token] = error


# ---- the wired service ----------------------------------------------------------------------------
async def _no_backoff(delay: float) -> None:
    await asyncio.sleep(0)


@dataclass
class Harness:
    fake: SvcFakeAri
    ari: AriClient
    ami: FakeAmi
    partner: FakePartner
    service: CallService
    host_dir: Path
    http: TestClient[web.Request, web.Application] | None = None
    orphans: list[str] = field(default_factory=list)  # what service.start() ended

    @property
    def api(self) -> TestClient[web.Request, web.Application]:
        assert self.http is not None, "harness(api=True) needed"
        return self.http

    async def place(self, token: str = TOKEN_A, campaign: str = "acme-winter",
                    audience: str = "platform-a") -> str:  # fmt: skip
        view = await self.service.place_call(token, campaign, audience)
        return view.call_id

    async def originated(self, channel_id: str) -> Request:
        return await self.fake.wait_request(
            lambda r: r.method == "POST" and r.path == "/ari/channels" and r.query.get("channelId") == channel_id
        )

    async def play(self, channel_id: str, n: int) -> str:
        """The id of the ``n``-th (1-based) playback the service started on ``channel_id``."""
        prefix = f"/ari/channels/{channel_id}/play/"
        await self.fake.wait_request(
            lambda r: r.method == "POST" and r.path.startswith(prefix) and len(self.fake.plays(channel_id)) >= n
        )
        return self.fake.plays(channel_id)[n - 1]

    async def finish(self, playback_id: str) -> None:
        await self.fake.finish_playback(playback_id)

    async def answer_subscriber(self, call_id: str) -> None:
        await self.originated(f"{call_id}-s")
        await self.fake.answer(f"{call_id}-s")

    async def to_consent_question(self, call_id: str) -> None:
        """Answer; disclosure and question play to the end; the flow now waits for a digit."""
        sub = f"{call_id}-s"
        await self.answer_subscriber(call_id)
        await self.finish(await self.play(sub, 1))  # disclosure
        await self.finish(await self.play(sub, 2))  # question

    async def to_bridged(self, call_id: str) -> None:
        """Consent given with '1', the agent answers, hears the whisper, both legs are bridged."""
        await self.to_consent_question(call_id)
        await self.fake.press(f"{call_id}-s", "1")
        await self.originated(f"{call_id}-a")
        await self.fake.answer(f"{call_id}-a")
        await self.finish(await self.play(f"{call_id}-a", 1))  # whisper
        await self.fake.wait_request(lambda r: r.method == "POST" and r.path == f"/ari/bridges/{call_id}-b/addChannel")

    async def finished(self, call_id: str) -> CallView:
        return await self.service.wait_finished(call_id, WAIT)

    def requests_text(self) -> list[tuple[Request, str]]:
        return [(r, json.dumps([r.method, r.path, r.query, r.body])) for r in self.fake.requests]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def harness(
    tmp_path: Path,
    *,
    api: bool = False,
    keys: Sequence[ApiKey] = API_KEYS,
    preload: Callable[[SvcFakeAri], None] | None = None,
) -> AsyncIterator[Harness]:
    """The wired service; ``preload`` prepares the fake (e.g. leftover channels) before start."""
    # The fake Asterisk's own access log prints originate query strings (the dial string), as
    # Asterisk's verbose log would: that is the partner's side of the boundary, not ours.
    access = logging.getLogger("aiohttp.access")
    was_disabled, access.disabled = access.disabled, True
    host_dir = tmp_path / "rec"
    host_dir.mkdir()
    fake = SvcFakeAri()
    await fake.start()
    if preload is not None:
        preload(fake)
    ari = AriClient(
        AriConfig(base_url=fake.url, username=fake.username, password=fake.password, app=APP,
                  event_filter=EVENT_FILTER),
        sleep=_no_backoff,
    )  # fmt: skip
    ami = FakeAmi("/var/spool/asterisk/monitor/reffection", host_dir)
    fake.on_gone.append(ami.channel_gone)
    partner = FakePartner()
    service = CallService(
        ari=ari, ami=cast(AmiClient, ami), partner=partner, campaigns=campaigns(),
        recordings=RecordingSettings(asterisk_dir=ami.asterisk_dir, host_dir=host_dir),
    )  # fmt: skip
    http: TestClient[web.Request, web.Application] | None = None
    try:
        await ari.connect()
        orphans = await service.start()
        if api:
            http = TestClient(TestServer(create_app(service, keys, sse_heartbeat=WAIT)))
            await http.start_server()
        yield Harness(fake, ari, ami, partner, service, host_dir, http, orphans)
    finally:
        if service.active_calls:
            await service.shutdown(WAIT)
        if http is not None:
            await http.close()
        await ari.close()
        await fake.stop()
        access.disabled = was_disabled

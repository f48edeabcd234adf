"""The platform API: bearer keys, audience isolation, error mapping, strict bodies, SSE, metrics.

Status mapping and validation run against a stub service (no ARI); isolation, the live event
stream and the "no number in any response" sweep run against the real call service wired to the
fake ARI server and a fake partner that holds a registered test number.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from reffection_ari.api import create_app
from reffection_ari.errors import CallError, NumberError, PolicyRefusal, ReffectionError, TokenError
from reffection_ari.service import CallService, CallView, ConfirmResult, Metrics, PlatformEvent
from tests.leakguard import _leakguard  # noqa: F401  (autouse: no test number in any log record)
from tests.unit._svc_harness import (
    API_KEYS,
    KEY_A,
    KEY_B,
    NUMBER,
    TOKEN_A,
    TOKEN_B,
    WAIT,
    Harness,
    bearer,
    contains_number,
    harness,
)

NOW = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
CALL = "c" + "a" * 20


def view(call_id: str = CALL, state: str = "created", audience: str = "platform-a") -> CallView:
    return CallView(call_id=call_id, token=TOKEN_A, audience=audience, campaign="acme-winter", state=state,
                    end_reason=None, consent="none", created_at=NOW, updated_at=NOW, lead_id=None)  # fmt: skip


class StubService:
    """Just enough of :class:`CallService` for the HTTP layer; records what it was asked."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.ari_connected = True
        self.active_calls = 0
        self.error: Exception | None = None
        self.confirm_result = ConfirmResult(ok=True, code=None, lead_id="lead_1")
        self.calls: list[tuple[str, Any]] = []

    def _maybe_raise(self) -> None:
        if self.error is not None:
            raise self.error

    async def place_call(self, token: str, campaign: str, audience: str) -> CallView:
        self.calls.append(("place_call", (token, campaign, audience)))
        self._maybe_raise()
        return view(audience=audience)

    def get(self, call_id: str, audience: str | None) -> CallView:
        self.calls.append(("get", (call_id, audience)))
        self._maybe_raise()
        if call_id != CALL or audience != "platform-a":
            raise CallError("no call", code="unknown_call")
        return view()

    async def confirm(self, call_id: str, audience: str | None, *, agent_id: str | None = None) -> ConfirmResult:
        self.calls.append(("confirm", (call_id, audience, agent_id)))
        self._maybe_raise()
        return self.confirm_result

    async def hangup(self, call_id: str, audience: str | None) -> CallView:
        self.calls.append(("hangup", (call_id, audience)))
        self._maybe_raise()
        return view(state="ended")

    def events(self, audience: str | None) -> asyncio.Queue[PlatformEvent]:
        return asyncio.Queue()

    def drop_events(self, queue: asyncio.Queue[PlatformEvent]) -> None:
        pass


Client = TestClient[web.Request, web.Application]


@pytest.fixture
def stub() -> StubService:
    return StubService()


@pytest.fixture
async def client(stub: StubService) -> AsyncIterator[Client]:
    opted: list[tuple[str, str]] = []
    app = create_app(cast(CallService, stub), API_KEYS, opt_out=lambda t, a: opted.append((t, a)))
    async with TestClient(TestServer(app)) as c:
        c.opted = opted  # type: ignore[attr-defined]
        yield c


async def error_of(resp: ClientResponse) -> tuple[int, str]:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str)
    return resp.status, body["error"]["code"]


CALL_BODY = {"token": TOKEN_A, "campaign": "acme-winter"}
ENDPOINTS = [
    ("POST", "/v1/calls", CALL_BODY),
    ("GET", f"/v1/calls/{CALL}", None),
    ("POST", f"/v1/calls/{CALL}/confirm", {}),
    ("POST", f"/v1/calls/{CALL}/hangup", None),
    ("POST", "/v1/optout", {"token": TOKEN_A}),
    ("GET", "/v1/events", None),
]


# ---- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-key-0123456789abcdefXYZ", f"Basic {KEY_A}", "Bearer ", KEY_A, f"Bearer {KEY_A}x"],
    ids=["none", "wrong", "basic", "empty", "no scheme", "suffix"],
)
async def test_every_endpoint_needs_a_valid_bearer_key(
    client: Client, stub: StubService, method: str, path: str, body: Any, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await client.request(method, path, json=body, headers=headers)
    assert await error_of(resp) == (401, "unauthorized")
    text = await resp.text()
    assert "wrong-key" not in text and KEY_A not in text
    assert stub.calls == []


async def test_keys_are_all_compared_whichever_matches(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant-time check: every configured key is compared even when the first one matches."""
    seen: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        seen.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for key in (KEY_A, KEY_B, "nope-nope-nope-nope-nope-nope"):
        seen.clear()
        await client.get(f"/v1/calls/{CALL}", headers=bearer(key))
        assert len(seen) == len(API_KEYS)


async def test_place_call_answers_202_with_the_view(client: Client, stub: StubService) -> None:
    resp = await client.post("/v1/calls", json=CALL_BODY, headers=bearer(KEY_A))
    assert resp.status == 202
    body = await resp.json()
    assert body["call_id"] == CALL and body["state"] == "created" and body["token"] == TOKEN_A
    assert "audience" not in body
    assert stub.calls == [("place_call", (TOKEN_A, "acme-winter", "platform-a"))]


async def test_the_key_decides_the_audience(client: Client, stub: StubService) -> None:
    await client.post("/v1/calls", json=CALL_BODY, headers=bearer(KEY_B))
    await client.post(f"/v1/calls/{CALL}/hangup", headers=bearer(KEY_B))
    assert [c[1][-1] for c in stub.calls] == ["platform-b", "platform-b"]
    resp = await client.get(f"/v1/calls/{CALL}", headers=bearer(KEY_B))
    assert await error_of(resp) == (404, "unknown_call")


# ---- error codes -> statuses ---------------------------------------------------------------------
ERRORS: list[tuple[ReffectionError, int]] = [
    (TokenError("x", code="malformed_token"), 400),
    *((TokenError("x", code=c), 422) for c in
      ("bad_token", "unknown_key", "expired_token", "wrong_audience", "unknown_subscriber", "erased")),
    (NumberError("x"), 422),
    (ReffectionError("x", code="no_route"), 422),
    (CallError("x", code="unknown_campaign"), 422),
    *((PolicyRefusal("x", code=c), 403) for c in ("dnc", "outside_calling_window", "attempt_limit", "policy")),
    *((PolicyRefusal("x", code=c), 429) for c in ("rate_limited", "concurrency_limit")),
    (CallError("x", code="unknown_call"), 404),
    (CallError("x", code="shutting_down"), 503),
    (CallError("x", code="asterisk_unavailable"), 503),
    *((TokenError("x", code=c), 500) for c in ("vault_integrity", "vault_key_mismatch")),
]  # fmt: skip


@pytest.mark.parametrize(("error", "status"), ERRORS, ids=[e.code for e, _ in ERRORS])
async def test_place_call_error_maps_to_status(
    client: Client, stub: StubService, error: ReffectionError, status: int
) -> None:
    stub.error = error
    resp = await client.post("/v1/calls", json=CALL_BODY, headers=bearer(KEY_A))
    assert await error_of(resp) == (status, error.code)


async def test_call_already_in_progress_is_a_conflict(client: Client, stub: StubService) -> None:
    """PartnerSide.prepare raises ``call_in_progress`` for a subscriber already being called:
    a state conflict, not a malformed request."""
    stub.error = CallError("a call to this subscriber is already in progress", code="call_in_progress")
    resp = await client.post("/v1/calls", json=CALL_BODY, headers=bearer(KEY_A))
    assert await error_of(resp) == (409, "call_in_progress")


@pytest.mark.parametrize(
    ("code", "status"),
    [("not_consented", 409), ("not_bridged", 409), ("call_ended", 409), ("lead_store_failed", 409)],
)
async def test_rejected_confirm_maps_to_status(client: Client, stub: StubService, code: str, status: int) -> None:
    stub.confirm_result = ConfirmResult(ok=False, code=code, lead_id=None)
    resp = await client.post(f"/v1/calls/{CALL}/confirm", headers=bearer(KEY_A))
    assert await error_of(resp) == (status, code)


async def test_confirm_ok_and_repeated(client: Client, stub: StubService) -> None:
    resp = await client.post(f"/v1/calls/{CALL}/confirm", json={"agent_id": "agent-7"}, headers=bearer(KEY_A))
    assert resp.status == 200
    assert await resp.json() == {"call_id": CALL, "confirmed": True, "lead_id": "lead_1", "repeated": False}
    assert stub.calls[-1] == ("confirm", (CALL, "platform-a", "agent-7"))
    stub.confirm_result = ConfirmResult(ok=False, code="already_confirmed", lead_id="lead_1")
    resp = await client.post(f"/v1/calls/{CALL}/confirm", headers=bearer(KEY_A))
    assert resp.status == 200 and (await resp.json())["repeated"] is True


async def test_an_unexpected_failure_is_a_json_500_without_details(client: Client, stub: StubService) -> None:
    """A bug below the API must still answer in the documented error shape, and must not echo the
    exception text (internal details are for the partner's logs, not the platform)."""
    stub.error = RuntimeError("vault row 1234 of /var/lib/reffection/vault.sqlite is corrupt")
    resp = await client.post("/v1/calls", json=CALL_BODY, headers=bearer(KEY_A))
    assert resp.status == 500
    assert "vault" not in await resp.text()
    assert (await error_of(resp))[0] == 500


async def test_confirm_timeout_is_a_gateway_timeout(client: Client, stub: StubService) -> None:
    stub.error = CallError("late", code="confirm_timeout")
    resp = await client.post(f"/v1/calls/{CALL}/confirm", headers=bearer(KEY_A))
    assert await error_of(resp) == (504, "confirm_timeout")


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/nothing", 404, "not_found"),
    ("DELETE", "/v1/calls", 405, "method_not_allowed"),
])  # fmt: skip
async def test_routing_errors_are_json(client: Client, method: str, path: str, status: int, code: str) -> None:
    resp = await client.request(method, path, headers=bearer(KEY_A))
    assert await error_of(resp) == (status, code)


# ---- request validation --------------------------------------------------------------------------
BAD_BODIES: list[tuple[str, Any, int]] = [
    ("unknown field", json.dumps({**CALL_BODY, "number": NUMBER}), 400),
    ("token not a string", json.dumps({"token": 123, "campaign": "acme-winter"}), 400),
    ("campaign null", json.dumps({"token": TOKEN_A, "campaign": None}), 400),
    ("token a list", json.dumps({"token": [TOKEN_A], "campaign": "acme-winter"}), 400),
    ("missing campaign", json.dumps({"token": TOKEN_A}), 400),
    ("empty token", json.dumps({"token": "", "campaign": "acme-winter"}), 400),
    ("token too long", json.dumps({"token": "t" * 257, "campaign": "acme-winter"}), 400),
    ("not json", "token=abc&campaign=acme", 400),
    ("truncated json", '{"token": "abc", ', 400),
    ("json array", json.dumps([CALL_BODY]), 400),
    ("json string", json.dumps("token"), 400),
    ("bad utf-8", b'{"token": "\xff\xfe", "campaign": "x"}', 400),
    ("empty body", "", 400),
    ("too large", json.dumps({"token": "t" * 20_000, "campaign": "acme-winter"}), 413),
]


@pytest.mark.parametrize(("data", "status"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
async def test_place_call_body_is_validated(client: Client, stub: StubService, data: Any, status: int) -> None:
    resp = await client.post("/v1/calls", data=data, headers={**bearer(KEY_A), "Content-Type": "application/json"})
    code = (await error_of(resp))[1]
    assert resp.status == status and code in {"bad_request", "too_large"}
    assert NUMBER not in await resp.text()  # the message names fields, never echoes values
    assert stub.calls == []


@pytest.mark.parametrize("body", [{"agent_id": 7}, {"agent": "x"}, ["agent-7"]])
async def test_confirm_body_is_validated(client: Client, stub: StubService, body: Any) -> None:
    resp = await client.post(f"/v1/calls/{CALL}/confirm", json=body, headers=bearer(KEY_A))
    assert await error_of(resp) == (400, "bad_request")
    assert stub.calls == []


async def test_optout_relays_token_and_audience(client: Client) -> None:
    resp = await client.post("/v1/optout", json={"token": TOKEN_B}, headers=bearer(KEY_B))
    assert resp.status == 200 and await resp.json() == {"token": TOKEN_B, "dnc": True}
    assert client.opted == [(TOKEN_B, "platform-b")]  # type: ignore[attr-defined]


# ---- health and metrics --------------------------------------------------------------------------
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?|[+-]Inf|NaN)$'
)


async def test_metrics_is_prometheus_text(client: Client, stub: StubService) -> None:
    stub.metrics.calls_started["acme-winter"] += 2
    stub.metrics.calls_ended[("ended", "declined")] += 1
    stub.metrics.event_latency.observe(0.003)
    stub.metrics.gauges["reffection_active_calls"] = lambda: 3.0
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name not in typed, f"{name} typed twice"
            typed[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            m = SAMPLE.match(line)
            assert m, f"not a Prometheus sample line: {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", m["name"])
            assert m["name"] in typed or family in typed, f"sample before its TYPE: {line!r}"
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    assert samples['reffection_calls_started_total{campaign="acme-winter"}'] == 2
    assert samples['reffection_calls_ended_total{state="ended",reason="declined"}'] == 1
    assert samples["reffection_active_calls"] == 3
    assert samples['reffection_event_handling_seconds_bucket{le="0.005"}'] == 1
    assert samples['reffection_event_handling_seconds_bucket{le="+Inf"}'] == 1
    assert typed["reffection_event_handling_seconds"] == "histogram"


async def test_healthz_reports_each_part(stub: StubService) -> None:
    parts = {"ari": True, "ami": True}
    app = create_app(cast(CallService, stub), API_KEYS, health=lambda: dict(parts))
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/healthz")
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
        parts["ami"] = False
        resp = await c.get("/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "degraded" and body["ami"] == "down"


# ---- against the real call service ---------------------------------------------------------------
class Recorder:
    """Makes API requests and keeps every response body for the PII sweep."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.bodies: list[str] = []

    async def __call__(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.h.api.request(method, path, json=body, headers=bearer(key))
        text = await resp.text()
        self.bodies.append(text)
        return resp.status, json.loads(text) if text else None


async def test_another_audience_sees_a_missing_call(tmp_path: Path) -> None:
    async with harness(tmp_path, api=True) as h:
        rec = Recorder(h)
        status, body = await rec("POST", "/v1/calls", KEY_A, {"token": TOKEN_A, "campaign": "acme-winter"})
        assert status == 202
        call_id = body["call_id"]
        missing = "c" + "0" * 20
        for suffix, method in (("", "GET"), ("/confirm", "POST"), ("/hangup", "POST")):
            got = await rec(method, f"/v1/calls/{call_id}{suffix}", KEY_B)
            ref = await rec(method, f"/v1/calls/{missing}{suffix}", KEY_B)
            assert got[0] == ref[0] == 404
            assert got[1]["error"]["code"] == ref[1]["error"]["code"] == "unknown_call"
            assert got[1]["error"]["message"].replace(call_id, "X") == ref[1]["error"]["message"].replace(missing, "X")
        assert h.service.active_calls == 1  # B's hangup did nothing
        status, body = await rec("GET", f"/v1/calls/{call_id}", KEY_A)
        assert status == 200 and body["call_id"] == call_id and body["end_reason"] is None
        # B cannot use A's campaign, nor A's token on its own campaign
        status, body = await rec("POST", "/v1/calls", KEY_B, {"token": TOKEN_B, "campaign": "acme-winter"})
        assert (status, body["error"]["code"]) == (422, "unknown_campaign")
        status, body = await rec("POST", "/v1/calls", KEY_B, {"token": TOKEN_A, "campaign": "beta-spring"})
        assert (status, body["error"]["code"]) == (422, "wrong_audience")
        assert not any(contains_number(b) for b in rec.bodies)


async def next_state_event(resp: ClientResponse) -> dict[str, Any]:
    """The next ``call.state`` event on an SSE stream (comments and blank lines skipped)."""
    async with asyncio.timeout(WAIT):
        event = None
        while True:
            line = (await resp.content.readline()).decode()
            assert line, "stream ended"
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: "):
                assert event == "call.state"
                data: dict[str, Any] = json.loads(line[6:])
                return data


async def open_stream(h: Harness, key: str) -> ClientResponse:
    resp = await h.api.get("/v1/events", headers=bearer(key))
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    async with asyncio.timeout(WAIT):
        assert (await resp.content.readline()).startswith(b": stream open")  # subscribed by now
    return resp


async def test_event_stream_carries_only_the_callers_audience(tmp_path: Path) -> None:
    async with harness(tmp_path, api=True) as h:
        stream_a, stream_b = await open_stream(h, KEY_A), await open_stream(h, KEY_B)
        call_a = await h.place()
        first = await next_state_event(stream_a)
        assert first == {**first, "type": "call.state", "call_id": call_a, "token": TOKEN_A,
                         "campaign": "acme-winter", "state": "dialing", "old_state": "created"}  # fmt: skip
        assert "audience" not in first
        await h.originated(f"{call_a}-s")
        await h.fake.gone(f"{call_a}-s", 17)
        assert (await next_state_event(stream_a))["state"] == "failed"
        await h.finished(call_a)
        # every event of A's call was published before B's call exists: B's first event is its own
        call_b = await h.place(TOKEN_B, "beta-spring", "platform-b")
        got_b = await next_state_event(stream_b)
        assert (got_b["call_id"], got_b["state"]) == (call_b, "dialing")
        call_a2 = await h.place()
        assert (await next_state_event(stream_a))["call_id"] == call_a2  # not B's call
        stream_a.close()
        stream_b.close()


async def test_no_response_ever_contains_the_number(tmp_path: Path) -> None:
    """A whole consented call through the API: every body, the SSE stream, health and metrics."""
    async with harness(tmp_path, api=True) as h:
        rec = Recorder(h)
        stream = await open_stream(h, KEY_A)
        status, body = await rec("POST", "/v1/calls", KEY_A, {"token": TOKEN_A, "campaign": "acme-winter"})
        call_id = body["call_id"]
        steps: list[Callable[[], Any]] = [
            lambda: h.to_consent_question(call_id),
            lambda: h.fake.press(f"{call_id}-s", "1"),
        ]
        for step in steps:
            await step()
            await rec("GET", f"/v1/calls/{call_id}", KEY_A)
        status, body = await rec("POST", f"/v1/calls/{call_id}/confirm", KEY_A)
        assert status == 409  # not bridged yet
        await h.originated(f"{call_id}-a")
        await h.fake.answer(f"{call_id}-a")
        await h.finish(await h.play(f"{call_id}-a", 1))
        await h.fake.wait_request(lambda r: r.path == f"/ari/bridges/{call_id}-b/addChannel")
        status, body = await rec("POST", f"/v1/calls/{call_id}/confirm", KEY_A, {"agent_id": "agent-1"})
        assert status == 200 and body["lead_id"] == f"lead_{call_id}"
        assert h.partner.leads[0].number_e164 == NUMBER  # the lead has it; the platform does not
        await rec("POST", f"/v1/calls/{call_id}/hangup", KEY_A)
        await h.finished(call_id)
        await rec("GET", f"/v1/calls/{call_id}", KEY_A)
        await rec("POST", "/v1/calls", KEY_A, {"token": TOKEN_A, "campaign": "acme-winter", "x": NUMBER})
        stream_text = []
        while True:
            event = await next_state_event(stream)
            stream_text.append(json.dumps(event))
            if event["state"] == "ended":
                break
        stream.close()
        for path in ("/metrics", "/healthz"):
            rec.bodies.append(await (await h.api.get(path)).text())
        everything = rec.bodies + stream_text
        assert len(everything) >= 10
        leaks = [b for b in everything if contains_number(b)]
        assert leaks == []

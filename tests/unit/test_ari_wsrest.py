"""REST over the event WebSocket (``AriConfig.rest_over_websocket``) against the fake ARI server.

What must hold: requests go as RESTRequest frames while the socket is up, responses are matched by id
and never reach listeners, events keep their order, errors are the same typed exceptions as on HTTP,
a pending request fails with ConnectionLost when the socket drops or the timeout passes, and HTTP
carries the requests the socket cannot (disconnected, reconnecting, from the reader task, binary).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reffection_ari.ari import (
    AriClient,
    AriConfig,
    ClientDisconnected,
    ConnectionLost,
    Event,
    NotFound,
    NotInStasis,
    ServerError,
    StasisStart,
)
from reffection_ari.ari.wsrest import WsRest, filter_types, parse_response
from tests.fake_ari import FakeAri

APP = "unit-wsrest"


def config(fake: FakeAri, **kw: Any) -> AriConfig:
    kw.setdefault("rest_over_websocket", True)
    return AriConfig(base_url=fake.url, username=fake.username, password=fake.password, app=APP, **kw)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as f:
        yield f


@pytest.fixture
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    c = AriClient(config(fake))
    await c.connect()
    yield c
    await c.close()


def vias(fake: FakeAri) -> list[str]:
    return [r.via for r in fake.requests]


# ------------------------------------------------------------------ sans-IO part


def test_frame_has_relative_uri_query_strings_and_string_body() -> None:
    async def build() -> dict[str, Any]:
        w = WsRest(prefix="p")
        rid, frame, fut = w.start("POST", "/channels", {"endpoint": "Local/s@x", "app": "a"}, {"variables": {}})
        fut.cancel()
        assert rid == "p-1"
        doc: dict[str, Any] = json.loads(frame)
        return doc

    doc = asyncio.run(build())
    assert doc["type"] == "RESTRequest"
    assert doc["uri"] == "channels"  # a leading "/" is a 405 on Asterisk 22.10
    assert doc["query_strings"] == [{"name": "endpoint", "value": "Local/s@x"}, {"name": "app", "value": "a"}]
    assert doc["content_type"] == "application/json"
    assert json.loads(doc["message_body"]) == {"variables": {}}


def test_parse_response_rejects_events_that_mention_the_word() -> None:
    ev = json.dumps({"type": "ChannelVarset", "variable": "X", "value": "RESTResponse"})
    assert parse_response(ev) is None
    assert parse_response("not json RESTResponse") is None
    resp = parse_response('{"type":"RESTResponse","request_id":"r","status_code":204,"reason_phrase":"No Content"}')
    assert resp is not None and (resp.request_id, resp.status, resp.body) == ("r", 204, None)


def test_filter_types_adds_rest_response_once() -> None:
    assert filter_types(["StasisStart"]) == ["StasisStart", "RESTResponse"]
    assert filter_types(["RESTResponse", "StasisEnd"]) == ["RESTResponse", "StasisEnd"]
    assert filter_types([]) == []  # an empty allowed list means "no filter": leave it empty


# ------------------------------------------------------------------ client over the fake


async def test_requests_go_over_the_socket(fake: FakeAri, client: AriClient) -> None:
    info = await client.asterisk.info()
    ch = await client.channels.originate("Local/s@x", channel_id="c1", variables={"V": "1"})
    assert info.version == "22.0.0-fake"
    assert ch.id == "c1"
    assert vias(fake) == ["ws", "ws"]
    post = fake.requests_to("POST", "/ari/channels")[0]
    assert post.query["channelId"] == "c1"
    assert post.body == {"variables": {"V": "1"}}
    await client.channels.hangup("c1")  # a 204 over the socket
    assert fake.requests[-1].via == "ws"


async def test_default_config_stays_on_http(fake: FakeAri) -> None:
    async with AriClient(config(fake, rest_over_websocket=False)) as c:
        await c.asterisk.info()
    assert vias(fake) == ["http"]
    assert fake.ws_rest_received == 0


async def test_errors_map_to_the_same_typed_exceptions(fake: FakeAri, client: AriClient) -> None:
    with pytest.raises(NotFound) as nf:
        await client.channels.get("nope")
    assert (nf.value.status, nf.value.message, nf.value.method) == (404, "Channel not found", "GET")
    fake.fail("POST", "/ari/channels", 409, "Channel not in Stasis application")
    with pytest.raises(NotInStasis):
        await client.channels.originate("Local/s@x", channel_id="c2")
    with pytest.raises(ServerError) as se:
        await client.channels.originate("Bad/x", channel_id="c3")
    assert se.value.message == "Allocation failed"
    assert set(vias(fake)) == {"ws"}


async def test_responses_are_not_events_and_events_keep_order(fake: FakeAri, client: AriClient) -> None:
    seen: list[Event] = []
    c9 = asyncio.Event()

    def listener(ev: Event) -> None:
        seen.append(ev)
        if ev.channel_ids() == ("c9",):
            c9.set()

    client.add_listener(listener)
    with client.subscribe(channel_id="c1") as sub:
        await client.channels.originate("Local/s@x", channel_id="c1")
        # The fake sends StasisStart before the response, as Asterisk does: it is already queued.
        assert sub.pending() == 1
        assert isinstance(await sub.get(timeout=1), StasisStart)
        await client.channels.hangup("c1")
        types = [(await sub.get(timeout=1)).type for _ in range(3)]
    assert types == ["ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"]
    assert [e.type for e in seen] == ["StasisStart", *types]
    # A stray response (unknown id) is swallowed too, and the next event still arrives.
    await fake.push_raw(json.dumps({"type": "RESTResponse", "request_id": "zz-9", "status_code": 200}))
    await fake.push({"type": "StasisStart", "channel": {"id": "c9", "name": "n", "state": "Up"}, "args": []})
    await asyncio.wait_for(c9.wait(), 2)
    assert [e.type for e in seen][-1] == "StasisStart"
    assert all(e.type != "RESTResponse" for e in seen)
    assert client.malformed_events == 0


async def test_event_filter_lets_responses_through(fake: FakeAri) -> None:
    async with AriClient(config(fake, event_filter=("StasisStart", "StasisEnd"))) as c:
        assert fake.app_filter(APP) == {"StasisStart", "StasisEnd", "RESTResponse"}
        info = await c.asterisk.info()  # would time out if the filter swallowed the response
    assert info.version == "22.0.0-fake"
    assert fake.requests[-1].via == "ws"


async def test_pending_request_fails_when_socket_drops(fake: FakeAri) -> None:
    c = AriClient(config(fake), sleep=lambda _d: asyncio.sleep(0))
    await c.connect()
    try:
        fake.ws_rest_hold = True
        task = asyncio.create_task(c.asterisk.info())
        await fake.wait_ws_rest(1)
        await fake.drop()
        with pytest.raises(ConnectionLost) as info:
            await asyncio.wait_for(task, 2)
        assert info.value.path == "/asterisk/info"
    finally:
        await c.close()


async def test_pending_request_times_out(fake: FakeAri) -> None:
    async with AriClient(config(fake, request_timeout=0.05)) as c:
        fake.ws_rest_hold = True
        with pytest.raises(ConnectionLost) as info:
            await c.asterisk.info()
        assert "TimeoutError" in info.value.message
        fake.ws_rest_hold = False
        assert (await c.asterisk.info()).version == "22.0.0-fake"  # the late answer did not confuse it


async def test_close_fails_pending_requests(fake: FakeAri) -> None:
    c = AriClient(config(fake))
    await c.connect()
    fake.ws_rest_hold = True
    task = asyncio.create_task(c.asterisk.info())
    await fake.wait_ws_rest(1)
    await c.close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(task, 2)


async def test_while_reconnecting_requests_fall_back_to_http(fake: FakeAri) -> None:
    gate = asyncio.Event()
    backing_off = asyncio.Event()

    async def sleep(_delay: float) -> None:
        backing_off.set()
        await gate.wait()

    c = AriClient(config(fake), sleep=sleep)
    await c.connect()
    try:
        await fake.drop()
        await asyncio.wait_for(backing_off.wait(), 2)
        assert not c.connected
        assert (await c.asterisk.info()).version == "22.0.0-fake"
        assert fake.requests[-1].via == "http"
        gate.set()
    finally:
        await c.close()


async def test_awaited_listener_request_uses_http_not_deadlock(fake: FakeAri, client: AriClient) -> None:
    done = asyncio.Event()
    results: list[str] = []

    async def listener(ev: Event) -> None:
        if isinstance(ev, StasisStart):
            results.append((await client.channels.get(ev.channel.id)).id)
            done.set()

    client.add_listener(listener)
    await client.channels.originate("Local/s@x", channel_id="c1")
    await asyncio.wait_for(done.wait(), 2)
    assert results == ["c1"]
    assert fake.requests_to("GET", "/ari/channels/c1")[0].via == "http"
    await client.channels.hangup("c1")


async def test_binary_results_stay_on_http(fake: FakeAri, client: AriClient) -> None:
    fake.stored_recordings["r1"] = b"RIFF\x00\x01"
    assert await client.recordings.file("r1") == b"RIFF\x00\x01"
    assert fake.requests[-1].via == "http"


async def test_reconnected_socket_carries_requests_again(fake: FakeAri) -> None:
    seen: list[str] = []
    c = AriClient(config(fake), sleep=lambda _d: asyncio.sleep(0))
    reconnected = asyncio.Event()

    def listener(ev: Event) -> None:
        seen.append(ev.type)
        if ev.type == "ClientReconnected":
            reconnected.set()

    c.add_listener(listener)
    await c.connect()
    try:
        await fake.drop()
        await asyncio.wait_for(reconnected.wait(), 2)
        await c.asterisk.info()
        assert fake.requests[-1].via == "ws"
        assert seen == [ClientDisconnected.__name__, "ClientReconnected"]
    finally:
        await c.close()

"""REST over the ARI WebSocket (``AriConfig.rest_over_websocket``) against the real Asterisk 22 sandbox.

Proves what the fake can only mimic: Asterisk answers RESTRequest frames on ``/ari/events``, a call
can be driven end to end with no HTTP request at all, errors map to the same typed exceptions, the
event filter needs ``RESTResponse`` allowed (the client adds it), and events keep their order.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from reffection_ari.ari import (
    AriClient,
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    NotFound,
    PlaybackFinished,
    ServerError,
    StasisStart,
)
from reffection_ari.sandbox import Sandbox
from tests.asterisk.test_ari_calls import SUBSCRIBER, ari_config, assert_no_channels_left, collect, hangup_and_wait


@pytest.fixture
async def wsari(sandbox: Sandbox, ari_app: str) -> AsyncIterator[AriClient]:
    client = AriClient(ari_config(sandbox, ari_app, rest_over_websocket=True))
    await client.connect()
    try:
        yield client
        await assert_no_channels_left(client)
    finally:
        await client.close()


async def test_call_driven_without_http(wsari: AriClient) -> None:
    seen: list[Event] = []
    wsari.add_listener(seen.append)
    cid = f"{wsari.app}-ws"
    info = await wsari.asterisk.info()
    assert info.version.startswith("22.")
    with wsari.subscribe(channel_id=cid) as sub:
        ch = await wsari.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw", app_args=["call", "7"])
        assert ch.id == cid
        start = (await collect(sub, StasisStart))[StasisStart]
        assert isinstance(start, StasisStart) and start.args == ["call", "7"]
        pb = await wsari.channels.play(cid, "sound:hello-world", playback_id=f"{cid}-pb")
        assert pb.id == f"{cid}-pb"
        got = await collect(sub, PlaybackFinished, ChannelDtmfReceived)
        fin, dtmf = got[PlaybackFinished], got[ChannelDtmfReceived]
        assert isinstance(fin, PlaybackFinished) and fin.playback.state == "done"
        assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.digit == "1"
        assert (await wsari.channels.get(cid)).id == cid
        destroyed = await hangup_and_wait(wsari, sub, cid)
        assert destroyed.cause == 16
    assert wsari.http_requests == 0
    assert wsari.ws_requests == 5
    # In order, and no response leaked into the event stream.
    mine = [e.type for e in seen if cid in e.channel_ids() or f"{cid}-pb" in e.playback_ids()]
    order = ["StasisStart", "PlaybackStarted", "PlaybackFinished", "StasisEnd", "ChannelDestroyed"]
    assert [t for t in mine if t in order] == order
    assert all(e.type != "RESTResponse" for e in seen)
    # Not asserted: timestamps in delivery order. Asterisk stamps an event in the thread that raises it,
    # so events from different threads (playback, channel) may arrive a millisecond out of stamp order.


async def test_errors_map_like_http(wsari: AriClient) -> None:
    with pytest.raises(NotFound) as nf:
        await wsari.channels.get(f"{wsari.app}-nope")
    assert nf.value.status == 404 and nf.value.message == "Channel not found"
    with pytest.raises(ServerError) as se:
        await wsari.channels.originate("PJSIP/nosuchendpoint-xyz", channel_id=f"{wsari.app}-bad")
    assert se.value.status == 500
    assert wsari.http_requests == 0 and wsari.ws_requests == 2


async def test_event_filter_allows_responses(sandbox: Sandbox, ari_app: str) -> None:
    allowed = ["StasisStart", "StasisEnd", "ChannelDestroyed"]
    client = AriClient(ari_config(sandbox, ari_app, event_filter=allowed, rest_over_websocket=True))
    await client.connect()  # the filter itself goes over HTTP: the reader is not reading yet
    seen: list[str] = []
    client.add_listener(lambda ev: seen.append(ev.type))
    try:
        app = await client.applications.get()  # over the socket: would time out without RESTResponse
        assert sorted(e["type"] for e in app.events_allowed) == sorted([*allowed, "RESTResponse"])
        cid = f"{ari_app}-f"
        with client.subscribe(channel_id=cid) as sub:
            await client.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw")
            await collect(sub, StasisStart)
            ev = await hangup_and_wait(client, sub, cid)
            assert isinstance(ev, ChannelDestroyed)
        assert client.ws_requests == 3 and client.http_requests == 1
        assert set(seen) <= set(allowed)
        await assert_no_channels_left(client)
    finally:
        with contextlib.suppress(Exception):
            await client.close()

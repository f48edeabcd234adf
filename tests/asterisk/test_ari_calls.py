"""The ARI client against the real Asterisk sandbox: Local and PJSIP calls, playback, DTMF, bridges,
the event filter, ApplicationReplaced, and the error mapping of real failures.

Every resource id starts with the test's unique app name; after each test no channel of the app may
remain (the ``ari`` fixture asserts it, after hanging up leftovers so one failure does not cascade).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from reffection_ari.ari import (
    AriClient,
    AriConfig,
    BadRequest,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ClientReconnected,
    Conflict,
    Event,
    NotFound,
    NotInStasis,
    PlaybackFinished,
    ServerError,
    StasisEnd,
    StasisStart,
    Subscription,
    Unauthorized,
)
from reffection_ari.sandbox import Sandbox, SippUAS

SUBSCRIBER = "Local/s@subscriber"
AGENT = "Local/s@agent"


def ari_config(sandbox: Sandbox, app: str, **kw: Any) -> AriConfig:
    return AriConfig(
        base_url=sandbox.ari_url,
        username=sandbox.ari_user,
        password=sandbox.ari_password,
        app=app,
        reconnect_initial=0.2,
        reconnect_max=1.0,
        **kw,
    )


async def app_channels(client: AriClient) -> list[Channel]:
    app = client.app
    return [c for c in await client.channels.list() if c.id.startswith(app) or c.in_app(app)]


async def assert_no_channels_left(client: AriClient) -> None:
    """Wait (bounded) for the app's channels to go; hang up and fail if some stay."""
    deadline = asyncio.get_running_loop().time() + 15.0
    left = await app_channels(client)
    while left and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)  # polling Asterisk's state with a deadline, not synchronising
        left = await app_channels(client)
    for ch in left:
        with contextlib.suppress(NotFound):
            await client.channels.hangup(ch.id)
    assert not left, f"channels left in app: {[c.id for c in left]}"


@pytest.fixture
async def ari(sandbox: Sandbox, ari_app: str) -> AsyncIterator[AriClient]:
    client = AriClient(ari_config(sandbox, ari_app))
    await client.connect()
    try:
        yield client
        await assert_no_channels_left(client)
    finally:
        await client.close()


async def collect(sub: Subscription, *wanted: type[Event], within: float = 10.0) -> dict[type[Event], Event]:
    """Read ``sub`` until one event of each wanted type has arrived (any order); returns the first of each."""
    got: dict[type[Event], Event] = {}
    async with asyncio.timeout(within):
        while len(got) < len(wanted):
            ev = await sub.get()
            for cls in wanted:
                if isinstance(ev, cls) and cls not in got:
                    got[cls] = ev
    return got


async def hangup_and_wait(client: AriClient, sub: Subscription, channel_id: str) -> ChannelDestroyed:
    await client.channels.hangup(channel_id)
    got = await collect(sub, StasisEnd, ChannelDestroyed)
    ev = got[ChannelDestroyed]
    assert isinstance(ev, ChannelDestroyed)
    return ev


async def test_asterisk_info(ari: AriClient) -> None:
    info = await ari.asterisk.info()
    assert info.version.startswith("22.")
    # Debian's build announces a recording's end (TestEvent MIXMONITOR_END); the call service reads this.
    assert "TEST_FRAMEWORK" in info.build_options


async def test_local_call_play_dtmf_hangup(ari: AriClient) -> None:
    cid = f"{ari.app}-sub"
    with ari.subscribe(channel_id=cid) as sub:
        ch = await ari.channels.originate(
            SUBSCRIBER, channel_id=cid, other_channel_id=f"{cid}-2", formats="ulaw", app_args=["call", "42"]
        )
        assert ch.id == cid
        start = (await collect(sub, StasisStart))[StasisStart]
        assert isinstance(start, StasisStart) and start.args == ["call", "42"]
        pb = await ari.channels.play(cid, "sound:hello-world", playback_id=f"{cid}-pb1")
        assert pb.id == f"{cid}-pb1"
        # the dialplan sends DTMF 1 after 1 s, during the ~1.5 s prompt: both must arrive
        got = await collect(sub, PlaybackFinished, ChannelDtmfReceived)
        fin, dtmf = got[PlaybackFinished], got[ChannelDtmfReceived]
        assert isinstance(fin, PlaybackFinished) and fin.playback.state == "done"
        assert fin.playback.id == f"{cid}-pb1"
        assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.digit == "1"
        destroyed = await hangup_and_wait(ari, sub, cid)
        assert destroyed.cause == 16


async def test_missing_sound_finishes_failed(ari: AriClient) -> None:
    cid = f"{ari.app}-miss"
    with ari.subscribe(channel_id=cid) as sub:
        await ari.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw")
        await collect(sub, StasisStart)
        await ari.channels.play(cid, "sound:no-such-prompt-xyz", playback_id=f"{cid}-pb")
        fin = (await collect(sub, PlaybackFinished))[PlaybackFinished]
        assert isinstance(fin, PlaybackFinished) and fin.playback.state == "failed"
        await hangup_and_wait(ari, sub, cid)


async def test_bridge_two_channels(ari: AriClient) -> None:
    a, b, br = f"{ari.app}-a", f"{ari.app}-b", f"{ari.app}-br"
    with ari.subscribe(channel_id=[a, b], bridge_id=br) as sub:
        await ari.channels.originate(SUBSCRIBER, channel_id=a, formats="ulaw", variables={"HOLD": "20"})
        await ari.channels.originate(AGENT, channel_id=b, formats="ulaw", variables={"HOLD": "20"})
        started: set[str] = set()
        async with asyncio.timeout(10):
            while started != {a, b}:
                ev = await sub.get()
                if isinstance(ev, StasisStart):
                    started.add(ev.channel.id)
        bridge = await ari.bridges.create(br, type="mixing", name="t")
        assert bridge.id == br
        await ari.bridges.add_channel(br, [a, b])
        entered: set[str] = set()
        async with asyncio.timeout(10):
            while entered != {a, b}:
                ev = await sub.get()
                if isinstance(ev, ChannelEnteredBridge) and ev.channel is not None:
                    entered.add(ev.channel.id)
        assert set((await ari.bridges.get(br)).channels) == {a, b}
        await ari.bridges.destroy(br)
        await ari.channels.hangup(a)
        await ari.channels.hangup(b)
        gone: set[str] = set()
        async with asyncio.timeout(10):
            while gone != {a, b}:
                ev = await sub.get()
                if isinstance(ev, ChannelDestroyed):
                    gone.add(ev.channel.id)
    with pytest.raises(NotFound):
        await ari.bridges.get(br)


async def test_event_filter_limits_events(sandbox: Sandbox, ari_app: str) -> None:
    allowed = ["StasisStart", "StasisEnd", "ChannelDtmfReceived", "PlaybackFinished", "ChannelDestroyed"]
    client = AriClient(ari_config(sandbox, ari_app, event_filter=allowed))
    await client.connect()
    seen: list[str] = []
    client.add_listener(lambda ev: seen.append(ev.type))
    try:
        app = await client.applications.get()
        assert sorted(e["type"] for e in app.events_allowed) == sorted(allowed)
        cid = f"{ari_app}-f"
        with client.subscribe(channel_id=cid) as sub:
            await client.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw")
            await collect(sub, StasisStart)
            await client.channels.play(cid, "sound:hello-world", playback_id=f"{cid}-pb")
            await collect(sub, PlaybackFinished, ChannelDtmfReceived)
            await hangup_and_wait(client, sub, cid)
        assert set(seen) <= set(allowed)
        assert "PlaybackStarted" not in seen and "ChannelStateChange" not in seen
        await assert_no_channels_left(client)
    finally:
        await client.close()


async def test_application_replaced_reconnects(sandbox: Sandbox, ari: AriClient) -> None:
    token = base64.b64encode(f"{sandbox.ari_user}:{sandbox.ari_password}".encode()).decode()
    url = f"{sandbox.ari_url}/ari/events"
    with ari.subscribe(types={"ClientDisconnected", "ClientReconnected"}) as life:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http,
            http.ws_connect(url, params={"app": ari.app, "subscribeAll": "false"}) as thief,
        ):
            down = await life.get(timeout=15)
            assert down.type == "ClientDisconnected" and getattr(down, "reason", "") == "application_replaced"
            assert isinstance(await life.get(timeout=15), ClientReconnected)
            # our reconnect took the app back: the other socket is told so
            msg = await asyncio.wait_for(thief.receive(), 15)
            assert json.loads(msg.data)["type"] == "ApplicationReplaced"
    assert ari.connected
    cid = f"{ari.app}-after"
    with ari.subscribe(channel_id=cid) as sub:
        await ari.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw")
        await collect(sub, StasisStart)
        await hangup_and_wait(ari, sub, cid)


async def test_error_mapping(ari: AriClient) -> None:
    with pytest.raises(NotFound) as nf:
        await ari.channels.get(f"{ari.app}-nope")
    assert nf.value.status == 404 and nf.value.code == "ari_not_found"
    with pytest.raises(NotFound):
        await ari.channels.hangup(f"{ari.app}-nope")

    with pytest.raises(ServerError) as se:
        await ari.channels.originate("PJSIP/15551230001@no-such-endpoint", channel_id=f"{ari.app}-bad")
    assert se.value.status == 500
    assert "15551230001" not in str(se.value)

    with pytest.raises(BadRequest):
        await ari.channels.originate(SUBSCRIBER, channel_id=f"{ari.app}-noapp", app="", extension=None)

    cid = f"{ari.app}-dup"
    with ari.subscribe(channel_id=cid) as sub:
        await ari.channels.originate(SUBSCRIBER, channel_id=cid, other_channel_id=f"{cid}-2", formats="ulaw")
        await collect(sub, StasisStart)
        with pytest.raises(NotInStasis):  # the ;2 half runs the dialplan, not our app
            await ari.channels.answer(f"{cid}-2")
        with pytest.raises(Conflict):
            await ari.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw")
        with pytest.raises(Conflict):  # Asterisk's duplicate check is a prefix match: use new_id()
            await ari.channels.originate(SUBSCRIBER, channel_id=cid[:-1], formats="ulaw")
        await hangup_and_wait(ari, sub, cid)
    # the fixture then hangs up and reports any channel the 409 leaked


@pytest.mark.usefixtures("sip_peers")
async def test_pjsip_call_to_sipp_receives_rfc4733_dtmf(ari: AriClient) -> None:
    cid = f"{ari.app}-sip"
    async with SippUAS("subscriber_uas", port=15070):
        with ari.subscribe(channel_id=cid) as sub:
            await ari.channels.originate("PJSIP/15551230001@partner-trunk", channel_id=cid, formats="ulaw", timeout=15)
            await collect(sub, StasisStart, within=10)
            dtmf = (await collect(sub, ChannelDtmfReceived, within=10))[ChannelDtmfReceived]
            assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.digit == "1"
            await hangup_and_wait(ari, sub, cid)


async def test_socket_loss_resyncs_channels_still_in_app(ari: AriClient) -> None:
    """Pitfall 7: a call in Stasis survives a lost WebSocket; ClientReconnected lists it (no new
    StasisStart) and its later events (the dialplan's DTMF) arrive on the new socket."""
    cid = f"{ari.app}-keep"
    with ari.subscribe(channel_id=cid) as sub, ari.subscribe(types={"ClientReconnected"}) as life:
        await ari.channels.originate(SUBSCRIBER, channel_id=cid, formats="ulaw", variables={"DTMF_DELAY": "6"})
        await collect(sub, StasisStart)
        assert ari._ws is not None
        await ari._ws.close()  # lose the socket from our side; Asterisk keeps the call
        up = await life.get(timeout=15)
        assert isinstance(up, ClientReconnected)
        assert [c.id for c in up.channels] == [cid]
        dtmf = (await collect(sub, ChannelDtmfReceived))[ChannelDtmfReceived]
        assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.digit == "1"
        await hangup_and_wait(ari, sub, cid)


async def test_bad_password_is_unauthorized(sandbox: Sandbox, ari_app: str) -> None:
    client = AriClient(AriConfig(base_url=sandbox.ari_url, username=sandbox.ari_user, password="wrong", app=ari_app))
    with pytest.raises(Unauthorized) as info:
        await client.connect()
    assert info.value.status == 401 and not client.connected
    with pytest.raises(Unauthorized):
        await client.asterisk.info()
    await client.close()

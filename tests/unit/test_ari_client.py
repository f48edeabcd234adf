"""The client against the fake ARI server: REST, subscriptions, listener ordering, clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reffection_ari.ari import (
    AriClient,
    AriConfig,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ConnectionLost,
    Event,
    GenericEvent,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
    Unauthorized,
)
from tests.fake_ari import FakeAri

APP = "unit-app"


def config(fake: FakeAri, **kw: Any) -> AriConfig:
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


async def test_connect_sends_basic_auth_and_opens_socket(fake: FakeAri, client: AriClient) -> None:
    assert client.connected
    assert fake.ws_connects == 1
    info = await client.asterisk.info()
    assert info.version == "22.0.0-fake"


async def test_bad_password_raises_unauthorized(fake: FakeAri) -> None:
    c = AriClient(AriConfig(base_url=fake.url, username="user", password="wrong", app=APP))
    with pytest.raises(Unauthorized) as info:
        await c.connect()
    assert info.value.status == 401
    assert info.value.code == "ari_unauthorized"
    assert not c.connected
    await c.close()


async def test_unreachable_raises_connection_lost() -> None:
    f = FakeAri()
    await f.start()
    url = f.url
    await f.stop()
    c = AriClient(AriConfig(base_url=url, username="u", password="p", app=APP, request_timeout=2))
    with pytest.raises(ConnectionLost):
        await c.connect()
    await c.close()


async def test_subscribe_before_create_sees_stasis_start(fake: FakeAri, client: AriClient) -> None:
    # The fake pushes StasisStart before answering the POST, like Asterisk can.
    with client.subscribe(channel_id="c1") as sub:
        ch = await client.channels.originate("Local/s@subscriber", channel_id="c1", app_args=["x", "y"])
        assert ch.id == "c1"
        ev = await sub.get(timeout=2)
        assert isinstance(ev, StasisStart)
        assert ev.args == ["x", "y"]
    req = fake.requests_to("POST", "/ari/channels")[0]
    assert req.query["app"] == APP and req.query["channelId"] == "c1"


async def test_play_dtmf_hangup_flow(fake: FakeAri, client: AriClient) -> None:
    with client.subscribe(channel_id="c2") as sub:
        await client.channels.originate("Local/s@subscriber", channel_id="c2", formats="ulaw")
        await sub.wait_for(lambda e: isinstance(e, StasisStart), timeout=2)
        pb = await client.channels.play("c2", "sound:hello-world", playback_id="pb-c2")
        assert pb.id == "pb-c2"
        fin = await sub.wait_for(lambda e: isinstance(e, PlaybackFinished), timeout=2)
        assert isinstance(fin, PlaybackFinished) and fin.playback.state == "done"
        await fake.press("c2", "1")
        dtmf = await sub.wait_for(lambda e: isinstance(e, ChannelDtmfReceived), timeout=2)
        assert isinstance(dtmf, ChannelDtmfReceived) and dtmf.digit == "1"
        await client.channels.hangup("c2")
        end = await sub.wait_for(lambda e: isinstance(e, StasisEnd), timeout=2)
        assert end.channel_ids() == ("c2",)
        destroyed = await sub.wait_for(lambda e: isinstance(e, ChannelDestroyed), timeout=2)
        assert isinstance(destroyed, ChannelDestroyed) and destroyed.cause == 16
    assert fake.requests_to("DELETE", "/ari/channels/c2")[0].query == {"reason": "normal"}


async def test_subscription_filters_by_type_and_id(fake: FakeAri, client: AriClient) -> None:
    only_end = client.subscribe(channel_id="a", types={"StasisEnd"})
    other = client.subscribe(channel_id="b")
    bridge = client.subscribe(bridge_id="br")
    await client.channels.originate("Local/s@x", channel_id="a")
    await client.channels.originate("Local/s@x", channel_id="b")
    await client.bridges.create("br")
    await client.bridges.add_channel("br", ["a", "b"])
    await client.channels.hangup("a")
    assert (await only_end.get(timeout=2)).type == "StasisEnd"
    assert only_end.pending() == 0
    types_b = [(await other.get(timeout=2)).type for _ in range(2)]
    assert types_b == ["StasisStart", "ChannelEnteredBridge"]
    entered = [await bridge.get(timeout=2) for _ in range(2)]
    assert all(isinstance(e, ChannelEnteredBridge) for e in entered)
    assert [e.channel_ids() for e in entered] == [("a",), ("b",)]
    for s in (only_end, other, bridge):
        s.close()
    await client.channels.hangup("b")


async def test_get_times_out(client: AriClient) -> None:
    with client.subscribe(channel_id="nothing") as sub, pytest.raises(TimeoutError):
        await sub.get(timeout=0.05)


async def test_closed_subscription_raises_after_drain(fake: FakeAri, client: AriClient) -> None:
    sub = client.subscribe(channel_id="c3")
    await client.channels.originate("Local/s@x", channel_id="c3")
    sub.close()
    assert isinstance(await sub.get(timeout=1), StasisStart)  # queued before close: still readable
    with pytest.raises(ConnectionLost):
        await sub.get(timeout=1)
    await client.channels.hangup("c3")


async def test_order_preserved_under_load(fake: FakeAri, client: AriClient) -> None:
    n = 5000
    seen: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def listener(ev: Event) -> None:
        seen.append(int(ev.raw["seq"]))
        if len(seen) == n:
            done.set_result(None)

    client.add_listener(listener)
    sub = client.subscribe(channel_id="load")
    for i in range(n):
        await fake.push(
            {
                "type": "ChannelVarset",
                "variable": "SEQ",
                "value": str(i),
                "seq": i,
                "channel": {"id": "load" if i % 2 == 0 else "other"},
            }
        )
    await asyncio.wait_for(done, 10)
    assert seen == list(range(n))
    routed = [int((await sub.get(timeout=1)).raw["seq"]) for _ in range(n // 2)]
    assert routed == list(range(0, n, 2))
    assert sub.pending() == 0
    sub.close()


async def test_async_listener_awaited_in_order_and_errors_do_not_kill_reader(
    fake: FakeAri, client: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    async def slow(ev: Event) -> None:
        await asyncio.sleep(0)
        order.append(f"slow-{ev.raw['n']}")

    def boom(ev: Event) -> None:
        order.append(f"boom-{ev.raw['n']}")
        raise RuntimeError("listener bug")

    client.add_listener(slow)
    client.add_listener(boom)
    with client.subscribe(types={"Custom"}) as sub:
        for n in range(3):
            await fake.push({"type": "Custom", "n": n})
        for _ in range(3):
            assert isinstance(await sub.get(timeout=2), GenericEvent)
        # the subscription is fed before listeners: wait for the last listener call via another event
        await fake.push({"type": "Custom", "n": 3})
        await sub.get(timeout=2)
    assert order[:6] == ["slow-0", "boom-0", "slow-1", "boom-1", "slow-2", "boom-2"]
    assert "listener bug" in caplog.text
    assert client.connected


async def test_garbage_frames_are_skipped_not_fatal(
    fake: FakeAri, client: AriClient, caplog: pytest.LogCaptureFixture
) -> None:
    with client.subscribe(types={"Custom"}) as sub:
        await fake.push_raw("garbage 15551230001")
        await fake.push_raw('{"type": "StasisStart", "channel": {}}')
        await fake.push({"type": "Custom"})
        assert (await sub.get(timeout=2)).type == "Custom"
    assert client.malformed_events == 2
    assert "15551230001" not in caplog.text
    assert client.connected


async def test_rest_groups_round_trip(fake: FakeAri, client: AriClient) -> None:
    await client.channels.originate("Local/s@x", channel_id="v1", variables={"CALL_ID": "v1"})
    assert fake.requests_to("POST", "/ari/channels")[0].body == {"variables": {"CALL_ID": "v1"}}
    await client.channels.set_variable("v1", "FOO", "bar")
    assert await client.channels.get_variable("v1", "FOO") == "bar"
    assert [c.id for c in await client.channels.list()] == ["v1"]
    assert (await client.channels.get("v1")).state == "Up"
    await client.channels.answer("v1")
    await client.channels.ring("v1")
    await client.channels.ring_stop("v1")
    await client.channels.progress("v1")
    await client.channels.send_dtmf("v1", "12", between=100)
    await client.channels.continue_in_dialplan("v1", context="c", extension="s", priority=1)
    br = await client.bridges.create("b1", name="conf")
    assert br.bridge_type == "mixing" and br.name == "conf"
    await client.bridges.add_channel("b1", "v1")
    assert (await client.bridges.get("b1")).channels == ["v1"]
    assert [b.id for b in await client.bridges.list()] == ["b1"]
    await client.bridges.remove_channel("b1", "v1")
    await client.bridges.destroy("b1")
    app = await client.applications.get()
    assert app.channel_ids == ["v1"]
    fake.stored_recordings["r1"] = b"RIFF"
    assert (await client.recordings.get_stored("r1")).format == "wav"
    assert await client.recordings.file("r1") == b"RIFF"
    await client.recordings.delete_stored("r1")
    assert await client.endpoints.list() == []
    await client.channels.hangup("v1", reason="busy")
    assert fake.requests_to("DELETE", "/ari/channels/v1")[0].query == {"reason": "busy"}


async def test_event_filter_applied_on_connect(fake: FakeAri) -> None:
    c = AriClient(config(fake, event_filter=["StasisStart", "StasisEnd"]))
    await c.connect()
    try:
        assert fake.app_filter(APP) == {"StasisStart", "StasisEnd"}
        put = fake.requests_to("PUT", f"/ari/applications/{APP}/eventFilter")[0]
        assert put.body == {"allowed": [{"type": "StasisStart"}, {"type": "StasisEnd"}], "disallowed": []}
    finally:
        await c.close()


async def test_close_is_clean(fake: FakeAri) -> None:
    c = AriClient(config(fake))
    await c.connect()
    sub = c.subscribe(channel_id="x")
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await c.close()
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(waiter, 1)
        del c
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message) or "never awaited" in str(w.message)]
    assert all(t.get_name() != f"ari-reader-{APP}" for t in asyncio.all_tasks())


async def test_context_manager(fake: FakeAri) -> None:
    async with AriClient(config(fake)) as c:
        assert c.connected
    assert not c.connected
    with pytest.raises(ConnectionLost):
        await c.asterisk.info()

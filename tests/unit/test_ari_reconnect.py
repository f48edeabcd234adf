"""Connection loss and recovery against the fake ARI server, on a controllable clock (no real waits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from reffection_ari.ari import (
    ApplicationReplaced,
    AriClient,
    AriConfig,
    ClientDisconnected,
    ClientReconnected,
    Event,
)
from tests.fake_ari import FakeAri

APP = "rc-app"
LIFECYCLE = {"ClientDisconnected", "ClientReconnected"}


class Clock:
    """Stands in for ``asyncio.sleep`` in the reconnect loop: records delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.on_sleep: Callable[[int], Awaitable[None]] | None = None

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        if self.on_sleep is not None:
            await self.on_sleep(len(self.delays))
        await asyncio.sleep(0)


def config(fake: FakeAri, **kw: Any) -> AriConfig:
    return AriConfig(base_url=fake.url, username=fake.username, password=fake.password, app=APP, **kw)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as f:
        yield f


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_client(fake: FakeAri, clock: Clock, **kw: Any) -> tuple[AriClient, list[Event]]:
    c = AriClient(config(fake, **kw), sleep=clock.sleep, rng=lambda: 1.0)
    seen: list[Event] = []
    c.add_listener(seen.append)
    await c.connect()
    return c, seen


async def test_socket_drop_then_reconnected_with_channels(fake: FakeAri, clock: Clock) -> None:
    c, seen = await make_client(fake, clock)
    try:
        life = c.subscribe(types=LIFECYCLE)
        await c.channels.originate("Local/s@subscriber", channel_id="keep")
        await fake.drop()
        down = await life.get(timeout=2)
        assert isinstance(down, ClientDisconnected) and down.reason == "closed"
        up = await life.get(timeout=2)
        assert isinstance(up, ClientReconnected)
        assert [ch.id for ch in up.channels] == ["keep"]
        assert c.connected and c.reconnects == 1 and fake.ws_connects == 2
        assert clock.delays == [0.2]
        # events flow again, after the lifecycle events, in order
        with c.subscribe(types={"Custom"}) as sub:
            await fake.push({"type": "Custom"})
            await sub.get(timeout=2)
        assert [e.type for e in seen] == ["StasisStart", "ClientDisconnected", "ClientReconnected", "Custom"]
        await c.channels.hangup("keep")
    finally:
        await c.close()


async def test_abrupt_kill_is_detected(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock)
    try:
        with c.subscribe(types=LIFECYCLE) as life:
            fake.kill_connections()
            assert isinstance(await life.get(timeout=2), ClientDisconnected)
            assert isinstance(await life.get(timeout=2), ClientReconnected)
    finally:
        await c.close()


async def test_refused_connections_back_off_then_succeed(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock, reconnect_initial=0.2, reconnect_max=1.0)

    async def on_sleep(n: int) -> None:
        if n == 5:
            await fake.accept_connections()

    clock.on_sleep = on_sleep
    try:
        with c.subscribe(types=LIFECYCLE) as life:
            await fake.refuse_connections()
            assert isinstance(await life.get(timeout=2), ClientDisconnected)
            assert not c.connected
            assert isinstance(await life.get(timeout=5), ClientReconnected)
        # four refused attempts, then success; exponential, capped at reconnect_max
        assert clock.delays == [0.2, 0.4, 0.8, 1.0, 1.0]
        assert fake.ws_connects == 2
        assert c.connected
    finally:
        await c.close()


async def test_rejected_handshake_keeps_retrying(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock)

    async def on_sleep(n: int) -> None:
        if n == 3:
            fake.ws_status = None

    clock.on_sleep = on_sleep
    try:
        with c.subscribe(types=LIFECYCLE) as life:
            fake.ws_status = 503
            await fake.drop()
            assert isinstance(await life.get(timeout=2), ClientDisconnected)
            assert isinstance(await life.get(timeout=2), ClientReconnected)
        assert fake.ws_rejects == 2 and len(clock.delays) == 3
    finally:
        await c.close()


async def test_application_replaced_is_treated_as_lost(fake: FakeAri, clock: Clock) -> None:
    c, seen = await make_client(fake, clock)
    try:
        with c.subscribe(types=LIFECYCLE) as life:
            await fake.replace_app(APP)
            down = await life.get(timeout=2)
            assert isinstance(down, ClientDisconnected) and down.reason == "application_replaced"
            assert isinstance(await life.get(timeout=2), ClientReconnected)
        assert isinstance(seen[0], ApplicationReplaced)
        assert [e.type for e in seen] == ["ApplicationReplaced", "ClientDisconnected", "ClientReconnected"]
        assert fake.ws_connects == 2
        with c.subscribe(types={"Custom"}) as sub:
            assert await fake.push({"type": "Custom"}, APP)
            await sub.get(timeout=2)
    finally:
        await c.close()


async def test_event_filter_reapplied_after_reconnect(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock, event_filter=["StasisStart", "Custom"])
    try:
        assert fake.app_filter(APP) == {"StasisStart", "Custom"}
        with c.subscribe(types=LIFECYCLE) as life:
            await fake.drop()
            await life.get(timeout=2)
            await life.get(timeout=2)
        assert fake.app_filter(APP) == {"StasisStart", "Custom"}
        assert len(fake.requests_to("PUT", f"/ari/applications/{APP}/eventFilter")) == 2
        with c.subscribe() as sub:
            assert not await fake.push({"type": "Filtered"})
            assert await fake.push({"type": "Custom"})
            assert (await sub.get(timeout=2)).type == "Custom"
    finally:
        await c.close()


async def test_filter_failure_after_reconnect_is_retried(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock, event_filter=["StasisStart"])
    try:
        fake.fail("PUT", f"/ari/applications/{APP}/eventFilter", 500, "Internal Server Error")
        with c.subscribe(types=LIFECYCLE) as life:
            await fake.drop()
            await life.get(timeout=2)
            assert isinstance(await life.get(timeout=2), ClientReconnected)
        assert len(clock.delays) == 2 and fake.ws_connects == 3
        assert fake.app_filter(APP) == {"StasisStart"}
    finally:
        await c.close()


async def test_close_during_backoff_is_clean(fake: FakeAri) -> None:
    entered = asyncio.Event()

    async def slow_sleep(delay: float) -> None:
        entered.set()
        await asyncio.sleep(3600)

    c = AriClient(config(fake), sleep=slow_sleep)
    await c.connect()
    await fake.drop()
    await asyncio.wait_for(entered.wait(), 2)
    await asyncio.wait_for(c.close(), 2)
    assert not c.connected


def test_backoff_jitter_bounds() -> None:
    cfg = AriConfig(base_url="http://x", username="u", password="p", app="a", reconnect_initial=0.2, reconnect_max=5.0)
    low = AriClient(cfg, rng=lambda: 0.0)
    high = AriClient(cfg, rng=lambda: 1.0)
    assert [low._backoff(n) for n in range(3)] == [0.1, 0.2, 0.4]
    assert [high._backoff(n) for n in (0, 1, 10, 100)] == [0.2, 0.4, 5.0, 5.0]


async def test_repeated_replacement_backs_off_instead_of_flapping(fake: FakeAri, clock: Clock) -> None:
    c, _ = await make_client(fake, clock, reconnect_initial=0.2, reconnect_max=1.0)
    try:
        with c.subscribe(types={"ClientReconnected"}) as up:
            for _ in range(4):
                await fake.replace_app(APP)
                await up.get(timeout=2)
        assert clock.delays == [0.2, 0.4, 0.8, 1.0]
        with c.subscribe(types={"ClientReconnected"}) as up:
            await fake.drop()  # an ordinary loss resets the streak
            await up.get(timeout=2)
        assert clock.delays[-1] == 0.2
    finally:
        await c.close()

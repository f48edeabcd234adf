"""HTTP status -> typed exception mapping, carried request details, and masking of dial strings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from reffection_ari.ari import (
    AriClient,
    AriConfig,
    AriError,
    BadRequest,
    Conflict,
    ConnectionLost,
    NotFound,
    NotInStasis,
    ServerError,
    Unauthorized,
    Unprocessable,
    new_id,
)
from reffection_ari.ari.errors import error_for_status, masked_query
from reffection_ari.errors import ReffectionError
from tests.fake_ari import FakeAri

APP = "err-app"
NUMBER = "15551230001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri() as f:
        yield f


@pytest.fixture
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    c = AriClient(AriConfig(base_url=fake.url, username=fake.username, password=fake.password, app=APP))
    await c.connect()
    yield c
    await c.close()


@pytest.mark.parametrize(
    ("status", "message", "cls", "code"),
    [
        (400, "Invalid parameter", BadRequest, "ari_bad_request"),
        (401, "Authentication required", Unauthorized, "ari_unauthorized"),
        (404, "Channel not found", NotFound, "ari_not_found"),
        (409, "Channel in use", Conflict, "ari_conflict"),
        (409, "Channel not in Stasis application", NotInStasis, "ari_not_in_stasis"),
        (422, "Bridge not in Stasis", Unprocessable, "ari_unprocessable"),
        (500, "Allocation failed", ServerError, "ari_server_error"),
        (503, "Service Unavailable", ServerError, "ari_server_error"),
        (418, "teapot", AriError, "ari_error"),
    ],
)
async def test_status_mapping(
    fake: FakeAri, client: AriClient, status: int, message: str, cls: type[AriError], code: str
) -> None:
    await client.channels.originate("Local/s@x", channel_id="m1")
    fake.fail("POST", "/ari/channels/m1/answer", status, message)
    with pytest.raises(AriError) as info:
        await client.channels.answer("m1")
    err = info.value
    assert type(err) is cls
    assert isinstance(err, ReffectionError)
    assert err.code == code
    assert (err.status, err.message, err.method, err.path) == (status, message, "POST", "/channels/m1/answer")
    assert str(err) == f"POST /channels/m1/answer -> {status}: {message}"


async def test_not_in_stasis_is_a_conflict() -> None:
    assert issubclass(NotInStasis, Conflict)


async def test_real_like_failures(fake: FakeAri, client: AriClient) -> None:
    with pytest.raises(NotFound) as nf:
        await client.channels.hangup("no-such-channel")
    assert nf.value.message == "Channel not found"
    await client.channels.originate("Local/s@x", channel_id="dup")
    with pytest.raises(Conflict):
        await client.channels.originate("Local/s@x", channel_id="dup")
    with pytest.raises(ServerError) as se:
        await client.channels.originate(f"Bad/{NUMBER}@trunk", channel_id="bad", caller_id=NUMBER)
    assert se.value.message == "Allocation failed"
    text = str(se.value) + repr(se.value)
    assert NUMBER not in text
    assert "endpoint=***" in text and "callerId=***" in text and "channelId=bad" in text
    await client.channels.hangup("dup")


async def test_non_json_error_body_is_not_echoed(fake: FakeAri, client: AriClient) -> None:
    fake.fail("GET", "/ari/asterisk/info", 500, "x")
    with pytest.raises(ServerError) as info:
        await client.asterisk.info()
    assert info.value.message == "x"
    err = error_for_status(502, "HTTP 502", method="GET", path="/p")
    assert isinstance(err, ServerError)


async def test_server_gone_is_connection_lost(fake: FakeAri, client: AriClient) -> None:
    await fake.refuse_connections()
    with pytest.raises(ConnectionLost) as info:
        await client.channels.originate(f"PJSIP/{NUMBER}@trunk", channel_id="gone")
    assert NUMBER not in str(info.value)
    assert info.value.code == "ari_connection_lost"


def test_masked_query() -> None:
    assert masked_query({"endpoint": "PJSIP/1555@t", "app": "a", "extension": "1555"}) == (
        "?endpoint=***&app=a&extension=***"
    )
    assert masked_query(None) == ""


async def test_channel_id_that_prefixes_a_live_one_conflicts(client: AriClient) -> None:
    """Mirrors Asterisk 22: the duplicate check is a prefix match, so ids must be fixed-length."""
    await client.channels.originate("Local/s@x", channel_id="call-90")
    with pytest.raises(Conflict):
        await client.channels.originate("Local/s@x", channel_id="call-9")
    a, b = new_id("call"), new_id("call")
    assert a != b and len(a) == len(b) and not b.startswith(a)
    await client.channels.originate("Local/s@x", channel_id=a)
    await client.channels.originate("Local/s@x", channel_id=b)
    for cid in ("call-90", a, b):
        await client.channels.hangup(cid)

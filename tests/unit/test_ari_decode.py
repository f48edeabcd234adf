"""Event and model decoding: typed fields, tolerance of unknown fields/types, rejection of garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reffection_ari.ari import (
    ApplicationReplaced,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ChannelHangupRequest,
    Dial,
    GenericEvent,
    MalformedEvent,
    PlaybackFinished,
    StasisStart,
    decode_event,
)
from reffection_ari.ari.models import AsteriskInfo, Channel

CHANNEL: dict[str, Any] = {
    "id": "call-1",
    "name": "PJSIP/partner-trunk-00000001",
    "state": "Up",
    "protocol_id": "abc",
    "caller": {"name": "Alice", "number": "15551230001"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {
        "context": "c",
        "exten": "15551230001",
        "priority": 1,
        "app_name": "Stasis",
        "app_data": "app,x",
    },
    "creationtime": "2026-01-01T00:00:00.000+0000",
    "language": "en",
    "some_future_field": {"nested": True},
}


def frame(**doc: Any) -> str:
    return json.dumps({"application": "app", "timestamp": "t", **doc})


def test_stasis_start_typed_fields_and_raw() -> None:
    ev = decode_event(frame(type="StasisStart", channel=CHANNEL, args=["a", "b"], unknown_top=1))
    assert isinstance(ev, StasisStart)
    assert ev.channel.id == "call-1"
    assert ev.args == ["a", "b"]
    assert ev.application == "app"
    assert ev.raw["unknown_top"] == 1
    assert ev.channel.caller.number == "15551230001"
    assert ev.channel.in_app("app") and not ev.channel.in_app("other")


def test_repr_hides_numbers() -> None:
    ev = decode_event(frame(type="Dial", peer=CHANNEL, dialstatus="ANSWER", dialstring="15551230001@partner-trunk"))
    assert isinstance(ev, Dial)
    assert ev.dialstatus == "ANSWER"
    assert ev.peer.id == "call-1"
    assert "15551230001" not in repr(ev)
    assert "5551230001" not in repr(Channel.from_json(CHANNEL))


def test_channel_events() -> None:
    d = decode_event(frame(type="ChannelDestroyed", channel=CHANNEL, cause=17, cause_txt="User busy"))
    assert isinstance(d, ChannelDestroyed) and d.cause == 17
    h = decode_event(frame(type="ChannelHangupRequest", channel=CHANNEL))
    assert isinstance(h, ChannelHangupRequest) and h.cause is None
    dt = decode_event(frame(type="ChannelDtmfReceived", channel=CHANNEL, digit="#", duration_ms=120))
    assert isinstance(dt, ChannelDtmfReceived) and dt.digit == "#" and dt.duration_ms == 120


def test_playback_finished_routes_to_target_channel() -> None:
    pb = {"id": "pb-1", "media_uri": "sound:x", "target_uri": "channel:call-1", "state": "failed"}
    ev = decode_event(frame(type="PlaybackFinished", playback=pb))
    assert isinstance(ev, PlaybackFinished)
    assert ev.playback.state == "failed"
    assert ev.playback_ids() == ("pb-1",)
    assert ev.channel_ids() == ("call-1",)


def test_bridge_event_ids() -> None:
    br = {"id": "br-1", "channels": ["call-1"], "whatever": 3}
    ev = decode_event(frame(type="ChannelEnteredBridge", bridge=br, channel=CHANNEL))
    assert isinstance(ev, ChannelEnteredBridge)
    assert ev.bridge_ids() == ("br-1",) and ev.channel_ids() == ("call-1",)
    assert ev.bridge.channels == ["call-1"]


def test_unknown_type_is_generic() -> None:
    ev = decode_event(frame(type="ChannelTalkingStarted2099", channel=CHANNEL, x=1))
    assert isinstance(ev, GenericEvent)
    assert ev.type == "ChannelTalkingStarted2099"
    assert ev.raw["x"] == 1


def test_application_replaced() -> None:
    assert isinstance(decode_event(frame(type="ApplicationReplaced")), ApplicationReplaced)


def test_minimal_channel_is_enough() -> None:
    ev = decode_event(frame(type="StasisEnd", channel={"id": "only-id"}))
    assert ev.channel_ids() == ("only-id",)


@pytest.mark.parametrize(
    "data",
    [
        "not json 15551230001",
        b"\xff\xfe",
        "[1, 2]",
        '"text"',
        "{}",
        '{"type": 5}',
        '{"type": "StasisStart"}',
        '{"type": "StasisStart", "channel": {"name": "no id"}}',
        '{"type": "ChannelDtmfReceived", "channel": {"id": "x"}}',
        '{"type": "ChannelDestroyed", "channel": {"id": "x"}, "cause": "abc"}',
        '{"type": "PlaybackFinished", "playback": []}',
    ],
)
def test_garbage_raises_malformed_without_content(data: str | bytes) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode_event(data)
    assert "1555" not in str(info.value)
    assert "length" in str(info.value)


def test_asterisk_info_reads_the_build_options() -> None:
    doc = {"system": {"version": "22.10.1", "entity_id": "02:42"}, "build": {"options": "OPTIONAL_API, TEST_FRAMEWORK"}}
    info = AsteriskInfo.from_json(doc)
    assert (info.version, info.entity_id) == ("22.10.1", "02:42")
    assert info.build_options == ("OPTIONAL_API", "TEST_FRAMEWORK")
    assert AsteriskInfo.from_json({"system": {"version": "22.0.0"}}).build_options == ()

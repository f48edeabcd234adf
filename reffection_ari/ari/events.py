"""Typed ARI events and the frame decoder.

Every event keeps Asterisk's document in ``raw`` (excluded from ``repr``: it can carry numbers). Unknown
event types decode to :class:`GenericEvent`, so a newer Asterisk never breaks the reader. A frame that is
not JSON, not an object, has no ``type``, or lacks a field its type requires raises :class:`MalformedEvent`.

Routing ids (``channel_ids()``, ``bridge_ids()``, ``playback_ids()``) say which resources an event concerns;
the client routes subscriptions by them. Playback and recording events also name the channel or bridge
they target, so a subscription on a channel sees the playbacks on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reffection_ari.ari.models import Bridge, Channel, LiveRecording, Playback

__all__ = [
    "LIFECYCLE_TYPES",
    "ApplicationReplaced",
    "BridgeCreated",
    "BridgeDestroyed",
    "ChannelCreated",
    "ChannelDestroyed",
    "ChannelDialplan",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelLeftBridge",
    "ChannelStateChange",
    "ChannelVarset",
    "ClientDisconnected",
    "ClientReconnected",
    "Dial",
    "Event",
    "GenericEvent",
    "MalformedEvent",
    "PlaybackContinuing",
    "PlaybackFinished",
    "PlaybackStarted",
    "RecordingFailed",
    "RecordingFinished",
    "RecordingStarted",
    "StasisEnd",
    "StasisStart",
    "decode_event",
]

JsonDict = dict[str, Any]
_NO_IDS: tuple[str, ...] = ()


class MalformedEvent(ValueError):
    """A WebSocket frame that cannot be decoded; its message never contains the frame's content."""


@dataclass(slots=True)
class Event:
    """Base of all events. ``type`` is Asterisk's event type name (or ``Client*`` for lifecycle events)."""

    type: str
    application: str
    timestamp: str
    raw: JsonDict = field(repr=False)

    def channel_ids(self) -> tuple[str, ...]:
        return _NO_IDS

    def bridge_ids(self) -> tuple[str, ...]:
        return _NO_IDS

    def playback_ids(self) -> tuple[str, ...]:
        return _NO_IDS


@dataclass(slots=True)
class GenericEvent(Event):
    """An event type this client has no model for; read its fields from ``raw``."""


@dataclass(slots=True)
class _ChannelEvent(Event):
    channel: Channel

    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,)


@dataclass(slots=True)
class StasisStart(_ChannelEvent):
    """A channel entered the application; ``args`` are the Stasis app arguments."""

    args: list[str] = field(default_factory=list)
    replace_channel: Channel | None = None


@dataclass(slots=True)
class StasisEnd(_ChannelEvent):
    """A channel left the application (hung up, or continued in the dialplan)."""


@dataclass(slots=True)
class ChannelCreated(_ChannelEvent):
    pass


@dataclass(slots=True)
class ChannelDestroyed(_ChannelEvent):
    """The channel is gone. ``cause`` is the Q.850 cause: the one to trust (16 normal, 17 busy, ...)."""

    cause: int = 0
    cause_txt: str = ""


@dataclass(slots=True)
class ChannelHangupRequest(_ChannelEvent):
    """A hangup was requested; ``cause`` may be missing (``None``), see ``ChannelDestroyed``."""

    cause: int | None = None
    soft: bool = False


@dataclass(slots=True)
class ChannelStateChange(_ChannelEvent):
    """``channel.state`` changed (e.g. ``Ring`` -> ``Up`` on answer)."""


@dataclass(slots=True)
class ChannelDtmfReceived(_ChannelEvent):
    """A DTMF digit ended on the channel (``0-9``, ``*``, ``#``, ``A-D``)."""

    digit: str = ""
    duration_ms: int = 0


@dataclass(slots=True)
class ChannelVarset(Event):
    """A variable was set; ``channel`` is ``None`` for a global variable. ``value`` is not in ``repr``."""

    variable: str
    value: str = field(default="", repr=False)
    channel: Channel | None = None

    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,) if self.channel is not None else _NO_IDS


@dataclass(slots=True)
class ChannelDialplan(_ChannelEvent):
    dialplan_app: str = ""
    dialplan_app_data: str = field(default="", repr=False)


@dataclass(slots=True)
class _BridgeEvent(Event):
    bridge: Bridge

    def bridge_ids(self) -> tuple[str, ...]:
        return (self.bridge.id,)


@dataclass(slots=True)
class BridgeCreated(_BridgeEvent):
    pass


@dataclass(slots=True)
class BridgeDestroyed(_BridgeEvent):
    pass


@dataclass(slots=True)
class ChannelEnteredBridge(_BridgeEvent):
    channel: Channel | None = None

    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,) if self.channel is not None else _NO_IDS


@dataclass(slots=True)
class ChannelLeftBridge(_BridgeEvent):
    channel: Channel | None = None

    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,) if self.channel is not None else _NO_IDS


@dataclass(slots=True)
class _PlaybackEvent(Event):
    playback: Playback

    def playback_ids(self) -> tuple[str, ...]:
        return (self.playback.id,)

    def channel_ids(self) -> tuple[str, ...]:
        cid = self.playback.channel_id
        return (cid,) if cid else _NO_IDS

    def bridge_ids(self) -> tuple[str, ...]:
        bid = self.playback.bridge_id
        return (bid,) if bid else _NO_IDS


@dataclass(slots=True)
class PlaybackStarted(_PlaybackEvent):
    pass


@dataclass(slots=True)
class PlaybackContinuing(_PlaybackEvent):
    pass


@dataclass(slots=True)
class PlaybackFinished(_PlaybackEvent):
    """``playback.state`` is ``done``, or ``failed`` (missing file, hangup during playback)."""


@dataclass(slots=True)
class _RecordingEvent(Event):
    recording: LiveRecording

    def channel_ids(self) -> tuple[str, ...]:
        cid = self.recording.channel_id
        return (cid,) if cid else _NO_IDS

    def bridge_ids(self) -> tuple[str, ...]:
        bid = self.recording.bridge_id
        return (bid,) if bid else _NO_IDS


@dataclass(slots=True)
class RecordingStarted(_RecordingEvent):
    pass


@dataclass(slots=True)
class RecordingFinished(_RecordingEvent):
    pass


@dataclass(slots=True)
class RecordingFailed(_RecordingEvent):
    pass


@dataclass(slots=True)
class Dial(Event):
    """Dial progress of ``peer`` (the called channel); ``dialstatus`` is empty while ringing starts.

    ``dialstring`` holds the dialled destination, so it is excluded from ``repr``.
    """

    peer: Channel
    caller: Channel | None = None
    forwarded: Channel | None = None
    dialstatus: str = ""
    dialstring: str = field(default="", repr=False)
    forward: str = field(default="", repr=False)

    def channel_ids(self) -> tuple[str, ...]:
        if self.caller is None:
            return (self.peer.id,)
        return (self.peer.id, self.caller.id)


@dataclass(slots=True)
class ApplicationReplaced(Event):
    """Another WebSocket took this application over; the client treats the connection as lost."""


@dataclass(slots=True)
class ClientDisconnected(Event):
    """Emitted by the client (not Asterisk) when the event WebSocket is lost; ``reason`` says why."""

    reason: str = ""


@dataclass(slots=True)
class ClientReconnected(Event):
    """Emitted by the client after a reconnect; ``channels`` are the channels running ``Stasis(app)``
    now (``GET /channels`` filtered by the app; the dialplan half of a Local channel is not included).

    Events of those channels that happened while disconnected are lost: resync from these snapshots.
    """

    channels: list[Channel] = field(default_factory=list)


LIFECYCLE_TYPES = frozenset({"ClientDisconnected", "ClientReconnected"})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _opt_channel(d: JsonDict | None) -> Channel | None:
    return Channel.from_json(d) if d else None


def _base(d: JsonDict) -> tuple[str, str, str, JsonDict]:
    return d["type"], d.get("application") or "", d.get("timestamp") or "", d


_Decoder = Callable[[JsonDict], Event]

_DECODERS: dict[str, _Decoder] = {
    "StasisStart": lambda d: StasisStart(
        *_base(d),
        Channel.from_json(d["channel"]),
        [str(a) for a in d.get("args") or ()],
        _opt_channel(d.get("replace_channel")),
    ),
    "StasisEnd": lambda d: StasisEnd(*_base(d), Channel.from_json(d["channel"])),
    "ChannelCreated": lambda d: ChannelCreated(*_base(d), Channel.from_json(d["channel"])),
    "ChannelDestroyed": lambda d: ChannelDestroyed(
        *_base(d), Channel.from_json(d["channel"]), int(d.get("cause") or 0), d.get("cause_txt") or ""
    ),
    "ChannelHangupRequest": lambda d: ChannelHangupRequest(
        *_base(d),
        Channel.from_json(d["channel"]),
        int(d["cause"]) if d.get("cause") is not None else None,
        bool(d.get("soft")),
    ),
    "ChannelStateChange": lambda d: ChannelStateChange(*_base(d), Channel.from_json(d["channel"])),
    "ChannelDtmfReceived": lambda d: ChannelDtmfReceived(
        *_base(d), Channel.from_json(d["channel"]), str(d["digit"]), int(d.get("duration_ms") or 0)
    ),
    "ChannelVarset": lambda d: ChannelVarset(
        *_base(d), str(d["variable"]), str(d.get("value") or ""), _opt_channel(d.get("channel"))
    ),
    "ChannelDialplan": lambda d: ChannelDialplan(
        *_base(d),
        Channel.from_json(d["channel"]),
        d.get("dialplan_app") or "",
        d.get("dialplan_app_data") or "",
    ),
    "BridgeCreated": lambda d: BridgeCreated(*_base(d), Bridge.from_json(d["bridge"])),
    "BridgeDestroyed": lambda d: BridgeDestroyed(*_base(d), Bridge.from_json(d["bridge"])),
    "ChannelEnteredBridge": lambda d: ChannelEnteredBridge(
        *_base(d), Bridge.from_json(d["bridge"]), _opt_channel(d.get("channel"))
    ),
    "ChannelLeftBridge": lambda d: ChannelLeftBridge(
        *_base(d), Bridge.from_json(d["bridge"]), _opt_channel(d.get("channel"))
    ),
    "PlaybackStarted": lambda d: PlaybackStarted(*_base(d), Playback.from_json(d["playback"])),
    "PlaybackContinuing": lambda d: PlaybackContinuing(*_base(d), Playback.from_json(d["playback"])),
    "PlaybackFinished": lambda d: PlaybackFinished(*_base(d), Playback.from_json(d["playback"])),
    "RecordingStarted": lambda d: RecordingStarted(*_base(d), LiveRecording.from_json(d["recording"])),
    "RecordingFinished": lambda d: RecordingFinished(*_base(d), LiveRecording.from_json(d["recording"])),
    "RecordingFailed": lambda d: RecordingFailed(*_base(d), LiveRecording.from_json(d["recording"])),
    "Dial": lambda d: Dial(
        *_base(d),
        Channel.from_json(d["peer"]),
        _opt_channel(d.get("caller")),
        _opt_channel(d.get("forwarded")),
        d.get("dialstatus") or "",
        d.get("dialstring") or "",
        d.get("forward") or "",
    ),
    "ApplicationReplaced": lambda d: ApplicationReplaced(*_base(d)),
}


def decode_event(data: str | bytes) -> Event:
    """Decode one WebSocket text frame into a typed event; raises :class:`MalformedEvent`."""
    try:
        d = json.loads(data)
    except ValueError:
        raise MalformedEvent(f"not JSON (length {len(data)})") from None
    if not isinstance(d, dict):
        raise MalformedEvent(f"not a JSON object (length {len(data)})")
    etype = d.get("type")
    if not isinstance(etype, str) or not etype:
        raise MalformedEvent(f"no event type (length {len(data)})")
    decoder = _DECODERS.get(etype)
    if decoder is None:
        return GenericEvent(*_base(d))
    try:
        return decoder(d)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Only the exception class and the event type: a value could be a number.
        raise MalformedEvent(f"{etype}: missing or invalid field ({type(exc).__name__}, length {len(data)})") from None

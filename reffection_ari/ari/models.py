"""Typed ARI resource models, decoded from Asterisk's JSON.

Decoding is tolerant: unknown fields are ignored (and kept in ``raw`` where the model has one), missing
optional fields get neutral defaults; a missing *required* field (an id) raises ``KeyError``/``TypeError``,
which the event decoder turns into a skipped, logged frame.

Privacy: caller-id numbers, dialplan extensions and channel names can carry a phone number, so they are
excluded from ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Application",
    "AsteriskInfo",
    "Bridge",
    "CallerId",
    "Channel",
    "DialplanLocation",
    "Endpoint",
    "LiveRecording",
    "Playback",
    "StoredRecording",
]

JsonDict = dict[str, Any]


@dataclass(slots=True)
class CallerId:
    """A name/number pair; the number never appears in ``repr``."""

    name: str = ""
    number: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, d: JsonDict | None) -> CallerId:
        if not d:
            return cls()
        return cls(d.get("name") or "", d.get("number") or "")


@dataclass(slots=True)
class DialplanLocation:
    """Where the channel is in the dialplan; ``app_name == "Stasis"`` while in an ARI application."""

    context: str = ""
    exten: str = field(default="", repr=False)
    priority: int = 0
    app_name: str = ""
    app_data: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, d: JsonDict | None) -> DialplanLocation:
        if not d:
            return cls()
        return cls(
            d.get("context") or "",
            d.get("exten") or "",
            int(d.get("priority") or 0),
            d.get("app_name") or "",
            d.get("app_data") or "",
        )


@dataclass(slots=True)
class Channel:
    """An ARI channel snapshot (state at the time of the event or request)."""

    id: str
    name: str = field(default="", repr=False)
    state: str = ""
    protocol_id: str = field(default="", repr=False)
    caller: CallerId = field(default_factory=CallerId)
    connected: CallerId = field(default_factory=CallerId)
    accountcode: str = ""
    dialplan: DialplanLocation = field(default_factory=DialplanLocation)
    creationtime: str = ""
    language: str = ""
    channelvars: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> Channel:
        return cls(
            d["id"],
            d.get("name") or "",
            d.get("state") or "",
            d.get("protocol_id") or "",
            CallerId.from_json(d.get("caller")),
            CallerId.from_json(d.get("connected")),
            d.get("accountcode") or "",
            DialplanLocation.from_json(d.get("dialplan")),
            d.get("creationtime") or "",
            d.get("language") or "",
            d.get("channelvars"),
        )

    def in_app(self, app: str) -> bool:
        """True when the channel currently runs ``Stasis(app, ...)``."""
        dp = self.dialplan
        return dp.app_name == "Stasis" and dp.app_data.split(",", 1)[0] == app


@dataclass(slots=True)
class Bridge:
    """An ARI bridge; ``channels`` are the ids of the channels in it."""

    id: str
    technology: str = ""
    bridge_type: str = ""
    bridge_class: str = ""
    creator: str = ""
    name: str = ""
    channels: list[str] = field(default_factory=list)
    creationtime: str = ""

    @classmethod
    def from_json(cls, d: JsonDict) -> Bridge:
        return cls(
            d["id"],
            d.get("technology") or "",
            d.get("bridge_type") or "",
            d.get("bridge_class") or "",
            d.get("creator") or "",
            d.get("name") or "",
            list(d.get("channels") or ()),
            d.get("creationtime") or "",
        )


def _target_id(target_uri: str, kind: str) -> str | None:
    """``"channel:abc"`` -> ``"abc"`` when ``kind == "channel"``."""
    prefix = kind + ":"
    return target_uri[len(prefix) :] if target_uri.startswith(prefix) else None


class _Targeted:
    """Playbacks and recordings name their target as ``channel:<id>`` or ``bridge:<id>``."""

    __slots__ = ()
    target_uri: str

    @property
    def channel_id(self) -> str | None:
        return _target_id(self.target_uri, "channel")

    @property
    def bridge_id(self) -> str | None:
        return _target_id(self.target_uri, "bridge")


@dataclass(slots=True)
class Playback(_Targeted):
    """A media playback. ``state`` is ``queued``/``playing``/``done``/``failed``/..."""

    id: str
    media_uri: str = ""
    target_uri: str = ""
    language: str = ""
    state: str = ""
    next_media_uri: str = ""

    @classmethod
    def from_json(cls, d: JsonDict) -> Playback:
        return cls(
            d["id"],
            d.get("media_uri") or "",
            d.get("target_uri") or "",
            d.get("language") or "",
            d.get("state") or "",
            d.get("next_media_uri") or "",
        )


@dataclass(slots=True)
class LiveRecording(_Targeted):
    """A recording in progress or just finished (``state``: queued/recording/paused/done/failed/canceled)."""

    name: str
    format: str = ""
    state: str = ""
    target_uri: str = ""
    duration: int | None = None
    talking_duration: int | None = None
    silence_duration: int | None = None
    cause: str = ""

    @classmethod
    def from_json(cls, d: JsonDict) -> LiveRecording:
        return cls(
            d["name"],
            d.get("format") or "",
            d.get("state") or "",
            d.get("target_uri") or "",
            d.get("duration"),
            d.get("talking_duration"),
            d.get("silence_duration"),
            d.get("cause") or "",
        )


@dataclass(slots=True)
class StoredRecording:
    name: str
    format: str = ""

    @classmethod
    def from_json(cls, d: JsonDict) -> StoredRecording:
        return cls(d["name"], d.get("format") or "")


@dataclass(slots=True)
class Endpoint:
    technology: str
    resource: str
    state: str = ""
    channel_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: JsonDict) -> Endpoint:
        return cls(d["technology"], d["resource"], d.get("state") or "", list(d.get("channel_ids") or ()))


@dataclass(slots=True)
class Application:
    """What Asterisk knows about an ARI application (its subscriptions and event filter)."""

    name: str
    channel_ids: list[str] = field(default_factory=list)
    bridge_ids: list[str] = field(default_factory=list)
    endpoint_ids: list[str] = field(default_factory=list)
    device_names: list[str] = field(default_factory=list)
    events_allowed: list[JsonDict] = field(default_factory=list)
    events_disallowed: list[JsonDict] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: JsonDict) -> Application:
        return cls(
            d["name"],
            list(d.get("channel_ids") or ()),
            list(d.get("bridge_ids") or ()),
            list(d.get("endpoint_ids") or ()),
            list(d.get("device_names") or ()),
            list(d.get("events_allowed") or ()),
            list(d.get("events_disallowed") or ()),
        )


@dataclass(slots=True)
class AsteriskInfo:
    """``GET /asterisk/info``: the version, entity id and build options, plus the full document in ``raw``."""

    version: str
    entity_id: str
    raw: JsonDict = field(repr=False)
    #: menuselect build options, e.g. ``("OPTIONAL_API", "TEST_FRAMEWORK")``
    build_options: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: JsonDict) -> AsteriskInfo:
        system = d.get("system") or {}
        options = str((d.get("build") or {}).get("options") or "")
        return cls(
            system.get("version") or "",
            system.get("entity_id") or "",
            d,
            tuple(o.strip() for o in options.split(",") if o.strip()),
        )

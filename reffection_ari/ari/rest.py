"""ARI REST resource groups (``client.channels``, ``client.bridges`` ...), thin and typed.

Every creating call takes the client-chosen id (``channel_id``, ``playback_id``, ``bridge_id``,
``snoop_id``) so the caller can subscribe to the resource's events *before* creating it. Never reuse an
id: Asterisk answers 409 and leaks a channel.

Scalar parameters go in the query string (masked in errors unless known safe); channel variables and the
event filter go in the JSON body, which never appears in an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote

from reffection_ari.ari.models import (
    Application,
    AsteriskInfo,
    Bridge,
    Channel,
    Endpoint,
    LiveRecording,
    Playback,
    StoredRecording,
)

__all__ = [
    "ApplicationsApi",
    "AsteriskApi",
    "BridgesApi",
    "ChannelsApi",
    "EndpointsApi",
    "PlaybacksApi",
    "RecordingsApi",
    "Transport",
]

Params = dict[str, str]
Expect = Literal["json", "none", "bytes"]


class Transport(Protocol):
    """What the resource groups need from the client: one authenticated request."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        expect: Expect = "json",
    ) -> Any: ...


def _seg(value: str) -> str:
    """Quote one path segment (Local channel ids contain ``;``)."""
    return quote(value, safe="")


def _params(**kw: object) -> Params:
    """Build query parameters: drop ``None``, render bools as ``true``/``false``, join sequences."""
    out: Params = {}
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, str):
            out[k] = v
        elif isinstance(v, Sequence):
            out[k] = ",".join(str(x) for x in v)
        else:
            out[k] = str(v)
    return out


def _vars_body(variables: Mapping[str, str] | None) -> dict[str, Any] | None:
    return {"variables": dict(variables)} if variables else None


async def _record(
    t: Transport,
    resource: str,
    name: str,
    format: str,
    max_duration_seconds: int | None,
    max_silence_seconds: int | None,
    if_exists: str,
    beep: bool,
    terminate_on: str,
) -> LiveRecording:
    """``POST {resource}/record``: channels and bridges take the same recording parameters."""
    p = _params(
        name=name,
        format=format,
        maxDurationSeconds=max_duration_seconds,
        maxSilenceSeconds=max_silence_seconds,
        ifExists=if_exists,
        beep=beep,
        terminateOn=terminate_on,
    )
    return LiveRecording.from_json(await t.request("POST", f"{resource}/record", params=p))


class _Group:
    __slots__ = ("_app", "_t")

    def __init__(self, transport: Transport, app: str) -> None:
        self._t = transport
        self._app = app


class AsteriskApi(_Group):
    __slots__ = ()

    async def info(self) -> AsteriskInfo:
        return AsteriskInfo.from_json(await self._t.request("GET", "/asterisk/info"))


class ChannelsApi(_Group):
    """``/channels``. ``app`` defaults to the client's application where ARI needs one."""

    __slots__ = ()

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        caller_id: str | None = None,
        timeout: int = 30,
        variables: Mapping[str, str] | None = None,
        other_channel_id: str | None = None,
        formats: str | Sequence[str] | None = None,
        originator: str | None = None,
    ) -> Channel:
        """Originate ``endpoint``; into ``app`` (default: the client's) unless ``extension`` is given."""
        if app is None and extension is None:
            app = self._app
        p = _params(
            endpoint=endpoint,
            channelId=channel_id,
            otherChannelId=other_channel_id,
            app=app,
            appArgs=app_args,
            extension=extension,
            context=context,
            priority=priority,
            label=label,
            callerId=caller_id,
            timeout=timeout,
            formats=formats,
            originator=originator,
        )
        d = await self._t.request("POST", "/channels", params=p, body=_vars_body(variables))
        return Channel.from_json(d)

    async def create(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        other_channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        formats: str | Sequence[str] | None = None,
        originator: str | None = None,
    ) -> Channel:
        """Create a channel without dialing it (``dial`` it later); it enters ``app`` when answered."""
        p = _params(
            endpoint=endpoint,
            channelId=channel_id,
            otherChannelId=other_channel_id,
            app=app or self._app,
            appArgs=app_args,
            formats=formats,
            originator=originator,
        )
        d = await self._t.request("POST", "/channels/create", params=p, body=_vars_body(variables))
        return Channel.from_json(d)

    async def dial(
        self,
        channel_id: str,
        *,
        caller: str | None = None,
        timeout: int | None = None,
    ) -> None:
        p = _params(caller=caller, timeout=timeout)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/dial", params=p, expect="none")

    async def answer(self, channel_id: str) -> None:
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/answer", expect="none")

    async def ring(self, channel_id: str) -> None:
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/ring", expect="none")

    async def ring_stop(self, channel_id: str) -> None:
        await self._t.request("DELETE", f"/channels/{_seg(channel_id)}/ring", expect="none")

    async def progress(self, channel_id: str) -> None:
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/progress", expect="none")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        p = _params(reason=reason)
        await self._t.request("DELETE", f"/channels/{_seg(channel_id)}", params=p, expect="none")

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
    ) -> Playback:
        """Start playing ``media`` (e.g. ``sound:hello-world``); await ``PlaybackFinished`` for the end."""
        p = _params(media=media, lang=lang, offsetms=offsetms, skipms=skipms)
        path = f"/channels/{_seg(channel_id)}/play/{_seg(playback_id)}"
        return Playback.from_json(await self._t.request("POST", path, params=p))

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration_seconds: int | None = None,
        max_silence_seconds: int | None = None,
        if_exists: str = "fail",
        beep: bool = False,
        terminate_on: str = "none",
    ) -> LiveRecording:
        return await _record(
            self._t, f"/channels/{_seg(channel_id)}", name, format, max_duration_seconds,
            max_silence_seconds, if_exists, beep, terminate_on,
        )  # fmt: skip

    async def snoop(
        self,
        channel_id: str,
        *,
        snoop_id: str,
        app: str | None = None,
        spy: str = "none",
        whisper: str = "none",
        app_args: str | Sequence[str] | None = None,
    ) -> Channel:
        p = _params(app=app or self._app, spy=spy, whisper=whisper, appArgs=app_args)
        path = f"/channels/{_seg(channel_id)}/snoop/{_seg(snoop_id)}"
        return Channel.from_json(await self._t.request("POST", path, params=p))

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before: int | None = None,
        between: int | None = None,
        duration: int | None = None,
        after: int | None = None,
    ) -> None:
        p = _params(dtmf=dtmf, before=before, between=between, duration=duration, after=after)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/dtmf", params=p, expect="none")

    async def get_variable(self, channel_id: str, variable: str) -> str:
        p = _params(variable=variable)
        d = await self._t.request("GET", f"/channels/{_seg(channel_id)}/variable", params=p)
        return str(d.get("value") or "")

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        p = _params(variable=variable, value=value)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/variable", params=p, expect="none")

    async def continue_in_dialplan(
        self,
        channel_id: str,
        *,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        p = _params(context=context, extension=extension, priority=priority, label=label)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/continue", params=p, expect="none")

    async def move(self, channel_id: str, app: str, *, app_args: str | Sequence[str] | None = None) -> None:
        p = _params(app=app, appArgs=app_args)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/move", params=p, expect="none")

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        p = _params(endpoint=endpoint)
        await self._t.request("POST", f"/channels/{_seg(channel_id)}/redirect", params=p, expect="none")

    async def list(self) -> list[Channel]:
        return [Channel.from_json(d) for d in await self._t.request("GET", "/channels")]

    async def get(self, channel_id: str) -> Channel:
        return Channel.from_json(await self._t.request("GET", f"/channels/{_seg(channel_id)}"))


class BridgesApi(_Group):
    __slots__ = ()

    async def create(self, bridge_id: str, *, type: str = "mixing", name: str | None = None) -> Bridge:
        """Create (or update) the bridge ``bridge_id``; ``type`` is comma-separated ARI bridge flags."""
        p = _params(type=type, name=name)
        return Bridge.from_json(await self._t.request("POST", f"/bridges/{_seg(bridge_id)}", params=p))

    async def list(self) -> list[Bridge]:
        return [Bridge.from_json(d) for d in await self._t.request("GET", "/bridges")]

    async def get(self, bridge_id: str) -> Bridge:
        return Bridge.from_json(await self._t.request("GET", f"/bridges/{_seg(bridge_id)}"))

    async def add_channel(
        self,
        bridge_id: str,
        channel_ids: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        p = _params(
            channel=channel_ids,
            role=role,
            absorbDTMF=absorb_dtmf,
            mute=mute,
            inhibitConnectedLineUpdates=inhibit_connected_line_updates,
        )
        await self._t.request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params=p, expect="none")

    async def remove_channel(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        p = _params(channel=channel_ids)
        path = f"/bridges/{_seg(bridge_id)}/removeChannel"
        await self._t.request("POST", path, params=p, expect="none")

    async def destroy(self, bridge_id: str) -> None:
        await self._t.request("DELETE", f"/bridges/{_seg(bridge_id)}", expect="none")

    async def play(
        self, bridge_id: str, media: str | Sequence[str], *, playback_id: str, lang: str | None = None
    ) -> Playback:
        p = _params(media=media, lang=lang)
        path = f"/bridges/{_seg(bridge_id)}/play/{_seg(playback_id)}"
        return Playback.from_json(await self._t.request("POST", path, params=p))

    async def record(
        self,
        bridge_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration_seconds: int | None = None,
        max_silence_seconds: int | None = None,
        if_exists: str = "fail",
        beep: bool = False,
        terminate_on: str = "none",
    ) -> LiveRecording:
        return await _record(
            self._t, f"/bridges/{_seg(bridge_id)}", name, format, max_duration_seconds,
            max_silence_seconds, if_exists, beep, terminate_on,
        )  # fmt: skip


class PlaybacksApi(_Group):
    __slots__ = ()

    async def get(self, playback_id: str) -> Playback:
        return Playback.from_json(await self._t.request("GET", f"/playbacks/{_seg(playback_id)}"))

    async def stop(self, playback_id: str) -> None:
        await self._t.request("DELETE", f"/playbacks/{_seg(playback_id)}", expect="none")

    async def control(self, playback_id: str, operation: str) -> None:
        """``operation``: restart, pause, unpause, reverse, forward."""
        p = _params(operation=operation)
        path = f"/playbacks/{_seg(playback_id)}/control"
        await self._t.request("POST", path, params=p, expect="none")


class RecordingsApi(_Group):
    __slots__ = ()

    async def list_stored(self) -> list[StoredRecording]:
        return [StoredRecording.from_json(d) for d in await self._t.request("GET", "/recordings/stored")]

    async def get_stored(self, name: str) -> StoredRecording:
        d = await self._t.request("GET", f"/recordings/stored/{_seg(name)}")
        return StoredRecording.from_json(d)

    async def delete_stored(self, name: str) -> None:
        await self._t.request("DELETE", f"/recordings/stored/{_seg(name)}", expect="none")

    async def copy_stored(self, name: str, destination: str) -> StoredRecording:
        p = _params(destinationRecordingName=destination)
        d = await self._t.request("POST", f"/recordings/stored/{_seg(name)}/copy", params=p)
        return StoredRecording.from_json(d)

    async def file(self, name: str) -> bytes:
        """The stored recording's bytes (as written by Asterisk, e.g. a WAV file)."""
        data: bytes = await self._t.request("GET", f"/recordings/stored/{_seg(name)}/file", expect="bytes")
        return data

    async def get_live(self, name: str) -> LiveRecording:
        return LiveRecording.from_json(await self._t.request("GET", f"/recordings/live/{_seg(name)}"))

    async def stop_live(self, name: str) -> None:
        await self._t.request("POST", f"/recordings/live/{_seg(name)}/stop", expect="none")

    async def cancel_live(self, name: str) -> None:
        await self._t.request("DELETE", f"/recordings/live/{_seg(name)}", expect="none")


class EndpointsApi(_Group):
    __slots__ = ()

    async def list(self) -> list[Endpoint]:
        return [Endpoint.from_json(d) for d in await self._t.request("GET", "/endpoints")]

    async def get(self, technology: str, resource: str) -> Endpoint:
        d = await self._t.request("GET", f"/endpoints/{_seg(technology)}/{_seg(resource)}")
        return Endpoint.from_json(d)


class ApplicationsApi(_Group):
    __slots__ = ()

    async def list(self) -> list[Application]:
        return [Application.from_json(d) for d in await self._t.request("GET", "/applications")]

    async def get(self, app: str | None = None) -> Application:
        d = await self._t.request("GET", f"/applications/{_seg(app or self._app)}")
        return Application.from_json(d)

    async def subscribe(self, event_source: str | Sequence[str], *, app: str | None = None) -> Application:
        """Subscribe the app to sources: ``channel:<id>``, ``bridge:<id>``, ``endpoint:<tech>/<res>``."""
        p = _params(eventSource=event_source)
        d = await self._t.request("POST", f"/applications/{_seg(app or self._app)}/subscription", params=p)
        return Application.from_json(d)

    async def unsubscribe(self, event_source: str | Sequence[str], *, app: str | None = None) -> Application:
        p = _params(eventSource=event_source)
        path = f"/applications/{_seg(app or self._app)}/subscription"
        return Application.from_json(await self._t.request("DELETE", path, params=p))

    async def set_event_filter(
        self,
        allowed: Sequence[str] | None = None,
        disallowed: Sequence[str] | None = None,
        *,
        app: str | None = None,
    ) -> Application:
        """Replace the app's event filter (type names). Both ``None`` clears it.

        The app must be connected, and the filter is lost when its WebSocket closes (the client re-applies
        ``AriConfig.event_filter`` after every reconnect). Unknown type names are accepted silently.
        """
        body = {
            "allowed": [{"type": t} for t in allowed or ()],
            "disallowed": [{"type": t} for t in disallowed or ()],
        }
        path = f"/applications/{_seg(app or self._app)}/eventFilter"
        return Application.from_json(await self._t.request("PUT", path, body=body))

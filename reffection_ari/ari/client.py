"""The ARI client: one authenticated HTTP session, one event WebSocket, one ordered reader task.

Ordering contract: the reader task decodes frames and hands each event, in arrival order, first to the
matching subscriptions (non-blocking queue puts), then to every listener, sequentially. A listener that
returns an awaitable is awaited before the next event is read, so a slow async listener slows the reader
(it never reorders). Listener exceptions are logged with a traceback and do not stop the reader.

Lifecycle: when the WebSocket closes (Asterisk restart, network, heartbeat timeout) or Asterisk sends
``ApplicationReplaced``, the reader emits :class:`ClientDisconnected`, reconnects with exponential backoff
and jitter, re-applies ``AriConfig.event_filter`` (Asterisk forgets it with the socket), lists the channels
still in the application and emits :class:`ClientReconnected` with them, all in-band: listeners see
``..., ClientDisconnected, ClientReconnected, <events of the new socket>``.

Subscriptions (``client.subscribe``) have unbounded queues: no event is ever dropped, so close the ones you
no longer read. Create a subscription before the REST call that creates its resource (stage, subscribe,
execute); Asterisk can emit the first event before the HTTP response arrives.

REST transport: HTTP by default. With ``AriConfig.rest_over_websocket`` (Asterisk 20.14+/21.9+/22.4+) a
request goes as a ``RESTRequest`` frame on the app's event socket (see :mod:`wsrest`); the reader takes
the ``RESTResponse`` frames out of the stream by request id (they are never dispatched as events, and
events keep their order). HTTP is still used when that cannot work: while the socket is down or being
re-established (so the reconnect's own requests and calls made during an outage behave as on HTTP),
from inside the reader task (an awaited listener would otherwise wait for a response only it can read),
and for binary results. A request pending when the socket drops fails with ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp

from reffection_ari.ari.errors import AriError, ConnectionLost, Unauthorized, error_for_status
from reffection_ari.ari.events import (
    LIFECYCLE_TYPES,
    ApplicationReplaced,
    ClientDisconnected,
    ClientReconnected,
    Event,
    MalformedEvent,
    decode_event,
    now_iso,
)
from reffection_ari.ari.models import Channel
from reffection_ari.ari.rest import (
    ApplicationsApi,
    AsteriskApi,
    BridgesApi,
    ChannelsApi,
    EndpointsApi,
    Expect,
    Params,
    PlaybacksApi,
    RecordingsApi,
)
from reffection_ari.ari.wsrest import WsRest, filter_types

__all__ = ["AriClient", "AriConfig", "Listener", "Subscription"]

log = logging.getLogger("reffection_ari.ari")

Listener = Callable[[Event], Awaitable[None] | None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AriConfig:
    """Connection settings for one ARI application.

    ``event_filter``: allowed event type names, applied with ``PUT /applications/{app}/eventFilter`` after
    every (re)connect; ``None`` leaves Asterisk's default (all events). A typo silently blocks that event.
    ``max_connections`` caps the HTTP pool (Asterisk's ``http.conf`` ``sessionlimit`` defaults to 100).
    ``rest_over_websocket`` sends REST requests on the event WebSocket instead of HTTP when it is up (see
    the module docstring); ``event_filter`` then also allows ``RESTResponse``, which Asterisk filters like
    an event. If you set a filter yourself with ``applications.set_event_filter``, include it too.
    """

    base_url: str
    username: str
    password: str = field(repr=False)
    app: str
    event_filter: Sequence[str] | None = None
    reconnect_initial: float = 0.2
    reconnect_max: float = 5.0
    request_timeout: float = 10.0
    heartbeat: float = 10.0
    max_connections: int = 100
    rest_over_websocket: bool = False


class _Closed:
    """Queue sentinel: the subscription or the client was closed."""


_CLOSED = _Closed()


class Subscription:
    """Events about given channels/bridges/playbacks (any of them), optionally only some ``types``.

    With no ids, it matches every event (of ``types``). Lifecycle events (``ClientDisconnected``,
    ``ClientReconnected``) reach it only if ``types`` names them, or if it has neither ids nor types.
    """

    __slots__ = ("_client", "_queue", "bridge_ids", "channel_ids", "closed", "playback_ids", "types")

    def __init__(
        self,
        client: AriClient,
        channel_ids: frozenset[str],
        bridge_ids: frozenset[str],
        playback_ids: frozenset[str],
        types: frozenset[str] | None,
    ) -> None:
        self._client = client
        self._queue: asyncio.Queue[Event | _Closed] = asyncio.Queue()
        self.channel_ids = channel_ids
        self.bridge_ids = bridge_ids
        self.playback_ids = playback_ids
        self.types = types
        self.closed = False

    def _put(self, item: Event | _Closed) -> None:
        self._queue.put_nowait(item)

    def pending(self) -> int:
        """Number of events queued and not yet read."""
        return self._queue.qsize()

    async def get(self, timeout: float | None = None) -> Event:
        """The next matching event. Raises ``TimeoutError`` after ``timeout`` seconds, ``ConnectionLost``
        once the subscription or the client is closed and the queue is drained."""
        if timeout is None:
            item = await self._queue.get()
        else:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)  # keep later get() calls failing too
            raise ConnectionLost("subscription closed", code="ari_subscription_closed")
        return item

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        timeout: float | None = None,
    ) -> Event:
        """The first event satisfying ``predicate`` within ``timeout`` seconds overall; events before it
        are consumed and discarded."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.get()
                if predicate(ev):
                    return ev

    def close(self) -> None:
        """Stop routing events here; pending events stay readable, then ``get`` raises ConnectionLost."""
        if not self.closed:
            self.closed = True
            self._client._unsubscribe(self)
            self._put(_CLOSED)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except ConnectionLost:
            raise StopAsyncIteration from None


def _ids(value: str | Collection[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


class AriClient:
    """Typed asyncio ARI client for one application. See the module docstring for the ordering contract."""

    def __init__(
        self,
        config: AriConfig,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = rng
        base = config.base_url.rstrip("/")
        self._api = base + "/ari"
        self._events_url = base + "/ari/events"
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._listeners: tuple[Listener, ...] = ()
        self._by_channel: dict[str, list[Subscription]] = {}
        self._by_bridge: dict[str, list[Subscription]] = {}
        self._by_playback: dict[str, list[Subscription]] = {}
        self._wildcard: list[Subscription] = []
        self._subs: set[Subscription] = set()
        self._replaced_streak = 0
        self._wsrest = WsRest() if config.rest_over_websocket else None
        self._rest_ws: aiohttp.ClientWebSocketResponse | None = None
        """The socket the reader is reading now: the only one REST frames may go on."""
        self.reader_error: BaseException | None = None
        """Set if the reader task died of an unexpected exception (it is also logged as critical)."""
        self.reconnects = 0
        """How many times the event WebSocket was re-established (for metrics)."""
        self.malformed_events = 0
        """How many frames were skipped because they could not be decoded (for metrics)."""
        self.http_requests = 0
        self.ws_requests = 0
        """How many REST requests went over HTTP and as RESTRequest frames on the WebSocket (for metrics)."""

        app = config.app
        self.asterisk = AsteriskApi(self, app)
        self.channels = ChannelsApi(self, app)
        self.bridges = BridgesApi(self, app)
        self.playbacks = PlaybacksApi(self, app)
        self.recordings = RecordingsApi(self, app)
        self.endpoints = EndpointsApi(self, app)
        self.applications = ApplicationsApi(self, app)

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """True while the event WebSocket is open (False while reconnecting and after close)."""
        return self._ws is not None and not self._ws.closed

    @property
    def app(self) -> str:
        return self.config.app

    async def connect(self) -> None:
        """Open the event WebSocket, apply the event filter and start the reader.

        Raises ``Unauthorized`` on bad credentials and ``ConnectionLost`` when Asterisk is unreachable.
        Later losses are handled by the reader (reconnect), not raised.
        """
        if self._reader is not None:
            raise RuntimeError("AriClient.connect() called twice")
        self._closing = False
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        try:
            ws = await self._open_ws()
            try:
                await self._apply_filter()
            except BaseException:
                self._ws = None
                await ws.close()
                raise
        except BaseException:
            # A failed connect leaves nothing open, so callers need not close() before retrying.
            session, self._session = self._session, None
            await session.close()
            raise
        log.info("ari connected app=%s", self.config.app)
        self._rest_ws = ws  # the reader reads it from its first step: responses wait in the socket till then
        self._reader = asyncio.create_task(self._run(ws), name=f"ari-reader-{self.config.app}")
        self._reader.add_done_callback(self._reader_done)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        """Surface a reader crash (a bug, not a connection loss: those are handled inside)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.reader_error = exc
            log.critical("ari reader stopped app=%s", self.config.app, exc_info=exc)

    async def close(self) -> None:
        """Stop the reader, close the WebSocket and the HTTP session; pending ``get`` calls raise."""
        self._closing = True
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._fail_ws_requests()  # also when the reader was cancelled before its first step
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        for sub in list(self._subs):
            sub.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AriClient:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ listeners and subscriptions

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(event)`` for every event, in order, including Client* lifecycle events."""
        self._listeners = (*self._listeners, callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners = tuple(cb for cb in self._listeners if cb is not callback)

    def subscribe(
        self,
        *,
        channel_id: str | Collection[str] | None = None,
        bridge_id: str | Collection[str] | None = None,
        playback_id: str | Collection[str] | None = None,
        types: Iterable[str] | None = None,
    ) -> Subscription:
        """A queue of the events concerning any of the given resources (see :class:`Subscription`).

        Create it before the REST call that creates the resource.
        """
        sub = Subscription(
            self,
            _ids(channel_id),
            _ids(bridge_id),
            _ids(playback_id),
            frozenset(types) if types is not None else None,
        )
        self._subs.add(sub)
        for cid in sub.channel_ids:
            self._by_channel.setdefault(cid, []).append(sub)
        for bid in sub.bridge_ids:
            self._by_bridge.setdefault(bid, []).append(sub)
        for pid in sub.playback_ids:
            self._by_playback.setdefault(pid, []).append(sub)
        if not (sub.channel_ids or sub.bridge_ids or sub.playback_ids):
            self._wildcard.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        for index, keys in (
            (self._by_channel, sub.channel_ids),
            (self._by_bridge, sub.bridge_ids),
            (self._by_playback, sub.playback_ids),
        ):
            for key in keys:
                subs = index.get(key)
                if subs is not None:
                    with contextlib.suppress(ValueError):
                        subs.remove(sub)
                    if not subs:
                        del index[key]
        with contextlib.suppress(ValueError):
            self._wildcard.remove(sub)

    def _route(self, ev: Event) -> None:
        etype = ev.type
        if etype in LIFECYCLE_TYPES:
            for sub in list(self._subs):
                if (sub.types is not None and etype in sub.types) or (sub.types is None and sub in self._wildcard):
                    sub._put(ev)
            return
        hits: list[Subscription] = []
        for index, keys in (
            (self._by_channel, ev.channel_ids()),
            (self._by_bridge, ev.bridge_ids()),
            (self._by_playback, ev.playback_ids()),
        ):
            for key in keys:
                subs = index.get(key)
                if subs:
                    for sub in subs:
                        if sub not in hits:
                            hits.append(sub)
        hits.extend(self._wildcard)
        for sub in hits:
            if sub.types is None or etype in sub.types:
                sub._put(ev)

    async def _dispatch(self, ev: Event) -> None:
        self._route(ev)
        for cb in self._listeners:
            try:
                result = cb(ev)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("ari listener failed event=%s app=%s", ev.type, self.config.app)

    # ------------------------------------------------------------------ WebSocket

    async def _open_ws(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        params = {"app": self.config.app, "subscribeAll": "false"}
        try:
            async with asyncio.timeout(self.config.request_timeout):
                ws = await self._session.ws_connect(self._events_url, params=params, heartbeat=self.config.heartbeat)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise Unauthorized("bad ARI credentials", status=401, method="GET", path="/events") from None
            raise error_for_status(
                exc.status, exc.message or "WebSocket handshake failed", method="GET", path="/events"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot reach ARI ({type(exc).__name__})", method="GET", path="/events") from None
        self._ws = ws
        return ws

    async def _apply_filter(self) -> None:
        allowed = self.config.event_filter
        if allowed is not None:
            if self._wsrest is not None:
                allowed = filter_types(allowed)
            await self.applications.set_event_filter(allowed)

    async def _app_channels(self) -> list[Channel]:
        """Channels running ``Stasis(<this app>)`` now. Not the app's ``channel_ids``: those also hold
        merely subscribed channels, such as the dialplan half (``;2``) of an originated Local channel."""
        app = self.config.app
        return [c for c in await self.channels.list() if c.in_app(app)]

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The reader: read until the socket is lost, then reconnect, forever (until ``close``)."""
        while True:
            self._rest_ws = ws
            try:
                reason = await self._read(ws)
            finally:
                self._fail_ws_requests()
            self._ws = None
            await ws.close()
            if self._closing:
                return
            if reason == "application_replaced":
                # Two clients sharing an app name steal it from each other: keep the backoff growing
                # across consecutive replacements so they flap at reconnect_max, not in a tight loop.
                self._replaced_streak += 1
                log.error("ari application replaced by another connection app=%s", self.config.app)
            else:
                self._replaced_streak = 0
                log.warning("ari disconnected app=%s reason=%s", self.config.app, reason)
            await self._dispatch(ClientDisconnected("ClientDisconnected", self.config.app, now_iso(), {}, reason))
            ws, channels = await self._reconnect(max(0, self._replaced_streak - 1))
            self.reconnects += 1
            log.info("ari reconnected app=%s channels=%d", self.config.app, len(channels))
            await self._dispatch(ClientReconnected("ClientReconnected", self.config.app, now_iso(), {}, channels))

    def _fail_ws_requests(self) -> None:
        """The reader no longer reads the socket: no response can come, fail what waits for one."""
        self._rest_ws = None
        if self._wsrest is not None:
            lost = self._wsrest.fail_all(lambda: ConnectionLost("event socket closed"))
            if lost:
                log.warning("ari websocket requests failed app=%s count=%d", self.config.app, lost)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Dispatch frames until the socket ends; returns why it ended."""
        text = aiohttp.WSMsgType.TEXT
        wsrest = self._wsrest
        while True:
            msg = await ws.receive()
            if msg.type is text:
                if wsrest is not None and wsrest.feed(msg.data):
                    continue
                try:
                    ev = decode_event(msg.data)
                except MalformedEvent as exc:
                    self.malformed_events += 1
                    log.warning("ari skipped malformed event app=%s: %s", self.config.app, exc)
                    continue
                await self._dispatch(ev)
                if type(ev) is ApplicationReplaced:
                    return "application_replaced"
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"error ({type(msg.data).__name__})"
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return "closed"
            else:
                log.warning("ari ignored non-text frame app=%s type=%s", self.config.app, msg.type.name)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [d/2, d], d = min(max, initial * 2**attempt)."""
        cfg = self.config
        delay = min(cfg.reconnect_max, cfg.reconnect_initial * (2.0**attempt))
        return delay * (0.5 + 0.5 * self._rng())

    async def _reconnect(self, attempt: int) -> tuple[aiohttp.ClientWebSocketResponse, list[Channel]]:
        while True:
            await self._sleep(self._backoff(attempt))
            attempt = min(attempt + 1, 30)
            ws: aiohttp.ClientWebSocketResponse | None = None
            try:
                ws = await self._open_ws()
                await self._apply_filter()
                channels = await self._app_channels()
            except AriError as exc:
                level = logging.ERROR if isinstance(exc, Unauthorized) else logging.INFO
                log.log(
                    level,
                    "ari reconnect failed app=%s attempt=%d code=%s",
                    self.config.app,
                    attempt,
                    exc.code,
                )
                if ws is not None:
                    self._ws = None
                    await ws.close()
                continue
            return ws, channels

    # ------------------------------------------------------------------ REST

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        expect: Expect = "json",
    ) -> Any:
        """One ARI REST call (``path`` relative to ``/ari``); raises the typed :mod:`errors`."""
        if self._wsrest is not None and expect != "bytes":
            ws = self._rest_ws
            if ws is not None and not ws.closed and asyncio.current_task() is not self._reader:
                return await self._ws_request(self._wsrest, ws, method, path, params, body, expect)
        session = self._session
        if session is None:
            if self._closing:
                raise ConnectionLost("client closed", method=method, path=path)
            connector = aiohttp.TCPConnector(limit=self.config.max_connections)
            session = self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        self.http_requests += 1
        try:
            async with session.request(
                method, self._api + path, params=params, json=body, timeout=self._timeout
            ) as resp:
                status = resp.status
                if status < 300:
                    if expect == "json":
                        if status == 204:
                            return None
                        return json.loads(await resp.read())
                    if expect == "bytes":
                        return await resp.read()
                    await resp.read()
                    return None
                raw = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"request failed ({type(exc).__name__})", method=method, path=path, query=params
            ) from None
        raise error_for_status(status, _error_message(raw, status), method=method, path=path, query=params)

    async def _ws_request(
        self,
        wsrest: WsRest,
        ws: aiohttp.ClientWebSocketResponse,
        method: str,
        path: str,
        params: Params | None,
        body: Any,
        expect: Expect,
    ) -> Any:
        """One request as a ``RESTRequest`` frame; same results and errors as the HTTP path."""
        rid, frame, fut = wsrest.start(method, path, params, body)
        self.ws_requests += 1
        try:
            async with asyncio.timeout(self.config.request_timeout):
                await ws.send_str(frame)
                resp = await fut
        except ConnectionLost as exc:
            raise ConnectionLost(exc.message, method=method, path=path, query=params) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionLost(
                f"websocket request failed ({type(exc).__name__})", method=method, path=path, query=params
            ) from None
        finally:
            wsrest.discard(rid)
        status = resp.status
        if status < 300:
            if expect == "json" and status != 204 and resp.body:
                return json.loads(resp.body)
            return None
        raise error_for_status(status, _error_message(resp.body or b"", status), method=method, path=path, query=params)


def _error_message(raw: bytes | str, status: int) -> str:
    """Asterisk's ``{"message": ...}``; never the raw body, which could echo a parameter."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return f"HTTP {status}"
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return f"HTTP {status}"

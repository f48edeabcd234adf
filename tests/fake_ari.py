"""A small fake ARI server (aiohttp) for tests that must not need a real Asterisk.

It speaks enough of ARI for the client and the flow: originate/create/hangup/answer/play/DTMF/variables,
bridges, playbacks, applications (incl. the event filter, which it forgets when the socket closes, like
Asterisk), and the event WebSocket. It mimics the Asterisk behaviours that matter: events of an originate
are pushed *before* the HTTP response (so subscribe-before-create is exercised), a reused channel id is a
409, an endpoint starting with ``Bad/`` is a 500 ``Allocation failed``, a second socket for an app gets the
app and the first one receives ``ApplicationReplaced`` and goes silent.

Control methods for fault injection: :meth:`push` / :meth:`push_raw` events, :meth:`drop` sockets,
:meth:`refuse_connections` / :meth:`accept_connections` (real TCP refusals), :meth:`replace_app`,
:meth:`fail` (inject an HTTP error), :meth:`press` (a DTMF digit from the far end),
:meth:`finish_playback`, :meth:`wait_ws` (await the n-th WebSocket connection).

REST over the WebSocket: a ``RESTRequest`` text frame on ``/ari/events`` is served by the same handlers
(replayed over loopback HTTP, so failures injected with :meth:`fail` apply and it is recorded in
:attr:`requests` with ``via="ws"``) and answered with a ``RESTResponse`` frame after the events it caused,
like Asterisk 22: a ``uri`` starting with ``/`` is a 405, and an event filter without ``RESTResponse``
swallows the answer. :attr:`ws_rest_hold` leaves requests unanswered; :meth:`wait_ws_rest` awaits them.

Usage::

    async with FakeAri() as fake:
        cfg = AriConfig(base_url=fake.url, username=fake.username, password=fake.password, app="a")
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

JsonDict = dict[str, Any]
_JSON: web.RequestKey[Any] = web.RequestKey("fake_ari_json", object)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Request:
    """One REST request the fake received (``query`` values may be dial strings: tests only)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    via: str = "http"


@dataclass
class _Failure:
    method: str
    path_prefix: str
    status: int
    message: str
    times: int


@dataclass
class _AppState:
    socket: web.WebSocketResponse | None = None
    allowed: set[str] | None = None
    silenced: list[web.WebSocketResponse] = field(default_factory=list)


class FakeAri:
    """The fake server; use as an async context manager, then read :attr:`url`."""

    def __init__(
        self,
        *,
        username: str = "user",
        password: str = "secret",
        auto_finish_playbacks: bool = True,
    ) -> None:
        self.username = username
        self.password = password
        self.auto_finish_playbacks = auto_finish_playbacks
        self.channels: dict[str, JsonDict] = {}
        self.channel_app: dict[str, str] = {}
        self.variables: dict[str, dict[str, str]] = {}
        self.bridges: dict[str, JsonDict] = {}
        self.playbacks: dict[str, JsonDict] = {}
        self.stored_recordings: dict[str, bytes] = {}
        self.apps: dict[str, _AppState] = {}
        self.requests: list[Request] = []
        self.ws_connects = 0
        self.ws_rejects = 0
        self.ws_rest_received = 0
        """RESTRequest frames received on event sockets."""
        self.ws_rest_hold = False
        self.build_options = "OPTIONAL_API, TEST_FRAMEWORK"  # as Debian builds Asterisk
        """When True, RESTRequest frames are counted but never answered."""
        self._loopback: ClientSession | None = None
        self.ws_status: int | None = None
        """When set, WebSocket handshakes are answered with this HTTP status (e.g. 401, 503)."""
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._ws_cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeAri:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/ari/events", self._events)
        r.add_get("/ari/asterisk/info", self._info)
        r.add_get("/ari/channels", self._channels_list)
        r.add_post("/ari/channels", self._originate)
        r.add_post("/ari/channels/create", self._create)
        r.add_get("/ari/channels/{id}", self._channel_get)
        r.add_delete("/ari/channels/{id}", self._hangup)
        r.add_post("/ari/channels/{id}/play", self._channel_play)
        r.add_post("/ari/channels/{id}/play/{pid}", self._channel_play)
        r.add_get("/ari/channels/{id}/variable", self._var_get)
        r.add_post("/ari/channels/{id}/variable", self._var_set)
        r.add_post("/ari/channels/{id}/answer", self._answer)
        r.add_post("/ari/channels/{id}/{op}", self._channel_op)
        r.add_delete("/ari/channels/{id}/{op}", self._channel_op)
        r.add_get("/ari/bridges", self._bridges_list)
        r.add_post("/ari/bridges/{id}", self._bridge_create)
        r.add_get("/ari/bridges/{id}", self._bridge_get)
        r.add_delete("/ari/bridges/{id}", self._bridge_destroy)
        r.add_post("/ari/bridges/{id}/addChannel", self._bridge_add)
        r.add_post("/ari/bridges/{id}/removeChannel", self._bridge_remove)
        r.add_post("/ari/bridges/{id}/play/{pid}", self._bridge_play)
        r.add_get("/ari/playbacks/{id}", self._playback_get)
        r.add_delete("/ari/playbacks/{id}", self._playback_stop)
        r.add_post("/ari/playbacks/{id}/control", self._playback_control)
        r.add_get("/ari/applications/{app}", self._app_get)
        r.add_put("/ari/applications/{app}/eventFilter", self._app_filter)
        r.add_get("/ari/endpoints", self._endpoints)
        r.add_get("/ari/recordings/stored/{name}", self._stored_get)
        r.add_get("/ari/recordings/stored/{name}/file", self._stored_file)
        r.add_delete("/ari/recordings/stored/{name}", self._stored_delete)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._loopback is not None:
            await self._loopback.close()
            self._loopback = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    # ------------------------------------------------------------------ control

    async def refuse_connections(self) -> None:
        """Asterisk is down: stop listening (new TCP connections are refused) and cut every open
        connection, event sockets and pooled keep-alive connections alike."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self.kill_connections()

    def kill_connections(self) -> None:
        """Close every TCP connection abruptly (no WebSocket close frame), like a crash."""
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()

    async def accept_connections(self) -> None:
        """Listen again on the same port."""
        if self._site is None and self._runner is not None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()

    async def drop(self, app: str | None = None) -> None:
        """Close the event socket(s) (all apps when ``app`` is None), like an Asterisk restart."""
        for name, st in list(self.apps.items()):
            if app is not None and name != app:
                continue
            for ws in [st.socket, *st.silenced]:
                if ws is not None and not ws.closed:
                    await ws.close()
            st.socket = None
            st.silenced.clear()
            st.allowed = None

    async def replace_app(self, app: str) -> None:
        """What a second WebSocket for the same app does to the first: ApplicationReplaced, then silence."""
        st = self.apps.get(app)
        if st is None or st.socket is None:
            raise AssertionError(f"app {app} has no socket")
        ws = st.socket
        await ws.send_str(json.dumps(self._envelope("ApplicationReplaced", app)))
        st.socket = None
        st.allowed = None
        st.silenced.append(ws)

    def fail(self, method: str, path_prefix: str, status: int, message: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``/ari`` path prefix with an error."""
        self._failures.append(_Failure(method.upper(), path_prefix, status, message, times))

    async def push(self, event: JsonDict, app: str | None = None) -> bool:
        """Send an event (``application``/``timestamp`` filled in) to the app's socket, honouring the
        app's event filter. Returns whether it was sent."""
        name = app or event.get("application") or self._only_app()
        st = self.apps.get(name)
        if st is None or st.socket is None or st.socket.closed:
            return False
        if st.allowed and event.get("type") not in st.allowed:
            return False
        doc = {"application": name, "timestamp": _now(), "asterisk_id": "00:00:00:00:00:01", **event}
        await st.socket.send_str(json.dumps(doc))
        return True

    async def push_raw(self, text: str, app: str | None = None) -> None:
        """Send an arbitrary text frame (garbage tests)."""
        st = self.apps[app or self._only_app()]
        assert st.socket is not None
        await st.socket.send_str(text)

    async def press(self, channel_id: str, digit: str, duration_ms: int = 100) -> None:
        """The far end pressed ``digit``: a ChannelDtmfReceived on the channel."""
        ch = self.channels[channel_id]
        await self._emit(
            channel_id,
            {"type": "ChannelDtmfReceived", "channel": ch, "digit": digit, "duration_ms": duration_ms},
        )

    async def finish_playback(self, playback_id: str, state: str = "done") -> None:
        pb = self.playbacks.pop(playback_id)
        pb["state"] = state
        await self._emit_target(pb["target_uri"], {"type": "PlaybackFinished", "playback": pb})

    async def wait_ws(self, count: int) -> None:
        """Wait (at most 5 s) until ``count`` WebSocket connections have been accepted in total."""
        async with asyncio.timeout(5.0), self._ws_cond:
            await self._ws_cond.wait_for(lambda: self.ws_connects >= count)

    async def wait_ws_rest(self, count: int) -> None:
        """Wait (at most 5 s) until ``count`` RESTRequest frames have been received in total."""
        async with asyncio.timeout(5.0), self._ws_cond:
            await self._ws_cond.wait_for(lambda: self.ws_rest_received >= count)

    def requests_to(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def app_filter(self, app: str) -> set[str] | None:
        st = self.apps.get(app)
        return st.allowed if st is not None else None

    # ------------------------------------------------------------------ helpers

    def _only_app(self) -> str:
        live = [n for n, st in self.apps.items() if st.socket is not None]
        if len(live) != 1:
            raise AssertionError(f"pass app=: {len(live)} connected apps")
        return live[0]

    def _envelope(self, etype: str, app: str) -> JsonDict:
        return {"type": etype, "application": app, "timestamp": _now()}

    async def _emit(self, channel_id: str, event: JsonDict) -> None:
        app = self.channel_app.get(channel_id)
        if app is not None:
            await self.push(event, app)

    async def _emit_target(self, target_uri: str, event: JsonDict) -> None:
        kind, _, rid = target_uri.partition(":")
        if kind == "channel":
            await self._emit(rid, event)
        else:
            for cid in self.bridges.get(rid, {}).get("channels", []):
                await self._emit(cid, event)
                break

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _err(status: int, message: str) -> web.Response:
        return web.json_response({"message": message}, status=status)

    def _channel_or_404(self, request: web.Request) -> JsonDict:
        ch = self.channels.get(request.match_info["id"])
        if ch is None:
            raise web.HTTPNotFound(text=json.dumps({"message": "Channel not found"}), content_type="application/json")
        return ch

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            if request.path == "/ari/events":
                self.ws_rejects += 1
            return self._err(401, "Authentication required")
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        request[_JSON] = body
        if request.path != "/ari/events":
            via = "ws" if request.headers.get("X-Fake-Via") == "ws" else "http"
            self.requests.append(Request(request.method, request.path, dict(request.query), body, via))
        for f in self._failures:
            if f.times > 0 and f.method == request.method and request.path.startswith(f.path_prefix):
                f.times -= 1
                return self._err(f.status, f.message)
        resp: web.StreamResponse = await handler(request)
        return resp

    def _param(self, request: web.Request, name: str) -> str | None:
        value = request.query.get(name)
        if value is None and isinstance(request[_JSON], dict):
            v = request[_JSON].get(name)
            value = None if v is None else str(v)
        return value

    # ------------------------------------------------------------------ WebSocket

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.ws_status is not None:
            self.ws_rejects += 1
            return self._err(self.ws_status, "Rejected")
        app = request.query.get("app")
        if not app:
            return self._err(400, "Missing app")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        st = self.apps.setdefault(app, _AppState())
        if st.socket is not None and not st.socket.closed:
            old = st.socket
            await old.send_str(json.dumps(self._envelope("ApplicationReplaced", app)))
            st.silenced.append(old)
        st.socket = ws
        st.allowed = None
        async with self._ws_cond:
            self.ws_connects += 1
            self._ws_cond.notify_all()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break
                if msg.type is WSMsgType.TEXT:
                    await self._ws_rest(app, ws, msg.data)
        finally:
            if st.socket is ws:
                st.socket = None
                st.allowed = None  # Asterisk forgets the filter with the socket
            if ws in st.silenced:
                st.silenced.remove(ws)
        return ws

    async def _ws_rest(self, app: str, ws: web.WebSocketResponse, text: str) -> None:
        """Serve one RESTRequest frame received on ``ws`` (other text frames are ignored)."""
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("type") != "RESTRequest":
            return
        async with self._ws_cond:
            self.ws_rest_received += 1
            self._ws_cond.notify_all()
        if self.ws_rest_hold:
            return
        uri = str(doc.get("uri", ""))
        reply: JsonDict = {
            "type": "RESTResponse",
            "transaction_id": doc.get("transaction_id", ""),
            "request_id": doc.get("request_id", ""),
            "uri": uri,
            "application": app,
            "timestamp": _now(),
        }
        if uri.startswith("/"):
            status, raw, ctype = 405, json.dumps({"message": "Invalid method"}), "application/json"
        else:
            if self._loopback is None:
                self._loopback = ClientSession()
            headers = {
                "Authorization": "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode(),
                "X-Fake-Via": "ws",
            }
            if doc.get("message_body") is not None:
                headers["Content-Type"] = str(doc.get("content_type", "application/json"))
            query = [(q["name"], q["value"]) for q in doc.get("query_strings", [])]
            async with self._loopback.request(
                str(doc.get("method", "GET")),
                f"{self.url}/ari/{uri}",
                params=query,
                data=doc.get("message_body"),
                headers=headers,
            ) as resp:
                status, raw, ctype = resp.status, await resp.text(), resp.content_type
        reply["status_code"] = status
        reply["reason_phrase"] = "OK" if status < 300 else "Error"
        if raw:
            reply["content_type"] = ctype
            reply["message_body"] = raw
        st = self.apps.get(app)
        if st is not None and st.socket is ws and st.allowed and "RESTResponse" not in st.allowed:
            return  # Asterisk filters responses like events
        if not ws.closed:
            await ws.send_str(json.dumps(reply))

    # ------------------------------------------------------------------ REST handlers

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"version": "22.0.0-fake", "entity_id": "00:00:00:00:00:01"},
                                  "build": {"options": self.build_options}})  # fmt: skip

    def _new_channel(self, cid: str, endpoint: str, app: str | None) -> JsonDict:
        ch: JsonDict = {
            "id": cid,
            "name": f"{endpoint}-{next(self._ids):08x}",
            "state": "Down",
            "protocol_id": "",
            "caller": {"name": "", "number": ""},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "default",
                "exten": "s",
                "priority": 1,
                "app_name": "Stasis" if app else "",
                "app_data": app or "",
            },
            "creationtime": _now(),
            "language": "en",
        }
        self.channels[cid] = ch
        if app:
            self.channel_app[cid] = app
        return ch

    async def _originate(self, request: web.Request) -> web.Response:
        endpoint = self._param(request, "endpoint")
        if not endpoint:
            return self._err(400, "Endpoint must be specified")
        cid = self._param(request, "channelId") or f"fake-{next(self._ids)}"
        if self._id_taken(cid):
            return self._err(409, "Channel with given unique ID already exists")
        if endpoint.startswith("Bad/"):
            return self._err(500, "Allocation failed")
        app = self._param(request, "app")
        if app is None and not self._param(request, "extension"):
            return self._err(400, "Application or extension must be specified")
        ch = self._new_channel(cid, endpoint, app)
        if app:
            args = self._param(request, "appArgs")
            ch["state"] = "Up"
            await self._emit(cid, {"type": "StasisStart", "channel": ch, "args": args.split(",") if args else []})
        return web.json_response(ch)

    async def _create(self, request: web.Request) -> web.Response:
        endpoint = self._param(request, "endpoint")
        app = self._param(request, "app")
        if not endpoint or not app:
            return self._err(400, "Endpoint and app must be specified")
        cid = self._param(request, "channelId") or f"fake-{next(self._ids)}"
        if self._id_taken(cid):
            return self._err(409, "Channel with given unique ID already exists")
        return web.json_response(self._new_channel(cid, endpoint, app))

    def _id_taken(self, cid: str) -> bool:
        """Asterisk 22 refuses a channelId that is a *prefix* of an existing channel id."""
        return any(existing.startswith(cid) for existing in self.channels)

    async def _channels_list(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.channels.values()))

    async def _channel_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._channel_or_404(request))

    async def _hangup(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        cid = ch["id"]
        await self._emit(cid, {"type": "ChannelHangupRequest", "channel": ch, "cause": 16})
        await self._emit(cid, {"type": "StasisEnd", "channel": ch})
        await self._emit(cid, {"type": "ChannelDestroyed", "channel": ch, "cause": 16, "cause_txt": "Normal Clearing"})
        del self.channels[cid]
        self.channel_app.pop(cid, None)
        return web.Response(status=204)

    async def _answer(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        ch["state"] = "Up"
        await self._emit(ch["id"], {"type": "ChannelStateChange", "channel": ch})
        return web.Response(status=204)

    async def _channel_op(self, request: web.Request) -> web.Response:
        self._channel_or_404(request)
        if request.match_info["op"] not in {
            "ring",
            "progress",
            "dtmf",
            "dial",
            "continue",
            "move",
            "redirect",
            "hold",
            "mute",
        }:
            return self._err(404, "Resource not found")
        return web.Response(status=204)

    async def _var_get(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        name = self._param(request, "variable") or ""
        value = self.variables.get(ch["id"], {}).get(name)
        if value is None:
            return self._err(404, "Provided variable was not found")
        return web.json_response({"value": value})

    async def _var_set(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        name = self._param(request, "variable") or ""
        self.variables.setdefault(ch["id"], {})[name] = self._param(request, "value") or ""
        return web.Response(status=204)

    async def _start_playback(self, target_uri: str, pid: str, media: str, lang: str) -> web.Response:
        if pid in self.playbacks:
            return self._err(409, "Playback with given id already exists")
        pb = {"id": pid, "media_uri": media, "target_uri": target_uri, "language": lang, "state": "playing"}
        self.playbacks[pid] = pb
        if self.auto_finish_playbacks:
            self._spawn(self._autoplay(pid, media))
        return web.json_response({**pb, "state": "queued"})

    async def _autoplay(self, pid: str, media: str) -> None:
        pb = self.playbacks[pid]
        await self._emit_target(pb["target_uri"], {"type": "PlaybackStarted", "playback": dict(pb)})
        await self.finish_playback(pid, "failed" if "missing" in media else "done")

    async def _channel_play(self, request: web.Request) -> web.Response:
        ch = self._channel_or_404(request)
        pid = request.match_info.get("pid") or self._param(request, "playbackId") or f"pb-{next(self._ids)}"
        media = self._param(request, "media")
        if not media:
            return self._err(400, "missing media")
        return await self._start_playback(f"channel:{ch['id']}", pid, media, self._param(request, "lang") or "en")

    async def _bridges_list(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.bridges.values()))

    def _bridge_or_404(self, request: web.Request) -> JsonDict:
        br = self.bridges.get(request.match_info["id"])
        if br is None:
            raise web.HTTPNotFound(text=json.dumps({"message": "Bridge not found"}), content_type="application/json")
        return br

    async def _bridge_create(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        br = self.bridges.setdefault(
            bid,
            {
                "id": bid,
                "technology": "simple_bridge",
                "bridge_type": self._param(request, "type") or "mixing",
                "bridge_class": "stasis",
                "creator": "Stasis",
                "name": self._param(request, "name") or "",
                "channels": [],
                "creationtime": _now(),
            },
        )
        return web.json_response(br)

    async def _bridge_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._bridge_or_404(request))

    async def _bridge_destroy(self, request: web.Request) -> web.Response:
        br = self._bridge_or_404(request)
        for cid in list(br["channels"]):
            await self._emit(cid, {"type": "ChannelLeftBridge", "bridge": br, "channel": self.channels[cid]})
        del self.bridges[br["id"]]
        return web.Response(status=204)

    async def _bridge_add(self, request: web.Request) -> web.Response:
        br = self._bridge_or_404(request)
        ids = (self._param(request, "channel") or "").split(",")
        for cid in ids:
            if cid not in self.channels:
                return self._err(400, "Channel not found")
        for cid in ids:
            br["channels"].append(cid)
            await self._emit(cid, {"type": "ChannelEnteredBridge", "bridge": br, "channel": self.channels[cid]})
        return web.Response(status=204)

    async def _bridge_remove(self, request: web.Request) -> web.Response:
        br = self._bridge_or_404(request)
        for cid in (self._param(request, "channel") or "").split(","):
            if cid not in br["channels"]:
                return self._err(422, "Channel not in bridge")
            br["channels"].remove(cid)
            await self._emit(cid, {"type": "ChannelLeftBridge", "bridge": br, "channel": self.channels[cid]})
        return web.Response(status=204)

    async def _bridge_play(self, request: web.Request) -> web.Response:
        br = self._bridge_or_404(request)
        media = self._param(request, "media") or ""
        return await self._start_playback(f"bridge:{br['id']}", request.match_info["pid"], media, "en")

    async def _playback_get(self, request: web.Request) -> web.Response:
        pb = self.playbacks.get(request.match_info["id"])
        return web.json_response(pb) if pb else self._err(404, "Playback not found")

    async def _playback_stop(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        if pid not in self.playbacks:
            return self._err(404, "Playback not found")
        await self.finish_playback(pid, "done")
        return web.Response(status=204)

    async def _playback_control(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.playbacks:
            return self._err(404, "Playback not found")
        return web.Response(status=204)

    async def _app_get(self, request: web.Request) -> web.Response:
        name = request.match_info["app"]
        st = self.apps.get(name)
        if st is None:
            return self._err(404, "Application not found")
        return web.json_response(
            {
                "name": name,
                "channel_ids": [c for c, a in self.channel_app.items() if a == name],
                "bridge_ids": [],
                "endpoint_ids": [],
                "device_names": [],
                "events_allowed": [{"type": t} for t in sorted(st.allowed or ())],
                "events_disallowed": [],
            }
        )

    async def _app_filter(self, request: web.Request) -> web.Response:
        name = request.match_info["app"]
        st = self.apps.get(name)
        if st is None or st.socket is None:
            return self._err(404, "Application not found")
        body = request[_JSON] or {}
        st.allowed = {e["type"] for e in body.get("allowed", [])} or None
        return await self._app_get(request)

    async def _endpoints(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _stored_get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.stored_recordings:
            return self._err(404, "Recording not found")
        return web.json_response({"name": name, "format": "wav"})

    async def _stored_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.stored_recordings:
            return self._err(404, "Recording not found")
        return web.Response(body=self.stored_recordings[name], content_type="audio/wav")

    async def _stored_delete(self, request: web.Request) -> web.Response:
        if self.stored_recordings.pop(request.match_info["name"], None) is None:
            return self._err(404, "Recording not found")
        return web.Response(status=204)

"""FastAGI token resolver, so an existing dialer can dial ``Local/<token>@reffection-resolve``.

The dialplan (``dialplan/extensions_reffection.conf``) calls
``AGI(agi://HOST:PORT/resolve,${EXTEN},${REFFECTION_AUDIENCE})``; this server answers by setting:

* ``REFFECTION_STATUS``  -- ``ok`` or a reason code (``expired_token``, ``wrong_audience``,
  ``dnc``, ``no_route``, ``bad_request`` ...);
* ``REFFECTION_DIALSTR`` -- the routed dial string (only when ``ok``);
* ``REFFECTION_CALLERID`` -- the caller ID to present, when one is configured (only when ``ok``).

The number exists in the dial string inside Asterisk only. Nothing here logs it: panoramisk's
own handler logs every AGI header at debug level, so the connection handler is replaced by one
that reads headers with limits and a timeout and logs only the channel, token and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from panoramisk.fast_agi import Application, Request

from .errors import ReffectionError
from .routing import RouteTable
from .tokens.codec import TokenCodec
from .tokens.service import ResolvedSubscriber, TokenService

__all__ = ["AgiResult", "AgiServer", "TokenResolver", "start_agi_server"]

log = logging.getLogger(__name__)

_MAX_HEADER_BYTES: Final = 16384
_HEADER_TIMEOUT: Final = 5.0
_COMMAND_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class AgiResult:
    """The resolver's answer; ``dial_string`` is repr-hidden."""

    status: str
    dial_string: str | None = field(default=None, repr=False)
    caller_id: str | None = field(default=None, repr=False)


Refusal = Callable[[ResolvedSubscriber], str | None]
"""Extra pre-dial check: return a reason code to refuse, ``None`` to allow."""


class TokenResolver:
    """token + audience -> dial string, via :class:`TokenService` and :class:`RouteTable`.

    ``caller_ids`` maps an audience (``platform`` or ``platform/campaign``) to the caller ID to
    present. DNC subscribers are always refused (``dnc``); ``check`` adds further policy.
    """

    def __init__(
        self,
        service: TokenService,
        routes: RouteTable,
        *,
        caller_ids: dict[str, str] | None = None,
        check: Refusal | None = None,
    ) -> None:
        self._service = service
        self._routes = routes
        self._caller_ids = dict(caller_ids or {})
        self._check = check

    def resolve(self, token: str, audience: str) -> AgiResult:
        if not token or not audience:
            return AgiResult("bad_request")
        if not TokenCodec.looks_like_token(token):
            return AgiResult("malformed_token")
        platform, _, campaign = audience.partition("/")
        try:
            sub = self._service.resolve(token, platform, campaign=campaign or None)
            if sub.dnc:
                return AgiResult("dnc")
            if self._check is not None:
                refusal = self._check(sub)
                if refusal:
                    return AgiResult(refusal)
            target = self._routes.resolve(sub.number)
        except ReffectionError as exc:
            return AgiResult(exc.code)
        caller_id = self._caller_ids.get(sub.audience) or self._caller_ids.get(platform)
        return AgiResult("ok", target.dial_string, caller_id)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("AGI peer closed before the end of the headers")
        total += len(line)
        if total > _MAX_HEADER_BYTES:
            raise ConnectionError("AGI headers too large")
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            return headers
        name, sep, value = text.partition(": ")
        if sep:
            headers[name] = value


class _Application(Application):  # type: ignore[misc]
    """panoramisk's Application with a connection handler that never logs headers, bounds
    reads, and cannot spin on a peer that disconnects early."""

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers = await asyncio.wait_for(_read_headers(reader), _HEADER_TIMEOUT)
            script = headers.get("agi_network_script", "")
            route = self._route.get(script)
            if route is None:
                log.warning("fastagi unknown route script=%r", script[:40])
                return
            request = Request(app=self, headers=headers, reader=reader, writer=writer)
            await route(request)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("fastagi connection dropped: %s", type(exc).__name__)
        except Exception:
            log.exception("fastagi handler failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class AgiServer:
    """A running FastAGI server; :meth:`close` stops it."""

    def __init__(self, server: asyncio.Server, app: Application) -> None:
        self._server = server
        self.app = app

    @property
    def port(self) -> int:
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def __aenter__(self) -> AgiServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def start_agi_server(host: str, port: int, resolver: TokenResolver) -> AgiServer:
    """Serve route ``resolve`` on ``host:port`` (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    app = _Application(loop=loop)

    async def resolve(request: Request) -> None:
        h = request.headers
        token = h.get("agi_arg_1") or h.get("agi_extension", "")
        audience = h.get("agi_arg_2", "")
        channel = h.get("agi_channel", "?")
        # Vault access is a short SQLite read: acceptable on the loop (see tokens.vault).
        result = resolver.resolve(token, audience)
        await _set(request, "REFFECTION_STATUS", result.status)
        if result.status == "ok":
            assert result.dial_string is not None
            await _set(request, "REFFECTION_DIALSTR", result.dial_string)
            if result.caller_id:
                await _set(request, "REFFECTION_CALLERID", result.caller_id)
        log.info("fastagi resolve channel=%s token=%s status=%s", channel, token[:64], result.status)

    app.add_route("resolve", resolve)
    server = await asyncio.start_server(app.handler, host, port)
    return AgiServer(server, app)


async def _set(request: Request, name: str, value: str) -> None:
    reply = await asyncio.wait_for(request.send_command(f"SET VARIABLE {name} {_quote(value)}"), _COMMAND_TIMEOUT)
    if reply.get("status_code") != 200:
        raise ConnectionError(f"SET VARIABLE {name} refused (status {reply.get('status_code')})")

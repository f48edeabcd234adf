"""The platform API (aiohttp): place calls by token, follow them, confirm leads, hang up.

Every response is PII-free: calls are described by id, token, campaign, state and reasons.
Bearer API keys are compared in constant time (SHA-256 digests, every key checked) and bind
the caller to one audience: another audience's calls are indistinguishable from missing ones.
Errors are ``{"error": {"code", "message"}}`` with the HTTP status that fits the code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from .config import ApiKey
from .errors import ReffectionError
from .service import CallService

log = logging.getLogger(__name__)

_STATUS: dict[str, int] = {
    "bad_request": 400,
    "malformed_token": 400,
    "unauthorized": 401,
    "dnc": 403,
    "outside_calling_window": 403,
    "attempt_limit": 403,
    "cooldown": 403,
    "policy": 403,
    "unknown_call": 404,
    "not_found": 404,
    "call_in_progress": 409,
    "not_consented": 409,
    "not_bridged": 409,
    "call_ended": 409,
    "already_confirmed": 409,
    "lead_store_failed": 409,
    "unknown_campaign": 422,
    "unknown_key": 422,
    "bad_token": 422,
    "expired_token": 422,
    "wrong_audience": 422,
    "unknown_subscriber": 422,
    "erased": 422,
    "invalid_number": 422,
    "no_route": 422,
    "rate_limited": 429,
    "concurrency_limit": 429,
    "shutting_down": 503,
    "asterisk_unavailable": 503,
    "confirm_timeout": 504,
    # the partner's own storage is at fault, not the request
    "vault_integrity": 500,
    "vault_key_mismatch": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthProbe = Callable[[], dict[str, bool]]
OptOut = Callable[[str, str], None]

class ApiError(ReffectionError):
    code = "bad_request"


def error_response(code: str, message: str) -> web.Response:
    status = _STATUS.get(code, 400)
    headers = {"WWW-Authenticate": 'Bearer realm="reffection-ari"'} if status == 401 else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class Authenticator:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    def audience(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiError("missing bearer API key", code="unauthorized")
        digest = hashlib.sha256(secret.strip().encode()).digest()
        found: str | None = None
        for key in self._keys:  # check every key: timing does not reveal which one matched
            if hmac.compare_digest(digest, key.sha256):
                found = key.audience
        if found is None:
            raise ApiError("invalid API key", code="unauthorized")
        return found


def create_app(
    service: CallService,
    keys: Sequence[ApiKey],
    *,
    health: HealthProbe | None = None,
    opt_out: OptOut | None = None,
    sse_heartbeat: float = 15.0,
) -> web.Application:
    auth = Authenticator(keys)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ReffectionError as exc:
            if exc.code not in _STATUS:
                log.warning("api error with unmapped code=%s path=%s", exc.code, request.path)
            return error_response(exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400:
                code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
                    exc.status, "bad_request"
                )
                return web.json_response({"error": {"code": code, "message": exc.reason}}, status=exc.status)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            # Never echo an unexpected exception: its text could carry anything.
            log.exception("api handler failed path=%s", request.path)
            return web.json_response({"error": {"code": "internal_error", "message": "internal error"}}, status=500)

    async def body(request: web.Request, allowed: set[str], required: set[str]) -> dict[str, str]:
        if request.content_length == 0 or not request.can_read_body:
            data: Any = {}
        else:
            try:
                data = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError("body must be a JSON object")
        unknown = set(data) - allowed
        if unknown:
            raise ApiError(f"unknown field(s): {', '.join(sorted(unknown))}")
        for key in required:
            if key not in data:
                raise ApiError(f"missing field {key!r}")
        for key, value in data.items():
            if not isinstance(value, str) or not 0 < len(value) <= 256:
                raise ApiError(f"field {key!r} must be a non-empty string (max 256)")
        return data

    async def place_call(request: web.Request) -> web.Response:
        audience = auth.audience(request)
        data = await body(request, {"token", "campaign"}, {"token", "campaign"})
        view = await service.place_call(data["token"], data["campaign"], audience)
        return web.json_response(view.to_json(), status=202)

    async def get_call(request: web.Request) -> web.Response:
        audience = auth.audience(request)
        return web.json_response(service.get(request.match_info["call_id"], audience).to_json())

    async def confirm(request: web.Request) -> web.Response:
        audience = auth.audience(request)
        data = await body(request, {"agent_id"}, set())
        call_id = request.match_info["call_id"]
        result = await service.confirm(call_id, audience, agent_id=data.get("agent_id"))
        if result.ok or (result.code == "already_confirmed" and result.lead_id):
            return web.json_response(
                {
                    "call_id": call_id,
                    "confirmed": True,
                    "lead_id": result.lead_id,
                    "repeated": result.code == "already_confirmed",
                }
            )
        code = result.code or "call_ended"
        return error_response(code, f"confirm rejected: {code}")

    async def hangup(request: web.Request) -> web.Response:
        audience = auth.audience(request)
        view = await service.hangup(request.match_info["call_id"], audience)
        return web.json_response(view.to_json(), status=202)

    async def optout(request: web.Request) -> web.Response:
        audience = auth.audience(request)
        data = await body(request, {"token"}, {"token"})
        if opt_out is None:
            raise ApiError("opt-out is not enabled", code="not_found")
        await asyncio.to_thread(opt_out, data["token"], audience)
        return web.json_response({"token": data["token"], "dnc": True})

    streams: set[asyncio.Task[Any]] = set()

    async def events(request: web.Request) -> web.StreamResponse:
        audience = auth.audience(request)
        queue = service.events(audience)
        task = asyncio.current_task()
        assert task is not None
        streams.add(task)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        try:
            await response.write(b": stream open\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), sse_heartbeat)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                batch = [event]
                while not queue.empty() and len(batch) < 256:  # one write for a burst of events
                    batch.append(queue.get_nowait())
                chunk = "".join(
                    f"event: call.state\ndata: {json.dumps(e.to_json(), separators=(',', ':'))}\n\n" for e in batch
                )
                await response.write(chunk.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            streams.discard(task)
            service.drop_events(queue)
        return response

    async def close_streams(app: web.Application) -> None:
        """Live streams never end on their own: end them so shutdown does not wait on them."""
        for task in list(streams):
            task.cancel()

    async def healthz(request: web.Request) -> web.Response:
        parts = health() if health else {"ari": service.ari_connected}
        ok = all(parts.values())
        return web.json_response(
            {
                "status": "ok" if ok else "degraded",
                **{k: "up" if v else "down" for k, v in parts.items()},
                "active_calls": service.active_calls,
            },
            status=200 if ok else 503,
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=service.metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application(middlewares=[errors], client_max_size=16 * 1024)
    app.on_shutdown.append(close_streams)
    app.router.add_post("/v1/calls", place_call)
    app.router.add_get("/v1/calls/{call_id}", get_call)
    app.router.add_post("/v1/calls/{call_id}/confirm", confirm)
    app.router.add_post("/v1/calls/{call_id}/hangup", hangup)
    app.router.add_post("/v1/optout", optout)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ReffectionError(f"cannot listen on {host}:{port}: {exc.strerror}", code="port_in_use") from None
    return runner


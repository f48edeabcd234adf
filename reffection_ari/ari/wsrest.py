"""REST over the ARI event WebSocket: the ``RESTRequest``/``RESTResponse`` JSON wrapper (sans-IO part).

Asterisk (20.14+/21.9+/22.4+; verified on 22.10.1) answers a text frame
``{"type": "RESTRequest", "request_id": ..., "method": ..., "uri": ..., "query_strings": [{"name", "value"}],
"content_type": ..., "message_body": "<string>"}`` sent on ``/ari/events`` with a frame
``{"type": "RESTResponse", "request_id": ..., "status_code": ..., "reason_phrase": ..., "content_type": ...,
"message_body": "<string>"}`` interleaved with the events, in no set order relative to them. It saves the
HTTP round trip (request line, headers, a pooled connection) for every call.

Facts measured on 22.10.1 that shape this module:

- ``uri`` is relative to ``/ari`` and must not start with ``/`` (else 405 ``Invalid method``).
- The application's event filter applies to ``RESTResponse`` too: a filter whose allowed list omits it
  silently swallows every response, so :func:`filter_types` adds it.
- A frame Asterisk cannot parse is answered with an empty ``request_id`` (400): nothing to match, so the
  request it belonged to fails by timeout; we never send such frames.
- Bodies are strings, so binary results (``recordings/stored/{name}/file``) stay on HTTP.

This module holds no socket: :class:`WsRest` builds frames, keeps the pending futures by request id and
resolves them from received text; the client does the I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RESPONSE_TYPE", "WsRest", "WsRestResponse", "filter_types"]

RESPONSE_TYPE = "RESTResponse"
_MARKER = '"RESTResponse"'


@dataclass(frozen=True, slots=True)
class WsRestResponse:
    """One ``RESTResponse`` frame. ``body`` is the ``message_body`` string (``None`` when absent)."""

    request_id: str
    status: int
    reason: str
    body: str | None


def filter_types(allowed: Sequence[str]) -> list[str]:
    """The allowed event types plus ``RESTResponse`` (an event filter also filters the responses)."""
    types = list(allowed)
    if types and RESPONSE_TYPE not in types:
        types.append(RESPONSE_TYPE)
    return types


def parse_response(data: str) -> WsRestResponse | None:
    """The response in ``data``, or ``None`` when the frame is not a ``RESTResponse`` (an event).

    A substring test first, so events cost no second JSON parse; a false positive (an event whose
    text merely contains the word) is parsed and rejected.
    """
    if _MARKER not in data:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("type") != RESPONSE_TYPE:
        return None
    status = doc.get("status_code")
    rid = doc.get("request_id")
    if not isinstance(status, int) or not isinstance(rid, str):
        return None
    body = doc.get("message_body")
    reason = doc.get("reason_phrase")
    return WsRestResponse(
        rid,
        status,
        reason if isinstance(reason, str) else "",
        body if isinstance(body, str) else None,
    )


class WsRest:
    """Request ids, frames and the futures awaiting their responses, for one client.

    Ids are ``<random prefix>-<counter>``: unique per client and across reconnects, so a late response
    from a previous socket can never resolve a newer request.
    """

    __slots__ = ("_counter", "_pending", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._pending: dict[str, asyncio.Future[WsRestResponse]] = {}

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered, failed or abandoned."""
        return len(self._pending)

    def start(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Any,
    ) -> tuple[str, str, asyncio.Future[WsRestResponse]]:
        """Register a request: returns its id, the frame to send and the future of its response."""
        rid = f"{self._prefix}-{next(self._counter)}"
        frame: dict[str, Any] = {"type": "RESTRequest", "request_id": rid, "method": method, "uri": path.lstrip("/")}
        if params:
            frame["query_strings"] = [{"name": k, "value": v} for k, v in params.items()]
        if body is not None:
            frame["content_type"] = "application/json"
            frame["message_body"] = json.dumps(body)
        fut: asyncio.Future[WsRestResponse] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        return rid, json.dumps(frame), fut

    def discard(self, rid: str) -> None:
        """Forget a request (answered, timed out or cancelled); a late response is then ignored."""
        self._pending.pop(rid, None)

    def feed(self, data: str) -> bool:
        """Resolve the request ``data`` answers. True if ``data`` was a ``RESTResponse`` (matched or not:
        either way it is not an event), False if it is an event for the reader to dispatch."""
        resp = parse_response(data)
        if resp is None:
            return False
        fut = self._pending.pop(resp.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(resp)
        return True

    def fail_all(self, error: Callable[[], BaseException]) -> int:
        """Fail every pending request with a fresh ``error()`` (the socket is gone); returns how many."""
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error())
        return len(pending)

"""Typed ARI failures, so callers branch on exception classes instead of HTTP status codes.

An error carries the request that failed (``method``, ``path``) and Asterisk's own ``message``. Query values
that could hold a dial string or a number (``endpoint``, ``callerId``, ``extension`` ...) are masked in the
exception text; request bodies are never included.
"""

from __future__ import annotations

from collections.abc import Mapping

from reffection_ari.errors import ReffectionError

__all__ = [
    "AriError",
    "BadRequest",
    "Conflict",
    "ConnectionLost",
    "NotFound",
    "NotInStasis",
    "ServerError",
    "Unauthorized",
    "Unprocessable",
    "error_for_status",
    "masked_query",
]

# Query parameters whose values are safe to show (ids, names, options). Everything else is masked.
_SAFE_QUERY_KEYS = frozenset(
    {
        "app",
        "channelId",
        "otherChannelId",
        "playbackId",
        "bridgeId",
        "snoopId",
        "timeout",
        "formats",
        "reason",
        "reason_code",
        "type",
        "name",
        "lang",
        "operation",
        "format",
        "maxDurationSeconds",
        "maxSilenceSeconds",
        "ifExists",
        "beep",
        "terminateOn",
        "spy",
        "whisper",
        "subscribeAll",
        "eventSource",
        "destinationRecordingName",
        "inhibitConnectedLineUpdates",
        "role",
        "absorbDTMF",
        "mute",
        "priority",
        "context",
        "variable",
        "before",
        "between",
        "duration",
        "after",
        "skipms",
        "offsetms",
    }
)


def masked_query(query: Mapping[str, object] | None) -> str:
    """Render ``?k=v&...`` with every value not known to be safe replaced by ``***``."""
    if not query:
        return ""
    parts = [f"{k}={v if k in _SAFE_QUERY_KEYS else '***'}" for k, v in query.items()]
    return "?" + "&".join(parts)


class AriError(ReffectionError):
    """An ARI request failed. ``status`` is the HTTP status (``None`` when no response arrived)."""

    code = "ari_error"

    def __init__(
        self,
        ari_message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        query: Mapping[str, object] | None = None,
        code: str | None = None,
    ) -> None:
        where = f"{method} {path}{masked_query(query)}".strip()
        text = f"{where} -> {status}: {ari_message}" if status is not None else f"{where}: {ari_message}"
        super().__init__(text if where else ari_message, code=code)
        self.status = status
        self.ari_message = ari_message
        self.method = method
        self.path = path

    @property
    def message(self) -> str:
        """Asterisk's own message (e.g. ``"Channel not found"``), without the request line."""
        return self.ari_message


class BadRequest(AriError):
    """400: a parameter is missing or invalid (e.g. unknown app or extension)."""

    code = "ari_bad_request"


class Unauthorized(AriError):
    """401: ARI rejected the credentials."""

    code = "ari_unauthorized"


class NotFound(AriError):
    """404: the channel, bridge, playback, recording or application does not exist."""

    code = "ari_not_found"


class Conflict(AriError):
    """409: the resource is in the wrong state, or the id is already in use."""

    code = "ari_conflict"


class NotInStasis(Conflict):
    """409 because the channel is not (or no longer) in a Stasis application."""

    code = "ari_not_in_stasis"


class Unprocessable(AriError):
    """422: the request is well-formed but cannot be applied (e.g. a missing bridge for addChannel)."""

    code = "ari_unprocessable"


class ServerError(AriError):
    """5xx: Asterisk failed (e.g. ``Allocation failed`` for an unusable endpoint)."""

    code = "ari_server_error"


class ConnectionLost(AriError):
    """Asterisk is unreachable, the request timed out, or the client was closed."""

    code = "ari_connection_lost"


_BY_STATUS: dict[int, type[AriError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
}


def error_for_status(
    status: int,
    ari_message: str,
    *,
    method: str,
    path: str,
    query: Mapping[str, object] | None = None,
) -> AriError:
    """Map an HTTP error status to its typed exception."""
    cls: type[AriError]
    if status >= 500:
        cls = ServerError
    elif status == 409 and "stasis" in ari_message.lower():
        cls = NotInStasis
    else:
        cls = _BY_STATUS.get(status, AriError)
    return cls(ari_message, status=status, method=method, path=path, query=query)

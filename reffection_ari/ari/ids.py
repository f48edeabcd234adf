"""Client-chosen resource ids.

Asterisk 22's duplicate check on ``POST /channels`` (and ``/channels/create``) is a *prefix* match: a new
``channelId`` that is a prefix of an existing channel's id (``call-9`` while ``call-90`` or ``call-9;2``
is up) is refused with 409 *and leaks a channel*. Ids from :func:`new_id` have a fixed-length random tail,
so none is ever a prefix of another.
"""

from __future__ import annotations

import secrets

__all__ = ["new_id"]


def new_id(prefix: str = "r") -> str:
    """``<prefix>-<24 hex chars>``: unique, fixed-length, URL-safe, never a prefix of another id."""
    return f"{prefix}-{secrets.token_hex(12)}"

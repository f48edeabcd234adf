"""Delivery sinks the outbox worker hands leads to: an HMAC-signed webhook and a JSONL file.

A :class:`DeliverySink` gets the lead's JSON (``lead_to_json``) and its id, and either returns
(delivered) or raises :class:`DeliveryFailed` saying whether a retry can help. Deliveries are at
least once; the lead id is the idempotency key receivers de-duplicate on.

Webhook signature (what a receiver checks, see ``examples/webhook_receiver.py``)::

    X-Reffection-Timestamp: <unix seconds>
    X-Reffection-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
    Idempotency-Key: <lead_id>
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from ..errors import EvidenceError
from ..lead import Lead
from ._util import Clock, canonical_json
from .leadjson import lead_to_json

TIMESTAMP_HEADER = "X-Reffection-Timestamp"
SIGNATURE_HEADER = "X-Reffection-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class DeliveryFailed(EvidenceError):
    """A delivery attempt failed; ``retryable`` says whether the worker should try again.

    Codes: ``delivery_retry`` (timeouts, connection errors, 408/425/429/5xx) and
    ``delivery_rejected`` (other statuses: the receiver refuses this lead for good).
    """

    code = "delivery_retry"

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message, code="delivery_retry" if retryable else "delivery_rejected")
        self.retryable = retryable
        self.status = status


class DeliverySink(Protocol):
    async def deliver(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        """Deliver once; return on success, raise :class:`DeliveryFailed` otherwise."""
        ...

    async def aclose(self) -> None: ...


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed (canonical JSON), so the signature is reproducible."""
    return canonical_json(payload)


def sign_webhook(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """``v1=<hex>`` value of :data:`SIGNATURE_HEADER`."""
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_webhook(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> None:
    """Receiver side: constant-time check of the HMAC and the timestamp's freshness.

    Raises :class:`EvidenceError` ``bad_webhook_signature`` or ``stale_webhook``. Several
    ``v1=`` values separated by commas are accepted (secret rotation).
    """
    if not timestamp or not signature or not timestamp.isdigit():
        raise EvidenceError("missing or malformed signature headers", code="bad_webhook_signature")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        raise EvidenceError("webhook timestamp outside the tolerance window", code="stale_webhook")
    expected = sign_webhook(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, part.strip()) for part in signature.split(",")):
        raise EvidenceError("webhook signature does not match", code="bad_webhook_signature")


def _as_bytes(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


class WebhookSink:
    """POSTs each lead as JSON with an HMAC-SHA256 signature; 2xx means delivered.

    408/425/429/5xx, timeouts and connection errors are retryable; any other status (other
    4xx, and 3xx: redirects are not followed) dead-letters the lead.
    """

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        timeout: float = 10.0,
        clock: Clock = time.time,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "reffection-ari-outbox/1",
    ) -> None:
        if not secret:
            raise ValueError("webhook secret must not be empty")
        self.url = url
        self._secret = _as_bytes(secret)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._user_agent = user_agent

    def __repr__(self) -> str:  # never the secret; only scheme://host of the URL
        parts = urlsplit(self.url)
        return f"WebhookSink(url='{parts.scheme}://{parts.hostname}:{parts.port or ''}')"

    async def deliver(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = encode_body(payload)
        ts = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign_webhook(self._secret, ts, body),
            IDEMPOTENCY_HEADER: lead_id,
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            raise DeliveryFailed("webhook timed out", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"webhook connection failed: {type(exc).__name__}", retryable=True) from None
        if 200 <= status < 300:
            return
        retryable = status in RETRYABLE_STATUSES or status >= 500
        raise DeliveryFailed(f"webhook answered HTTP {status}", retryable=retryable, status=status)

    async def aclose(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None


class JsonlFileSink:
    """Appends one JSON line per lead and fsyncs; a lead id already in the file is skipped.

    Safe across processes (``flock``); a torn last line left by a crash is skipped by readers
    and never glued to the next record. Also usable directly as a ``LeadSink``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: set[str] = set()
        self._offset = 0

    def __repr__(self) -> str:
        return f"JsonlFileSink(path={str(self.path)!r})"

    def _append(self, lead_id: str, payload: Mapping[str, Any]) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.seek(self._offset)
            tail = fh.read()
            end = self._offset + len(tail)
            complete = tail.endswith(b"\n") or not tail
            for line in tail.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    continue  # torn; left behind
                try:
                    seen = json.loads(line).get("lead_id")
                except ValueError:
                    continue
                if isinstance(seen, str):
                    self._seen.add(seen)
            self._offset = end
            if lead_id in self._seen:
                return False
            record = (b"" if complete else b"\n") + canonical_json(payload) + b"\n"
            fh.write(record)
            fh.flush()
            os.fsync(fh.fileno())
            self._offset = end + len(record)
            self._seen.add(lead_id)
            return True

    async def deliver(self, lead_id: str, payload: Mapping[str, Any]) -> None:
        if payload.get("lead_id") != lead_id:
            raise DeliveryFailed("payload lead_id does not match", retryable=False)
        try:
            await asyncio.to_thread(self._append, lead_id, payload)
        except OSError as exc:
            raise DeliveryFailed(f"cannot write the lead file: {exc.strerror}", retryable=True) from None

    async def store(self, lead: Lead) -> None:
        """``LeadSink``: durable once this returns."""
        await self.deliver(lead.lead_id, lead_to_json(lead))

    async def aclose(self) -> None:
        return None

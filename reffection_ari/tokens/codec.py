"""Token format ``rf1``: AES-SIV over a random subscriber id, bound to audience and expiry.

Layout (see docs/tokens.md)::

    token   = "rf1" || base32hex_lower(payload)            # 3 + 56 = 59 chars, [0-9a-v] after prefix
    payload = kid:u16be || expiry_day:u16be || aud_tag:3 || siv:16 || ct:12        # 35 bytes
    aad     = "rf1" || payload[0:7] || utf8(audience)
    siv||ct = AES-SIV-512(key[kid]).encrypt(subscriber_id:12, [aad])
    aud_tag = BLAKE2b-256(key=tag_key[kid], data=utf8(audience))[0:3]

35 bytes is exactly 56 base32 characters: no padding bits, so every payload has exactly one
spelling and a re-encoded token cannot alias a valid one. The audience tag lets a token meant for
another audience fail ``wrong_audience`` rather than the indistinguishable ``bad_token``; the full
audience is still authenticated through the AAD.
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ..errors import TokenError
from .keyring import Keyring, TokenKey

__all__ = [
    "SUBSCRIBER_ID_BYTES",
    "TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "DecodedToken",
    "TokenCodec",
    "validate_audience",
]

TOKEN_PREFIX: Final = "rf1"
SUBSCRIBER_ID_BYTES: Final = 12
_HEADER: Final = struct.Struct(">HH3s")  # kid number, expiry epoch-day, audience tag
_HEADER_LEN: Final = _HEADER.size  # 7
_PAYLOAD_LEN: Final = _HEADER_LEN + 16 + SUBSCRIBER_ID_BYTES  # 35
_BODY_CHARS: Final = _PAYLOAD_LEN * 8 // 5  # 56
TOKEN_LENGTH: Final = len(TOKEN_PREFIX) + _BODY_CHARS  # 59
_PREFIX_B: Final = TOKEN_PREFIX.encode()
_TOKEN_RE: Final = re.compile(rf"{TOKEN_PREFIX}[0-9a-v]{{{_BODY_CHARS}}}")
_B32HEX: Final = "0123456789abcdefghijklmnopqrstuv"
_AUDIENCE_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}(?:/[A-Za-z0-9._:-]{1,64})?")
_DAY: Final = 86400
_TAG_CACHE_MAX: Final = 4096
_HEADER_CACHE_MAX: Final = 4096
_PREFIX_VALUE: Final = int(TOKEN_PREFIX, 32)  # int(token, 32) >> 280
_LOW_224: Final = (1 << 224) - 1  # SIV || ciphertext bits of int(token, 32)
_new_tuple: Final = tuple.__new__


def validate_audience(audience: str) -> str:
    """``platform`` or ``platform/campaign``: ASCII letters, digits and ``._:-``, 1..64 each."""
    if not isinstance(audience, str) or _AUDIENCE_RE.fullmatch(audience) is None:
        raise TokenError("audience must be 'platform' or 'platform/campaign' ([A-Za-z0-9._:-])", code="bad_audience")
    return audience


def _spread_steps() -> tuple[tuple[int, int, int], ...]:
    """Masks that move 5-bit group g of a 280-bit int to bits 8g..8g+4: group g travels 3g
    bits, done one bit of g at a time (highest first), so no two groups ever overlap."""
    pos = [5 * g for g in range(_BODY_CHARS)]
    steps = []
    for k in range(5, -1, -1):
        keep = move = 0
        for g in range(_BODY_CHARS):
            if g >> k & 1:
                move |= 31 << pos[g]
                pos[g] += 3 << k
            else:
                keep |= 31 << pos[g]
        steps.append((keep, move, 3 << k))
    assert pos == [8 * g for g in range(_BODY_CHARS)]
    return tuple(steps)


(_K0, _M0, _S0), (_K1, _M1, _S1), (_K2, _M2, _S2), (_K3, _M3, _S3), (_K4, _M4, _S4), (_K5, _M5, _S5) = _spread_steps()
_B32_TABLE: Final = bytes.maketrans(bytes(range(32)), _B32HEX.encode())


def _b32encode(payload: bytes) -> str:
    """base32hex, lower case, of the 35-byte payload (56 characters, no padding).

    The bulk path (``tokenize``) calls this per row, so it is 6 big-int mask/shift steps, one
    ``to_bytes`` and one ``translate`` (about 3x faster than a per-character table walk);
    ``tests/unit/test_tokens.py`` checks it against :func:`base64.b32hexencode`."""
    x = int.from_bytes(payload, "big")
    x = (x & _K0) | ((x & _M0) << _S0)
    x = (x & _K1) | ((x & _M1) << _S1)
    x = (x & _K2) | ((x & _M2) << _S2)
    x = (x & _K3) | ((x & _M3) << _S3)
    x = (x & _K4) | ((x & _M4) << _S4)
    x = (x & _K5) | ((x & _M5) << _S5)
    return x.to_bytes(_BODY_CHARS, "big").translate(_B32_TABLE).decode()


class DecodedToken(NamedTuple):
    """What a valid token says. ``audience`` is the one it was bound to (platform or
    platform/campaign). A NamedTuple: built on every resolve, so construction cost matters."""

    subscriber_id: bytes
    kid: str
    expiry_day: int
    audience: str

    @property
    def expires_at(self) -> float:
        """Epoch seconds after which the token is expired (end of ``expiry_day``, UTC)."""
        return float((self.expiry_day + 1) * _DAY)

    def __repr__(self) -> str:
        return f"DecodedToken(kid={self.kid!r}, expiry_day={self.expiry_day}, audience={self.audience!r})"


class _KeyState:
    """Per-kid cached primitive and audience tags (both pure functions of the key)."""

    __slots__ = ("aessiv", "key", "kid", "tags")

    def __init__(self, key: TokenKey) -> None:
        self.key = key
        self.kid = key.kid
        self.aessiv = key.aessiv()
        self.tags: dict[str, tuple[bytes, bytes]] = {}

    def tag(self, audience: str) -> tuple[bytes, bytes]:
        """(3-byte tag, utf-8 audience)."""
        hit = self.tags.get(audience)
        if hit is None:
            raw = audience.encode()
            hit = (hashlib.blake2b(raw, key=self.key.tag_key(), digest_size=32).digest()[:3], raw)
            if len(self.tags) >= _TAG_CACHE_MAX:
                self.tags.clear()
            self.tags[audience] = hit
        return hit


class _Header(NamedTuple):
    """What a token's clear header means for one audience, cached per header: the AES-SIV call,
    its AAD and the expiry are pure functions of (header bytes, audience, key), so thousands of
    tokens sharing one header (same key, audience tag and expiry bucket) compute them once."""

    decrypt: Callable[[bytes, list[bytes]], bytes]
    aad: list[bytes]
    kid: str
    audience: str
    expiry_day: int
    deadline: int  # epoch seconds from which the token is expired: start of expiry_day + 1


def _no_decrypt(data: bytes, aad: list[bytes]) -> bytes:
    raise AssertionError("unreachable: the sentinel header never matches an audience")


# A header-cache miss: its audience is not a str, so it never equals a candidate audience.
_NO_HEADER: Final = _Header(_no_decrypt, [], "", cast(str, object()), 0, 0)


class TokenCodec:
    """Seals and opens tokens with a :class:`Keyring`'s token keys. Pure: no vault, no I/O.

    ``clock`` returns epoch seconds (inject a fake one in tests).
    """

    def __init__(self, keyring: Keyring, *, clock: Callable[[], float] = time.time) -> None:
        self._keyring = keyring
        self._clock = clock
        self._states: dict[int, _KeyState] = {}
        self.reload()

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def reload(self) -> None:
        """Pick up rotations/retirements made on the keyring object."""
        self._states = {k.number: _KeyState(k) for k in self._keyring.token_keys()}
        self._active = self._states[self._keyring.active_token_key().number]
        self._headers: dict[int, _Header] = {}  # a retired key's headers must not survive

    def today(self) -> int:
        return int(self._clock() // _DAY)

    def expiry_day(self, ttl_days: int, bucket_days: int = 7) -> int:
        """Expiry for a token issued now: ``today + ttl_days`` rounded *up* to a multiple of
        ``bucket_days`` (epoch days). Re-issuing within one bucket gives the identical token."""
        if ttl_days < 1 or bucket_days < 1:
            raise ValueError("ttl_days and bucket_days must be >= 1")
        target = self.today() + ttl_days
        day = -(-target // bucket_days) * bucket_days
        if day > 0xFFFF:
            raise ValueError("expiry beyond 2149-06-06 does not fit the token header")
        return day

    def encode(self, subscriber_id: bytes, audience: str, expiry_day: int) -> str:
        """Seal ``subscriber_id`` (12 bytes) for ``audience`` until the end of ``expiry_day``."""
        if len(subscriber_id) != SUBSCRIBER_ID_BYTES:
            raise ValueError("subscriber id must be 12 bytes")
        if not 0 <= expiry_day <= 0xFFFF:
            raise ValueError("expiry_day out of range")
        validate_audience(audience)
        st = self._active
        tag, aud = st.tag(audience)
        header = _HEADER.pack(st.key.number, expiry_day, tag)
        sealed = st.aessiv.encrypt(subscriber_id, [_PREFIX_B + header + aud])
        return TOKEN_PREFIX + _b32encode(header + sealed)

    def encode_many(self, subscriber_ids: Sequence[bytes | None], audience: str, expiry_day: int) -> list[str | None]:
        """:meth:`encode` for many ids with one audience and expiry (``None`` passes through):
        the header, AAD and checks are computed once, then per id one AES-SIV call and
        :func:`_b32encode`. Produces exactly the tokens :meth:`encode` would."""
        if not 0 <= expiry_day <= 0xFFFF:
            raise ValueError("expiry_day out of range")
        validate_audience(audience)
        st = self._active
        tag, aud = st.tag(audience)
        header = _HEADER.pack(st.key.number, expiry_day, tag)
        aad = [_PREFIX_B + header + aud]
        encrypt = st.aessiv.encrypt
        b32 = _b32encode
        out: list[str | None] = []
        append = out.append
        for sid in subscriber_ids:
            if sid is None:
                append(None)
            elif len(sid) != SUBSCRIBER_ID_BYTES:
                raise ValueError("subscriber id must be 12 bytes")
            else:
                append(TOKEN_PREFIX + b32(header + encrypt(sid, aad)))
        return out

    def decode(self, token: str, audiences: Sequence[str], *, check_expiry: bool = True) -> DecodedToken:
        """Open and verify ``token`` for one of ``audiences`` (most specific first, e.g.
        ``["platform/campaign", "platform"]``). Raises :class:`TokenError` with a reason code.
        ``check_expiry=False`` is for erasure only (an expired token still names its subscriber).

        The resolver's hot path, written for CPython (C calls, few bytecodes, no regex):

        * ``n = int(token, 32)`` is 295 bits: the 15-bit value of ``rf1`` (a valid base32hex
          prefix, so ``int`` reads it too), then the 280-bit payload. ``n >> 224`` is prefix +
          clear header (the header-cache key), the low 224 bits are SIV || ciphertext.
        * The syntax check is exact. Besides upper case and non-ASCII digits (rejected first),
          ``int(text, 32)`` accepts only a sign, surrounding whitespace and ``_`` between digits;
          each takes one of the 59 characters, leaving at most 58 digits (``abs(n) < 2**290``),
          which cannot carry the prefix value in bits 280..294. :meth:`_header` checks the
          prefix, so a cached key has it too.
        * The header cache (see :class:`_Header`) is used only when the first candidate audience
          is the cached one, i.e. exactly when :meth:`_header` would choose the same audience.
        """
        if not isinstance(token, str) or len(token) != 59 or not token.isascii() or token.lower() != token:
            raise TokenError("not an rf1 token", code="malformed_token")
        try:
            n = int(token, 32)
        except ValueError:
            raise TokenError("not an rf1 token", code="malformed_token") from None
        decrypt, aad, kid, audience, expiry_day, deadline = self._headers.get(n >> 224, _NO_HEADER)
        if not audiences or audiences[0] != audience:
            decrypt, aad, kid, audience, expiry_day, deadline = self._header(n >> 224, audiences)
        try:
            sid = decrypt((n & _LOW_224).to_bytes(28, "big"), aad)
        except InvalidTag:
            raise TokenError("token failed authentication", code="bad_token") from None
        if check_expiry and self._clock() >= deadline:
            raise TokenError("token expired", code="expired_token")
        return _new_tuple(DecodedToken, (sid, kid, expiry_day, audience))

    def _header(self, top: int, audiences: Sequence[str]) -> _Header:
        """Uncached header check for ``top`` (prefix + clear header, the token's bits 224..294):
        prefix, key id, audience tag (first matching candidate)."""
        if top >> _HEADER_LEN * 8 != _PREFIX_VALUE:
            raise TokenError("not an rf1 token", code="malformed_token")
        header = top.to_bytes(_HEADER_LEN + 2, "big")[2:]  # cannot overflow: prefix checked
        number, expiry_day, tag = _HEADER.unpack(header)
        st = self._states.get(number)
        if st is None:
            raise TokenError("token key unknown or retired", code="unknown_key")
        for audience in audiences:
            atag, aud = st.tag(audience)
            if atag == tag:
                break
        else:
            raise TokenError("token was issued for another audience", code="wrong_audience")
        h = _Header(
            st.aessiv.decrypt, [_PREFIX_B + header + aud], st.kid, audience, expiry_day,
            (expiry_day + 1) * _DAY,
        )  # fmt: skip
        if len(self._headers) >= _HEADER_CACHE_MAX:
            self._headers.clear()
        self._headers[top] = h
        return h

    @staticmethod
    def looks_like_token(text: str) -> bool:
        """Syntax only (prefix, length, alphabet): no key needed."""
        return isinstance(text, str) and _TOKEN_RE.fullmatch(text) is not None


def raw_primitive(key: bytes) -> AESSIV:
    """The bare primitive, for benchmarks."""
    return AESSIV(key)

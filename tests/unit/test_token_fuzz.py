"""Property-based: no forged, damaged or random token resolves; every failure is a typed TokenError."""

from __future__ import annotations

import base64
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reffection_ari.errors import TokenError
from reffection_ari.tokens.codec import _B32HEX

from .tokens_support import LONDON, Wired, num, wire

CODES = {
    "malformed_token",
    "unknown_key",
    "bad_token",
    "expired_token",
    "wrong_audience",
    "unknown_subscriber",
}
_DIR = tempfile.TemporaryDirectory()
W: Wired = wire(Path(_DIR.name))
GOOD = W.service.issue(num(LONDON), "plat-a")
GOOD_CAMPAIGN = W.service.issue(num(LONDON), "plat-a", campaign="spring")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _must_fail(token: object) -> str:
    with pytest.raises(TokenError) as ei:
        W.service.resolve(token, "plat-a")  # type: ignore[arg-type]
    assert ei.value.code in CODES
    assert "7946" not in str(ei.value)
    return ei.value.code


def test_good_tokens_resolve() -> None:
    assert W.service.resolve(GOOD, "plat-a").number.e164 == LONDON
    assert W.service.resolve(GOOD_CAMPAIGN, "plat-a", campaign="spring").number.e164 == LONDON


@FUZZ
@given(
    pos=st.integers(3, len(GOOD) - 1),
    ch=st.sampled_from(_B32HEX),
    base=st.sampled_from([GOOD, GOOD_CAMPAIGN]),
)
def test_single_character_mutation(pos: int, ch: str, base: str) -> None:
    mutated = base[:pos] + ch + base[pos + 1 :]
    if mutated == base:
        return
    _must_fail(mutated)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 34), st.integers(1, 255)), min_size=1, max_size=4))
def test_byte_level_mutation(flips: list[tuple[int, int]]) -> None:
    from reffection_ari.tokens.codec import _b32encode

    payload = bytearray(int(GOOD[3:], 32).to_bytes(35, "big"))
    for i, x in flips:
        payload[i] ^= x
    forged = "rf1" + _b32encode(bytes(payload))
    if forged != GOOD:
        _must_fail(forged)


@FUZZ
@given(cut=st.integers(0, len(GOOD) - 1))
def test_truncated(cut: int) -> None:
    assert _must_fail(GOOD[:cut]) == "malformed_token"


@FUZZ
@given(extra=st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10))
def test_extended(extra: str) -> None:
    assert _must_fail(GOOD + extra) == "malformed_token"
    assert _must_fail(extra + GOOD) == "malformed_token"


@pytest.mark.parametrize(
    "recode",
    [
        str.upper,
        lambda t: "RF1" + t[3:],
        lambda t: "rf1" + base64.b32encode(int(t[3:], 32).to_bytes(35, "big")).decode().lower(),
        lambda t: "rf1" + base64.b32hexencode(int(t[3:], 32).to_bytes(35, "big")).decode(),
        lambda t: "rf1" + base64.urlsafe_b64encode(int(t[3:], 32).to_bytes(35, "big")).decode(),
        lambda t: "rf1" + int(t[3:], 32).to_bytes(35, "big").hex(),
        lambda t: f" {t}",
        lambda t: f"{t}\n",
        lambda t: t[:10] + "_" + t[10:],
        lambda t: "rf2" + t[3:],
        lambda t: "rf1" + "0" + t[3:-1],
    ],
)
def test_re_encoded(recode: object) -> None:
    assert callable(recode)
    _must_fail(recode(GOOD))


@FUZZ
@given(body=st.text(alphabet=_B32HEX, min_size=56, max_size=56))
def test_random_well_formed(body: str) -> None:
    _must_fail("rf1" + body)


@FUZZ
@given(junk=st.one_of(st.text(max_size=80), st.binary(max_size=80), st.integers(), st.none()))
def test_random_junk(junk: object) -> None:
    assert _must_fail(junk) == "malformed_token"

"""TokenCodec + TokenService: format, round trip, determinism, binding, expiry, rotation, erasure."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reffection_ari.errors import TokenError
from reffection_ari.tokens import TOKEN_LENGTH, TokenCodec
from reffection_ari.tokens.codec import _b32encode

from .tokens_support import DAY, LEEDS, LONDON, NANP, FakeClock, Wired, num, wire


@pytest.fixture
def w(tmp_path: Path) -> Wired:
    return wire(tmp_path)


def _code(exc: pytest.ExceptionInfo[TokenError]) -> str:
    return exc.value.code


def test_format_constraints(w: Wired) -> None:
    tokens = [w.service.issue(num(n), "plat-a") for n in (LONDON, LEEDS, NANP)]
    for t in tokens:
        assert re.fullmatch(r"rf1[0-9a-v]{56}", t)
        assert len(t) == TOKEN_LENGTH <= 64
        assert not t.isdigit() and t == t.lower()
        assert TokenCodec.looks_like_token(t)


def test_round_trip(w: Wired) -> None:
    t = w.service.issue(num(LONDON), "plat-a")
    r = w.service.resolve(t, "plat-a")
    assert r.number.e164 == LONDON and r.region == "GB" and r.time_zone == "Europe/London" and not r.dnc
    assert r.subscriber_id == w.vault.find_by_number(num(LONDON))
    assert "7946" not in repr(r)


def test_token_never_contains_the_number(w: Wired) -> None:
    t = w.service.issue(num(LONDON), "plat-a")
    assert "79460018" not in t and "2079460018" not in int(t[3:], 32).to_bytes(35, "big").hex()


def test_deterministic_per_subscriber_audience_and_bucket(w: Wired) -> None:
    a = w.service.issue(num(LONDON), "plat-a")
    assert w.service.issue(num("+44 20 7946 0018"), "plat-a") == a
    w.clock.advance_days(1)  # same expiry bucket (7 days) as long as we stay inside it
    b = w.service.issue(num(LONDON), "plat-a")
    exp_a = w.codec.decode(a, ["plat-a"]).expiry_day
    exp_b = w.codec.decode(b, ["plat-a"]).expiry_day
    assert (a == b) == (exp_a == exp_b)
    w.clock.advance_days(7)
    assert w.service.issue(num(LONDON), "plat-a") != a


def test_unlinkable_across_audiences(w: Wired) -> None:
    a = w.service.issue(num(LONDON), "plat-a")
    b = w.service.issue(num(LONDON), "plat-b")
    assert a != b
    # only the public header (kid, expiry) may coincide; the sealed part differs
    assert a[3:] != b[3:] and a[-40:] != b[-40:]


def test_audience_binding(w: Wired) -> None:
    t = w.service.issue(num(LONDON), "plat-a")
    with pytest.raises(TokenError) as ei:
        w.service.resolve(t, "plat-b")
    assert _code(ei) == "wrong_audience"
    # a platform-wide token works for any of the platform's campaigns
    assert w.service.resolve(t, "plat-a", campaign="spring").audience == "plat-a"


def test_campaign_binding(w: Wired) -> None:
    t = w.service.issue(num(LONDON), "plat-a", campaign="spring")
    assert w.service.resolve(t, "plat-a", campaign="spring").audience == "plat-a/spring"
    assert w.service.resolve(t, "plat-a/spring").audience == "plat-a/spring"
    for kwargs in ({"campaign": "autumn"}, {}):
        with pytest.raises(TokenError) as ei:
            w.service.resolve(t, "plat-a", **kwargs)
        assert _code(ei) == "wrong_audience"
    with pytest.raises(TokenError) as ei:
        w.service.resolve(t, "plat-b", campaign="spring")
    assert _code(ei) == "wrong_audience"


def test_expiry_with_controllable_clock(tmp_path: Path) -> None:
    w = wire(tmp_path, ttl_days=10, bucket_days=1)
    t = w.service.issue(num(LONDON), "plat-a")
    w.clock.advance_days(10)
    assert w.service.resolve(t, "plat-a").number.e164 == LONDON  # still the last valid day
    w.clock.advance_days(1)
    with pytest.raises(TokenError) as ei:
        w.service.resolve(t, "plat-a")
    assert _code(ei) == "expired_token"


def test_tampered_expiry_fails_authentication(w: Wired) -> None:
    t = w.service.issue(num(LONDON), "plat-a")
    payload = bytearray(int(t[3:], 32).to_bytes(35, "big"))
    payload[3] ^= 0x01  # expiry day low byte
    forged = "rf1" + _b32encode(bytes(payload))
    with pytest.raises(TokenError) as ei:
        w.service.resolve(forged, "plat-a")
    assert _code(ei) == "bad_token"


def test_rotation_keeps_old_tokens_and_retirement_shreds_them(w: Wired) -> None:
    old = w.service.issue(num(LONDON), "plat-a")
    w.ring.rotate("token")
    w.codec.reload()
    new = w.service.issue(num(LONDON), "plat-a")
    assert new != old
    assert w.codec.decode(new, ["plat-a"]).kid == "token-2"
    assert w.service.resolve(old, "plat-a").number.e164 == LONDON  # resolve-only key still works
    w.ring.retire("token-1")
    w.codec.reload()
    with pytest.raises(TokenError) as ei:
        w.service.resolve(old, "plat-a")
    assert _code(ei) == "unknown_key"
    assert w.service.resolve(new, "plat-a").number.e164 == LONDON


def test_other_keyring_cannot_open_tokens(w: Wired, tmp_path: Path) -> None:
    t = w.service.issue(num(LONDON), "plat-a")
    other = wire(tmp_path / "other")
    with pytest.raises(TokenError) as ei:
        other.service.resolve(t, "plat-a")
    assert _code(ei) in {"wrong_audience", "bad_token"}


def test_erasure_by_token_and_by_number(w: Wired) -> None:
    t1 = w.service.issue(num(LONDON), "plat-a")
    t1b = w.service.issue(num(LONDON), "plat-b")
    report = w.service.erase_token(t1, "plat-a")
    assert report.found and report.subscriber_id is not None
    for tok, aud in ((t1, "plat-a"), (t1b, "plat-b")):
        with pytest.raises(TokenError) as ei:
            w.service.resolve(tok, aud)
        assert _code(ei) == "erased"
    t2 = w.service.issue(num(LEEDS), "plat-a")
    w.vault.record_attempt(w.vault.find_by_number(num(LEEDS)) or b"", "c", 1.0, "no_answer")
    rep2 = w.vault.erase(num(LEEDS))
    assert rep2.found and rep2.attempts_deleted == 1
    with pytest.raises(TokenError) as ei:
        w.service.resolve(t2, "plat-a")
    assert _code(ei) == "erased"
    # re-importing an erased number creates a new subscriber: old tokens stay dead
    t3 = w.service.issue(num(LEEDS), "plat-a")
    assert t3 != t2 and w.service.resolve(t3, "plat-a").number.e164 == LEEDS


def test_expired_token_can_still_be_erased(tmp_path: Path) -> None:
    w = wire(tmp_path, ttl_days=1, bucket_days=1)
    t = w.service.issue(num(LONDON), "plat-a")
    w.clock.advance_days(30)
    assert w.service.erase_token(t, "plat-a").found


def test_unknown_subscriber(w: Wired) -> None:
    t = w.codec.encode(b"\x01" * 12, "plat-a", w.codec.expiry_day(5))
    with pytest.raises(TokenError) as ei:
        w.service.resolve(t, "plat-a")
    assert _code(ei) == "unknown_subscriber"


def test_bad_audience_rejected(w: Wired) -> None:
    for aud in ("", "has space", "a/b/c", "x" * 65):
        with pytest.raises(TokenError):
            w.service.issue(num(LONDON), aud)


def test_expiry_bucket_rounding() -> None:
    from reffection_ari.tokens import Keyring

    clock = FakeClock(start=100 * DAY)
    ring = Keyring.__new__(Keyring)  # codec math only
    codec = TokenCodec.__new__(TokenCodec)
    codec._clock = clock
    del ring
    assert codec.expiry_day(10, 7) == 112  # 110 rounded up to a multiple of 7
    assert codec.expiry_day(12, 7) == 112
    assert codec.expiry_day(13, 1) == 113


def test_bulk_issue_matches_single_issue_and_flags_duplicates(w: Wired) -> None:
    from reffection_ari.tokens import BulkItem

    items = [BulkItem(num(LONDON)), BulkItem(num(LEEDS)), BulkItem(num(LONDON))]
    out = w.service.issue_many(items, "plat-a", "run-1")
    assert out[2] is None and out[0] is not None and out[1] is not None
    assert out[0] == w.service.issue(num(LONDON), "plat-a")
    again = w.service.issue_many([BulkItem(num(LEEDS))], "plat-a", "run-2")
    assert again == [out[1]]


# Fast paths: each must agree exactly with the plain definition it replaces.


@given(payload=st.binary(min_size=35, max_size=35))
def test_b32encode_is_base32hex_lower(payload: bytes) -> None:
    assert _b32encode(payload) == base64.b32hexencode(payload).decode().lower()


def test_encode_many_equals_encode(w: Wired) -> None:
    ids = [bytes([i]) * 12 for i in range(5)]
    day = w.codec.expiry_day(90)
    batch = w.codec.encode_many([*ids[:2], None, *ids[2:]], "plat-a", day)
    assert batch == [
        *(w.codec.encode(i, "plat-a", day) for i in ids[:2]),
        None,
        *(w.codec.encode(i, "plat-a", day) for i in ids[2:]),
    ]
    with pytest.raises(ValueError):
        w.codec.encode_many([b"short"], "plat-a", day)
    with pytest.raises(TokenError):
        w.codec.encode_many(ids, "bad audience", day)


def test_int_parse_aliases_are_malformed(w: Wired) -> None:
    """59-character texts that int(text, 32) accepts but that are not canonical tokens."""
    t = w.service.issue(num(LONDON), "plat-a")
    w.codec.decode(t, ["plat-a"])  # warm the header cache
    variants = [
        "+" + t[1:], "-" + t[1:], " " + t[1:], t[:-1] + " ", t[:20] + "_" + t[21:],
        t[:30] + t[30].upper() + t[31:] if t[30].isalpha() else t[:30] + "A" + t[31:],
        t[:40] + "\u0663" + t[41:],  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
        "rf1" + "w" * 56, "0" * 59,
    ]  # fmt: skip
    for v in variants:
        assert len(v) == 59 and v != t
        with pytest.raises(TokenError) as ei:
            w.codec.decode(v, ["plat-a"])
        assert _code(ei) == "malformed_token", v


def test_header_cache_never_changes_an_answer(w: Wired) -> None:
    a = w.service.issue(num(LONDON), "plat-a")
    assert w.codec.decode(a, ["plat-a"]).audience == "plat-a"  # cached for plat-a now
    for audiences, code in ((["plat-b"], "wrong_audience"), ([], "wrong_audience")):
        with pytest.raises(TokenError) as ei:
            w.codec.decode(a, audiences)
        assert _code(ei) == code
    # campaign candidates first: the uncached path decides, and still finds the platform token
    assert w.codec.decode(a, ["plat-a/spring", "plat-a"]).audience == "plat-a"
    # same header, forged body: still authenticated
    forged = a[:-1] + ("0" if a[-1] != "0" else "1")
    with pytest.raises(TokenError) as ei:
        w.codec.decode(forged, ["plat-a"])
    assert _code(ei) == "bad_token"
    # expiry is checked from the cached deadline with the live clock
    w.clock.advance_days(200)
    with pytest.raises(TokenError) as ei:
        w.codec.decode(a, ["plat-a"])
    assert _code(ei) == "expired_token"
    assert w.codec.decode(a, ["plat-a"], check_expiry=False).audience == "plat-a"


def test_retired_key_is_not_kept_alive_by_the_header_cache(w: Wired) -> None:
    a = w.service.issue(num(LONDON), "plat-a")
    w.codec.decode(a, ["plat-a"])
    w.ring.rotate("token")
    w.codec.reload()
    w.ring.retire("token-1")
    w.codec.reload()
    with pytest.raises(TokenError) as ei:
        w.codec.decode(a, ["plat-a"])
    assert _code(ei) == "unknown_key"

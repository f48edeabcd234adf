"""PhoneNumber: parsing, masking everywhere, the fast path agreeing with phonenumbers, the log filter."""

from __future__ import annotations

import copy
import logging
import pickle

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reffection_ari.errors import NumberError
from reffection_ari.phone import MASK, PhoneMaskFilter, PhoneNumber, _fast_parse, _slow_parse, mask_phone_like
from tests.leakguard import register_number

from .tokens_support import LONDON, NANP, RU_MOBILE, SYDNEY_MOBILE


@pytest.mark.parametrize(
    ("text", "region", "expected", "kind"),
    [
        ("+44 20 7946 0018", None, LONDON, "fixed_line"),
        ("020 7946 0018", "GB", LONDON, "fixed_line"),
        ("+7 (916) 123-45-67", None, RU_MOBILE, "mobile"),
        ("8 916 123 45 67", "RU", RU_MOBILE, "mobile"),
        ("+61 491 570 156", None, SYDNEY_MOBILE, "mobile"),
        ("+1 201.555.0123", None, NANP, "fixed_line_or_mobile"),
    ],
)
def test_parse_normalises(text: str, region: str | None, expected: str, kind: str) -> None:
    n = PhoneNumber.parse(text, region)
    assert n.e164 == expected
    assert n.kind == kind


def test_region_and_time_zones() -> None:
    london = PhoneNumber.parse(LONDON)
    assert london.region == "GB"
    assert london.time_zones == ("Europe/London",)
    ru = PhoneNumber.parse(RU_MOBILE)
    assert ru.region == "RU" and "Europe/Moscow" in ru.time_zones


@pytest.mark.parametrize(
    "text",
    ["", "   ", "hello", "+44", "+44 20 7946", "+999 1234567", "+447700900123", "0" * 80, "020 7946 0018"],
)
def test_invalid_numbers_raise_invalid_number(text: str) -> None:
    with pytest.raises(NumberError) as ei:
        PhoneNumber.parse(text)  # national input without a default region is invalid too
    assert ei.value.code == "invalid_number"


@pytest.mark.parametrize("text", ["+44 800 123 4567", "+1 800 555 0199", "+44 909 879 0000"])
def test_non_dialable_types_are_refused(text: str) -> None:
    assert phonenumbers.is_valid_number(phonenumbers.parse(text))
    with pytest.raises(NumberError) as ei:
        PhoneNumber.parse(text)
    assert ei.value.code == "invalid_number"
    assert "800" not in str(ei.value) and "909" not in str(ei.value)


def test_error_messages_never_contain_the_input() -> None:
    with pytest.raises(NumberError) as ei:
        PhoneNumber.parse("+44 20 7946 001")
    assert "7946" not in str(ei.value) and "7946" not in repr(ei.value)


def test_masked_in_every_rendering(caplog: pytest.LogCaptureFixture) -> None:
    n = PhoneNumber.parse(RU_MOBILE)
    rendered = [
        repr(n),
        str(n),
        f"{n}",
        f"{n!r}",
        f"{n:>30}",
        "%s" % n,  # noqa: UP031 - the %-format path is what is tested
        "{}".format(n),  # noqa: UP032 - the str.format path is what is tested
        str([n]),
        str({"n": n}),
    ]
    for text in rendered:
        assert "9161234567" not in text and "916" not in text
    assert repr(n) == "PhoneNumber(+7 ********)"
    logging.getLogger("test").warning("number %s %r", n, n)
    assert "916" not in caplog.text


def test_value_semantics() -> None:
    a, b = PhoneNumber.parse(LONDON), PhoneNumber.parse("020 7946 0018", "GB")
    assert a == b and hash(a) == hash(b) and a != PhoneNumber.parse(LEEDS_OR_OTHER)
    with pytest.raises(AttributeError):
        a._e164 = "+1"  # type: ignore[misc]
    with pytest.raises(TypeError):
        PhoneNumber()
    with pytest.raises(TypeError):
        pickle.dumps(a)
    assert copy.deepcopy(a) is a


LEEDS_OR_OTHER = NANP


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("call to +44 20 7946 0018 failed", f"call to {MASK} failed"),
        ("n=79161234567", f"n={MASK}"),
        ("dial (020) 7946-0018 now", f"dial {MASK} now"),
        ("+1.201.555.0123", MASK),
        ("token rf1000l34938m6qp1pr5ltr9h0dcqqc stays", "token rf1000l34938m6qp1pr5ltr9h0dcqqc stays"),
        ("call id 3f2a9c1e-1234-4567-89ab-cdef01234567", "call id 3f2a9c1e-1234-4567-89ab-cdef01234567"),
        ("short 123456 stays", "short 123456 stays"),
    ],
)
def test_mask_phone_like(message: str, masked: str) -> None:
    assert mask_phone_like(message) == masked


def test_filter_masks_args_ints_and_exceptions() -> None:
    f = PhoneMaskFilter()
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s (%d)", ("+44 20 7946 0018", 79161234567), None)
    assert f.filter(rec)
    msg = rec.getMessage()
    assert msg.startswith(f"to {MASK}") and "7946" not in msg and "9161234567" not in msg
    try:
        raise ValueError("bad +7 916 123 45 67")
    except ValueError:
        import sys

        rec2 = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    f.filter(rec2)
    assert rec2.exc_text is not None and "916 123" not in rec2.exc_text and MASK in rec2.exc_text


def test_configure_logging_installs_the_filter() -> None:
    from reffection_ari.logging_setup import configure_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        configure_logging(logging.INFO)
        assert any(isinstance(f, PhoneMaskFilter) for h in root.handlers for f in h.filters)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


# The fast path must agree with phonenumbers wherever it answers.
_EXAMPLES = sorted(
    {
        phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
        for r in phonenumbers.SUPPORTED_REGIONS
        for t in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
        if (ex := phonenumbers.example_number_for_type(r, t)) is not None
    }
)


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(_EXAMPLES),
    edits=st.lists(st.tuples(st.integers(2, 20), st.integers(0, 9)), max_size=3),
    grow=st.integers(-2, 2),
)
def test_fast_path_agrees_with_phonenumbers(base: str, edits: list[tuple[int, int]], grow: int) -> None:
    chars = list(base)
    for pos, digit in edits:
        if pos < len(chars):
            chars[pos] = str(digit)
    if grow > 0:
        chars += ["5"] * grow
    elif grow < 0:
        chars = chars[:grow]
    text = "".join(chars)
    fast = _fast_parse(text)
    if fast is None:
        return
    slow = _slow_parse(text, None)
    assert (fast.e164, fast.region, fast.kind, fast.time_zones) == (
        slow.e164,
        slow.region,
        slow.kind,
        slow.time_zones,
    )


def test_leakguard_formats_cover_common_renderings() -> None:
    from tests.leakguard import registered_formats

    texts = {t for _k, t in registered_formats(register_number(LONDON))}
    assert {"+442079460018", "020 7946 0018", "+44 20 7946 0018", "+44-20-7946-0018", "2079460018"} <= texts


def test_leakguard_detects_each_format_and_ignores_masks() -> None:
    from tests.leakguard import find_leaks

    for text in ("dial 020-7946-0018", "to 442079460018", "n=+44 20 7946 0018", "x 020.7946.0018"):
        assert find_leaks([("some.logger", text)]), text
    assert not find_leaks([("some.logger", "to PhoneNumber(+44 ********) token rf1abc")])
    msg = find_leaks([("some.logger", "dial 02079460018")])[0]
    assert "some.logger" in msg and "7946" not in msg

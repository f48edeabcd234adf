"""A phone number value that cannot leak by accident.

:class:`PhoneNumber` is the only type that carries a subscriber's digits inside the process.
``repr``/``str``/f-strings show the country code and a mask; :attr:`PhoneNumber.e164` is the
one way to the digits, so every reveal is greppable.

Parsing is exact ``phonenumbers`` semantics. Because ``phonenumbers.parse`` plus validation costs
~50 us, canonical international input (``+`` then digits with spaces, dashes, dots or
parentheses) takes a compiled fast path built from the same metadata; any input it is not sure
about goes through ``phonenumbers`` itself, and a property test keeps the two in agreement.

:class:`PhoneMaskFilter` is the second line of defence: it masks phone-like digit runs in log
records that slipped past the first.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneNumberType, phonenumberutil
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from .errors import NumberError

__all__ = ["MASK", "PhoneMaskFilter", "PhoneNumber", "mask_phone_like"]

#: Number kinds a consent call may go to. Premium, toll-free, shared-cost, pager, UAN and
#: voicemail numbers are valid numbers but not a subscriber's line: refused as non-dialable.
_DIALABLE: Final = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
}
_GEOGRAPHICAL_KINDS: Final = frozenset({"fixed_line", "fixed_line_or_mobile"})
_UNKNOWN_TZ: Final = "Etc/Unknown"
_MAX_INPUT: Final = 64

# Fast path ---------------------------------------------------------------------------------

_DELETE_SEPARATORS: Final = str.maketrans("", "", " -.()\t")
# Type precedence exactly as phonenumbers' _number_type_helper checks them.
_TYPE_ORDER: Final = (
    ("premium_rate", "premium_rate"),
    ("toll_free", "toll_free"),
    ("shared_cost", "shared_cost"),
    ("voip", "voip"),
    ("personal_number", "personal_number"),
    ("pager", "pager"),
    ("uan", "uan"),
    ("voicemail", "voicemail"),
    ("fixed_line", "fixed_line"),
    ("mobile", "mobile"),
)
_FAST_DIALABLE: Final = frozenset(_DIALABLE.values())
_GEO_MOBILE_CC: Final[frozenset[int]] = frozenset(phonenumberutil._GEO_MOBILE_COUNTRIES)
# Country calling codes are prefix-free, so at most one of the 1-, 2- and 3-digit prefixes hits.
_CC_BY_PREFIX: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    str(cc): (cc, tuple(regions)) for cc, regions in phonenumberutil.COUNTRY_CODE_TO_REGION_CODE.items()
}


class _RegionMatcher:
    """Compiled validity data for one region: general pattern, per-length type classifier."""

    __slots__ = ("_classifiers", "general", "general_lengths", "leading", "metadata", "national_prefix")

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        gd = metadata.general_desc
        self.general = re.compile(gd.national_number_pattern) if gd and gd.national_number_pattern else None
        self.general_lengths = frozenset(gd.possible_length or ()) if gd else frozenset()
        self.leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        npp = metadata.national_prefix_for_parsing
        self.national_prefix = re.compile(npp) if npp else None
        self._classifiers: dict[int, re.Pattern[str] | None] = {}

    def _classifier(self, length: int) -> re.Pattern[str] | None:
        try:
            return self._classifiers[length]
        except KeyError:
            pass
        parts = []
        for attr, name in _TYPE_ORDER:
            desc = getattr(self.metadata, attr)
            if desc is None or not desc.national_number_pattern:
                continue
            lengths = desc.possible_length or ()
            if lengths and length not in lengths:
                continue
            parts.append(f"(?P<{name}>{desc.national_number_pattern})")
        rx = re.compile("|".join(parts)) if parts else None
        self._classifiers[length] = rx
        return rx

    def kind(self, nsn: str) -> str | None:
        """The number type name, or None (phonenumbers' UNKNOWN)."""
        if self.general is None:
            return None
        if self.general_lengths and len(nsn) not in self.general_lengths:
            return None
        if self.general.fullmatch(nsn) is None:
            return None
        rx = self._classifier(len(nsn))
        if rx is None:
            return None
        m = rx.fullmatch(nsn)
        if m is None:
            return None
        kind = m.lastgroup
        if kind == "fixed_line" and (
            self.metadata.same_mobile_and_fixed_line_pattern
            or phonenumberutil._is_number_matching_desc(nsn, self.metadata.mobile)
        ):
            return "fixed_line_or_mobile"
        return kind


_MATCHERS: dict[str, _RegionMatcher | None] = {}


def _matcher(region: str) -> _RegionMatcher | None:
    try:
        return _MATCHERS[region]
    except KeyError:
        meta = PhoneMetadata.metadata_for_region(region, None)
        m = _RegionMatcher(meta) if meta is not None else None
        _MATCHERS[region] = m
        return m


_ZONE_CACHE: dict[int, tuple[str, ...]] = {}


def _time_zones_for(digits: str, cc: int, geographical: bool) -> tuple[str, ...]:
    data = TIMEZONE_DATA
    key = digits if geographical else str(cc)
    for n in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
        zones = data.get(key[:n])
        if zones is not None:
            hit = _ZONE_CACHE.get(id(zones))  # metadata tuples live for the process
            if hit is None:
                hit = _ZONE_CACHE[id(zones)] = tuple(z for z in zones if z != _UNKNOWN_TZ)
            return hit
    return ()


def _fast_parse(text: str) -> PhoneNumber | None:
    """Parse canonical international input; None means 'ask phonenumbers'."""
    s = text.translate(_DELETE_SEPARATORS)
    if len(s) < 4 or s[0] != "+":
        return None
    digits = s[1:]
    if not (digits.isascii() and digits.isdigit()) or digits[0] == "0":
        return None
    hit = _CC_BY_PREFIX.get(digits[:1]) or _CC_BY_PREFIX.get(digits[:2]) or _CC_BY_PREFIX.get(digits[:3])
    if hit is None:
        return None
    cc, regions = hit
    nsn = digits[len(str(cc)) :]
    if not 2 <= len(nsn) <= 17:
        return None
    main = _matcher(regions[0])
    if main is None:  # non-geographic entity ("001"): rare, let phonenumbers decide
        return None
    if main.national_prefix is not None and main.national_prefix.match(nsn):
        return None  # phonenumbers may strip a national prefix here: not our call
    region: str | None = None
    kind: str | None = None
    if len(regions) == 1:
        region, kind = regions[0], main.kind(nsn)
    else:
        for rc in regions:
            m = _matcher(rc)
            if m is None:
                continue
            if m.leading is not None:
                if m.leading.match(nsn):
                    region, kind = rc, m.kind(nsn)
                    break
            else:
                k = m.kind(nsn)
                if k is not None:
                    region, kind = rc, k
                    break
    if region is None or kind not in _FAST_DIALABLE:
        return None  # invalid or non-dialable: the slow path produces the exact error
    assert kind is not None
    return PhoneNumber._make("+" + digits, cc, region, kind, None)  # zones: computed on first use


def _slow_parse(text: str, default_region: str | None) -> PhoneNumber:
    try:
        num = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise NumberError("not a phone number") from None
    if not phonenumbers.is_valid_number(num):
        raise NumberError("not a valid phone number")
    ntype = phonenumbers.number_type(num)
    kind = _DIALABLE.get(ntype)
    if kind is None:
        raise NumberError("not a dialable subscriber number (premium, toll-free, pager or similar)")
    region = phonenumbers.region_code_for_number(num) or "ZZ"
    zones = tuple(z for z in pn_timezone.time_zones_for_number(num) if z != _UNKNOWN_TZ)
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber._make(e164, int(num.country_code or 0), region, kind, zones)


class PhoneNumber:
    """A valid, dialable number in E.164. Immutable; compares and hashes by the number.

    Masked everywhere (``PhoneNumber(+44 ********)``); only :attr:`e164` gives the digits.
    """

    __slots__ = ("_cc", "_e164", "_kind", "_region", "_zones")

    _cc: int
    _e164: str
    _kind: str
    _region: str
    _zones: tuple[str, ...] | None  # None: not computed yet (parsing is hot, zones are not)

    def __init__(self) -> None:
        raise TypeError("use PhoneNumber.parse()")

    @classmethod
    def _make(cls, e164: str, cc: int, region: str, kind: str, zones: tuple[str, ...] | None) -> PhoneNumber:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_e164", e164)
        object.__setattr__(obj, "_cc", cc)
        object.__setattr__(obj, "_region", region)
        object.__setattr__(obj, "_kind", kind)
        object.__setattr__(obj, "_zones", zones)
        return obj

    @classmethod
    def parse(cls, text: str, default_region: str | None = None) -> PhoneNumber:
        """Parse and normalise; raise :class:`NumberError` (``invalid_number``) if the text is
        not a valid number a consent call may dial. ``default_region`` (ISO 3166 alpha-2)
        applies to national-format input only."""
        if not isinstance(text, str):
            raise NumberError("phone number must be text")
        text = text.strip()
        if not text:
            raise NumberError("empty phone number")
        if len(text) > _MAX_INPUT:
            raise NumberError("phone number too long")
        fast = _fast_parse(text)
        if fast is not None:
            return fast
        return _slow_parse(text, default_region.upper() if default_region else None)

    @property
    def e164(self) -> str:
        """The digits, ``+<cc><nsn>``. The only way to them: call it on the reveal path only."""
        return self._e164

    @property
    def country_code(self) -> int:
        return self._cc

    @property
    def region(self) -> str:
        """ISO 3166 alpha-2 region the number belongs to (``"GB"``, ``"RU"``)."""
        return self._region

    @property
    def kind(self) -> str:
        """``mobile``, ``fixed_line``, ``fixed_line_or_mobile``, ``voip`` or ``personal_number``."""
        return self._kind

    @property
    def time_zones(self) -> tuple[str, ...]:
        """IANA zones the number may be in (several for mobiles in large countries; may be empty)."""
        zones = self._zones
        if zones is None:
            geographical = self._kind in _GEOGRAPHICAL_KINDS or (self._kind == "mobile" and self._cc in _GEO_MOBILE_CC)
            zones = _time_zones_for(self._e164[1:], self._cc, geographical)
            object.__setattr__(self, "_zones", zones)
        return zones

    def masked(self) -> str:
        """Country code only: the platform must not see even partial digits."""
        return f"+{self._cc} ********"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PhoneNumber is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("PhoneNumber is immutable")

    def __repr__(self) -> str:
        return f"PhoneNumber({self.masked()})"

    def __str__(self) -> str:
        return self.masked()

    def __format__(self, spec: str) -> str:
        return format(self.masked(), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhoneNumber) and other._e164 == self._e164

    def __hash__(self) -> int:
        return hash(("PhoneNumber", self._e164))

    def __reduce__(self) -> Any:
        raise TypeError("PhoneNumber is not picklable")

    def __copy__(self) -> PhoneNumber:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> PhoneNumber:
        return self


# Logging filter ----------------------------------------------------------------------------

MASK: Final = "<phone>"
# A digit run of 7+ digits, optionally with +, spaces, dashes, dots and parentheses between
# them, not glued to letters or digits, even through a dash (so tokens and uuids are left alone).
_PHONE_LIKE: Final = re.compile(r"(?<![\w+])(?<!\w[-.])\+?\(?\d(?:[\s().-]{0,3}\d){6,}(?!\w|[-.]\w)")


def _mask_match(m: re.Match[str]) -> str:
    return MASK if sum(c.isdigit() for c in m.group()) >= 7 else m.group()


def mask_phone_like(text: str) -> str:
    """Replace anything that looks like a phone number with :data:`MASK`."""
    return _PHONE_LIKE.sub(_mask_match, text)


class PhoneMaskFilter(logging.Filter):
    """Masks phone-like digit runs in a record's final message and exception text.

    Attach it to *handlers* (a logger's own filters do not see propagated records). It renders
    the message once (``msg % args``) so numbers passed as ints or strings are both caught.
    Side effect: long digit runs that are not numbers (byte counts, dates) are masked too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the record, mask what we can
            message = str(record.msg)
        masked = mask_phone_like(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phone_like(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phone_like(record.stack_info)
        return True

"""Suite-wide leak guard: no log record may contain a registered test subscriber's digits.

Activate with ``pytest_plugins = ["tests.leakguard"]`` in tests/conftest.py (or ``-p tests.leakguard``).
Tests register the numbers they use with :func:`register_number`; after every test, each log
record emitted during it (rendered at emit time, before any masking filter rewrites it, at every
level down to DEBUG) is searched for each number in E.164, bare international digits, national
significant number, national, international, RFC 3966, spaced, dashed and dotted formats.
The failure names the logger and the format, never the number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import phonenumbers
import pytest

__all__ = ["register_number", "registered_formats"]

_NEEDLES: dict[str, list[tuple[str, str]]] = {}


def registered_formats(number: str) -> list[tuple[str, str]]:
    """(format name, text) pairs searched for ``number``."""
    num = phonenumbers.parse(number, None)
    fmt = phonenumbers.PhoneNumberFormat
    e164 = phonenumbers.format_number(num, fmt.E164)
    nsn = phonenumbers.national_significant_number(num)
    national = phonenumbers.format_number(num, fmt.NATIONAL)
    intl = phonenumbers.format_number(num, fmt.INTERNATIONAL)
    out = {
        ("e164", e164),
        ("international digits", e164[1:]),
        ("national significant number", nsn),
        ("national", national),
        ("national digits", "".join(c for c in national if c.isdigit())),
        ("international", intl),
        ("rfc3966", phonenumbers.format_number(num, fmt.RFC3966)),
    }
    for name, text in list(out):
        if " " in text:
            out.add((f"{name} dashed", text.replace(" ", "-")))
            out.add((f"{name} dotted", text.replace(" ", ".")))
    # a 2-2-2... spaced rendering of the NSN catches home-made formatting
    out.add(("nsn spaced", " ".join(nsn[i : i + 3] for i in range(0, len(nsn), 3))))
    return sorted(out)


def register_number(number: str) -> str:
    """Register a test subscriber's number (any format phonenumbers parses with a ``+``)."""
    key = phonenumbers.format_number(phonenumbers.parse(number, None), phonenumbers.PhoneNumberFormat.E164)
    _NEEDLES.setdefault(key, registered_formats(key))
    return key


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=0)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        self.seen.append((record.name, text))


def find_leaks(entries: list[tuple[str, str]]) -> list[str]:
    found = []
    for logger, text in entries:
        for needles in _NEEDLES.values():
            for kind, needle in needles:
                if needle in text:
                    found.append(f"logger {logger!r} logged a test number ({kind} format)")
                    break
    return found


@pytest.fixture(autouse=True)
def _leakguard() -> Iterator[_Capture]:
    root = logging.getLogger()
    capture = _Capture()
    old_level = root.level
    root.handlers.insert(0, capture)
    root.setLevel(1)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    leaks = find_leaks(capture.seen)
    if leaks:
        pytest.fail("PII leak in logs: " + "; ".join(sorted(set(leaks))), pytrace=False)

"""Route table: which trunk and dial string reach a subscriber's number.

Routes match by E.164 prefix (longest wins) or by region; prefix routes beat region routes, and
an optional default catches the rest. Templates are Asterisk dial strings with one of the
placeholders ``{e164}`` (``+4420...``), ``{digits}`` (``4420...``) or ``{national}`` (the national
significant number, ``20...``); e.g. ``PJSIP/{e164}@partner-trunk``.

The rendered dial string goes to ARI/Asterisk only; :class:`DialTarget` prints masked.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import ConfigError, ReffectionError
from .phone import PhoneNumber

__all__ = ["DialTarget", "Route", "RouteTable"]

_PLACEHOLDERS: Final = frozenset({"e164", "digits", "national"})
_PREFIX_RE: Final = re.compile(r"\+[1-9][0-9]{0,14}")
_REGION_RE: Final = re.compile(r"[A-Z]{2}")
_TRUNK_RE: Final = re.compile(r"@([A-Za-z0-9_.-]+)")


def _check_template(template: str, key: str) -> None:
    try:
        fields = {f for _lit, f, _spec, _conv in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(key, f"bad template: {exc}") from None
    if not fields or not fields <= _PLACEHOLDERS:
        raise ConfigError(key, "template must use {e164}, {digits} or {national} and nothing else")
    if any(c in template for c in ",|&\n\r") or not template.strip():
        raise ConfigError(key, "template must be a single dial string (no ',', '|', '&' or newlines)")


def _render(template: str, number: PhoneNumber, *, masked: bool) -> str:
    if masked:
        m = number.masked()
        return template.format(e164=m, digits=m, national="********")
    e164 = number.e164
    digits = e164[1:]
    return template.format(e164=e164, digits=digits, national=digits[len(str(number.country_code)) :])


@dataclass(frozen=True)
class DialTarget:
    """A rendered dial string and its trunk. ``repr``/``str`` show a masked dial string."""

    dial_string: str = field(repr=False)
    trunk: str
    masked: str

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"DialTarget(trunk={self.trunk!r}, dial_string={self.masked!r})"


@dataclass(frozen=True)
class Route:
    """``prefix`` (``"+44"``) or ``region`` (``"GB"``), exactly one; ``trunk`` defaults to the
    name after ``@`` in the template."""

    template: str
    prefix: str | None = None
    region: str | None = None
    trunk: str | None = None

    def trunk_name(self) -> str:
        if self.trunk:
            return self.trunk
        m = _TRUNK_RE.search(self.template)
        return m.group(1) if m else self.template.split("/", 1)[0]


class RouteTable:
    def __init__(self, routes: Iterable[Route], default: Route | None = None) -> None:
        self._prefix: dict[str, Route] = {}
        self._region: dict[str, Route] = {}
        for i, r in enumerate(routes):
            key = f"routes[{i}]"
            _check_template(r.template, f"{key}.dial")
            if (r.prefix is None) == (r.region is None):
                raise ConfigError(key, "give exactly one of 'prefix' or 'region'")
            if r.prefix is not None:
                if not _PREFIX_RE.fullmatch(r.prefix):
                    raise ConfigError(f"{key}.prefix", "must be '+' and 1-15 digits")
                if r.prefix in self._prefix:
                    raise ConfigError(f"{key}.prefix", "duplicate prefix")
                self._prefix[r.prefix] = r
            else:
                assert r.region is not None
                if not _REGION_RE.fullmatch(r.region):
                    raise ConfigError(f"{key}.region", "must be an ISO 3166 alpha-2 code such as 'GB'")
                if r.region in self._region:
                    raise ConfigError(f"{key}.region", "duplicate region")
                self._region[r.region] = r
        if default is not None:
            _check_template(default.template, "default_route")
        self._default = default
        self._lengths = sorted({len(p) for p in self._prefix}, reverse=True)

    @classmethod
    def from_config(cls, routes: Iterable[Mapping[str, Any]], default: str | None = None) -> RouteTable:
        """From config: ``[{prefix|region, dial, trunk?}, ...]`` and an optional default template."""
        parsed = []
        for i, item in enumerate(routes):
            if not isinstance(item, Mapping):
                raise ConfigError(f"routes[{i}]", "must be a mapping")
            unknown = set(item) - {"prefix", "region", "dial", "trunk"}
            if unknown:
                raise ConfigError(f"routes[{i}]", f"unknown keys {sorted(unknown)}")
            dial = item.get("dial")
            if not isinstance(dial, str):
                raise ConfigError(f"routes[{i}].dial", "required (a dial-string template)")
            parsed.append(
                Route(
                    template=dial,
                    prefix=str(item["prefix"]) if "prefix" in item else None,
                    region=str(item["region"]) if "region" in item else None,
                    trunk=str(item["trunk"]) if item.get("trunk") else None,
                )
            )
        return cls(parsed, Route(default) if default else None)

    def trunks(self) -> tuple[str, ...]:
        """Every trunk a route can select (for per-trunk limits)."""
        routes = [*self._prefix.values(), *self._region.values()]
        if self._default is not None:
            routes.append(self._default)
        return tuple(sorted({r.trunk_name() for r in routes}))

    def route_for(self, number: PhoneNumber) -> Route:
        e164 = number.e164
        for n in self._lengths:
            r = self._prefix.get(e164[:n])
            if r is not None:
                return r
        r = self._region.get(number.region)
        if r is not None:
            return r
        if self._default is not None:
            return self._default
        raise ReffectionError("no route for this number", code="no_route")

    def resolve(self, number: PhoneNumber) -> DialTarget:
        """The dial target for ``number``; ``ReffectionError(code="no_route")`` if none matches."""
        r = self.route_for(number)
        return DialTarget(
            _render(r.template, number, masked=False),
            r.trunk_name(),
            _render(r.template, number, masked=True),
        )

"""Concurrency slots and calls-per-second limits per campaign and per trunk.

Everything here is synchronous on purpose: in one asyncio event loop a check-and-acquire that
never awaits is atomic, so a burst of concurrent API requests can never overshoot a limit.
Time is passed in (seconds on any monotonic-ish scale), so tests drive it explicitly.

The CPS limiter is a sliding-window log, not a token bucket: carriers count call *starts in any
one-second window*, and a token bucket of capacity ``cps`` admits up to ``2 * cps`` starts in a
sliding second (a full bucket, then a refill). The log admits at most ``max(1, floor(cps))``
starts in any window of ``count / cps`` seconds, which for integral CPS is exactly "N per second".
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

LimitCode = Literal["concurrency_limit", "rate_limited"]
Scope = Literal["campaign", "trunk"]


@dataclass(frozen=True, slots=True)
class LimitDenied:
    """Why an acquire was refused; nothing was consumed."""

    code: LimitCode
    scope: Scope
    name: str
    detail: str
    retry_after: float | None  # seconds; None when it depends on a release, not on time


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The limits one acquire is checked against (``None`` = not limited at that scope)."""

    campaign: str
    trunk: str
    max_concurrent: int
    max_cps: float
    trunk_max_concurrent: int | None = None
    trunk_max_cps: float | None = None


def _rate_shape(cps: float) -> tuple[int, float]:
    """(starts allowed, window seconds) for a CPS limit, e.g. 10 -> (10, 1.0), 0.5 -> (1, 2.0)."""
    count = max(1, math.floor(cps))
    return count, count / cps


class SlidingWindowRate:
    """At most ``count`` starts in any ``period``-second window."""

    __slots__ = ("_starts",)

    def __init__(self) -> None:
        self._starts: deque[float] = deque()

    def _purge(self, now: float, period: float) -> None:
        starts = self._starts
        while starts and now - starts[0] >= period:
            starts.popleft()

    def retry_after(self, now: float, cps: float) -> float | None:
        """Seconds until a start would be admitted; ``None`` if one is admitted now."""
        count, period = _rate_shape(cps)
        self._purge(now, period)
        if len(self._starts) < count:
            return None
        return max(0.0, self._starts[len(self._starts) - count] + period - now)

    def take(self, now: float) -> None:
        self._starts.append(now)

    def __len__(self) -> int:
        return len(self._starts)


class Lease:
    """Concurrency slots held by one call. Release exactly once when the call ends (idempotent).

    Usable as a sync or async context manager so that every exit path gives the slots back.
    """

    __slots__ = ("_keys", "_limiter", "campaign", "released", "trunk")

    def __init__(self, limiter: Limiter, campaign: str, trunk: str) -> None:
        self._limiter = limiter
        self._keys: tuple[tuple[Scope, str], ...] = (("campaign", campaign), ("trunk", trunk))
        self.campaign = campaign
        self.trunk = trunk
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limiter._release(self._keys)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease(campaign={self.campaign!r}, trunk={self.trunk!r}, released={self.released})"


class Limiter:
    """Shared concurrency and CPS state keyed by campaign and by trunk."""

    def __init__(self) -> None:
        self._in_use: dict[tuple[Scope, str], int] = {}
        self._rates: dict[tuple[Scope, str], SlidingWindowRate] = {}

    def in_use(self, scope: Scope, name: str) -> int:
        return self._in_use.get((scope, name), 0)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Slots in use by scope and name, for /metrics."""
        out: dict[str, dict[str, int]] = {"campaign": {}, "trunk": {}}
        for (scope, name), n in self._in_use.items():
            out[scope][name] = n
        return out

    def _rate(self, key: tuple[Scope, str]) -> SlidingWindowRate:
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = SlidingWindowRate()
        return rate

    def try_acquire(self, spec: LimitSpec, now: float) -> Lease | LimitDenied:
        """Check every limit, then take a slot and a start at each scope; all or nothing.

        Concurrency is checked before rate so that a refusal for a full campaign does not
        burn CPS budget (nothing is consumed on any refusal).
        """
        ckey: tuple[Scope, str] = ("campaign", spec.campaign)
        tkey: tuple[Scope, str] = ("trunk", spec.trunk)
        held = self._in_use.get(ckey, 0)
        if held >= spec.max_concurrent:
            return LimitDenied("concurrency_limit", "campaign", spec.campaign,
                               f"{held} of {spec.max_concurrent} concurrent calls in use", None)
        if spec.trunk_max_concurrent is not None:
            held = self._in_use.get(tkey, 0)
            if held >= spec.trunk_max_concurrent:
                return LimitDenied("concurrency_limit", "trunk", spec.trunk,
                                   f"{held} of {spec.trunk_max_concurrent} trunk calls in use", None)
        wait = self._rate(ckey).retry_after(now, spec.max_cps)
        if wait is not None:
            return LimitDenied("rate_limited", "campaign", spec.campaign,
                               f"over {spec.max_cps:g} calls per second", wait)
        if spec.trunk_max_cps is not None:
            wait = self._rate(tkey).retry_after(now, spec.trunk_max_cps)
            if wait is not None:
                return LimitDenied("rate_limited", "trunk", spec.trunk,
                                   f"over {spec.trunk_max_cps:g} trunk calls per second", wait)
        # Commit: no await and no failure point between the checks above and here.
        self._in_use[ckey] = self._in_use.get(ckey, 0) + 1
        self._in_use[tkey] = self._in_use.get(tkey, 0) + 1
        self._rates[ckey].take(now)
        if spec.trunk_max_cps is not None:  # unlimited trunks keep no log (it would grow unbounded)
            self._rates[tkey].take(now)
        return Lease(self, spec.campaign, spec.trunk)

    def _release(self, keys: tuple[tuple[Scope, str], ...]) -> None:
        for key in keys:
            n = self._in_use.get(key, 0) - 1
            if n > 0:
                self._in_use[key] = n
            else:
                self._in_use.pop(key, None)

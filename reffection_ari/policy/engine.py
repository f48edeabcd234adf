"""The pre-dial policy engine: pure checks on typed facts, plus atomic admission to the limits.

The engine never looks anything up. The caller (API / flow driver) resolves the token, reads the
vault and passes a :class:`PolicySubject`; the engine answers with a :class:`PolicyDecision` whose
checks go into the receipt, or raises :class:`RuleRefusal` (a ``PolicyRefusal``) with one of the
reason codes the API returns. Time comes from an injected clock so tests never wait.

Refusal messages are meant for the platform: they name the rule and the pack version only.
Partner-side specifics (local times, zones, counts) are in ``RuleRefusal.detail`` and must stay
inside the partner boundary (log/audit), because a zone or a window opening hints at where the
subscriber lives.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reffection_ari.errors import PolicyRefusal
from reffection_ari.policy.limits import Lease, LimitDenied, Limiter, LimitSpec
from reffection_ari.policy.packs import (
    COOLDOWN_OUTCOMES,
    DEFAULT_PACKS,
    CampaignPolicy,
    EffectiveRules,
    RulePack,
    effective_rules,
)

log = logging.getLogger(__name__)

_DAY = timedelta(hours=24)
_UNKNOWN_ZONE = "Etc/Unknown"  # what phonenumbers answers for numbers it cannot place

#: Reason codes an :class:`RuleRefusal` may carry.
REFUSAL_CODES = ("dnc", "outside_calling_window", "attempt_limit", "cooldown", "rate_limited",
                 "concurrency_limit")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One earlier dial attempt to the subscriber; ``at`` must be timezone-aware."""

    at: datetime
    campaign: str
    outcome: str  # "declined", "opted_out", "no_answer", "busy", "completed", "no_input", ...


@dataclass(frozen=True, slots=True)
class PolicySubject:
    """What the partner knows about the subscriber, as facts. Holds no number.

    ``region`` is the ISO 3166 alpha-2 region of the number; ``time_zones`` the IANA zones the
    number may be in (``phonenumbers.timezone.time_zones_for_number`` or the vault's stored zone).
    """

    subscriber_id: str
    region: str | None
    time_zones: tuple[str, ...]
    dnc: bool
    attempts: Sequence[Attempt] = ()

    def __repr__(self) -> str:
        return (f"PolicySubject(subscriber_id=..., region={self.region!r}, "
                f"zones={len(self.time_zones)}, dnc={self.dnc}, attempts={len(self.attempts)})")


@dataclass(frozen=True, slots=True)
class CheckResult:
    rule: str
    passed: bool
    detail: str
    pack_version: str


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Every check that passed, for the receipt / lead evidence."""

    checks: tuple[CheckResult, ...]
    local_time_at_dial: str  # "2026-03-08T09:30-04:00 America/New_York; ..." (one per candidate zone)
    pack: str
    pack_version: str
    evaluated_at: datetime

    def as_evidence(self) -> tuple[dict[str, Any], ...]:
        """JSON-ready entries for ``ConsentEvidence.policy_checks``; the caller adds the caller ID."""
        entries: list[dict[str, Any]] = [
            {"rule": c.rule, "passed": c.passed, "detail": c.detail, "pack": self.pack,
             "pack_version": c.pack_version, "evaluated_at": self.evaluated_at.isoformat()}
            for c in self.checks
        ]
        entries.append({"rule": "subscriber_local_time", "passed": True, "detail": self.local_time_at_dial,
                        "pack": self.pack, "pack_version": self.pack_version,
                        "evaluated_at": self.evaluated_at.isoformat()})
        return tuple(entries)


class RuleRefusal(PolicyRefusal):
    """A pre-dial rule refused the call. ``str()`` is safe for the platform; ``detail`` is not.

    ``retry_at`` is the earliest time the same rule could pass (``None`` when it depends on
    something other than time, e.g. DNC or a release of a concurrency slot).
    """

    def __init__(self, code: str, rule: str, pack_version: str, detail: str,
                 retry_at: datetime | None = None) -> None:
        super().__init__(f"call refused: {rule} ({pack_version})", code=code)
        self.rule = rule
        self.pack_version = pack_version
        self.detail = detail
        self.retry_at = retry_at


RefusalHook = Callable[[str, str], None]


@lru_cache(maxsize=512)
def region_time_zones(region: str) -> tuple[str, ...]:
    """The zones phonenumbers knows for a region's country calling code (may be many)."""
    import phonenumbers
    from phonenumbers.tzdata import TIMEZONE_DATA

    code = phonenumbers.country_code_for_region(region.upper())
    if not code:
        return ()
    zones: tuple[str, ...] = TIMEZONE_DATA.get(str(code), ())
    return tuple(z for z in zones if z != _UNKNOWN_ZONE)


def _zone_infos(subject: PolicySubject) -> tuple[tuple[str, tzinfo], ...] | None:
    """Candidate zones, or ``None`` if unknown (then the window check refuses).

    With no zone for the number, a region with exactly one zone is used; a multi-zone region
    (US, RU, ...) cannot be placed and is refused rather than guessed.
    """
    names = tuple(dict.fromkeys(z for z in subject.time_zones if z and z != _UNKNOWN_ZONE))
    if not names and subject.region:
        region_zones = region_time_zones(subject.region)
        if len(region_zones) == 1:
            names = region_zones
    if not names:
        return None
    try:
        return tuple((n, ZoneInfo(n)) for n in names)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _inside(rules: EffectiveRules, zones: tuple[tuple[str, tzinfo], ...], at: datetime) -> bool:
    for _, zone in zones:
        local = at.astimezone(zone)
        window = rules.window_on(local.date())
        if window is None or not window.contains(local.time()):
            return False
    return True


def _next_opening(rules: EffectiveRules, zones: tuple[tuple[str, tzinfo], ...],
                  now: datetime) -> datetime | None:
    """Earliest instant within 8 days (plus one per no-call date) at which every candidate zone
    is inside its window.

    The intersection of the zones' windows, if not empty, starts at some zone's window start,
    so only those instants need testing.
    """
    candidates: list[datetime] = []
    for _, zone in zones:
        today: date = now.astimezone(zone).date()
        for offset in range(8 + len(rules.no_call_dates)):
            day = today + timedelta(days=offset)
            window = rules.window_on(day)
            if window is not None:
                start = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
                if start > now:
                    candidates.append(start)
    for start in sorted(candidates):
        if _inside(rules, zones, start):
            return start
    return None


def _format_local(zones: tuple[tuple[str, tzinfo], ...], now: datetime) -> str:
    return "; ".join(f"{now.astimezone(zone).isoformat(timespec='minutes')} {name}" for name, zone in zones)


def _span(delta: timedelta) -> str:
    if delta % _DAY == timedelta(0):
        return f"{delta // _DAY} d"
    return f"{delta.total_seconds() / 3600:g} h"


class PolicyEngine:
    """Evaluates the rules before every dial and hands out concurrency/CPS leases.

    ``clock`` returns an aware datetime (UTC now by default). The CPS window uses the same clock
    (``clock().timestamp()``, never going backwards) unless ``monotonic`` is given.
    ``refusals`` counts refusals by reason code for /metrics; ``on_refusal(code, campaign)`` is
    called for every refusal (e.g. to append an audit entry); its failures are logged, and the
    refusal still stands.
    """

    def __init__(self, clock: Callable[[], datetime] = utc_now, *,
                 packs: Mapping[str, RulePack] = DEFAULT_PACKS,
                 on_refusal: RefusalHook | None = None,
                 monotonic: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._packs = packs
        self._monotonic = monotonic
        self._last_tick = float("-inf")
        self.on_refusal = on_refusal
        self.refusals: Counter[str] = Counter()
        self.limiter = Limiter()
        self._rules: dict[CampaignPolicy, EffectiveRules] = {}

    # -- configuration -------------------------------------------------------------------------

    def rules(self, policy: CampaignPolicy) -> EffectiveRules:
        """Effective rules for a campaign (cached); raises ``ConfigError`` for a widening config."""
        rules = self._rules.get(policy)
        if rules is None:
            rules = self._rules[policy] = effective_rules(policy, self._packs)
        return rules

    # -- subject rules -------------------------------------------------------------------------

    def now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the policy clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def check(self, subject: PolicySubject, policy: CampaignPolicy) -> PolicyDecision:
        """Run DNC, calling window, attempt caps and cool-down; raise ``RuleRefusal`` on the first
        failure. Pure apart from the refusal counters."""
        rules = self.rules(policy)
        return self._check(subject, rules, self.now())

    def _check(self, subject: PolicySubject, rules: EffectiveRules, now: datetime) -> PolicyDecision:
        pack = rules.pack
        version = pack.version
        checks: list[CheckResult] = []

        def refuse(code: str, rule: str, detail: str, retry_at: datetime | None = None) -> RuleRefusal:
            return self._refused(RuleRefusal(code, rule, version, detail, retry_at), rules.campaign)

        # 1. DNC
        if subject.dnc:
            raise refuse("dnc", "dnc", "subscriber is on the do-not-call list")
        checks.append(CheckResult("dnc", True, "not on the do-not-call list", version))

        # 2. Calling window in every candidate zone.
        zones = _zone_infos(subject)
        if zones is None:
            raise refuse("outside_calling_window", "calling_window", "unknown_time_zone")
        local = _format_local(zones, now)
        if not _inside(rules, zones, now):
            blocked = sorted({d for _, z in zones if (d := now.astimezone(z).date()) in rules.no_call_dates})
            detail = (f"local date {blocked[0].isoformat()} is a no-call date ({local})" if blocked
                      else f"local time {local} outside the window")
            raise refuse("outside_calling_window", "calling_window", detail, _next_opening(rules, zones, now))
        first_local = now.astimezone(zones[0][1])
        window = rules.window_on(first_local.date())
        checks.append(CheckResult("calling_window", True,
                                  f"inside {window} local in {len(zones)} zone(s): {local}", version))

        # 3. Attempts per subscriber per rolling 24 h (all campaigns) and per campaign.
        day_start = now - _DAY
        period_start = now - rules.campaign_attempt_period
        recent: list[datetime] = []
        in_campaign: list[datetime] = []
        last_decline: datetime | None = None
        for attempt in subject.attempts:
            at = attempt.at
            if at.tzinfo is None:
                raise ValueError("attempt timestamps must be timezone-aware")
            if at > day_start:
                recent.append(at)
            if attempt.campaign == rules.campaign and at > period_start:
                in_campaign.append(at)
            if attempt.outcome in COOLDOWN_OUTCOMES and (last_decline is None or at > last_decline):
                last_decline = at

        if len(recent) >= rules.max_attempts_24h:
            recent.sort()
            retry = recent[len(recent) - rules.max_attempts_24h] + _DAY
            raise refuse("attempt_limit", "attempts_24h",
                         f"{len(recent)} attempts in 24 h, limit {rules.max_attempts_24h}", retry)
        checks.append(CheckResult("attempts_24h", True,
                                  f"{len(recent)} of {rules.max_attempts_24h} attempts in 24 h", version))

        period = _span(rules.campaign_attempt_period)
        if rules.max_attempts_campaign is not None:
            if len(in_campaign) >= rules.max_attempts_campaign:
                in_campaign.sort()
                retry = in_campaign[len(in_campaign) - rules.max_attempts_campaign] \
                    + rules.campaign_attempt_period
                raise refuse("attempt_limit", "attempts_campaign",
                             f"{len(in_campaign)} campaign attempts in {period},"
                             f" limit {rules.max_attempts_campaign}", retry)
            used = f"{len(in_campaign)} of {rules.max_attempts_campaign} campaign attempts in {period}"
            checks.append(CheckResult("attempts_campaign", True, used, version))

        # 4. Cool-down after a declined or opted-out call (any campaign).
        cooldown = rules.cooldown_after_decline
        if last_decline is not None and now - last_decline < cooldown:
            raise refuse("cooldown", "cooldown", f"declined or opted out within {_span(cooldown)}",
                         last_decline + cooldown)
        checks.append(CheckResult("cooldown", True,
                                  f"no decline or opt-out within {_span(cooldown)}", version))

        return PolicyDecision(checks=tuple(checks), local_time_at_dial=local, pack=pack.id,
                              pack_version=version, evaluated_at=now)

    # -- limits --------------------------------------------------------------------------------

    def _tick(self, now: datetime) -> float:
        t = self._monotonic() if self._monotonic is not None else now.timestamp()
        self._last_tick = t = max(t, self._last_tick)  # a wall clock stepping back must not refill
        return t

    def acquire(self, policy: CampaignPolicy) -> Lease:
        """Take a concurrency slot (campaign + trunk) and a CPS start, atomically; or raise
        ``RuleRefusal`` (``concurrency_limit`` / ``rate_limited``) having consumed nothing.

        Synchronous on purpose: with no await between check and take, a burst of coroutines on
        one event loop cannot overshoot. Release the lease when the call ends.
        """
        rules = self.rules(policy)
        return self._acquire(rules, self.now())

    def admit(self, policy: CampaignPolicy) -> Lease:
        """``async with engine.admit(policy):`` — acquire now, release on exit."""
        return self.acquire(policy)

    def _acquire(self, rules: EffectiveRules, now: datetime) -> Lease:
        spec = LimitSpec(campaign=rules.campaign, trunk=rules.trunk, max_concurrent=rules.max_concurrent,
                         max_cps=rules.max_cps, trunk_max_concurrent=rules.trunk_max_concurrent,
                         trunk_max_cps=rules.trunk_max_cps)
        result = self.limiter.try_acquire(spec, self._tick(now))
        if isinstance(result, LimitDenied):
            retry = now + timedelta(seconds=result.retry_after) if result.retry_after is not None else None
            rule = f"{'concurrency' if result.code == 'concurrency_limit' else 'rate'}_{result.scope}"
            raise self._refused(RuleRefusal(result.code, rule, rules.pack.version, result.detail, retry),
                                rules.campaign)
        return result

    def authorize(self, subject: PolicySubject, policy: CampaignPolicy) -> tuple[PolicyDecision, Lease]:
        """All pre-dial rules and the limits in one synchronous step: the decision (including the
        limit checks, for the receipt) and the lease to release when the call ends."""
        rules = self.rules(policy)
        now = self.now()
        decision = self._check(subject, rules, now)
        lease = self._acquire(rules, now)
        version = rules.pack.version
        trunk = f"; trunk {rules.trunk_max_concurrent}" if rules.trunk_max_concurrent else ""
        limit_checks = (
            CheckResult("concurrency", True, f"campaign limit {rules.max_concurrent}{trunk}", version),
            CheckResult("rate", True, f"campaign limit {rules.max_cps:g} cps"
                        + (f"; trunk {rules.trunk_max_cps:g} cps" if rules.trunk_max_cps else ""), version),
        )
        return replace(decision, checks=decision.checks + limit_checks), lease

    def in_use(self, campaign: str) -> int:
        return self.limiter.in_use("campaign", campaign)

    # -- observability -------------------------------------------------------------------------

    def _refused(self, refusal: RuleRefusal, campaign: str) -> RuleRefusal:
        self.refusals[refusal.code] += 1
        if self.on_refusal is not None:
            try:
                self.on_refusal(refusal.code, campaign)
            except Exception:
                log.exception("policy on_refusal hook failed", extra={"code": refusal.code,
                                                                      "campaign": campaign})
        return refusal

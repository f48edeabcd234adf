"""Jurisdiction rule packs and the campaign policy that may only narrow them.

A :class:`RulePack` is the conservative default for one jurisdiction (``ru``, ``us``, ``eu``),
versioned so that every receipt can say which rules were in force. A campaign's
:class:`CampaignPolicy` may tighten a pack (shorter window, fewer attempts, longer cool-down) but
never loosen it: :func:`effective_rules` merges the two and raises :class:`ConfigError` naming the
offending key for anything that would widen the pack. Sources and the reasoning behind each value
are in ``docs/compliance.md``; these are engineering defaults, not legal advice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time, timedelta
from types import MappingProxyType
from typing import Literal

from reffection_ari.errors import ConfigError

ConsentMode = Literal["ivr", "agent"]
DTMF_KEYS = frozenset("0123456789*#")
#: Outcomes of an earlier attempt that start the cool-down.
COOLDOWN_OUTCOMES = frozenset({"declined", "opted_out"})


@dataclass(frozen=True, slots=True)
class Window:
    """A local-time interval ``[start, end)`` within one day (no overnight windows)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window times are local wall-clock times and carry no tzinfo")
        if not self.start < self.end:
            raise ValueError("window start must be before its end")

    def contains(self, t: time) -> bool:
        return self.start <= t < self.end

    def covers(self, other: Window) -> bool:
        return self.start <= other.start and other.end <= self.end

    def intersect(self, other: Window) -> Window | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Window(start, end) if start < end else None

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


#: One entry per weekday, Monday first (``date.weekday()``); ``None`` = no calls that day.
WeekWindows = tuple[Window | None, Window | None, Window | None, Window | None, Window | None,
                    Window | None, Window | None]


def _week(weekdays: Window | None, saturday: Window | None, sunday: Window | None) -> WeekWindows:
    return (weekdays, weekdays, weekdays, weekdays, weekdays, saturday, sunday)


@dataclass(frozen=True, slots=True)
class RulePack:
    """One jurisdiction's defaults. ``version`` goes into every policy check and receipt."""

    id: str
    version: str
    title: str
    windows: WeekWindows
    max_attempts_24h: int
    max_attempts_campaign: int | None  # None: no per-campaign cap by default
    campaign_attempt_period: timedelta
    cooldown_after_decline: timedelta
    default_consent_mode: ConsentMode
    allowed_consent_modes: frozenset[ConsentMode]
    disclosure_required: bool  # who calls and on whose behalf, before anything else
    recording_notice_required: bool
    opt_out_key_required: bool
    sources: tuple[str, ...]

    def window_on(self, weekday: int) -> Window | None:
        return self.windows[weekday]


_H = time  # short alias for the tables below

RU = RulePack(
    id="ru",
    version="ru-2026.1",
    title="Russian Federation: 38-FZ art. 18 (advertising over telecom networks), 152-FZ",
    windows=_week(Window(_H(9), _H(21)), Window(_H(10), _H(20)), Window(_H(10), _H(20))),
    max_attempts_24h=3,
    max_attempts_campaign=None,
    campaign_attempt_period=timedelta(days=30),
    cooldown_after_decline=timedelta(days=30),
    default_consent_mode="agent",
    allowed_consent_modes=frozenset({"agent"}),
    disclosure_required=True,
    recording_notice_required=True,
    opt_out_key_required=True,
    sources=(
        "38-FZ 'On Advertising' art. 18 part 1: prior consent; stop at once on the subscriber's request",
        "38-FZ art. 18 part 2: no advertising by automatic dialing / automatic distribution",
        "152-FZ 'On Personal Data' art. 9 (consent), art. 18 (informing the data subject)",
        "230-FZ art. 7 part 3 (collectors' hours, used only as a conservative reference)",
    ),
)

US = RulePack(
    id="us",
    version="us-2026.1",
    title="United States: TSR (16 CFR 310), TCPA (47 CFR 64.1200), strictest state hours",
    windows=_week(Window(_H(8), _H(20)), Window(_H(8), _H(20)), None),
    max_attempts_24h=3,
    max_attempts_campaign=None,
    campaign_attempt_period=timedelta(days=30),
    cooldown_after_decline=timedelta(days=30),
    default_consent_mode="agent",
    allowed_consent_modes=frozenset({"agent", "ivr"}),
    disclosure_required=True,
    recording_notice_required=True,
    opt_out_key_required=True,
    sources=(
        "16 CFR 310.4(c) and 47 CFR 64.1200(c)(1): no calls before 8 a.m. or after 9 p.m. local time",
        "Fla. Stat. 501.616(6): 8 a.m.-8 p.m., at most 3 calls per 24 h on the same subject",
        "16 CFR 310.4(b)(1)(v): prerecorded messages only with express written agreement + key opt-out",
        "47 CFR 64.1200(a)(2)-(3), (b), (d)(4): prior express written consent; identify caller/seller",
        "16 CFR 310.4(d): prompt disclosure of seller identity and purpose",
    ),
)

EU = RulePack(
    id="eu",
    version="eu-2026.1",
    title="European Union: GDPR art. 6-7, ePrivacy Directive 2002/58/EC art. 13; strict member state",
    windows=_week(Window(_H(10), _H(20)), None, None),
    max_attempts_24h=2,
    max_attempts_campaign=4,
    campaign_attempt_period=timedelta(days=30),
    cooldown_after_decline=timedelta(days=60),
    default_consent_mode="agent",
    allowed_consent_modes=frozenset({"agent", "ivr"}),
    disclosure_required=True,
    recording_notice_required=True,
    opt_out_key_required=True,
    sources=(
        "Directive 2002/58/EC art. 13(1): automated calling without human intervention needs prior consent",
        "Regulation (EU) 2016/679 art. 6(1)(a), 7 (consent, withdrawal), 13 (information), 21(2)-(3)",
        "France, Code de la consommation art. D223-9 (Decree 2022-1313): Mon-Fri 10-13/14-20 local,"
        " max 4 attempts per 30 days, 60 days after a refusal",
    ),
)

SANDBOX = RulePack(
    id="sandbox",
    version="sandbox-2026.1",
    title="Sandbox: no jurisdiction. For the embedded test Asterisk only; never for real subscribers",
    windows=_week(Window(_H(0), _H(23, 59, 59)), Window(_H(0), _H(23, 59, 59)), Window(_H(0), _H(23, 59, 59))),
    max_attempts_24h=1000,
    max_attempts_campaign=None,
    campaign_attempt_period=timedelta(days=1),
    cooldown_after_decline=timedelta(seconds=1),
    default_consent_mode="ivr",
    allowed_consent_modes=frozenset({"agent", "ivr"}),
    disclosure_required=True,
    recording_notice_required=True,
    opt_out_key_required=True,
    sources=("none: a permissive pack so demos and tests run at any hour; the daemon warns when it is used",),
)

DEFAULT_PACKS: Mapping[str, RulePack] = MappingProxyType({p.id: p for p in (RU, US, EU, SANDBOX)})


@dataclass(frozen=True, slots=True)
class CampaignPolicy:
    """A campaign's pre-dial settings. ``None`` means "use the pack default"."""

    campaign: str
    pack: str
    max_concurrent: int
    max_cps: float
    trunk: str
    calling_window: tuple[time, time] | None = None
    max_attempts_24h: int | None = None
    max_attempts_campaign: int | None = None
    campaign_attempt_period: timedelta | None = None
    cooldown_after_decline: timedelta | None = None
    trunk_max_concurrent: int | None = None
    trunk_max_cps: float | None = None
    consent_mode: ConsentMode | None = None
    opt_out_key: str | None = None
    no_call_dates: frozenset[date] = frozenset()  # subscriber-local dates without any window

    def resolve(self, packs: Mapping[str, RulePack] = DEFAULT_PACKS) -> EffectiveRules:
        return effective_rules(self, packs)


@dataclass(frozen=True, slots=True)
class EffectiveRules:
    """The pack merged with the campaign's narrowing overrides: what the engine enforces."""

    campaign: str
    pack: RulePack
    windows: WeekWindows
    max_attempts_24h: int
    max_attempts_campaign: int | None
    campaign_attempt_period: timedelta
    cooldown_after_decline: timedelta
    consent_mode: ConsentMode
    opt_out_key: str | None
    disclosure_required: bool
    recording_notice_required: bool
    max_concurrent: int
    max_cps: float
    trunk: str
    trunk_max_concurrent: int | None
    trunk_max_cps: float | None
    no_call_dates: frozenset[date] = frozenset()

    def window_on(self, day: date) -> Window | None:
        """The calling window of a subscriber-local date: none on a no-call date."""
        return None if day in self.no_call_dates else self.windows[day.weekday()]


def effective_rules(policy: CampaignPolicy, packs: Mapping[str, RulePack] = DEFAULT_PACKS) -> EffectiveRules:
    """Merge ``policy`` into its pack; raise ``ConfigError(key, reason)`` for anything that widens it.

    Validate every campaign at start-up with this so a bad config never reaches the dial path.
    The calling window is intersected with the pack's window of each day; a window that lies
    inside no day's pack window can only be a mistake and is rejected as widening.
    """
    prefix = f"campaigns.{policy.campaign}"

    def fail(field: str, reason: str) -> ConfigError:
        return ConfigError(f"{prefix}.{field}", reason)

    if not policy.campaign:
        raise ConfigError("campaigns.campaign", "campaign name must not be empty")
    pack = packs.get(policy.pack)
    if pack is None:
        raise fail("pack", f"unknown rule pack {policy.pack!r}; known: {', '.join(sorted(packs))}")

    windows = pack.windows
    if policy.calling_window is not None:
        start, end = policy.calling_window
        try:
            wanted = Window(start, end)
        except ValueError as exc:
            raise fail("calling_window", str(exc)) from None
        if not any(w is not None and w.covers(wanted) for w in pack.windows):
            raise fail("calling_window", f"{wanted} widens the {pack.version} calling window")
        narrowed = tuple(w.intersect(wanted) if w is not None else None for w in pack.windows)
        windows = narrowed  # type: ignore[assignment]  # length 7 is preserved

    max_24h = pack.max_attempts_24h
    if policy.max_attempts_24h is not None:
        if policy.max_attempts_24h < 1:
            raise fail("max_attempts_24h", "must be at least 1")
        if policy.max_attempts_24h > pack.max_attempts_24h:
            raise fail("max_attempts_24h",
                       f"{policy.max_attempts_24h} exceeds the {pack.version} limit {pack.max_attempts_24h}")
        max_24h = policy.max_attempts_24h

    max_campaign = pack.max_attempts_campaign
    if policy.max_attempts_campaign is not None:
        if policy.max_attempts_campaign < 1:
            raise fail("max_attempts_campaign", "must be at least 1")
        cap = pack.max_attempts_campaign
        if cap is not None and policy.max_attempts_campaign > cap:
            raise fail("max_attempts_campaign", f"{policy.max_attempts_campaign} exceeds the {pack.version}"
                                                f" limit {pack.max_attempts_campaign}")
        max_campaign = policy.max_attempts_campaign

    period = pack.campaign_attempt_period
    if policy.campaign_attempt_period is not None:
        if policy.campaign_attempt_period <= timedelta(0):
            raise fail("campaign_attempt_period", "must be positive")
        if pack.max_attempts_campaign is not None and policy.campaign_attempt_period < period:
            raise fail("campaign_attempt_period", f"shorter than the {pack.version} period {period}")
        period = policy.campaign_attempt_period

    cooldown = pack.cooldown_after_decline
    if policy.cooldown_after_decline is not None:
        if policy.cooldown_after_decline < cooldown:
            raise fail("cooldown_after_decline", f"shorter than the {pack.version} cool-down {cooldown}")
        cooldown = policy.cooldown_after_decline

    mode: ConsentMode = policy.consent_mode or pack.default_consent_mode
    if mode not in pack.allowed_consent_modes:
        raise fail("consent_mode", f"{mode!r} is not allowed by {pack.version}"
                                   f" (allowed: {', '.join(sorted(pack.allowed_consent_modes))})")

    if policy.opt_out_key is None:
        if pack.opt_out_key_required:
            raise fail("opt_out_key", f"an opt-out key is required by {pack.version}")
    elif len(policy.opt_out_key) != 1 or policy.opt_out_key not in DTMF_KEYS:
        raise fail("opt_out_key", "must be a single DTMF key (0-9, *, #)")

    if policy.max_concurrent < 1:
        raise fail("max_concurrent", "must be at least 1")
    if not policy.max_cps > 0:
        raise fail("max_cps", "must be positive")
    if not policy.trunk:
        raise fail("trunk", "must not be empty")
    if policy.trunk_max_concurrent is not None and policy.trunk_max_concurrent < 1:
        raise fail("trunk_max_concurrent", "must be at least 1")
    if policy.trunk_max_cps is not None and not policy.trunk_max_cps > 0:
        raise fail("trunk_max_cps", "must be positive")

    return EffectiveRules(
        campaign=policy.campaign, pack=pack, windows=windows, max_attempts_24h=max_24h,
        max_attempts_campaign=max_campaign, campaign_attempt_period=period,
        cooldown_after_decline=cooldown, consent_mode=mode, opt_out_key=policy.opt_out_key,
        disclosure_required=pack.disclosure_required,
        recording_notice_required=pack.recording_notice_required,
        max_concurrent=policy.max_concurrent, max_cps=policy.max_cps, trunk=policy.trunk,
        trunk_max_concurrent=policy.trunk_max_concurrent, trunk_max_cps=policy.trunk_max_cps,
        no_call_dates=policy.no_call_dates,
    )


def check_trunk_consistency(policies: Mapping[str, CampaignPolicy] | list[CampaignPolicy]) -> None:
    """Trunk limits are shared state: every campaign on a trunk must declare the same limits."""
    items = list(policies.values()) if isinstance(policies, Mapping) else list(policies)
    seen: dict[str, tuple[int | None, float | None, str]] = {}
    for p in items:
        limits = (p.trunk_max_concurrent, p.trunk_max_cps)
        first = seen.setdefault(p.trunk, (*limits, p.campaign))
        if first[:2] != limits:
            raise ConfigError(f"campaigns.{p.campaign}.trunk_max_concurrent",
                              f"trunk {p.trunk!r} limits differ from campaign {first[2]!r}")

"""Pre-dial guard rails: DNC, calling windows, attempt caps, cool-downs, concurrency and CPS.

Pure and fast: the engine receives facts (:class:`PolicySubject`) and a campaign's settings
(:class:`CampaignPolicy`), reads time from an injected clock, and either returns a
:class:`PolicyDecision` for the evidence or raises :class:`RuleRefusal` with a reason code.
See ``docs/compliance.md`` for what each jurisdiction pack enforces.
"""

from reffection_ari.policy.engine import (
    REFUSAL_CODES,
    Attempt,
    CheckResult,
    PolicyDecision,
    PolicyEngine,
    PolicySubject,
    RuleRefusal,
    region_time_zones,
    utc_now,
)
from reffection_ari.policy.limits import Lease, Limiter, LimitSpec
from reffection_ari.policy.packs import (
    DEFAULT_PACKS,
    EU,
    RU,
    US,
    CampaignPolicy,
    ConsentMode,
    EffectiveRules,
    RulePack,
    Window,
    check_trunk_consistency,
    effective_rules,
)

__all__ = [
    "DEFAULT_PACKS",
    "EU",
    "REFUSAL_CODES",
    "RU",
    "US",
    "Attempt",
    "CampaignPolicy",
    "CheckResult",
    "ConsentMode",
    "EffectiveRules",
    "Lease",
    "LimitSpec",
    "Limiter",
    "PolicyDecision",
    "PolicyEngine",
    "PolicySubject",
    "RulePack",
    "RuleRefusal",
    "Window",
    "check_trunk_consistency",
    "effective_rules",
    "region_time_zones",
    "utc_now",
]

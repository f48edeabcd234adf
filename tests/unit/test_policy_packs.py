"""Rule packs: defaults apply, campaign settings may only narrow them, consent modes per pack."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reffection_ari.errors import ConfigError
from reffection_ari.policy import (
    DEFAULT_PACKS,
    EU,
    RU,
    US,
    CampaignPolicy,
    PolicyEngine,
    Window,
    check_trunk_consistency,
    effective_rules,
)


def policy(pack: str = "us", **kw: object) -> CampaignPolicy:
    base: dict[str, object] = {
        "campaign": "c1",
        "pack": pack,
        "max_concurrent": 5,
        "max_cps": 2.0,
        "trunk": "t1",
        "opt_out_key": "9",
    }
    base.update(kw)
    return CampaignPolicy(**base)  # type: ignore[arg-type]


def test_pack_ids_and_versions() -> None:
    assert set(DEFAULT_PACKS) == {"ru", "us", "eu", "sandbox"}
    for pack in DEFAULT_PACKS.values():
        assert pack.version.startswith(pack.id + "-")
        assert pack.sources
        assert pack.disclosure_required and pack.recording_notice_required and pack.opt_out_key_required
        assert len(pack.windows) == 7


def test_defaults_applied_without_overrides() -> None:
    for pack in (RU, US, EU):
        rules = effective_rules(policy(pack.id))
        assert rules.pack is pack
        assert rules.windows == pack.windows
        assert rules.max_attempts_24h == pack.max_attempts_24h
        assert rules.max_attempts_campaign == pack.max_attempts_campaign
        assert rules.cooldown_after_decline == pack.cooldown_after_decline
        assert rules.consent_mode == pack.default_consent_mode == "agent"


def test_documented_defaults() -> None:
    assert RU.windows[0] == Window(time(9), time(21)) and RU.windows[5] == Window(time(10), time(20))
    assert US.windows[0] == Window(time(8), time(20)) and US.windows[6] is None
    assert EU.windows[4] == Window(time(10), time(20)) and EU.windows[5] is None and EU.windows[6] is None
    assert (EU.max_attempts_campaign, EU.cooldown_after_decline) == (4, timedelta(days=60))


def test_narrowing_window_is_intersected_per_day() -> None:
    rules = effective_rules(policy("ru", calling_window=(time(9), time(21))))
    assert rules.windows[0] == Window(time(9), time(21))
    assert rules.windows[6] == Window(time(10), time(20))  # weekend default stays stricter
    rules = effective_rules(policy("us", calling_window=(time(12), time(18, 30))))
    assert rules.windows[2] == Window(time(12), time(18, 30))
    assert rules.windows[6] is None


def test_narrowing_numbers_accepted() -> None:
    rules = effective_rules(
        policy(
            "eu",
            max_attempts_24h=1,
            max_attempts_campaign=2,
            campaign_attempt_period=timedelta(days=45),
            cooldown_after_decline=timedelta(days=90),
        )
    )
    assert (rules.max_attempts_24h, rules.max_attempts_campaign) == (1, 2)
    assert rules.campaign_attempt_period == timedelta(days=45)
    assert rules.cooldown_after_decline == timedelta(days=90)


@pytest.mark.parametrize(
    ("pack", "override", "key"),
    [
        ("us", {"calling_window": (time(7, 59), time(20))}, "calling_window"),
        ("us", {"calling_window": (time(9), time(20, 1))}, "calling_window"),
        ("eu", {"calling_window": (time(9), time(12))}, "calling_window"),
        ("us", {"calling_window": (time(18), time(9))}, "calling_window"),
        ("us", {"max_attempts_24h": 4}, "max_attempts_24h"),
        ("us", {"max_attempts_24h": 0}, "max_attempts_24h"),
        ("eu", {"max_attempts_campaign": 5}, "max_attempts_campaign"),
        ("eu", {"campaign_attempt_period": timedelta(days=29)}, "campaign_attempt_period"),
        ("ru", {"cooldown_after_decline": timedelta(days=29)}, "cooldown_after_decline"),
        ("eu", {"cooldown_after_decline": timedelta(days=30)}, "cooldown_after_decline"),
        ("ru", {"consent_mode": "ivr"}, "consent_mode"),
        ("us", {"opt_out_key": None}, "opt_out_key"),
        ("us", {"opt_out_key": "12"}, "opt_out_key"),
        ("us", {"opt_out_key": "A"}, "opt_out_key"),
        ("xx", {}, "pack"),
        ("us", {"max_cps": 0.0}, "max_cps"),
        ("us", {"max_concurrent": 0}, "max_concurrent"),
        ("us", {"trunk_max_cps": -1.0}, "trunk_max_cps"),
        ("us", {"trunk": ""}, "trunk"),
    ],
)
def test_widening_or_invalid_is_config_error_naming_the_key(
    pack: str, override: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        effective_rules(policy(pack, **override))
    assert info.value.key == f"campaigns.c1.{key}"
    assert info.value.code == "bad_config"


def test_consent_modes_per_pack() -> None:
    assert effective_rules(policy("eu", consent_mode="ivr")).consent_mode == "ivr"
    assert effective_rules(policy("us", consent_mode="ivr")).consent_mode == "ivr"
    assert effective_rules(policy("ru", consent_mode="agent")).consent_mode == "agent"
    with pytest.raises(ConfigError, match=r"ru-2026\.1"):
        policy("ru", consent_mode="ivr").resolve()


def test_engine_rejects_widening_config_before_any_check() -> None:
    engine = PolicyEngine()
    with pytest.raises(ConfigError) as info:
        engine.rules(policy("us", max_attempts_24h=10))
    assert info.value.key == "campaigns.c1.max_attempts_24h"


def test_trunk_limits_must_agree_across_campaigns() -> None:
    a = policy(trunk_max_cps=5.0)
    check_trunk_consistency([a, policy(campaign="c2", trunk_max_cps=5.0)])
    check_trunk_consistency([a, policy(campaign="c3", trunk="t2")])
    with pytest.raises(ConfigError) as info:
        check_trunk_consistency([a, policy(campaign="c2", trunk_max_cps=6.0)])
    assert info.value.key.startswith("campaigns.c2.")


_minutes = st.integers(min_value=0, max_value=24 * 60 - 1)


@given(a=_minutes, b=_minutes, pack=st.sampled_from(["ru", "us", "eu"]))
def test_effective_window_never_wider_than_pack_or_campaign(a: int, b: int, pack: str) -> None:
    window = (time(a // 60, a % 60), time(b // 60, b % 60))
    try:
        rules = effective_rules(policy(pack, calling_window=window))
    except ConfigError as exc:
        assert exc.key == "campaigns.c1.calling_window"
        return
    wanted = Window(*window)
    for eff, default in zip(rules.windows, DEFAULT_PACKS[pack].windows, strict=True):
        if eff is not None:
            assert default is not None and default.covers(eff) and wanted.covers(eff)

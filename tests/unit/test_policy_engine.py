"""Subject rules with a controllable clock: DNC, calling windows across zones and DST, attempt
caps and cool-down over rolling windows, evidence, refusal observability."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import phonenumbers
import pytest
from phonenumbers import timezone as pn_tz

from reffection_ari.errors import PolicyRefusal
from reffection_ari.policy import (
    Attempt,
    CampaignPolicy,
    PolicyEngine,
    PolicySubject,
    RuleRefusal,
    Window,
)
from reffection_ari.policy.packs import DEFAULT_PACKS


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso)


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def campaign(pack: str = "us", name: str = "c1", **kw: object) -> CampaignPolicy:
    base: dict[str, object] = {
        "campaign": name,
        "pack": pack,
        "max_concurrent": 5,
        "max_cps": 5.0,
        "trunk": "t1",
        "opt_out_key": "9",
    }
    base.update(kw)
    return CampaignPolicy(**base)  # type: ignore[arg-type]


def subject(
    *zones: str, region: str | None = "US", dnc: bool = False, attempts: tuple[Attempt, ...] = ()
) -> PolicySubject:
    return PolicySubject("sub-1", region, zones, dnc, attempts)


def zones_of(number: str) -> tuple[str, ...]:
    return tuple(pn_tz.time_zones_for_number(phonenumbers.parse(number)))


def refusal(engine: PolicyEngine, subj: PolicySubject, pol: CampaignPolicy) -> RuleRefusal:
    with pytest.raises(RuleRefusal) as info:
        engine.check(subj, pol)
    return info.value


def engine_at(iso: str, **kw: object) -> tuple[PolicyEngine, Clock]:
    clock = Clock(utc(iso))
    return PolicyEngine(clock, **kw), clock  # type: ignore[arg-type]


# -- DNC ---------------------------------------------------------------------------------------


def test_dnc_refused_counted_and_reported_without_details() -> None:
    seen: list[tuple[str, str]] = []
    engine, _ = engine_at("2026-06-10T15:00:00", on_refusal=lambda code, c: seen.append((code, c)))
    exc = refusal(engine, subject("America/New_York", dnc=True), campaign())
    assert isinstance(exc, PolicyRefusal)
    assert exc.code == "dnc" and exc.retry_at is None
    assert engine.refusals["dnc"] == 1
    assert seen == [("dnc", "c1")]
    assert "sub-1" not in str(exc) and "America" not in str(exc)


def test_failing_refusal_hook_does_not_mask_refusal() -> None:
    def broken(code: str, c: str) -> None:
        raise RuntimeError("audit down")

    engine, _ = engine_at("2026-06-10T15:00:00", on_refusal=broken)
    assert refusal(engine, subject("America/New_York", dnc=True), campaign()).code == "dnc"
    assert engine.refusals["dnc"] == 1


# -- Calling windows ---------------------------------------------------------------------------


def _passes(engine: PolicyEngine, clock: Clock, iso: str, subj: PolicySubject, pol: CampaignPolicy) -> bool:
    clock.now = utc(iso)
    try:
        engine.check(subj, pol)
    except RuleRefusal as exc:
        assert exc.code == "outside_calling_window"
        return False
    return True


@pytest.mark.parametrize(
    ("iso", "ok"),
    [
        # Saturday before the spring switch: EST (UTC-5), window opens 13:00Z.
        ("2026-03-07T12:59:59", False),
        ("2026-03-07T13:00:00", True),
        # Sunday 2026-03-08 (switch day): the us pack does not call on Sundays.
        ("2026-03-08T15:00:00", False),
        # Monday after the switch: EDT (UTC-4), window opens 12:00Z, closes 20:00 local = 00:00Z.
        ("2026-03-09T11:59:59", False),
        ("2026-03-09T12:00:00", True),
        ("2026-03-09T23:59:59", True),
        ("2026-03-10T00:00:00", False),
        # Monday after the autumn switch back to EST: opens 13:00Z again.
        ("2026-11-02T12:59:59", False),
        ("2026-11-02T13:00:00", True),
    ],
)
def test_new_york_window_across_dst(iso: str, ok: bool) -> None:
    engine, clock = engine_at(iso)
    assert _passes(engine, clock, iso, subject(*zones_of("+12025550123")), campaign()) is ok


def test_dst_switch_day_itself_with_a_seven_day_pack() -> None:
    daily = Window(time(8), time(20))
    pack = replace(DEFAULT_PACKS["us"], id="t", version="t-1", windows=(daily,) * 7)
    engine, clock = engine_at("2026-03-08T00:00:00", packs={"t": pack})
    subj, pol = subject("America/New_York"), campaign("t")
    # 2026-03-08: clocks jump 02:00 EST -> 03:00 EDT, so 08:00 local is 12:00Z.
    assert not _passes(engine, clock, "2026-03-08T11:59:59", subj, pol)
    assert _passes(engine, clock, "2026-03-08T12:00:00", subj, pol)
    # 2026-11-01: clocks fall back 02:00 EDT -> 01:00 EST, so 08:00 local is 13:00Z.
    assert not _passes(engine, clock, "2026-11-01T12:59:59", subj, pol)
    assert _passes(engine, clock, "2026-11-01T13:00:00", subj, pol)


@pytest.mark.parametrize(
    ("iso", "ok"),
    [
        # Moscow is UTC+3 all year; the EU switch (2026-03-29) must change nothing.
        ("2026-03-27T05:59:59", False),
        ("2026-03-27T06:00:00", True),  # Friday, 09:00 MSK
        ("2026-03-30T05:59:59", False),
        ("2026-03-30T06:00:00", True),  # Monday, 09:00 MSK
        ("2026-03-30T17:59:59", True),
        ("2026-03-30T18:00:00", False),  # 21:00 MSK
        # Saturday: ru weekend window 10:00-20:00 MSK.
        ("2026-03-28T06:30:00", False),
        ("2026-03-28T07:00:00", True),
        ("2026-03-28T16:59:59", True),
        ("2026-03-28T17:00:00", False),
    ],
)
def test_moscow_no_dst_and_weekend_window(iso: str, ok: bool) -> None:
    engine, clock = engine_at(iso)
    subj = subject(*zones_of("+74951234567"), region="RU")
    assert subj.time_zones == ("Europe/Moscow",)
    assert _passes(engine, clock, iso, subj, campaign("ru")) is ok


@pytest.mark.parametrize(
    ("iso", "ok"),
    [
        ("2026-03-27T08:59:59", False),
        ("2026-03-27T09:00:00", True),  # Friday, CET: 10:00 = 09:00Z
        ("2026-03-28T12:00:00", False),  # Saturday: eu pack closed
        ("2026-03-30T07:59:59", False),
        ("2026-03-30T08:00:00", True),  # Monday, CEST: 10:00 = 08:00Z
    ],
)
def test_paris_across_eu_dst(iso: str, ok: bool) -> None:
    engine, clock = engine_at(iso)
    assert _passes(engine, clock, iso, subject("Europe/Paris", region="FR"), campaign("eu")) is ok


@pytest.mark.parametrize(
    ("iso", "ok"),
    [
        # Alaska summer: Anchorage AKDT (UTC-8), Adak HDT (UTC-9). Both must be inside 08:00-20:00.
        ("2026-06-15T16:30:00", False),  # 08:30 Anchorage, but 07:30 Adak
        ("2026-06-15T16:59:59", False),
        ("2026-06-15T17:00:00", True),  # 08:00 Adak
        ("2026-06-16T03:59:59", True),  # 19:59 Anchorage
        ("2026-06-16T04:00:00", False),  # 20:00 Anchorage, 19:00 Adak
    ],
)
def test_number_spanning_zones_uses_most_restrictive(iso: str, ok: bool) -> None:
    zones = zones_of("+19075550123")
    assert set(zones) == {"America/Adak", "America/Anchorage"}
    engine, clock = engine_at(iso)
    assert _passes(engine, clock, iso, subject(*zones), campaign()) is ok


def test_refusal_gives_next_common_opening() -> None:
    # Saturday 2026-06-13 20:30 EDT: Sunday is closed, so the next opening is Monday 08:00 EDT.
    engine, _ = engine_at("2026-06-14T00:30:00")
    exc = refusal(engine, subject("America/New_York"), campaign())
    assert exc.code == "outside_calling_window"
    assert exc.retry_at == utc("2026-06-15T12:00:00")
    assert "America/New_York" in exc.detail and "America" not in str(exc)
    # Two zones: the opening is the later zone's 08:00.
    engine, _ = engine_at("2026-06-15T10:00:00")
    exc = refusal(engine, subject("America/Adak", "America/Anchorage"), campaign())
    assert exc.retry_at == utc("2026-06-15T17:00:00")


def test_russian_mobile_spanning_nine_hours_leaves_a_narrow_window() -> None:
    zones = zones_of("+79161234567")
    assert len(zones) > 10 and {"Europe/Bucharest", "Asia/Anadyr"} <= set(zones)
    engine, clock = engine_at("2026-06-15T00:00:00")
    subj = subject(*zones, region="RU")
    # Monday in summer: 09:00 Anadyr (UTC+12) is 21:00Z Sunday and 21:00 Bucharest (UTC+3) is
    # 18:00Z, so all 16 zones are inside 09:00-21:00 only from 06:00Z (Bucharest 09:00)
    # to 09:00Z (Anadyr 21:00).
    open_hours = [
        h for h in range(24) if _passes(engine, clock, f"2026-06-15T{h:02d}:00:00", subj, campaign("ru"))
    ]
    assert open_hours == [6, 7, 8]
    clock.now = utc("2026-06-15T01:00:00")
    assert refusal(engine, subj, campaign("ru")).retry_at == utc("2026-06-15T06:00:00")
    # The vault's stored zone widens it back to the full Moscow window.
    moscow = subject("Europe/Moscow", region="RU")
    assert _passes(engine, clock, "2026-06-15T15:00:00", moscow, campaign("ru"))


def test_window_refusal_without_any_common_opening() -> None:
    engine, _ = engine_at("2026-06-15T12:00:00")
    # 12 h apart with a 12 h window (08:00-20:00, end exclusive): the windows never overlap.
    exc = refusal(engine, subject("America/New_York", "Asia/Singapore"), campaign())
    assert exc.code == "outside_calling_window" and exc.retry_at is None


def test_no_call_dates_follow_the_subscribers_local_date() -> None:
    # Friday 2026-12-25 is a no-call date, in each subscriber's own calendar.
    xmas = campaign(no_call_dates=frozenset({datetime(2026, 12, 25).date()}))
    engine, _ = engine_at("2026-12-25T15:00:00")  # Friday 10:00 New York: a working hour
    exc = refusal(engine, subject("America/New_York"), xmas)
    assert exc.code == "outside_calling_window" and "2026-12-25 is a no-call date" in exc.detail
    assert exc.retry_at == utc("2026-12-26T13:00:00")  # Saturday 08:00 EST, the next opening
    assert engine.check(subject("America/New_York"), campaign()).local_time_at_dial  # same hour, no holiday
    # Thursday 24th 18:00 in New York is fine, while it is already the 25th in Tokyo.
    engine, _ = engine_at("2026-12-24T23:00:00")
    assert engine.check(subject("America/New_York"), xmas).local_time_at_dial
    jp = refusal(engine, subject("Asia/Tokyo", region="JP"), campaign("eu", no_call_dates=xmas.no_call_dates))
    assert "2026-12-25 is a no-call date" in jp.detail


def test_a_run_of_no_call_dates_still_finds_the_next_opening() -> None:
    # Russian New Year holidays: 1-8 January, nine days with the weekend before them.
    days = frozenset(datetime(2027, 1, d).date() for d in range(1, 9))
    engine, _ = engine_at("2026-12-31T20:00:00")  # 23:00 Moscow on the 31st: after hours
    exc = refusal(engine, subject("Europe/Moscow", region="RU"), campaign("ru", no_call_dates=days))
    assert exc.retry_at is not None and exc.retry_at.date() == datetime(2027, 1, 9).date()


@pytest.mark.parametrize(
    ("zones", "region", "ok"),
    [
        ((), "US", False),  # several zones in the region: refuse
        (("Etc/Unknown",), "US", False),  # what phonenumbers says for unplaceable numbers
        ((), None, False),
        (("Mars/Olympus_Mons",), "US", False),  # not an IANA zone
        ((), "FR", True),  # one zone for the region: use it
        (("Etc/Unknown",), "DE", True),
    ],
)
def test_unknown_time_zone_fallback(zones: tuple[str, ...], region: str | None, ok: bool) -> None:
    engine, _ = engine_at("2026-06-15T12:00:00")  # Monday 14:00 in Paris/Berlin
    subj = PolicySubject("sub-1", region, zones, False, ())
    if ok:
        assert "Europe/" in engine.check(subj, campaign("eu")).local_time_at_dial
    else:
        exc = refusal(engine, subj, campaign("eu"))
        assert (exc.code, exc.detail) == ("outside_calling_window", "unknown_time_zone")


def test_campaign_window_narrows() -> None:
    engine, clock = engine_at("2026-06-15T14:00:00")  # Monday 10:00 EDT
    pol = campaign(calling_window=(time(11), time(17)))
    subj = subject("America/New_York")
    assert not _passes(engine, clock, "2026-06-15T14:59:59", subj, pol)
    assert _passes(engine, clock, "2026-06-15T15:00:00", subj, pol)
    assert not _passes(engine, clock, "2026-06-15T21:00:00", subj, pol)


# -- Attempts and cool-down ---------------------------------------------------------------------

NOW = "2026-06-15T16:00:00"  # Monday 12:00 EDT


def attempts(*specs: tuple[timedelta, str, str]) -> tuple[Attempt, ...]:
    return tuple(Attempt(utc(NOW) - ago, camp, outcome) for ago, camp, outcome in specs)


@pytest.mark.parametrize(
    ("oldest", "ok"),
    [
        (timedelta(hours=24), True),  # exactly 24 h ago: outside the window
        (timedelta(hours=24) - timedelta(seconds=1), False),  # just inside
    ],
)
def test_attempts_per_rolling_24h_across_campaigns(oldest: timedelta, ok: bool) -> None:
    engine, _ = engine_at(NOW)
    history = attempts(
        (oldest, "other", "no_answer"),
        (timedelta(hours=3), "c1", "busy"),
        (timedelta(minutes=5), "c2", "no_input"),
    )
    subj = subject("America/New_York", attempts=history)
    if ok:
        decision = engine.check(subj, campaign())
        assert any(c.rule == "attempts_24h" and c.detail.startswith("2 of 3") for c in decision.checks)
    else:
        exc = refusal(engine, subj, campaign())
        assert (exc.code, exc.rule) == ("attempt_limit", "attempts_24h")
        assert exc.retry_at == utc(NOW) - oldest + timedelta(hours=24)


def test_campaign_override_narrows_daily_cap() -> None:
    engine, _ = engine_at(NOW)
    subj = subject("America/New_York", attempts=attempts((timedelta(hours=1), "c1", "no_answer")))
    engine.check(subj, campaign())
    assert refusal(engine, subj, campaign(max_attempts_24h=1)).code == "attempt_limit"


@pytest.mark.parametrize(
    ("oldest", "ok"), [(timedelta(days=30), True), (timedelta(days=30) - timedelta(seconds=1), False)]
)
def test_attempts_per_campaign_over_rolling_period(oldest: timedelta, ok: bool) -> None:
    engine, _ = engine_at("2026-06-15T12:00:00")  # Monday 14:00 CEST
    history = tuple(
        Attempt(utc("2026-06-15T12:00:00") - ago, camp, "no_answer")
        for ago, camp in [
            (oldest, "c1"),
            (timedelta(days=20), "c1"),
            (timedelta(days=10), "c1"),
            (timedelta(days=2), "c1"),
            (timedelta(days=1, hours=1), "other"),  # another campaign: not counted
        ]
    )
    subj = subject("Europe/Paris", region="FR", attempts=history)
    if ok:
        decision = engine.check(subj, campaign("eu"))
        assert any(c.rule == "attempts_campaign" and c.detail.startswith("3 of 4") for c in decision.checks)
    else:
        exc = refusal(engine, subj, campaign("eu"))
        assert (exc.code, exc.rule) == ("attempt_limit", "attempts_campaign")
        assert exc.retry_at == utc("2026-06-15T12:00:00") - oldest + timedelta(days=30)


def test_custom_campaign_cap_and_period() -> None:
    engine, _ = engine_at(NOW)
    history = attempts((timedelta(days=6), "c1", "no_answer"), (timedelta(days=3), "c1", "busy"))
    subj = subject("America/New_York", attempts=history)
    engine.check(subj, campaign(max_attempts_campaign=3, campaign_attempt_period=timedelta(days=7)))
    exc = refusal(engine, subj, campaign(max_attempts_campaign=2, campaign_attempt_period=timedelta(days=7)))
    assert exc.rule == "attempts_campaign"
    engine.check(subj, campaign(max_attempts_campaign=2, campaign_attempt_period=timedelta(days=5)))


@pytest.mark.parametrize("outcome", ["declined", "opted_out"])
@pytest.mark.parametrize(
    ("ago", "ok"), [(timedelta(days=30), True), (timedelta(days=30) - timedelta(seconds=1), False)]
)
def test_cooldown_after_decline_or_opt_out(outcome: str, ago: timedelta, ok: bool) -> None:
    engine, _ = engine_at(NOW)
    subj = subject("America/New_York", attempts=attempts((ago, "other", outcome)))
    if ok:
        engine.check(subj, campaign())
    else:
        exc = refusal(engine, subj, campaign())
        assert exc.code == "cooldown"
        assert exc.retry_at == utc(NOW) - ago + timedelta(days=30)
        assert engine.refusals == {"cooldown": 1}


def test_cooldown_only_after_decline_and_lengthened_by_campaign() -> None:
    engine, _ = engine_at(NOW)
    ago = timedelta(days=40)
    subj = subject(
        "America/New_York", attempts=attempts((ago, "c1", "declined"), (timedelta(days=1), "c1", "no_answer"))
    )
    engine.check(subj, campaign())
    assert refusal(engine, subj, campaign(cooldown_after_decline=timedelta(days=45))).code == "cooldown"


def test_naive_timestamps_rejected() -> None:
    engine, _ = engine_at(NOW)
    subj = subject("America/New_York", attempts=(Attempt(datetime(2026, 6, 15), "c1", "busy"),))
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.check(subj, campaign())
    with pytest.raises(ValueError, match="timezone-aware"):
        PolicyEngine(lambda: datetime(2026, 6, 15)).check(subject("America/New_York"), campaign())


# -- Decision and evidence ---------------------------------------------------------------------


def test_decision_evidence_lists_every_check_with_pack_version_and_local_time() -> None:
    engine, _ = engine_at("2026-06-15T12:00:00")
    decision = engine.check(subject("Europe/Paris", region="FR"), campaign("eu"))
    assert [c.rule for c in decision.checks] == [
        "dnc",
        "calling_window",
        "attempts_24h",
        "attempts_campaign",
        "cooldown",
    ]
    assert all(c.passed and c.pack_version == "eu-2026.1" for c in decision.checks)
    assert decision.local_time_at_dial == "2026-06-15T14:00+02:00 Europe/Paris"
    evidence = decision.as_evidence()
    assert len(evidence) == len(decision.checks) + 1
    assert all(e["pack"] == "eu" and e["pack_version"] == "eu-2026.1" for e in evidence)
    assert evidence[-1]["rule"] == "subscriber_local_time"
    assert evidence[-1]["detail"] == decision.local_time_at_dial
    assert json.loads(json.dumps(evidence)) == list(evidence)  # JSON-ready for the receipt


def test_subject_repr_hides_identifiers() -> None:
    subj = subject("America/New_York")
    assert "sub-1" not in repr(subj) and "New_York" not in repr(subj)

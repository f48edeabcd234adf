"""Concurrency and CPS limits per campaign and per trunk under bursts of concurrent requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from reffection_ari.policy import CampaignPolicy, Lease, PolicyEngine, PolicySubject, RuleRefusal


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 15, 16, 0, tzinfo=UTC)  # Monday 12:00 EDT

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def campaign(name: str = "c1", **kw: object) -> CampaignPolicy:
    base: dict[str, object] = {
        "campaign": name,
        "pack": "us",
        "max_concurrent": 1000,
        "max_cps": 1000.0,
        "trunk": "t1",
        "opt_out_key": "9",
    }
    base.update(kw)
    return CampaignPolicy(**base)  # type: ignore[arg-type]


async def burst(
    engine: PolicyEngine,
    policies: list[CampaignPolicy],
    hold: asyncio.Event,
) -> tuple[int, int, list[str]]:
    """Fire one acquire per policy concurrently; hold admitted slots until ``hold`` is set.

    Returns (admitted, peak concurrency observed, refusal codes).
    """
    active = 0
    peak = 0
    codes: list[str] = []
    admitted = 0
    all_decided = asyncio.Event()

    async def one(pol: CampaignPolicy) -> None:
        nonlocal active, peak, admitted
        await asyncio.sleep(0)  # interleave like independent API requests
        try:
            async with engine.admit(pol):
                admitted += 1
                active += 1
                peak = max(peak, active)
                decided()
                await hold.wait()
                active -= 1
        except RuleRefusal as exc:
            codes.append(exc.code)
            decided()

    def decided() -> None:
        if len(codes) + admitted == len(policies):
            all_decided.set()

    tasks = [asyncio.create_task(one(p)) for p in policies]
    await asyncio.wait_for(all_decided.wait(), timeout=5)
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    return admitted, peak, codes


async def test_campaign_concurrency_never_exceeded_and_slots_reusable() -> None:
    engine = PolicyEngine(Clock())
    pol = campaign(max_concurrent=20)
    admitted, peak, codes = await burst(engine, [pol] * 500, asyncio.Event())
    assert (admitted, peak) == (20, 20)
    assert codes == ["concurrency_limit"] * 480
    assert engine.refusals["concurrency_limit"] == 480
    assert engine.in_use("c1") == 0
    admitted, peak, _ = await burst(engine, [pol] * 500, asyncio.Event())
    assert (admitted, peak) == (20, 20)


async def test_trunk_concurrency_shared_across_campaigns() -> None:
    engine = PolicyEngine(Clock())
    pols = [campaign(f"c{i % 3}", max_concurrent=10, trunk_max_concurrent=15) for i in range(500)]
    admitted, peak, codes = await burst(engine, pols, asyncio.Event())
    assert (admitted, peak) == (15, 15)
    assert set(codes) == {"concurrency_limit"}
    assert engine.limiter.snapshot() == {"campaign": {}, "trunk": {}}


async def test_cps_burst_admits_exactly_the_rate_then_refills_with_the_clock() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_cps=10.0)
    admitted, _, codes = await burst(engine, [pol] * 500, asyncio.Event())
    assert admitted == 10
    assert codes == ["rate_limited"] * 490
    with pytest.raises(RuleRefusal) as info:
        engine.acquire(pol)
    assert info.value.retry_at == clock.now + timedelta(seconds=1)
    clock.advance(0.999)
    with pytest.raises(RuleRefusal):
        engine.acquire(pol)
    clock.advance(0.001)
    leases = [engine.acquire(pol) for _ in range(10)]
    with pytest.raises(RuleRefusal):
        engine.acquire(pol)
    for lease in leases:
        lease.release()


def test_cps_never_exceeded_in_any_sliding_second() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_cps=7.0, trunk_max_cps=5.0, name="a")
    other = campaign(max_cps=7.0, trunk_max_cps=5.0, name="b")
    starts: list[float] = []
    for step in range(400):  # 40 s in 0.1 s steps, 6 attempts per step
        for i in range(6):
            try:
                engine.acquire(pol if i % 2 else other).release()
                starts.append(step / 10)
            except RuleRefusal as exc:
                assert exc.code == "rate_limited"
        clock.advance(0.1)
    for i, t in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < t + 1.0 - 1e-9) <= 5  # trunk is the binding limit
    assert len(starts) >= 5 * 39


def test_fractional_cps() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_cps=0.5)
    engine.acquire(pol).release()
    clock.advance(1.999)
    with pytest.raises(RuleRefusal):
        engine.acquire(pol)
    clock.advance(0.001)
    engine.acquire(pol).release()


def test_refused_acquire_consumes_nothing() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_concurrent=1, max_cps=2.0)
    first = engine.acquire(pol)
    for _ in range(50):
        with pytest.raises(RuleRefusal, match="concurrency"):
            engine.acquire(pol)
    first.release()
    engine.acquire(pol).release()  # the refusals used no CPS budget: the 2nd start still fits
    with pytest.raises(RuleRefusal) as info:
        engine.acquire(pol)
    assert info.value.code == "rate_limited"
    # A trunk refusal takes no campaign slot either.
    a = campaign("a", trunk="t2", trunk_max_concurrent=1)
    b = campaign("b", trunk="t2", trunk_max_concurrent=1)
    held = engine.acquire(a)
    with pytest.raises(RuleRefusal) as info:
        engine.acquire(b)
    assert (info.value.code, info.value.rule) == ("concurrency_limit", "concurrency_trunk")
    assert engine.in_use("b") == 0
    held.release()
    engine.acquire(b).release()


def test_release_is_idempotent() -> None:
    engine = PolicyEngine(Clock())
    pol = campaign(max_concurrent=2)
    a, b = engine.acquire(pol), engine.acquire(pol)
    a.release()
    a.release()
    assert engine.in_use("c1") == 1
    with a:
        pass
    assert engine.in_use("c1") == 1 and not b.released
    with b:
        pass
    assert engine.in_use("c1") == 0 and b.released


def test_wall_clock_stepping_back_does_not_refill() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_cps=1.0)
    engine.acquire(pol).release()
    clock.advance(-3600)
    with pytest.raises(RuleRefusal):
        engine.acquire(pol)


async def test_authorize_is_one_step_and_refusal_takes_no_slot() -> None:
    clock = Clock()
    engine = PolicyEngine(clock)
    pol = campaign(max_concurrent=3, max_cps=100.0)
    ok = PolicySubject("s", "US", ("America/New_York",), False, ())
    dnc = PolicySubject("s", "US", ("America/New_York",), True, ())

    async def one(i: int) -> Lease | str:
        await asyncio.sleep(0)
        try:
            return engine.authorize(dnc if i % 2 else ok, pol)[1]
        except RuleRefusal as exc:
            return exc.code

    results = await asyncio.gather(*(one(i) for i in range(500)))
    leases = [r for r in results if isinstance(r, Lease)]
    assert len(leases) == 3 and engine.in_use("c1") == 3
    assert results.count("dnc") == 250 and results.count("concurrency_limit") == 247
    leases[0].release()
    decision, lease = engine.authorize(ok, pol)
    assert [c.rule for c in decision.checks][-2:] == ["concurrency", "rate"]
    assert all(e["pack_version"] == "us-2026.1" for e in decision.as_evidence())
    lease.release()

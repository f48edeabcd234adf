"""Compliance rules enforced through the real platform API on the sandbox.

A refused call creates no channel in Asterisk; every refusal carries its reason code, is counted
in ``/metrics`` by reason and written to the audit log -- with no number anywhere. Subscribers in
``LOCAL_PREFIX`` are Local channels the sandbox dialplan answers, so no SIP peer is needed.
"""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime

import pytest

from reffection_ari.cli import main as cli_main
from reffection_ari.evidence import verify_audit_log

from .conftest import EU, EU_HOLIDAY, EU_SLOW, IVR, LOCAL_PREFIX, Dialer

FRIDAY_0300_LONDON = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)  # before the eu pack's 10:00
FRIDAY_1100_LONDON = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)


def local_number(i: int) -> str:
    return f"{LOCAL_PREFIX}{i:02d}"


def audit_entries(dialer: Dialer, kind: str) -> list[dict[str, object]]:
    lines = dialer.config.audit_log.read_text().splitlines()
    return [e["data"] for e in map(json.loads, lines) if e["kind"] == kind]


async def assert_refused_without_channel(dialer: Dialer, token: str, campaign: str, code: str, status: int) -> None:
    before = await dialer.metric("reffection_calls_refused_total")
    r = await dialer.api("POST", "/v1/calls", {"token": token, "campaign": campaign})
    assert (r.status, r.code) == (status, code), r.text
    channels, bridges = await dialer.leftovers()
    assert (channels, bridges) == ([], [])  # nothing was created in Asterisk
    assert await dialer.metric("reffection_calls_refused_total") == before + 1
    assert f'reffection_calls_refused_total{{reason="{code}"}}' in (await dialer.api("GET", "/metrics")).text


async def place_and_hang_up(dialer: Dialer, token: str, campaign: str) -> None:
    call_id = await dialer.place(token, campaign)
    await dialer.wait_state(call_id, {"disclosure", "consent", "agent_dialing"})
    r = await dialer.api("POST", f"/v1/calls/{call_id}/hangup")
    assert r.status == 202
    await dialer.wait_end(call_id)
    assert await dialer.wait_no_leftovers() == ([], [])  # its legs are gone before the next check


@pytest.mark.wall_clock(FRIDAY_0300_LONDON)
async def test_outside_the_calling_window_no_channel_is_created(dialer: Dialer) -> None:
    number = local_number(1)
    await assert_refused_without_channel(dialer, dialer.issue(number), EU, "outside_calling_window", 403)
    refusals = audit_entries(dialer, "policy_refused")
    assert refusals == [{"code": "outside_calling_window", "campaign": EU}]
    assert number[1:] not in dialer.config.audit_log.read_text()


@pytest.mark.wall_clock(FRIDAY_1100_LONDON)
async def test_a_no_call_date_refuses_inside_the_hours_without_a_channel(dialer: Dialer) -> None:
    """11:00 on a Friday is inside the eu window; the campaign lists that Friday as a no-call date."""
    token = dialer.issue(local_number(4))
    await assert_refused_without_channel(dialer, token, EU_HOLIDAY, "outside_calling_window", 403)
    assert audit_entries(dialer, "policy_refused") == [{"code": "outside_calling_window", "campaign": EU_HOLIDAY}]


@pytest.mark.wall_clock(FRIDAY_1100_LONDON)
async def test_attempt_cap_over_the_rolling_day(dialer: Dialer) -> None:
    token = dialer.issue(local_number(2))
    await place_and_hang_up(dialer, token, EU)  # the eu pack allows 2 attempts per 24 h
    await place_and_hang_up(dialer, token, EU)
    await assert_refused_without_channel(dialer, token, EU, "attempt_limit", 403)
    # another subscriber is unaffected
    await place_and_hang_up(dialer, dialer.issue(local_number(3)), EU)


@pytest.mark.wall_clock(FRIDAY_1100_LONDON)
async def test_a_burst_never_exceeds_the_calls_per_second_limit(dialer: Dialer) -> None:
    tokens = [dialer.issue(local_number(10 + i)) for i in range(8)]
    results = await asyncio.gather(
        *(dialer.api("POST", "/v1/calls", {"token": t, "campaign": EU_SLOW}) for t in tokens)
    )
    accepted = [r for r in results if r.status == 202]
    refused = [r for r in results if r.status != 202]
    assert len(accepted) == 1  # acme-eu-slow: max_cps 0.1, one start per 10 s window
    assert {(r.status, r.code) for r in refused} == {(429, "rate_limited")}
    for r in accepted:
        call_id = r.body["call_id"]
        await dialer.api("POST", f"/v1/calls/{call_id}/hangup")
        await dialer.wait_end(call_id)


async def test_dnc_by_platform_opt_out_and_by_csv_import(dialer: Dialer) -> None:
    opted = dialer.issue(local_number(20))
    r = await dialer.api("POST", "/v1/optout", {"token": opted})
    assert (r.status, r.body) == (200, {"token": opted, "dnc": True})
    await assert_refused_without_channel(dialer, opted, IVR, "dnc", 403)
    assert {"source": "api_opt_out"}.items() <= audit_entries(dialer, "dnc_changed")[0].items()

    imported_number = local_number(21)
    imported = dialer.issue(imported_number)
    path = dialer.workdir / "dnc.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([["phone"], [imported_number]])
    # the operator's import writes to the audit log the running daemon holds open
    rc = await asyncio.to_thread(
        cli_main,
        ["dnc", "import", str(path), "--vault", str(dialer.config.vault), "--keyring", str(dialer.config.keyring),
         "--audit-log", str(dialer.config.audit_log)],
    )  # fmt: skip
    assert rc == 0
    await assert_refused_without_channel(dialer, imported, IVR, "dnc", 403)
    sid = dialer.tokens.resolve(imported, "platform-a").subscriber_id
    assert {"source": "import", "via": "import", "subscriber_ref": sid.hex()}.items() <= audit_entries(
        dialer, "dnc_changed"
    )[-1].items()
    # the daemon goes on appending to the same chain after the operator's entries
    r = await dialer.api("POST", "/v1/optout", {"token": dialer.issue(local_number(22))})
    assert r.status == 200
    assert audit_entries(dialer, "dnc_changed")[-1]["source"] == "api_opt_out"
    signing_key, kid = dialer.keyring.receipt_signing_key()
    report = verify_audit_log(dialer.config.audit_log, {kid: signing_key.public_key()})
    assert report.kinds["dnc_changed"] == 3
    assert await dialer.metric("reffection_dnc_changes_total") == 2  # the daemon's own two (API opt-outs)

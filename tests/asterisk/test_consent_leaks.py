"""The subscriber's number never leaves the partner boundary before a confirmed lead.

One full consented call on the real Asterisk; then the subscriber's digits, in every format a
human or a library would write them, must appear in none of: the daemon's log records (every
level, rendered before any masking filter), the API response bodies and SSE events the platform
received, and the SIP messages the agent's phone saw (``-trace_msg``: request line, From, To,
Contact, P-Asserted-Identity, Remote-Party-ID, every other header, SDP). They must appear in the
delivered lead -- and, as a check of the detector itself, in the subscriber trunk's SIP trace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from reffection_ari.sandbox import dtmf, hangup, pause, speech
from tests.leakguard import registered_formats

from .conftest import IVR, NUMBER, Dialer

_SEP = r"[\s().\-/]*"


def needles(e164: str) -> list[tuple[str, re.Pattern[str]]]:
    """Literal formats (E.164, international digits, national, NSN, spaced, dashed, dotted, RFC 3966...)
    plus one pattern for the national significant number with any separators between digits."""
    literal = {text for _, text in registered_formats(e164)}
    nsn = e164[3:]  # +44 <nsn>
    literal |= {e164, e164[1:], "0" + nsn, nsn, "020 7946 0123", "020-7946-0123", "(020) 7946 0123",
                "+44 20 7946 0123", "0044" + nsn, "tel:" + e164}  # fmt: skip
    out = [(f"literal {len(t)} chars", re.compile(re.escape(t))) for t in sorted(literal)]
    out.append(("nsn with separators", re.compile(_SEP.join(nsn))))
    return out


def leaks(where: str, texts: list[str], patterns: list[tuple[str, re.Pattern[str]]]) -> list[str]:
    """Where the number was found, by index and format -- never the text itself."""
    found = []
    for i, text in enumerate(texts):
        for kind, pattern in patterns:
            if pattern.search(text):
                found.append(f"{where}[{i}] ({kind})")
                break
    return found


def log_leaks(records: list[tuple[str, str]], patterns: list[tuple[str, re.Pattern[str]]]) -> list[str]:
    return sorted({f"log record of {source}" for source, text in records if any(p.search(text) for _, p in patterns)})


@dataclass(frozen=True)
class ConsentedCall:
    call_id: str
    lead: dict[str, Any]
    agent_sip: str
    subscriber_sip: str


async def consented_call(dialer: Dialer) -> ConsentedCall:
    """One full consented call (IVR yes, agent confirms by DTMF and hangs up), plus the API calls a
    platform makes around it; returns once both sipp peers have finished."""
    sub = await dialer.subscriber(speech(), pause(3000), dtmf("1"))
    agent = await dialer.agent(pause(3000), dtmf("#"), pause(1000), hangup())
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["lead_stored"])
    end = await dialer.wait_end(call_id)
    assert end["reason"] == "completed"
    view = await dialer.api("GET", f"/v1/calls/{call_id}")
    lead = await dialer.wait_lead(call_id)
    for path in ("/healthz", "/metrics"):
        assert (await dialer.api("GET", path)).status == 200
    assert (await dialer.confirm(call_id)).body["lead_id"] == view.body["lead_id"]  # repeated confirm
    assert await agent.wait(10) == 0 and await sub.wait(10) == 0
    return ConsentedCall(call_id, lead, agent.messages(), sub.messages())


async def test_number_reaches_only_the_lead(dialer: Dialer) -> None:
    """API bodies, SSE events, the agent's SIP and the daemon's INFO+ logs (its default level)."""
    patterns = needles(NUMBER)
    call = await consented_call(dialer)
    # the evidence is really there (a leak check over nothing proves nothing)
    assert "INVITE sip:" in call.agent_sip and "m=audio" in call.agent_sip
    assert f'From: "{IVR} {call.call_id}" <sip:{IVR}@' in call.agent_sip  # the masked label only
    assert "P-Asserted-Identity" not in call.agent_sip and "Remote-Party-ID" not in call.agent_sip
    assert len(dialer.sse_raw) >= 10 and len(dialer.api_responses) >= 5
    assert any(p.search(call.subscriber_sip) for _, p in patterns), "detector misses the number on the trunk"

    info = [(src, text) for src, text in dialer.logs.records if not src.endswith("/DEBUG")]
    assert len(info) >= 5
    found = (
        log_leaks(info, patterns)
        + leaks("api response", [r.text for r in dialer.api_responses], patterns)
        + leaks("sse line", dialer.sse_raw, patterns)
        + leaks("agent sip trace", [call.agent_sip], patterns)
    )
    assert not found, "subscriber number leaked: " + "; ".join(found)
    assert call.lead["number_e164"] == NUMBER
    assert any(p.search(json.dumps(call.lead)) for _, p in patterns)


async def test_partner_files_at_rest_hold_the_number_only_in_the_confirmed_lead(dialer: Dialer) -> None:
    """After a consented call: the vault (file + WAL) and the audit log hold no digits of the number;
    the outbox, which carries the confirmed lead, does (and so shows the detector works on files)."""
    patterns = needles(NUMBER)
    await consented_call(dialer)

    def files(*globs: str) -> list[str]:
        paths = sorted(p for g in globs for p in dialer.workdir.glob(g) if p.is_file())
        assert paths, globs
        return [p.read_bytes().decode("latin-1") for p in paths]

    found = leaks("vault file", files("vault.sqlite*"), patterns) + leaks("audit log", files("audit.jsonl*"), patterns)
    assert not found, "subscriber number at rest: " + "; ".join(found)
    assert leaks("outbox", files("outbox.sqlite*"), patterns)


async def test_number_absent_from_debug_logs(dialer: Dialer) -> None:
    """Every log record down to DEBUG, rendered before any masking filter (as tests/leakguard.py)."""
    patterns = needles(NUMBER)
    await consented_call(dialer)
    debug = [src for src, _ in dialer.logs.records if src.endswith("/DEBUG")]
    assert debug, "no DEBUG records captured"
    found = log_leaks(dialer.logs.records, patterns)
    assert not found, "subscriber number in log records: " + "; ".join(found)

"""The lead's wire format: one stable JSON object, shared by the outbox, every sink and the receipt.

``lead_to_json`` is the contract advertisers integrate against (``schema`` =
``reffection.lead/1``; fields are only ever added, never renamed). It deliberately leaves out
what the advertiser does not need: the recording's path on the partner's host and the
platform token (``call_id`` already reconciles a lead with the platform's records).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..lead import ConsentEvidence, Keypress, Lead, PromptPlayed, RecordingInfo
from ._util import rfc3339

LEAD_SCHEMA = "reffection.lead/1"


def prompt_to_json(p: PromptPlayed) -> dict[str, Any]:
    return {
        "id": p.prompt_id,
        "version": p.version,
        "language": p.language,
        "text_sha256": p.text_sha256,
        "leg": p.leg,
        "started_at": rfc3339(p.started_at),
        "finished_at": rfc3339(p.finished_at),
        "completed": p.completed,
    }


def keypress_to_json(k: Keypress) -> dict[str, Any]:
    return {"leg": k.leg, "digit": k.digit, "at": rfc3339(k.at), "offset_ms": k.offset_ms}


def recording_to_json(r: RecordingInfo | None, *, sha256: str | None = None) -> dict[str, Any] | None:
    if r is None:
        return None if sha256 is None else {"sha256": sha256}
    return {
        "sha256": sha256 or r.sha256,
        "duration_s": round(r.duration_s, 3),
        "size_bytes": r.size_bytes,
        "format": r.format,
    }


def consent_to_json(ev: ConsentEvidence) -> dict[str, Any]:
    return {
        "mode": ev.consent_mode,
        "result": str(ev.consent),
        "at": rfc3339(ev.consent_at),
        "answered_at": rfc3339(ev.answered_at),
        "caller_id_presented": ev.caller_id_presented,
    }


def agent_to_json(ev: ConsentEvidence) -> dict[str, Any]:
    return {"id": ev.agent_id, "confirmed_at": rfc3339(ev.confirmed_at), "confirm_source": ev.confirm_source}


def lead_to_json(lead: Lead) -> dict[str, Any]:
    """The lead as a JSON-ready dict (see docs/receipts.md, "Lead JSON"). Contains the number."""
    ev = lead.evidence
    return {
        "schema": LEAD_SCHEMA,
        "lead_id": lead.lead_id,
        "call_id": lead.call_id,
        "campaign": lead.campaign,
        "advertiser": lead.advertiser,
        "number_e164": lead.number_e164,
        "created_at": rfc3339(lead.created_at),
        "consent": consent_to_json(ev),
        "prompts": [prompt_to_json(p) for p in ev.prompts],
        "keypresses": [keypress_to_json(k) for k in ev.keypresses],
        "agent": agent_to_json(ev),
        "recording": recording_to_json(lead.recording),
        "policy_checks": [dict(c) for c in ev.policy_checks],
        "receipt": lead.receipt,
    }


def lead_summary(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload without the number: safe for logs, the CLI and the audit log."""
    out = dict(payload)
    if out.get("number_e164") is not None:
        out["number_e164"] = "<redacted>"
    return out

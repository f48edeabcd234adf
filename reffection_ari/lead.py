"""Consent evidence and the consented lead: the data that crosses from the call flow to delivery.

These are the seam between the call (``flow/``, the driver) and evidence/delivery
(``evidence/``): the flow fills a :class:`ConsentEvidence`; only a confirmed call turns it,
together with the revealed number and the finished recording, into a :class:`Lead` handed to a
:class:`LeadSink`. Nothing here holds a number except ``Lead.number_e164``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

Leg = Literal["subscriber", "agent"]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A recorded announcement with the verbatim text the subscriber hears.

    ``media`` is an ARI media URI (``sound:...``); ``text`` is what that audio says, word for
    word, because the receipt commits to its SHA-256.
    """

    id: str
    version: str
    language: str
    text: str
    media: str

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PromptPlayed:
    prompt_id: str
    version: str
    language: str
    text_sha256: str
    leg: Leg
    started_at: datetime
    finished_at: datetime | None
    completed: bool  # False when interrupted (DTMF barge-in, hangup) or failed


@dataclass(frozen=True, slots=True)
class Keypress:
    leg: Leg
    digit: str
    at: datetime
    offset_ms: int  # from the subscriber's answer


class ConsentResult(StrEnum):
    GIVEN = "given"
    DECLINED = "declined"
    OPTED_OUT = "opted_out"
    NO_INPUT = "no_input"
    NONE = "none"  # the call ended before a consent question was answered


@dataclass(frozen=True, slots=True)
class ConsentEvidence:
    """What happened on the call, as the flow observed it. Carries no number."""

    call_id: str
    campaign: str
    advertiser: str
    consent_mode: Literal["ivr", "agent"]
    caller_id_presented: str
    answered_at: datetime | None
    consent: ConsentResult
    consent_at: datetime | None
    prompts: tuple[PromptPlayed, ...]
    keypresses: tuple[Keypress, ...]
    agent_id: str | None
    confirmed_at: datetime | None
    confirm_source: Literal["dtmf", "api"] | None
    policy_checks: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    path: str  # path on the partner's host (inside the sandbox root when sandboxed)
    sha256: str
    duration_s: float
    size_bytes: int
    format: str = "wav/8000/16/mono"


@dataclass(frozen=True, slots=True)
class Lead:
    """A consented lead: the only object that carries the subscriber's number in clear."""

    lead_id: str
    call_id: str
    token: str
    audience: str
    campaign: str
    advertiser: str
    number_e164: str = field(repr=False)
    evidence: ConsentEvidence
    recording: RecordingInfo | None
    created_at: datetime
    receipt: str | None = None  # compact JWS, when a receipt signer is configured

    def __repr__(self) -> str:  # never print the number by accident
        return f"Lead(lead_id={self.lead_id!r}, call_id={self.call_id!r}, campaign={self.campaign!r})"


class LeadSink(Protocol):
    """Takes custody of a lead. ``store`` returns only once the lead is durable: the confirm is
    acknowledged after it returns, so a sink that loses a stored lead breaks the contract."""

    async def store(self, lead: Lead) -> None: ...

"""What the call service exchanges with its surroundings: typed, PII-free views and hooks.

The platform only ever sees :class:`CallView` and :class:`PlatformEvent` (ids, token, campaign,
state, reason, times). The number exists in :class:`PreparedCall` (as an opaque dial string
kept out of every repr) and in the lead built by :class:`Partner` after a confirm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..config import CampaignSettings
from ..lead import ConsentEvidence, Lead, RecordingInfo


class Lease(Protocol):
    """A concurrency slot held for the lifetime of one call."""

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """Everything needed to dial, decided inside the partner boundary before any channel exists."""

    subscriber_id: bytes = field(repr=False)
    dial_string: str = field(repr=False)
    trunk: str
    policy_checks: tuple[dict[str, Any], ...] = ()
    lease: Lease | None = field(default=None, repr=False)


class Partner(Protocol):
    """The partner side of a call: tokens, policy, routing, DNC, the number reveal and the lead.

    ``prepare`` raises :class:`~reffection_ari.errors.TokenError` /
    :class:`~reffection_ari.errors.PolicyRefusal` / ``ReffectionError(code="no_route")``
    before any channel is created.
    """

    def prepare(self, token: str, audience: str, campaign: CampaignSettings) -> PreparedCall: ...

    def opt_out(self, subscriber_id: bytes, call_id: str) -> None: ...

    def record_outcome(self, subscriber_id: bytes, campaign: str, outcome: str, at: datetime) -> None: ...

    async def build_lead(
        self,
        *,
        call_id: str,
        token: str,
        audience: str,
        subscriber_id: bytes,
        campaign: CampaignSettings,
        evidence: ConsentEvidence,
        recording: RecordingInfo | None,
    ) -> Lead: ...

    def recording_deleted(self, call_id: str, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CallView:
    """A call as the platform may see it."""

    call_id: str
    token: str
    audience: str
    campaign: str
    state: str
    end_reason: str | None
    consent: str
    created_at: datetime
    updated_at: datetime
    lead_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "token": self.token,
            "campaign": self.campaign,
            "state": self.state,
            "end_reason": self.end_reason,
            "consent": self.consent,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "lead_id": self.lead_id,
        }


@dataclass(frozen=True, slots=True)
class PlatformEvent:
    """One state change, published on the live event stream of the call's audience."""

    call_id: str
    token: str
    audience: str
    campaign: str
    state: str
    old_state: str | None
    reason: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "call.state",
            "call_id": self.call_id,
            "token": self.token,
            "campaign": self.campaign,
            "state": self.state,
            "old_state": self.old_state,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }

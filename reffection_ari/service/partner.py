"""The partner side of a call: token → subscriber → policy → route before dialing, and the
number reveal → signed receipt → durable outbox after a confirm.

This is the only place where the vault, the policy engine, the route table and the evidence
pieces meet; the call service sees a :class:`~reffection_ari.service.model.PreparedCall` whose
dial string never leaves this process except towards Asterisk.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..config import CampaignSettings
from ..errors import CallError
from ..evidence import AuditLog, ReceiptSigner
from ..lead import ConsentEvidence, Lead, LeadSink, RecordingInfo
from ..policy import Attempt, CampaignPolicy, PolicyEngine, PolicySubject
from ..routing import RouteTable
from ..tokens import TokenService
from .model import Lease, PreparedCall

log = logging.getLogger(__name__)

_HISTORY = timedelta(days=61)  # longest rolling window or cool-down any pack looks back over


def campaign_policy(campaign: CampaignSettings, trunk: str) -> CampaignPolicy:
    p = campaign.policy
    return CampaignPolicy(
        campaign=campaign.name,
        pack=p.pack,
        max_concurrent=p.max_concurrent,
        max_cps=p.max_cps,
        trunk=trunk,
        calling_window=p.calling_window,
        no_call_dates=p.no_call_dates,
        max_attempts_24h=p.max_attempts_24h,
        cooldown_after_decline=(
            timedelta(hours=p.cooldown_after_decline_hours) if p.cooldown_after_decline_hours else None
        ),
        trunk_max_concurrent=p.trunk_max_concurrent,
        trunk_max_cps=p.trunk_max_cps,
        consent_mode=campaign.flow.consent_mode,
        opt_out_key=campaign.flow.optout_key,
    )


class _SubscriberLease:
    """Holds the policy lease and the one-call-at-a-time slot of a subscriber."""

    def __init__(self, inner: Lease, in_flight: set[bytes], subscriber_id: bytes) -> None:
        self._inner = inner
        self._in_flight = in_flight
        self._sid = subscriber_id
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._in_flight.discard(self._sid)
            self._inner.release()


class PartnerSide:
    def __init__(
        self,
        *,
        tokens: TokenService,
        routes: RouteTable,
        policy: PolicyEngine,
        sink: LeadSink,
        signer: ReceiptSigner | None,
        audit: AuditLog | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tokens = tokens
        self.routes = routes
        self.policy = policy
        self.sink = sink
        self.signer = signer
        self.audit = audit
        self.clock = clock
        self._in_flight: set[bytes] = set()
        self.dnc_changes: Counter[str] = Counter()  # by source, for /metrics

    # ---- before dialing ----------------------------------------------------------------------
    def prepare(self, token: str, audience: str, campaign: CampaignSettings) -> PreparedCall:
        resolved = self.tokens.resolve(token, audience, campaign=campaign.name)
        sid = resolved.subscriber_id
        if sid in self._in_flight:
            raise CallError("a call to this subscriber is already in progress", code="call_in_progress")
        target = self.routes.resolve(resolved.number)
        now = self.clock()
        history = self.tokens.vault.attempts_since(sid, (now - _HISTORY).timestamp())
        subject = PolicySubject(
            subscriber_id=sid.hex(),
            region=resolved.region,
            time_zones=resolved.time_zones,
            dnc=resolved.dnc,
            attempts=tuple(
                Attempt(at=datetime.fromtimestamp(a.at, UTC), campaign=a.campaign, outcome=a.outcome)
                for a in history
            ),
        )
        decision, lease = self.policy.authorize(subject, campaign_policy(campaign, target.trunk))
        self._in_flight.add(sid)
        checks = (*decision.as_evidence(), {"check": "caller_id_presented", "value": campaign.caller_id})
        return PreparedCall(
            subscriber_id=sid,
            dial_string=target.dial_string,
            trunk=target.trunk,
            policy_checks=checks,
            lease=_SubscriberLease(lease, self._in_flight, sid),
        )

    # ---- during and after the call -----------------------------------------------------------
    def opt_out(self, subscriber_id: bytes, call_id: str) -> None:
        self.tokens.vault.set_dnc(subscriber_id, True, "dtmf_opt_out")
        self.dnc_changes["dtmf_opt_out"] += 1
        self._audit("dnc_changed", {"call_id": call_id, "subscriber_ref": subscriber_id.hex(), "dnc": True,
                                    "source": "dtmf_opt_out"})  # fmt: skip
        log.info("subscriber opted out call_id=%s", call_id)

    def opt_out_token(self, token: str, audience: str) -> None:
        """The platform relays a subscriber's opt-out by token (API ``POST /v1/optout``)."""
        resolved = self.tokens.resolve(token, audience)
        self.tokens.vault.set_dnc(resolved.subscriber_id, True, "api_opt_out")
        self.dnc_changes["api_opt_out"] += 1
        self._audit("dnc_changed", {"subscriber_ref": resolved.subscriber_id.hex(), "dnc": True,
                                    "source": "api_opt_out", "audience": audience})  # fmt: skip

    def record_outcome(self, subscriber_id: bytes, campaign: str, outcome: str, at: datetime) -> None:
        self.tokens.vault.record_attempt(subscriber_id, campaign, at.timestamp(), outcome)

    def recording_deleted(self, call_id: str, reason: str) -> None:
        self._audit("recording_deleted", {"call_id": call_id, "reason": reason})

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
    ) -> Lead:
        """Reveal the number (audited), sign the receipt, and commit the lead durably."""
        lead_id = f"lead_{uuid.uuid4().hex}"
        number = self.tokens.vault.reveal(subscriber_id, purpose="consented_lead", call_id=call_id)
        await self._audit_async(
            "reveal",
            {
                "call_id": call_id,
                "lead_id": lead_id,
                "subscriber_ref": subscriber_id.hex(),
                "purpose": "consented_lead",
            },
        )
        lead = Lead(
            lead_id=lead_id,
            call_id=call_id,
            token=token,
            audience=audience,
            campaign=campaign.name,
            advertiser=campaign.advertiser,
            number_e164=number.e164,
            evidence=evidence,
            recording=recording,
            created_at=self.clock(),
        )
        if self.signer is not None:
            receipt = self.signer.issue(lead, recording_sha256=recording.sha256 if recording else None)
            lead = dataclasses.replace(lead, receipt=receipt)
            await self._audit_async("receipt_issued", {"call_id": call_id, "lead_id": lead_id, "kid": self.signer.kid})
        await self.sink.store(lead)
        return lead

    def _audit(self, kind: str, data: dict[str, object]) -> None:
        if self.audit is not None:
            self.audit.append(kind, data)

    async def _audit_async(self, kind: str, data: dict[str, object]) -> None:
        """Audit entries on the confirm path are fsynced off the event loop."""
        if self.audit is not None:
            await self.audit.append_async(kind, data)

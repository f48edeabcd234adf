"""Test data for the evidence tests and their child processes: a consented Lead and keys.

Numbers here are from the fictional/drama ranges; nothing is a real subscriber.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reffection_ari.lead import (
    ConsentEvidence,
    ConsentResult,
    Keypress,
    Lead,
    PromptPlayed,
    RecordingInfo,
)

NUMBER = "+447700900123"
OTHER_NUMBER = "+447700900456"
T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
DISCLOSURE = "This call from Example Partner on behalf of Acme Insurance is recorded."
QUESTION = (
    "Press 1 to hear from Acme Insurance and share your number with them, 2 if not, 9 to never be called."
)


def fixed_key(seed: int = 1) -> Ed25519PrivateKey:
    """A deterministic key so child processes and the parent agree without passing key material."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"test-key-{seed}".encode()).digest())


def write_recording(path: Path, size: int = 16000) -> RecordingInfo:
    data = bytes((i * 7) % 256 for i in range(size))
    path.write_bytes(data)
    return RecordingInfo(str(path), hashlib.sha256(data).hexdigest(), size / 16000.0, size)


def make_lead(
    lead_id: str = "lead_0001",
    *,
    call_id: str | None = None,
    number: str = NUMBER,
    recording: RecordingInfo | None = None,
    consent: ConsentResult = ConsentResult.GIVEN,
    confirmed: bool = True,
    advertiser: str = "acme-insurance",
) -> Lead:
    call_id = call_id or f"call_{lead_id}"
    ev = ConsentEvidence(
        call_id=call_id,
        campaign="spring-2026",
        advertiser=advertiser,
        consent_mode="ivr",
        caller_id_presented="Example Partner",
        answered_at=T0,
        consent=consent,
        consent_at=T0 + timedelta(seconds=9),
        prompts=(
            PromptPlayed(
                "disclosure",
                "3",
                "en",
                hashlib.sha256(DISCLOSURE.encode()).hexdigest(),
                "subscriber",
                T0,
                T0 + timedelta(seconds=4),
                True,
            ),
            PromptPlayed(
                "question",
                "2",
                "en",
                hashlib.sha256(QUESTION.encode()).hexdigest(),
                "subscriber",
                T0 + timedelta(seconds=4),
                T0 + timedelta(seconds=8),
                False,
            ),
        ),
        keypresses=(Keypress("subscriber", "1", T0 + timedelta(seconds=9), 9000),),
        agent_id="agent-17" if confirmed else None,
        confirmed_at=T0 + timedelta(seconds=40) if confirmed else None,
        confirm_source="dtmf" if confirmed else None,
        policy_checks=({"check": "dnc", "result": "pass"}, {"check": "calling_window", "result": "pass"}),
    )
    return Lead(
        lead_id=lead_id,
        call_id=call_id,
        token="tkn1_abcdefghijklmnop",
        audience="platform-a",
        campaign="spring-2026",
        advertiser=advertiser,
        number_e164=number,
        evidence=ev,
        recording=recording,
        created_at=T0 + timedelta(seconds=41),
    )

"""What the flow asks the driver to do: typed, frozen intentions, executed in list order.

No command carries a phone number: the driver resolves the subscriber's number itself (from the
call's token) and owns the ARI ids. Commands name only what the flow owns: two legs
(``"subscriber"``, ``"agent"``), one bridge, playbacks by ``playback_id``, timers by name, one
recording. The driver must tolerate a teardown command for something that is already gone
(ARI 404): the flow releases everything it believes alive, and hangups race.
"""

from __future__ import annotations

from dataclasses import dataclass

from reffection_ari.lead import ConsentEvidence, Leg, Prompt

from .events import ConfirmSource
from .states import CallState, EndReason


@dataclass(frozen=True, slots=True)
class Command:
    pass


@dataclass(frozen=True, slots=True)
class OriginateSubscriber(Command):
    """Dial the subscriber (number resolved by the driver) presenting ``caller_id``; give up after
    ``timeout`` seconds of ringing and report ``SubscriberFailed("no_answer")``."""

    caller_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class StartRecording(Command):
    """Record the subscriber channel (MixMonitor, both directions) into a file named ``name``
    (the call id, never a number). Report ``RecordingStarted`` / ``RecordingFailed``."""

    name: str


@dataclass(frozen=True, slots=True)
class StopRecording(Command):
    """Stop the recording and apply retention: ``keep=False`` deletes the file (metadata stays);
    ``keep=True`` only when a lead was stored."""

    keep: bool


@dataclass(frozen=True, slots=True)
class PlayPrompt(Command):
    """Play ``prompt.media`` on ``leg`` with ARI ``playbackId=playback_id``; report
    ``PlaybackFinished(playback_id)``."""

    leg: Leg
    prompt: Prompt
    playback_id: str


@dataclass(frozen=True, slots=True)
class StopPlayback(Command):
    """Stop a playback (barge-in or teardown). No ``PlaybackFinished`` is expected afterwards."""

    playback_id: str


@dataclass(frozen=True, slots=True)
class StartTimer(Command):
    """Fire ``TimerFired(name)`` after ``seconds``. Starting a running name restarts it."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Command):
    name: str


@dataclass(frozen=True, slots=True)
class OriginateAgent(Command):
    """Dial the agent (``dial_string``, or the campaign's when None). Caller ID, connected line
    and SIP identity headers carry ``label`` only. Report ``AgentAnswered`` / ``AgentFailed``."""

    dial_string: str | None
    label: str
    timeout: float


@dataclass(frozen=True, slots=True)
class BridgeLegs(Command):
    """Create the call's mixing bridge and add both legs (report ``BridgeFailed`` on error)."""


@dataclass(frozen=True, slots=True)
class DestroyBridge(Command):
    pass


@dataclass(frozen=True, slots=True)
class HangupLeg(Command):
    """Hang up a leg. ``reason`` is an ARI hangup reason (``normal``, ``no_answer``...)."""

    leg: Leg
    reason: str = "normal"


@dataclass(frozen=True, slots=True)
class AddToDnc(Command):
    """Put the call's subscriber on the do-not-call list (the driver knows who it is)."""

    source: str = "dtmf_opt_out"


@dataclass(frozen=True, slots=True)
class StoreLead(Command):
    """Reveal the number, build the lead with ``evidence`` and hand it to the sink; report
    ``LeadStored(lead_id)`` or ``LeadStoreFailed``. Always report one of the two: the flow does not
    finish while a StoreLead is outstanding."""

    evidence: ConsentEvidence


@dataclass(frozen=True, slots=True)
class ConfirmAck(Command):
    """The answer to a confirm. ``request_id`` echoes ``ConfirmRequested.request_id`` (None for the
    agent's DTMF key). ``ok=True`` only once the lead is stored; ``code`` is ``already_confirmed``
    for a repeated confirm, else a rejection code: ``not_consented``, ``not_bridged``,
    ``call_ended``, ``lead_store_failed``."""

    request_id: str | None
    ok: bool
    code: str | None = None
    source: ConfirmSource = "api"
    lead_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransferSubscriber(Command):
    """Connect the subscriber to ``dial_string`` (the advertiser's number, not personal data);
    report ``TransferAnswered`` (the driver then owns the subscriber leg) or ``TransferFailed``."""

    dial_string: str
    timeout: float


@dataclass(frozen=True, slots=True)
class CancelTransfer(Command):
    """Abandon a transfer in progress (hang up the advertiser leg the driver dialled)."""


@dataclass(frozen=True, slots=True)
class StateChanged(Command):
    """Emitted on every transition; safe to publish (no personal data)."""

    old: CallState
    new: CallState
    reason: EndReason | None = None


@dataclass(frozen=True, slots=True)
class CallFinished(Command):
    """Emitted exactly once, last, when nothing of the call is left alive."""

    state: CallState
    end_reason: EndReason
    lead_id: str | None = None

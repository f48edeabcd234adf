"""What the driver tells the flow: typed, frozen, keyword-only, each stamped with ``at``.

``at`` is the time the driver observed the fact (ARI event timestamp or the driver's clock); the
flow keeps no clock, so every time in the evidence comes from here. Events that make no sense in
the current state (late, duplicated, for an old playback) are ignored by the flow, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from reffection_ari.lead import Leg

ConfirmSource = Literal["dtmf", "api"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowEvent:
    at: datetime


# --- subscriber leg ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberAnswered(FlowEvent):
    """The subscriber leg answered (ARI ``StasisStart`` of the originated channel)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberFailed(FlowEvent):
    """The originate did not connect. ``reason``: busy | no_answer | congestion | rejected | error
    (anything else is treated as ``error``). Use :func:`failure_from_cause` to map a Q.850 cause."""

    reason: str


# --- recording -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingStarted(FlowEvent):
    """MixMonitor (or the ARI recording) runs on the subscriber channel."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFailed(FlowEvent):
    reason: str = "error"


# --- media and keys ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackFinished(FlowEvent):
    """A playback the flow started ended by itself. ``ok=False``: the media failed to play."""

    playback_id: str
    ok: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Dtmf(FlowEvent):
    """One DTMF digit (``0-9 * # A-D``) received on a leg (ARI ``ChannelDtmfReceived``)."""

    leg: Leg
    digit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(FlowEvent):
    """A timer started with ``StartTimer(name)`` expired. Stale names are ignored."""

    name: str


# --- agent leg and bridge ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAnswered(FlowEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFailed(FlowEvent):
    """The agent originate did not connect (busy, unreachable, ring timeout in Asterisk...)."""

    reason: str = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeFailed(FlowEvent):
    """``BridgeLegs`` could not be carried out (bridge create or channel add failed)."""

    reason: str = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegHungUp(FlowEvent):
    """A leg went away (``ChannelDestroyed``/``StasisEnd``). ``cause`` is the Q.850 cause code."""

    leg: Leg
    cause: int | None = None


# --- confirm and lead ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmRequested(FlowEvent):
    """``POST /v1/calls/{id}/confirm`` (source ``api``). ``request_id`` is echoed in the
    ``ConfirmAck`` that answers it. The agent's DTMF confirm key arrives as a plain ``Dtmf``."""

    source: ConfirmSource = "api"
    request_id: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadStored(FlowEvent):
    """The lead sink returned: the lead is durable. Only now is the confirm acknowledged."""

    lead_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadStoreFailed(FlowEvent):
    code: str = "lead_store_failed"


# --- transfer ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TransferAnswered(FlowEvent):
    """The advertiser's side answered; the subscriber leg now belongs to the transfer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferFailed(FlowEvent):
    reason: str = "error"


# --- operator ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class HangupRequested(FlowEvent):
    """``POST /v1/calls/{id}/hangup`` or an operator action."""

    source: str = "api"


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown(FlowEvent):
    """The daemon is stopping: end the call cleanly now."""


_DIAL_FAILURES = {"busy", "no_answer", "congestion", "rejected", "error"}


def failure_from_cause(cause: int | None) -> str:
    """Map a Q.850 hangup cause of an unanswered leg to a ``SubscriberFailed.reason``."""
    if cause == 17:
        return "busy"
    if cause in (16, 18, 19):  # 16 "normal clearing" before answer = the far end gave up ringing
        return "no_answer"
    if cause == 21:
        return "rejected"
    if cause in (34, 38, 41, 42, 44, 47):
        return "congestion"
    return "error"


def normalise_dial_failure(reason: str) -> str:
    return reason if reason in _DIAL_FAILURES else "error"

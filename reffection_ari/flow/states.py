"""The vocabulary of the consent call: its states, why it ended, and the timers it asks for.

These are plain string enums because they leave the process as they are: in platform events,
in the API's ``GET /v1/calls/{id}``, in metrics labels. None of them carries personal data.
"""

from __future__ import annotations

from enum import StrEnum


class CallState(StrEnum):
    """Where a :class:`~reffection_ari.flow.ConsentCall` is. See ``docs/call-flow.md``."""

    CREATED = "created"  # built, ``start()`` not called yet
    DIALING = "dialing"  # subscriber leg originated, ringing
    ANSWERED = "answered"  # subscriber answered; waiting for the recording to start
    DISCLOSURE = "disclosure"  # disclosure prompt playing (who, on whose behalf, recorded)
    CONSENT = "consent"  # ivr: question asked, collecting one digit (with retries)
    AGENT_DIALING = "agent_dialing"  # agent leg ringing, subscriber on hold
    WHISPER = "whisper"  # agent answered, hearing the whisper; subscriber still on hold
    BRIDGED = "bridged"  # subscriber and agent talk
    WRAP_UP = "wrap_up"  # subscriber hung up after consent; confirm still accepted for a while
    CONFIRMED = "confirmed"  # confirm accepted, StoreLead outstanding
    LEAD_STORED = "lead_stored"  # the sink holds the lead; the conversation may go on
    TRANSFERRING = "transferring"  # subscriber being connected to the advertiser's dial string
    CLOSING = "closing"  # a last prompt (goodbye / apology / thanks) before the flow hangs up
    # terminal
    TRANSFERRED = "transferred"  # subscriber handed over to the advertiser; nothing left to own
    FAILED = "failed"  # the subscriber never answered
    ENDED = "ended"  # the call ended after answer; see EndReason

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({CallState.TRANSFERRED, CallState.FAILED, CallState.ENDED})


class EndReason(StrEnum):
    """Why a call is over. Stable codes: the platform API and metrics publish them verbatim."""

    # FAILED: the subscriber leg never answered
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    REJECTED = "rejected"
    POLICY = "policy"  # refused before a call existed; never produced by the flow itself
    # ENDED (and FAILED for an originate error)
    ERROR = "error"
    SUBSCRIBER_HANGUP = "subscriber_hangup"
    AGENT_HANGUP = "agent_hangup"
    AGENT_UNAVAILABLE = "agent_unavailable"
    DECLINED = "declined"
    OPTED_OUT = "opted_out"
    NO_INPUT = "no_input"
    TIMEOUT = "timeout"
    RECORDING_FAILED = "recording_failed"
    LEAD_STORE_FAILED = "lead_store_failed"
    TRANSFER_FAILED = "transfer_failed"
    SHUTDOWN = "shutdown"
    API_HANGUP = "api_hangup"
    COMPLETED = "completed"  # a lead was stored (and, if configured, the subscriber transferred)


class TimerName(StrEnum):
    """Timers the flow asks the driver to run (``StartTimer``/``CancelTimer``/``TimerFired``)."""

    MAX_CALL = "max_call"  # overall cap from start(); fires -> ENDED(timeout)
    RECORDING = "recording"  # StartRecording not confirmed in time -> ENDED(recording_failed)
    FIRST_DIGIT = "first_digit"  # ivr: no digit after the question finished -> re-ask / no_input
    INTER_DIGIT = "inter_digit"  # a multi-key answer left unfinished -> invalid (ivr: re-ask)
    AGENT_RING = "agent_ring"  # agent did not answer -> agent_unavailable
    WRAP_UP = "wrap_up"  # confirm window after the subscriber hung up -> ENDED(subscriber_hangup)

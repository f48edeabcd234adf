"""The consent call, top to bottom: a sans-IO state machine (typed events in, typed commands out).

``ConsentCall`` does no I/O and reads no clock. A driver calls :meth:`ConsentCall.start`, executes
the returned commands in order over ARI/AMI, and feeds every outcome back through
:meth:`ConsentCall.handle`. The diagram, the timers and every end reason are in
``docs/call-flow.md``; the code below follows the call in the order a subscriber lives it:

dial → answer → record → disclosure → consent (ivr question, or agent mode) → agent leg →
whisper → bridge → confirm → lead → transfer / conversation → hangup, with teardown last.

Three rules hold everywhere:

* an event that does not fit the current state (late, duplicated, for an old playback or timer)
  is ignored and yields no command;
* the flow tracks everything it asked to exist (legs, bridge, playbacks, timers, recording,
  transfer) and the command list that finishes the call releases all of it, then emits
  ``CallFinished`` exactly once;
* ``StoreLead`` is emitted only after consent ``GIVEN`` and an accepted confirm, at most once
  per accepted confirm, and the call never finishes while it is outstanding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from reffection_ari.errors import CallError
from reffection_ari.lead import ConsentEvidence, ConsentResult, Keypress, Leg, Prompt, PromptPlayed

from .commands import (
    AddToDnc,
    BridgeLegs,
    CallFinished,
    CancelTimer,
    CancelTransfer,
    Command,
    ConfirmAck,
    DestroyBridge,
    HangupLeg,
    OriginateAgent,
    OriginateSubscriber,
    PlayPrompt,
    StartRecording,
    StartTimer,
    StateChanged,
    StopPlayback,
    StopRecording,
    StoreLead,
    TransferSubscriber,
)
from .events import (
    AgentAnswered,
    AgentFailed,
    BridgeFailed,
    ConfirmRequested,
    ConfirmSource,
    Dtmf,
    FlowEvent,
    HangupRequested,
    LeadStored,
    LeadStoreFailed,
    LegHungUp,
    PlaybackFinished,
    RecordingFailed,
    RecordingStarted,
    Shutdown,
    SubscriberAnswered,
    SubscriberFailed,
    TimerFired,
    TransferAnswered,
    TransferFailed,
    failure_from_cause,
    normalise_dial_failure,
)
from .settings import DTMF_DIGITS, FlowSettings
from .states import CallState, EndReason, TimerName

S = CallState


class _Purpose(StrEnum):
    DISCLOSURE = "disclosure"
    QUESTION = "question"
    INVALID = "invalid"
    HOLD = "hold"
    WHISPER = "whisper"
    CLOSING = "closing"  # goodbye / apology / thanks


class _Rec(StrEnum):
    NONE = "none"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPED = "stopped"


@dataclass(slots=True)
class _Play:
    """One playback as the evidence will show it; frozen into ``PromptPlayed`` on demand."""

    playback_id: str
    purpose: _Purpose
    prompt: Prompt
    leg: Leg
    started_at: datetime
    finished_at: datetime | None = None
    completed: bool = False

    def evidence(self) -> PromptPlayed:
        p = self.prompt
        return PromptPlayed(
            prompt_id=p.id,
            version=p.version,
            language=p.language,
            text_sha256=p.text_sha256,
            leg=self.leg,
            started_at=self.started_at,
            finished_at=self.finished_at,
            completed=self.completed,
        )


@dataclass(frozen=True, slots=True)
class _PendingAck:
    request_id: str | None
    source: ConfirmSource


class ConsentCall:
    """One consent call. Not thread-safe; one driver task owns it."""

    def __init__(self, call_id: str, settings: FlowSettings) -> None:
        self.call_id = call_id
        self.settings = settings
        self._state = S.CREATED
        self._end_reason: EndReason | None = None
        self._out: list[Command] = []
        self._now: datetime | None = None
        # what exists in Asterisk / the driver because we asked for it
        self._subscriber_up = False
        self._agent_up = False
        self._bridge_up = False
        self._transfer_up = False
        self._recording = _Rec.NONE
        self._timers: set[str] = set()
        self._playing: dict[str, _Play] = {}
        self._pb_counter = 0
        # consent and confirm
        self._consent = ConsentResult.NONE
        self._consent_at: datetime | None = None
        self._retries = 0
        self._entered = ""  # keys of an answer being typed (only for multi-key answers)
        self._agent_id = settings.agent_id
        self._confirmed_at: datetime | None = None
        self._confirm_source: ConfirmSource | None = None
        self._pending_acks: list[_PendingAck] = []
        self._store_pending = False  # StoreLead emitted, no LeadStored/LeadStoreFailed yet
        self._wrap_up_over = False
        self._lead_id: str | None = None
        self._ending: EndReason | None = None  # end requested while StoreLead was outstanding
        self._closing_reason = EndReason.ERROR
        # evidence
        self._answered_at: datetime | None = None
        self._plays: list[_Play] = []
        self._keys: list[Keypress] = []

    # ---------------------------------------------------------------- public surface
    @property
    def state(self) -> CallState:
        return self._state

    @property
    def end_reason(self) -> EndReason | None:
        return self._end_reason

    @property
    def finished(self) -> bool:
        return self._state.terminal

    @property
    def consent(self) -> ConsentResult:
        return self._consent

    @property
    def lead_id(self) -> str | None:
        return self._lead_id

    def evidence(self) -> ConsentEvidence:
        """What the call has shown so far (playbacks still running appear with ``completed=False``)."""
        s = self.settings
        return ConsentEvidence(
            call_id=self.call_id,
            campaign=s.campaign,
            advertiser=s.advertiser,
            consent_mode=s.consent_mode,
            caller_id_presented=s.caller_id_presented,
            answered_at=self._answered_at,
            consent=self._consent,
            consent_at=self._consent_at,
            prompts=tuple(p.evidence() for p in self._plays),
            keypresses=tuple(self._keys),
            agent_id=self._agent_id,
            confirmed_at=self._confirmed_at,
            confirm_source=self._confirm_source,
            policy_checks=s.policy_checks,
        )

    def start(self, now: datetime) -> list[Command]:
        """Dial the subscriber. Returns the first commands for the driver."""
        if self._state is not S.CREATED:
            raise CallError(f"call {self.call_id} already started", code="already_started")
        self._out, self._now = [], now
        self._goto(S.DIALING)
        self._subscriber_up = True
        s = self.settings
        self._emit(OriginateSubscriber(s.caller_id_presented, s.subscriber_ring_timeout))
        self._start_timer(TimerName.MAX_CALL, s.max_call_seconds)
        return self._out

    def handle(self, event: FlowEvent) -> list[Command]:
        """Feed one event; returns the commands to execute, in order (often none)."""
        if self._state is S.CREATED:
            raise CallError(f"call {self.call_id}: handle() before start()", code="not_started")
        self._out, self._now = [], event.at
        if self.finished:
            if isinstance(event, ConfirmRequested):  # the requester still deserves an answer
                self._on_confirm(event.source, event.request_id, event.agent_id)
            return self._out
        match event:
            case SubscriberAnswered():
                self._on_answered(event.at)
            case SubscriberFailed():
                self._on_subscriber_failed(normalise_dial_failure(event.reason))
            case RecordingStarted():
                self._on_recording_started()
            case RecordingFailed():
                self._on_recording_failed()
            case PlaybackFinished():
                self._on_playback_finished(event.playback_id, event.ok)
            case Dtmf():
                self._on_dtmf(event.leg, event.digit)
            case TimerFired():
                self._on_timer(event.name)
            case AgentAnswered():
                self._on_agent_answered()
            case AgentFailed():
                self._on_agent_failed()
            case BridgeFailed():
                if self._bridge_up and self._state is S.BRIDGED:
                    self._end(EndReason.ERROR)
            case LegHungUp():
                self._on_leg_hung_up(event.leg, event.cause)
            case ConfirmRequested():
                self._on_confirm(event.source, event.request_id, event.agent_id)
            case LeadStored():
                self._on_lead_stored(event.lead_id)
            case LeadStoreFailed():
                self._on_lead_store_failed()
            case TransferAnswered():
                self._on_transfer_answered()
            case TransferFailed():
                self._on_transfer_failed()
            case HangupRequested():
                self._end(EndReason.API_HANGUP)
            case Shutdown():
                self._end(EndReason.SHUTDOWN)
            case _:
                pass  # an event type this flow does not know: ignored, like any late event
        return self._out

    # ---------------------------------------------------------------- dial, answer, record
    def _on_subscriber_failed(self, reason: str) -> None:
        if self._state is not S.DIALING:
            return
        self._subscriber_up = False
        self._finish(S.FAILED, EndReason(reason))

    def _on_answered(self, at: datetime) -> None:
        if self._state is not S.DIALING:
            return
        self._answered_at = at
        self._goto(S.ANSWERED)
        # record before the first prompt: the disclosure waits for RecordingStarted
        self._recording = _Rec.STARTING
        self._emit(StartRecording(self.call_id))
        self._start_timer(TimerName.RECORDING, self.settings.recording_start_timeout)

    def _on_recording_started(self) -> None:
        if self._state is not S.ANSWERED or self._recording is not _Rec.STARTING:
            return
        self._recording = _Rec.ACTIVE
        self._cancel_timer(TimerName.RECORDING)
        self._goto(S.DISCLOSURE)
        self._play("subscriber", self.settings.prompts.disclosure, _Purpose.DISCLOSURE)

    def _on_recording_failed(self) -> None:
        # Only a failure to *start* is the flow's business; a later one is the evidence's.
        if self._state is S.ANSWERED and self._recording is _Rec.STARTING:
            self._recording = _Rec.NONE
            self._end(EndReason.RECORDING_FAILED)

    # ---------------------------------------------------------------- prompts
    def _on_playback_finished(self, playback_id: str, ok: bool) -> None:
        play = self._playing.pop(playback_id, None)
        if play is None:
            return  # stopped by us, or not ours
        play.finished_at, play.completed = self._at(), ok
        st = self._state
        match play.purpose:
            case _Purpose.DISCLOSURE if st is S.DISCLOSURE:
                if not ok:  # consent without a heard disclosure is worthless
                    self._end(EndReason.ERROR)
                elif self.settings.consent_mode == "ivr":
                    self._goto(S.CONSENT)
                    self._ask()
                else:
                    self._dial_agent()
            case _Purpose.QUESTION if st is S.CONSENT:
                if ok:
                    self._start_timer(TimerName.FIRST_DIGIT, self.settings.first_digit_timeout)
                else:
                    self._end(EndReason.ERROR)
            case _Purpose.INVALID if st is S.CONSENT:
                self._ask()
            case _Purpose.HOLD if st in (S.AGENT_DIALING, S.WHISPER) and ok:
                self._play_hold()
            case _Purpose.WHISPER if st is S.WHISPER:
                self._bridge()
            case _Purpose.CLOSING if st is S.CLOSING:
                self._end(self._closing_reason)
            case _:
                pass

    def _ask(self) -> None:
        assert self.settings.prompts.question is not None  # FlowSettings enforces it in ivr mode
        self._play("subscriber", self.settings.prompts.question, _Purpose.QUESTION)

    # ---------------------------------------------------------------- keys
    def _on_dtmf(self, leg: Leg, digit: str) -> None:
        if len(digit) != 1 or digit not in DTMF_DIGITS or self._answered_at is None:
            return
        if not (self._subscriber_up if leg == "subscriber" else self._agent_up):
            return
        at = self._at()
        offset = int((at - self._answered_at).total_seconds() * 1000)
        self._keys.append(Keypress(leg, digit, at, offset))
        if leg == "agent":
            if digit == self.settings.confirm_key:
                self._on_confirm("dtmf", None, None)
        elif self._state is S.CONSENT:
            self._ivr_digit(digit)
        elif self._state is S.BRIDGED and self.settings.consent_mode == "agent":
            self._agent_mode_digit(digit)
        # any other subscriber key (e.g. during the disclosure) is evidence only: consent cannot
        # precede the question it answers, so nothing is buffered.

    def _answer(self, digit: str) -> str | None:
        """Add a subscriber key to the answer being typed. Returns the completed answer
        (``yes_key``/``no_key``/``optout_key``), ``""`` for keys that can begin none of them,
        or None while a multi-key answer is still incomplete (the inter-digit timer runs)."""
        self._cancel_timer(TimerName.INTER_DIGIT)
        s = self.settings
        if digit == s.optout_key:  # one key, part of no other answer: it opts out whatever came before
            self._entered = ""
            return digit
        entered = self._entered + digit
        answers = (s.yes_key, s.no_key, s.optout_key)
        if entered in answers:
            self._entered = ""
            return entered
        if any(a.startswith(entered) for a in answers):
            self._entered = entered
            self._start_timer(TimerName.INTER_DIGIT, s.inter_digit_timeout)
            return None
        self._entered = ""
        return ""

    def _ivr_digit(self, digit: str) -> None:
        # barge-in: a key stops whatever is being asked (question or the invalid notice)
        for pid, play in list(self._playing.items()):
            if play.purpose in (_Purpose.QUESTION, _Purpose.INVALID):
                self._stop_playback(pid)
        self._cancel_timer(TimerName.FIRST_DIGIT)
        answer = self._answer(digit)
        s = self.settings
        if answer is None:
            return
        if answer == s.yes_key:
            self._set_consent(ConsentResult.GIVEN)
            self._dial_agent()
        elif answer == s.no_key:
            self._set_consent(ConsentResult.DECLINED)
            self._close(EndReason.DECLINED, s.prompts.goodbye)
        elif answer == s.optout_key:
            self._set_consent(ConsentResult.OPTED_OUT)
            self._emit(AddToDnc())
            self._close(EndReason.OPTED_OUT, s.prompts.goodbye)
        else:
            self._reask(invalid=True)

    def _reask(self, *, invalid: bool) -> None:
        s = self.settings
        if self._retries >= s.max_retries:
            self._set_consent(ConsentResult.NO_INPUT)
            self._close(EndReason.NO_INPUT, s.prompts.goodbye)
            return
        self._retries += 1
        if invalid and s.prompts.invalid is not None:
            self._play("subscriber", s.prompts.invalid, _Purpose.INVALID)
        else:
            self._ask()

    def _agent_mode_digit(self, digit: str) -> None:
        """Agent mode: the agent asks, the subscriber's key is the consent. The latest key counts
        until a confirm is accepted; an opt-out is final. The conversation is never cut here."""
        s = self.settings
        if self._consent is ConsentResult.OPTED_OUT:
            return
        answer = self._answer(digit)
        if answer == s.yes_key:
            self._set_consent(ConsentResult.GIVEN)
        elif answer == s.no_key:
            self._set_consent(ConsentResult.DECLINED)
        elif answer == s.optout_key:
            self._set_consent(ConsentResult.OPTED_OUT)
            self._emit(AddToDnc())

    def _set_consent(self, result: ConsentResult) -> None:
        self._consent, self._consent_at = result, self._at()

    # ---------------------------------------------------------------- agent leg, whisper, bridge
    def _dial_agent(self) -> None:
        s = self.settings
        self._goto(S.AGENT_DIALING)
        self._agent_up = True
        self._emit(OriginateAgent(s.agent_dial_string, f"{s.campaign} {self.call_id}", s.agent_ring_timeout))
        self._start_timer(TimerName.AGENT_RING, s.agent_ring_timeout)
        self._play_hold()

    def _play_hold(self) -> None:
        if self.settings.prompts.hold is not None:
            self._play("subscriber", self.settings.prompts.hold, _Purpose.HOLD)

    def _on_agent_answered(self) -> None:
        if self._state is not S.AGENT_DIALING:
            return
        self._cancel_timer(TimerName.AGENT_RING)
        whisper = self.settings.prompts.whisper
        if whisper is None:
            self._bridge()
        else:
            self._goto(S.WHISPER)
            self._play("agent", whisper, _Purpose.WHISPER)

    def _on_agent_failed(self) -> None:
        if self._state is not S.AGENT_DIALING:
            return
        self._agent_up = False
        self._agent_unavailable()

    def _agent_unavailable(self) -> None:
        self._cancel_timer(TimerName.AGENT_RING)
        self._stop_playbacks()
        self._close(EndReason.AGENT_UNAVAILABLE, self.settings.prompts.apology)

    def _bridge(self) -> None:
        self._stop_playbacks()  # the hold prompt
        self._bridge_up = True
        self._emit(BridgeLegs())
        self._goto(S.BRIDGED)

    # ---------------------------------------------------------------- confirm and lead
    def _on_confirm(self, source: ConfirmSource, request_id: str | None, agent_id: str | None) -> None:
        """Idempotent: a confirm after an accepted one gets the first one's answer, never a
        second StoreLead (queued while the store is outstanding)."""
        ack = _PendingAck(request_id, source)
        if self._lead_id is not None:
            self._ack(ack, True, "already_confirmed")
        elif self.finished:
            self._ack(ack, False, "call_ended")
        elif self._store_pending:
            self._pending_acks.append(ack)
        elif self._consent is not ConsentResult.GIVEN:
            self._ack(ack, False, "not_consented")
        elif self._state not in (S.BRIDGED, S.WRAP_UP):
            self._ack(ack, False, "not_bridged")
        else:
            if agent_id is not None:
                self._agent_id = agent_id
            self._confirmed_at, self._confirm_source = self._at(), source
            self._pending_acks = [ack]
            self._store_pending = True
            self._goto(S.CONFIRMED)
            self._emit(StoreLead(self.evidence()))

    def _ack(self, ack: _PendingAck, ok: bool, code: str | None) -> None:
        self._emit(ConfirmAck(ack.request_id, ok, code, ack.source, self._lead_id if ok else None))

    def _on_lead_stored(self, lead_id: str) -> None:
        if not self._store_pending:
            return
        self._store_pending = False
        self._lead_id = lead_id
        self._goto(S.LEAD_STORED)
        for ack in self._pending_acks:
            self._ack(ack, True, None)
        self._pending_acks = []
        if self._ending is not None:
            self._finish(S.ENDED, self._ending)
        elif not self._subscriber_up:  # confirmed in wrap-up: nothing left to talk about
            self._end(EndReason.COMPLETED)
        elif self.settings.transfer_dial_string is not None:
            self._transfer(self.settings.transfer_dial_string)
        elif not self._agent_up:
            self._close(EndReason.COMPLETED, self.settings.prompts.thanks)
        # else: agent and subscriber keep talking; whoever hangs up ends it as `completed`

    def _on_lead_store_failed(self) -> None:
        """Answer the requesters, forget the confirm, and go back to where a retry is possible."""
        if not self._store_pending:
            return
        self._store_pending = False
        for ack in self._pending_acks:
            self._ack(ack, False, "lead_store_failed")
        self._pending_acks = []
        self._confirmed_at = self._confirm_source = None
        if self._ending is not None:
            self._finish(S.ENDED, self._ending)
        elif self._subscriber_up and self._agent_up:
            self._goto(S.BRIDGED)
        elif not self._subscriber_up and not self._wrap_up_over:
            self._goto(S.WRAP_UP)  # the wrap-up timer is still running
        else:
            self._end(EndReason.LEAD_STORE_FAILED)

    # ---------------------------------------------------------------- transfer
    def _transfer(self, dial_string: str) -> None:
        self._goto(S.TRANSFERRING)
        if self._agent_up:  # the agent's part is done
            self._agent_up = False
            self._emit(HangupLeg("agent"))
        if self._bridge_up:
            self._bridge_up = False
            self._emit(DestroyBridge())
        self._transfer_up = True
        self._emit(TransferSubscriber(dial_string, self.settings.transfer_ring_timeout))

    def _on_transfer_answered(self) -> None:
        if self._state is not S.TRANSFERRING:
            return
        self._transfer_up = False
        self._subscriber_up = False  # handed over: the transfer owns the leg now
        self._finish(S.TRANSFERRED, EndReason.COMPLETED)

    def _on_transfer_failed(self) -> None:
        if self._state is not S.TRANSFERRING:
            return
        self._transfer_up = False
        self._close(EndReason.TRANSFER_FAILED, self.settings.prompts.apology)

    # ---------------------------------------------------------------- timers and hangups
    def _on_timer(self, name: str) -> None:
        if name not in self._timers:
            return  # cancelled or never started: a race with CancelTimer
        self._timers.discard(name)
        st = self._state
        if name == TimerName.MAX_CALL:
            self._end(EndReason.TIMEOUT)
        elif name == TimerName.RECORDING and st is S.ANSWERED:
            self._end(EndReason.RECORDING_FAILED)
        elif name == TimerName.FIRST_DIGIT and st is S.CONSENT:
            self._reask(invalid=False)
        elif name == TimerName.INTER_DIGIT:
            self._entered = ""  # an unfinished answer is no answer
            if st is S.CONSENT:
                self._reask(invalid=True)
        elif name == TimerName.AGENT_RING and st is S.AGENT_DIALING:
            self._agent_up = False
            self._emit(HangupLeg("agent", "no_answer"))
            self._agent_unavailable()
        elif name == TimerName.WRAP_UP:
            self._wrap_up_over = True
            if st is S.WRAP_UP:
                self._end(EndReason.SUBSCRIBER_HANGUP)

    def _on_leg_hung_up(self, leg: Leg, cause: int | None) -> None:
        if leg == "subscriber":
            if not self._subscriber_up:
                return
            self._subscriber_up = False
            self._on_subscriber_gone(cause)
        else:
            if not self._agent_up:
                return
            self._agent_up = False
            self._on_agent_gone()

    def _on_subscriber_gone(self, cause: int | None) -> None:
        st = self._state
        if st is S.DIALING:
            self._finish(S.FAILED, EndReason(failure_from_cause(cause)))
        elif st is S.BRIDGED and self._consent is ConsentResult.GIVEN:
            self._start_wrap_up()
        elif st is S.CONFIRMED:
            if not self._wrap_up_over and TimerName.WRAP_UP not in self._timers:
                self._start_timer(TimerName.WRAP_UP, self.settings.wrap_up_seconds)
        elif st in (S.LEAD_STORED, S.TRANSFERRING):
            self._end(EndReason.COMPLETED)
        elif st is S.CLOSING:
            self._end(self._closing_reason)
        else:
            self._end(self._unconfirmed_reason(EndReason.SUBSCRIBER_HANGUP))

    def _on_agent_gone(self) -> None:
        st = self._state
        if st is S.AGENT_DIALING:
            self._agent_unavailable()
        elif st is S.WHISPER:
            self._agent_unavailable()
        elif st is S.BRIDGED:
            self._end(self._unconfirmed_reason(EndReason.AGENT_HANGUP))
        elif st is S.LEAD_STORED:
            self._end(EndReason.COMPLETED)
        # WRAP_UP: an API confirm is still possible; CONFIRMED: wait for the store outcome

    def _start_wrap_up(self) -> None:
        self._goto(S.WRAP_UP)
        self._start_timer(TimerName.WRAP_UP, self.settings.wrap_up_seconds)

    def _unconfirmed_reason(self, default: EndReason) -> EndReason:
        if self._consent is ConsentResult.DECLINED:
            return EndReason.DECLINED
        if self._consent is ConsentResult.OPTED_OUT:
            return EndReason.OPTED_OUT
        return default

    # ---------------------------------------------------------------- ending and teardown
    def _close(self, reason: EndReason, prompt: Prompt | None) -> None:
        """Say a last word to the subscriber, then end with ``reason``."""
        if prompt is None or not self._subscriber_up:
            self._end(reason)
            return
        self._closing_reason = reason
        self._goto(S.CLOSING)
        self._play("subscriber", prompt, _Purpose.CLOSING)

    def _end(self, reason: EndReason) -> None:
        if self._store_pending:
            # StoreLead outstanding: release the call now, finish when the sink answers, so that
            # the recording's fate (keep/delete) and the confirm's answer are known.
            self._release()
            if self._ending is None:
                self._ending = reason
            return
        self._finish(S.ENDED, reason)

    def _finish(self, state: CallState, reason: EndReason) -> None:
        self._release()
        if self._recording in (_Rec.STARTING, _Rec.ACTIVE):
            self._emit(StopRecording(keep=self._lead_id is not None))
        self._recording = _Rec.STOPPED
        self._end_reason = reason
        self._goto(state, reason)
        self._emit(CallFinished(state, reason, self._lead_id))

    def _release(self) -> None:
        """Ask for the end of everything still alive. Idempotent: flags drop as commands go out."""
        self._stop_playbacks()
        if self._transfer_up:
            self._transfer_up = False
            self._emit(CancelTransfer())
        if self._subscriber_up:
            self._subscriber_up = False
            self._emit(HangupLeg("subscriber"))
        if self._agent_up:
            self._agent_up = False
            self._emit(HangupLeg("agent"))
        if self._bridge_up:
            self._bridge_up = False
            self._emit(DestroyBridge())
        for name in sorted(self._timers):
            self._emit(CancelTimer(name))
        self._timers.clear()

    # ---------------------------------------------------------------- small helpers
    def _at(self) -> datetime:
        assert self._now is not None
        return self._now

    def _emit(self, cmd: Command) -> None:
        self._out.append(cmd)

    def _goto(self, new: CallState, reason: EndReason | None = None) -> None:
        if new is not self._state:
            self._emit(StateChanged(self._state, new, reason))
            self._state = new

    def _play(self, leg: Leg, prompt: Prompt, purpose: _Purpose) -> None:
        self._pb_counter += 1
        pid = f"{self.call_id}-pb{self._pb_counter}"
        play = _Play(pid, purpose, prompt, leg, self._at())
        self._plays.append(play)
        self._playing[pid] = play
        self._emit(PlayPrompt(leg, prompt, pid))

    def _stop_playback(self, pid: str) -> None:
        play = self._playing.pop(pid)
        play.finished_at, play.completed = self._at(), False
        self._emit(StopPlayback(pid))

    def _stop_playbacks(self) -> None:
        for pid in list(self._playing):
            self._stop_playback(pid)

    def _start_timer(self, name: TimerName, seconds: float) -> None:
        self._timers.add(name)
        self._emit(StartTimer(name.value, seconds))

    def _cancel_timer(self, name: TimerName) -> None:
        if name in self._timers:
            self._timers.discard(name)
            self._emit(CancelTimer(name.value))

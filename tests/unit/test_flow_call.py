"""Table tests of the consent call: events in, commands out, no I/O and no sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from reffection_ari.errors import CallError
from reffection_ari.flow import (
    AddToDnc,
    AgentAnswered,
    AgentFailed,
    BridgeFailed,
    BridgeLegs,
    CallFinished,
    CallState,
    CancelTimer,
    CancelTransfer,
    ConfirmAck,
    ConfirmRequested,
    ConsentCall,
    DestroyBridge,
    Dtmf,
    EndReason,
    HangupLeg,
    HangupRequested,
    LeadStored,
    LeadStoreFailed,
    LegHungUp,
    OriginateAgent,
    OriginateSubscriber,
    PlaybackFinished,
    PlayPrompt,
    RecordingFailed,
    RecordingStarted,
    Shutdown,
    StartRecording,
    StartTimer,
    StateChanged,
    StopPlayback,
    StopRecording,
    StoreLead,
    SubscriberAnswered,
    SubscriberFailed,
    TimerFired,
    TransferAnswered,
    TransferFailed,
    TransferSubscriber,
    failure_from_cause,
)
from reffection_ari.lead import ConsentResult

from .test_flow_support import T0, Sim

DIAL = "PJSIP/advertiser-sales@trunk"


# ---------------------------------------------------------------- recipes: drive a call to a state
def to_dialing(s: Sim) -> None:
    s.start()


def to_answered(s: Sim) -> None:
    to_dialing(s)
    s.send(SubscriberAnswered)


def to_disclosure(s: Sim) -> None:
    to_answered(s)
    s.send(RecordingStarted)


def to_question(s: Sim) -> None:  # ivr: the question is playing
    to_disclosure(s)
    s.finish("disclosure")


def to_waiting_digit(s: Sim) -> None:
    to_question(s)
    s.finish("question")


def to_agent_dialing(s: Sim) -> None:
    if s.settings.consent_mode == "ivr":
        to_waiting_digit(s)
        s.send(Dtmf, leg="subscriber", digit="1")
    else:
        to_disclosure(s)
        s.finish("disclosure")


def to_whisper(s: Sim) -> None:
    to_agent_dialing(s)
    s.send(AgentAnswered, after=4.0)


def to_bridged(s: Sim) -> None:
    to_whisper(s)
    s.finish("whisper", after=2.0)
    if s.settings.consent_mode == "agent":
        s.send(Dtmf, leg="subscriber", digit="1", after=10.0)


def to_confirmed(s: Sim) -> None:
    to_bridged(s)
    s.send(Dtmf, leg="agent", digit="#", after=20.0)


def to_lead_stored(s: Sim) -> None:
    to_confirmed(s)
    s.send(LeadStored, lead_id="lead-1")


def to_closing(s: Sim) -> None:
    to_waiting_digit(s)
    s.send(Dtmf, leg="subscriber", digit="2")


def to_wrap_up(s: Sim) -> None:
    to_bridged(s)
    s.send(LegHungUp, leg="subscriber", cause=16)


def states(s: Sim) -> list[tuple[CallState, CallState]]:
    return [(c.old, c.new) for c in s.of(StateChanged)]


# ---------------------------------------------------------------- the happy path, step by step
def test_happy_path_ivr_commands_in_order() -> None:
    s = Sim()
    cmds = s.start()
    assert cmds == [
        StateChanged(CallState.CREATED, CallState.DIALING),
        OriginateSubscriber("Partner Telecom", 30.0),
        StartTimer("max_call", 900.0),
    ]
    # record from answer, before any prompt
    cmds = s.send(SubscriberAnswered)
    assert [type(c) for c in cmds] == [StateChanged, StartRecording, StartTimer]
    assert cmds[1] == StartRecording("c1") and cmds[2] == StartTimer("recording", 5.0)
    assert not s.of(PlayPrompt)

    cmds = s.send(RecordingStarted)
    assert cmds == [
        CancelTimer("recording"),
        StateChanged(CallState.ANSWERED, CallState.DISCLOSURE),
        PlayPrompt("subscriber", s.settings.prompts.disclosure, "c1-pb1"),
    ]
    cmds = s.finish("disclosure")
    assert cmds == [
        StateChanged(CallState.DISCLOSURE, CallState.CONSENT),
        PlayPrompt("subscriber", s.settings.prompts.question, "c1-pb2"),  # type: ignore[arg-type]
    ]
    assert s.finish("question") == [StartTimer("first_digit", 5.0)]

    cmds = s.send(Dtmf, leg="subscriber", digit="1", after=1.5)
    assert cmds == [
        CancelTimer("first_digit"),
        StateChanged(CallState.CONSENT, CallState.AGENT_DIALING),
        OriginateAgent(None, "spring-sale c1", 20.0),
        StartTimer("agent_ring", 20.0),
        PlayPrompt("subscriber", s.settings.prompts.hold, "c1-pb3"),  # type: ignore[arg-type]
    ]
    assert s.call.consent is ConsentResult.GIVEN

    cmds = s.send(AgentAnswered, after=5.0)
    assert cmds == [
        CancelTimer("agent_ring"),
        StateChanged(CallState.AGENT_DIALING, CallState.WHISPER),
        PlayPrompt("agent", s.settings.prompts.whisper, "c1-pb4"),  # type: ignore[arg-type]
    ]
    cmds = s.finish("whisper", after=2.0)
    assert cmds == [
        StopPlayback("c1-pb3"),  # the hold prompt
        BridgeLegs(),
        StateChanged(CallState.WHISPER, CallState.BRIDGED),
    ]

    cmds = s.send(Dtmf, leg="agent", digit="#", after=60.0)
    assert [type(c) for c in cmds] == [StateChanged, StoreLead]
    lead_cmd = cmds[1]
    assert isinstance(lead_cmd, StoreLead)
    ev = lead_cmd.evidence
    assert ev.consent is ConsentResult.GIVEN and ev.confirm_source == "dtmf"
    assert ev.confirmed_at == s.now and ev.answered_at == T0 + timedelta(seconds=0.1)
    assert s.call.state is CallState.CONFIRMED

    cmds = s.send(LeadStored, lead_id="lead-1")
    assert cmds == [
        StateChanged(CallState.CONFIRMED, CallState.LEAD_STORED),
        ConfirmAck(None, True, None, "dtmf", "lead-1"),
    ]
    # the conversation goes on until someone hangs up
    cmds = s.send(LegHungUp, leg="agent", cause=16, after=30.0)
    assert cmds == [
        HangupLeg("subscriber"),
        DestroyBridge(),
        CancelTimer("max_call"),
        StopRecording(keep=True),
        StateChanged(CallState.LEAD_STORED, CallState.ENDED, EndReason.COMPLETED),
        CallFinished(CallState.ENDED, EndReason.COMPLETED, "lead-1"),
    ]
    done = s.check_finished()
    assert (done.state, done.end_reason) == (CallState.ENDED, EndReason.COMPLETED)
    assert s.count(StoreLead) == 1
    assert s.call.end_reason is EndReason.COMPLETED and s.call.lead_id == "lead-1"


def test_happy_path_evidence() -> None:
    s = Sim(agent_id="agent-7")
    to_confirmed(s)
    ev = s.of(StoreLead)[0].evidence
    assert ev.call_id == "c1" and ev.campaign == "spring-sale" and ev.advertiser == "Acme Windows"
    assert ev.caller_id_presented == "Partner Telecom" and ev.consent_mode == "ivr"
    assert ev.agent_id == "agent-7"
    assert ev.policy_checks == ({"check": "dnc", "ok": True},)
    assert [(p.prompt_id, p.leg, p.completed) for p in ev.prompts] == [
        ("disclosure", "subscriber", True),
        ("question", "subscriber", True),
        ("hold", "subscriber", False),  # still playing when the whisper ended; stopped at bridge
        ("whisper", "agent", True),
    ]
    d = ev.prompts[0]
    assert d.text_sha256 == s.settings.prompts.disclosure.text_sha256
    assert d.version == "3" and d.language == "en"
    assert d.finished_at is not None and d.finished_at > d.started_at
    assert [(k.leg, k.digit) for k in ev.keypresses] == [("subscriber", "1"), ("agent", "#")]
    answered = ev.answered_at
    assert answered is not None
    for k in ev.keypresses:
        assert k.offset_ms == int((k.at - answered).total_seconds() * 1000)
    assert ev.consent_at == ev.keypresses[0].at
    assert ev.keypresses[0].offset_ms == 6200  # 0.1 s to record + 3 + 3 s of prompts + 0.1


def test_confirm_by_api_carries_agent_and_request_id() -> None:
    s = Sim()
    to_bridged(s)
    cmds = s.send(ConfirmRequested, source="api", request_id="r-1", agent_id="agent-42")
    ev = next(c for c in cmds if isinstance(c, StoreLead)).evidence
    assert ev.agent_id == "agent-42" and ev.confirm_source == "api"
    assert s.call.evidence().agent_id == "agent-42"
    assert s.send(LeadStored, lead_id="L9")[-1] == ConfirmAck("r-1", True, None, "api", "L9")


# ---------------------------------------------------------------- ivr answers
@pytest.mark.parametrize(
    ("digit", "consent", "reason", "dnc"),
    [
        ("2", ConsentResult.DECLINED, EndReason.DECLINED, False),
        ("9", ConsentResult.OPTED_OUT, EndReason.OPTED_OUT, True),
    ],
)
def test_declined_and_opt_out(digit: str, consent: ConsentResult, reason: EndReason, dnc: bool) -> None:
    s = Sim()
    to_waiting_digit(s)
    cmds = s.send(Dtmf, leg="subscriber", digit=digit)
    assert (AddToDnc() in cmds) is dnc
    assert s.call.state is CallState.CLOSING
    assert isinstance(cmds[-1], PlayPrompt) and cmds[-1].prompt.id == "goodbye"
    s.finish("goodbye")
    done = s.check_finished()
    assert done.end_reason is reason and s.call.consent is consent
    assert s.count(StoreLead) == 0 and s.count(OriginateAgent) == 0
    assert StopRecording(keep=False) in s.log
    assert s.count(AddToDnc) == int(dnc)


def test_hangup_during_goodbye_keeps_the_decision() -> None:
    s = Sim()
    to_closing(s)
    s.send(LegHungUp, leg="subscriber")
    assert s.check_finished().end_reason is EndReason.DECLINED


def test_no_input_reasks_then_ends() -> None:
    s = Sim()
    to_waiting_digit(s)
    for _ in range(2):  # max_retries re-asks
        cmds = s.fire("first_digit")
        assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["question"]
        s.finish("question")
    cmds = s.fire("first_digit")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["goodbye"]
    s.finish("goodbye")
    assert s.check_finished().end_reason is EndReason.NO_INPUT
    assert s.call.consent is ConsentResult.NO_INPUT
    assert [p.prompt_id for p in s.call.evidence().prompts].count("question") == 3


def test_invalid_digit_plays_invalid_then_reasks() -> None:
    s = Sim()
    to_waiting_digit(s)
    cmds = s.send(Dtmf, leg="subscriber", digit="5")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["invalid"]
    assert s.call.state.value == "consent"
    cmds = s.finish("invalid")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["question"]
    s.finish("question")
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.state is CallState.AGENT_DIALING


def test_invalid_digits_exhaust_retries() -> None:
    s = Sim(max_retries=1)
    to_waiting_digit(s)
    s.send(Dtmf, leg="subscriber", digit="7")
    s.finish("invalid")
    s.finish("question")
    cmds = s.send(Dtmf, leg="subscriber", digit="*")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["goodbye"]
    s.finish("goodbye")
    assert s.check_finished().end_reason is EndReason.NO_INPUT


def test_barge_in_stops_the_question_and_takes_the_digit() -> None:
    s = Sim()
    to_question(s)
    qid = s.pid("question")
    cmds = s.send(Dtmf, leg="subscriber", digit="1", after=1.0)
    assert cmds[0] == StopPlayback(qid)
    assert s.call.state is CallState.AGENT_DIALING
    q = next(p for p in s.call.evidence().prompts if p.prompt_id == "question")
    assert q.completed is False and q.finished_at == s.now
    # the PlaybackFinished the driver may still deliver for the stopped playback is ignored
    assert s.call.handle(PlaybackFinished(at=s.now, playback_id=qid)) == []


def test_barge_in_during_invalid_notice() -> None:
    s = Sim()
    to_waiting_digit(s)
    s.send(Dtmf, leg="subscriber", digit="0")
    cmds = s.send(Dtmf, leg="subscriber", digit="9")
    assert cmds[0] == StopPlayback(s.of(PlayPrompt)[-2].playback_id)
    assert AddToDnc() in cmds


def test_digits_during_disclosure_are_evidence_only() -> None:
    s = Sim()
    to_disclosure(s)
    for d in "19#":
        assert s.send(Dtmf, leg="subscriber", digit=d) == []
    assert s.call.state is CallState.DISCLOSURE
    assert [k.digit for k in s.call.evidence().keypresses] == ["1", "9", "#"]
    cmds = s.finish("disclosure")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["question"]
    assert s.call.consent is ConsentResult.NONE and s.count(AddToDnc) == 0


# ---------------------------------------------------------------- multi-key answers
def test_multi_key_answer_waits_for_its_last_key() -> None:
    s = Sim(yes_key="*1")
    to_waiting_digit(s)
    cmds = s.send(Dtmf, leg="subscriber", digit="*")
    assert StartTimer("inter_digit", 3.0) in cmds and s.call.state is CallState.CONSENT
    cmds = s.send(Dtmf, leg="subscriber", digit="1")
    assert CancelTimer("inter_digit") in cmds and s.call.state is CallState.AGENT_DIALING
    assert s.call.consent is ConsentResult.GIVEN
    assert [k.digit for k in s.call.evidence().keypresses] == ["*", "1"]


def test_single_key_answers_are_taken_at_once_beside_a_multi_key_one() -> None:
    s = Sim(yes_key="*1")
    to_waiting_digit(s)
    cmds = s.send(Dtmf, leg="subscriber", digit="9")
    assert not any(isinstance(c, StartTimer) and c.name == "inter_digit" for c in cmds)
    assert AddToDnc() in cmds and s.call.consent is ConsentResult.OPTED_OUT


def test_unfinished_answer_is_invalid_after_the_inter_digit_timeout() -> None:
    s = Sim(yes_key="*1", inter_digit_timeout=2.0)
    to_waiting_digit(s)
    s.send(Dtmf, leg="subscriber", digit="*")
    cmds = s.fire("inter_digit")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["invalid"]
    assert s.call.consent is ConsentResult.NONE
    s.finish("invalid")
    s.finish("question")
    # the abandoned "*" is not carried over: "1" alone begins no answer
    cmds = s.send(Dtmf, leg="subscriber", digit="1")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["invalid"]
    assert s.call.consent is ConsentResult.NONE


def test_wrong_second_key_is_invalid_at_once() -> None:
    s = Sim(yes_key="*1")
    to_waiting_digit(s)
    s.send(Dtmf, leg="subscriber", digit="*")
    cmds = s.send(Dtmf, leg="subscriber", digit="2")  # "*2" is no answer, though "2" alone is
    assert CancelTimer("inter_digit") in cmds
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["invalid"]
    assert s.call.consent is ConsentResult.NONE


@pytest.mark.parametrize("mode", ["ivr", "agent"])
def test_opt_out_key_works_in_the_middle_of_an_answer(mode: str) -> None:
    s = Sim(mode, yes_key="*1")
    if mode == "ivr":
        to_waiting_digit(s)
    else:
        to_whisper(s)
        s.finish("whisper")
    s.send(Dtmf, leg="subscriber", digit="*")
    cmds = s.send(Dtmf, leg="subscriber", digit="9")
    assert AddToDnc() in cmds and CancelTimer("inter_digit") in cmds
    assert s.call.consent is ConsentResult.OPTED_OUT


def test_agent_mode_multi_key_answer() -> None:
    s = Sim("agent", yes_key="11", no_key="22")
    to_whisper(s)
    s.finish("whisper")
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.consent is ConsentResult.NONE
    s.fire("inter_digit")
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.consent is ConsentResult.NONE  # the timed-out "1" does not count
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.consent is ConsentResult.GIVEN


def test_garbage_digit_is_ignored() -> None:
    s = Sim()
    to_waiting_digit(s)
    assert s.send(Dtmf, leg="subscriber", digit="x") == []
    assert s.send(Dtmf, leg="subscriber", digit="12") == []
    assert s.call.evidence().keypresses == ()


# ---------------------------------------------------------------- subscriber hangup in every state
HANGUP_TABLE: list[tuple[str, Callable[[Sim], None], dict[str, Any], CallState, EndReason]] = [
    ("dialing", to_dialing, {}, CallState.FAILED, EndReason.NO_ANSWER),
    ("answered", to_answered, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("disclosure", to_disclosure, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("question", to_question, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("waiting_digit", to_waiting_digit, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("closing", to_closing, {}, CallState.ENDED, EndReason.DECLINED),
    ("agent_dialing", to_agent_dialing, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("whisper", to_whisper, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("bridged", to_bridged, {}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),  # via wrap-up
    ("confirmed", to_confirmed, {}, CallState.ENDED, EndReason.COMPLETED),
    ("lead_stored", to_lead_stored, {}, CallState.ENDED, EndReason.COMPLETED),
    ("transferring", to_lead_stored, {"transfer_dial_string": DIAL}, CallState.ENDED, EndReason.COMPLETED),
    ("agent_mode_disclosure", to_disclosure, {"mode": "agent"}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("agent_mode_dialing", to_agent_dialing, {"mode": "agent"}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
    ("agent_mode_bridged", to_whisper, {"mode": "agent"}, CallState.ENDED, EndReason.SUBSCRIBER_HANGUP),
]


@pytest.mark.parametrize(
    ("recipe", "overrides", "final", "reason"),
    [row[1:] for row in HANGUP_TABLE],
    ids=[row[0] for row in HANGUP_TABLE],
)
def test_subscriber_hangup_in_every_state(
    recipe: Callable[[Sim], None], overrides: dict[str, Any], final: CallState, reason: EndReason
) -> None:
    s = Sim(**overrides)
    recipe(s)
    if overrides.get("mode") == "agent" and recipe is to_whisper:
        s.finish("whisper")  # bridged, no consent key yet
    before = s.call.state
    s.send(LegHungUp, leg="subscriber", cause=16)
    if before is CallState.BRIDGED and s.call.consent is ConsentResult.GIVEN:
        assert s.call.state is CallState.WRAP_UP and not s.finished
        s.fire("wrap_up")
    elif before is CallState.CONFIRMED:
        assert not s.finished  # never finish with StoreLead outstanding
        s.send(LeadStored, lead_id="L1")
    done = s.check_finished()
    assert (done.state, done.end_reason) == (final, reason)
    stored = before in (CallState.CONFIRMED, CallState.LEAD_STORED, CallState.TRANSFERRING)
    assert s.count(StoreLead) == int(stored)
    assert (s.call.lead_id is not None) is stored
    # late events after the end produce nothing
    for late in (
        Dtmf(at=s.now, leg="subscriber", digit="1"),
        LegHungUp(at=s.now, leg="agent"),
        TimerFired(at=s.now, name="max_call"),
        AgentAnswered(at=s.now),
        Shutdown(at=s.now),
    ):
        assert s.call.handle(late) == []


@pytest.mark.parametrize(
    ("reason", "cause", "expected"),
    [
        ("busy", None, EndReason.BUSY),
        ("no_answer", None, EndReason.NO_ANSWER),
        ("congestion", None, EndReason.CONGESTION),
        ("rejected", None, EndReason.REJECTED),
        ("weird", None, EndReason.ERROR),
        (None, 17, EndReason.BUSY),
        (None, 19, EndReason.NO_ANSWER),
        (None, 21, EndReason.REJECTED),
        (None, 34, EndReason.CONGESTION),
        (None, 127, EndReason.ERROR),
    ],
)
def test_originate_failures(reason: str | None, cause: int | None, expected: EndReason) -> None:
    s = Sim()
    s.start()
    if reason is not None:
        s.send(SubscriberFailed, reason=reason)
    else:
        s.send(LegHungUp, leg="subscriber", cause=cause)
    done = s.check_finished()
    assert (done.state, done.end_reason) == (CallState.FAILED, expected)
    assert s.count(HangupLeg) == 0 and s.count(StartRecording) == 0
    assert failure_from_cause(None) == "error"


# ---------------------------------------------------------------- recording
def test_no_prompt_before_recording_and_recording_failure_ends() -> None:
    s = Sim()
    to_answered(s)
    assert s.send(Dtmf, leg="subscriber", digit="1") == []
    s.send(RecordingFailed, reason="disk_full")
    done = s.check_finished()
    assert done.end_reason is EndReason.RECORDING_FAILED
    assert s.count(PlayPrompt) == 0 and HangupLeg("subscriber") in s.log
    assert s.count(StopRecording) == 0  # nothing was recorded


def test_recording_start_timeout() -> None:
    s = Sim()
    to_answered(s)
    s.fire("recording")
    assert s.check_finished().end_reason is EndReason.RECORDING_FAILED
    assert StopRecording(keep=False) in s.log  # it may have started late: delete it
    assert s.send(RecordingStarted) == []


def test_disclosure_that_fails_to_play_ends_the_call() -> None:
    s = Sim()
    to_disclosure(s)
    s.finish("disclosure", ok=False)
    assert s.check_finished().end_reason is EndReason.ERROR


# ---------------------------------------------------------------- agent leg
def test_agent_no_answer_ring_timeout() -> None:
    s = Sim()
    to_agent_dialing(s)
    s.finish("hold")  # the hold prompt is replayed while the agent rings
    assert s.call.state is CallState.AGENT_DIALING and s.pid("hold")
    cmds = s.fire("agent_ring")
    assert cmds[0] == HangupLeg("agent", "no_answer")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["apology"]
    s.finish("apology")
    done = s.check_finished()
    assert done.end_reason is EndReason.AGENT_UNAVAILABLE and s.count(StoreLead) == 0


@pytest.mark.parametrize("how", ["failed", "hangup_ringing", "hangup_whisper"])
def test_agent_failed(how: str) -> None:
    s = Sim()
    to_agent_dialing(s)
    if how == "failed":
        s.send(AgentFailed, reason="busy")
    elif how == "hangup_ringing":
        s.send(LegHungUp, leg="agent", cause=17)
    else:
        s.send(AgentAnswered)
        s.send(LegHungUp, leg="agent", cause=16)
    assert s.call.state is CallState.CLOSING
    s.send(LegHungUp, leg="subscriber")  # the subscriber does not wait for the apology
    assert s.check_finished().end_reason is EndReason.AGENT_UNAVAILABLE


def test_agent_hangup_before_confirm() -> None:
    s = Sim()
    to_bridged(s)
    s.send(LegHungUp, leg="agent", cause=16)
    done = s.check_finished()
    assert done.end_reason is EndReason.AGENT_HANGUP
    assert s.count(StoreLead) == 0 and StopRecording(keep=False) in s.log
    assert HangupLeg("subscriber") in s.log and DestroyBridge() in s.log


def test_no_whisper_no_hold_bridges_at_once() -> None:
    from reffection_ari.flow import FlowPrompts

    from .test_flow_support import PROMPTS

    s = Sim(prompts=FlowPrompts(disclosure=PROMPTS.disclosure, question=PROMPTS.question))
    to_agent_dialing(s)
    assert s.live.playbacks == {}
    cmds = s.send(AgentAnswered)
    assert BridgeLegs() in cmds and s.call.state is CallState.BRIDGED


def test_bridge_failure_ends_with_error() -> None:
    s = Sim()
    to_bridged(s)
    s.send(BridgeFailed, reason="channel_gone")
    assert s.check_finished().end_reason is EndReason.ERROR


# ---------------------------------------------------------------- confirm rules
def test_api_confirm_without_consent_agent_mode() -> None:
    s = Sim("agent")
    to_whisper(s)
    s.finish("whisper")
    assert s.call.state is CallState.BRIDGED
    cmds = s.send(ConfirmRequested, source="api", request_id="r1")
    assert cmds == [ConfirmAck("r1", False, "not_consented", "api")]
    cmds = s.send(Dtmf, leg="agent", digit="#")
    assert cmds == [ConfirmAck(None, False, "not_consented", "dtmf")]
    assert s.count(StoreLead) == 0


def test_confirm_before_bridge_is_not_bridged() -> None:
    s = Sim()
    to_agent_dialing(s)
    assert s.send(ConfirmRequested, request_id="r1") == [ConfirmAck("r1", False, "not_bridged", "api")]


def test_double_confirm_one_store_lead() -> None:
    s = Sim()
    to_bridged(s)
    first = s.send(ConfirmRequested, request_id="r1")
    assert s.count(StoreLead) == 1 and not any(isinstance(c, ConfirmAck) for c in first)
    assert s.send(Dtmf, leg="agent", digit="#") == []  # queued behind the outstanding store
    assert s.send(ConfirmRequested, request_id="r2") == []
    cmds = s.send(LeadStored, lead_id="L1")
    acks = [c for c in cmds if isinstance(c, ConfirmAck)]
    assert acks == [
        ConfirmAck("r1", True, None, "api", "L1"),
        ConfirmAck(None, True, None, "dtmf", "L1"),
        ConfirmAck("r2", True, None, "api", "L1"),
    ]
    cmds = s.send(ConfirmRequested, request_id="r3")
    assert cmds == [ConfirmAck("r3", True, "already_confirmed", "api", "L1")]
    assert s.count(StoreLead) == 1
    s.send(HangupRequested)
    s.check_finished()
    # idempotent even after the end
    assert s.call.handle(ConfirmRequested(at=s.now, request_id="r4")) == [
        ConfirmAck("r4", True, "already_confirmed", "api", "L1")
    ]


def test_lead_store_failure_allows_retry() -> None:
    s = Sim()
    to_bridged(s)
    s.send(ConfirmRequested, request_id="r1")
    cmds = s.send(LeadStoreFailed, code="disk_full")
    assert ConfirmAck("r1", False, "lead_store_failed", "api") in cmds
    assert s.call.state is CallState.BRIDGED and s.call.evidence().confirmed_at is None
    s.send(ConfirmRequested, request_id="r2")
    assert s.count(StoreLead) == 2
    s.send(LeadStored, lead_id="L2")
    assert s.call.lead_id == "L2"


def test_lead_store_failure_after_agent_left_ends() -> None:
    s = Sim()
    to_confirmed(s)
    s.send(LegHungUp, leg="agent")
    assert not s.finished
    s.send(LeadStoreFailed)
    done = s.check_finished()
    assert done.end_reason is EndReason.LEAD_STORE_FAILED and StopRecording(keep=False) in s.log


def test_lead_stored_after_agent_left_thanks_the_subscriber() -> None:
    s = Sim()
    to_confirmed(s)
    s.send(LegHungUp, leg="agent")
    cmds = s.send(LeadStored, lead_id="L1")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["thanks"]
    s.finish("thanks")
    done = s.check_finished()
    assert done.end_reason is EndReason.COMPLETED and StopRecording(keep=True) in s.log


# ---------------------------------------------------------------- wrap-up window
def test_confirm_in_wrap_up_window() -> None:
    s = Sim()
    to_wrap_up(s)
    assert s.call.state is CallState.WRAP_UP
    assert StartTimer("wrap_up", 30.0) in s.log
    s.send(LegHungUp, leg="agent")  # the agent may leave and confirm from the desktop
    assert not s.finished
    cmds = s.send(ConfirmRequested, request_id="r1", after=10.0)
    assert any(isinstance(c, StoreLead) for c in cmds)
    cmds = s.send(LeadStored, lead_id="L1")
    assert ConfirmAck("r1", True, None, "api", "L1") in cmds
    done = s.check_finished()
    assert done.end_reason is EndReason.COMPLETED and s.live.recording == "kept"


def test_confirm_after_wrap_up_window_is_call_ended() -> None:
    s = Sim()
    to_wrap_up(s)
    s.fire("wrap_up")
    done = s.check_finished()
    assert done.end_reason is EndReason.SUBSCRIBER_HANGUP and HangupLeg("agent") in s.log
    assert s.call.handle(ConfirmRequested(at=s.now, request_id="r1")) == [
        ConfirmAck("r1", False, "call_ended", "api")
    ]
    assert s.count(StoreLead) == 0


def test_subscriber_hangup_while_bridged_without_consent_ends_at_once() -> None:
    s = Sim("agent")
    to_whisper(s)
    s.finish("whisper")
    s.send(Dtmf, leg="subscriber", digit="2")
    s.send(LegHungUp, leg="subscriber")
    assert s.check_finished().end_reason is EndReason.DECLINED


def test_store_failure_in_wrap_up_after_window_closed() -> None:
    s = Sim()
    to_confirmed(s)
    s.send(LegHungUp, leg="subscriber")
    s.fire("wrap_up")  # window closes while the store is outstanding
    assert not s.finished
    s.send(LeadStoreFailed)
    assert s.check_finished().end_reason is EndReason.LEAD_STORE_FAILED


# ---------------------------------------------------------------- agent mode
def test_agent_mode_consent_during_bridge() -> None:
    s = Sim("agent")
    to_disclosure(s)
    cmds = s.finish("disclosure")
    assert any(isinstance(c, OriginateAgent) for c in cmds)  # agent dialled at once, no question
    assert not [c for c in s.of(PlayPrompt) if c.prompt.id == "question"]
    s.send(AgentAnswered)
    s.finish("whisper")
    assert s.call.evidence().consent is ConsentResult.NONE
    s.send(Dtmf, leg="subscriber", digit="1", after=20.0)
    assert s.call.consent is ConsentResult.GIVEN
    assert s.call.state is CallState.BRIDGED  # no automatic action: the agent goes on
    s.send(Dtmf, leg="agent", digit="#")
    ev = s.of(StoreLead)[0].evidence
    assert ev.consent_mode == "agent" and ev.consent is ConsentResult.GIVEN
    s.send(LeadStored, lead_id="L1")
    s.send(LegHungUp, leg="subscriber")
    assert s.check_finished().end_reason is EndReason.COMPLETED


def test_agent_mode_opt_out_is_final_and_goes_to_dnc() -> None:
    s = Sim("agent")
    to_whisper(s)
    s.finish("whisper")
    assert s.send(Dtmf, leg="subscriber", digit="9") == [AddToDnc()]
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.consent is ConsentResult.OPTED_OUT
    assert s.send(ConfirmRequested, request_id="r")[0] == ConfirmAck("r", False, "not_consented", "api")
    s.send(LegHungUp, leg="agent")
    assert s.check_finished().end_reason is EndReason.OPTED_OUT


def test_agent_mode_digits_before_bridge_are_ignored() -> None:
    s = Sim("agent")
    to_agent_dialing(s)
    s.send(Dtmf, leg="subscriber", digit="1")
    assert s.call.consent is ConsentResult.NONE


# ---------------------------------------------------------------- transfer
def test_transfer_after_lead() -> None:
    s = Sim(transfer_dial_string=DIAL)
    to_confirmed(s)
    cmds = s.send(LeadStored, lead_id="L1")
    assert cmds[-3:] == [HangupLeg("agent"), DestroyBridge(), TransferSubscriber(DIAL, 30.0)]
    assert s.call.state is CallState.TRANSFERRING
    cmds = s.send(TransferAnswered, after=8.0)
    assert HangupLeg("subscriber") not in cmds  # the leg now belongs to the transfer
    done = s.check_finished()
    assert (done.state, done.end_reason) == (CallState.TRANSFERRED, EndReason.COMPLETED)
    assert StopRecording(keep=True) in cmds


def test_transfer_failed() -> None:
    s = Sim(transfer_dial_string=DIAL)
    to_lead_stored(s)
    cmds = s.send(TransferFailed, reason="busy")
    assert [c.prompt.id for c in cmds if isinstance(c, PlayPrompt)] == ["apology"]
    s.finish("apology")
    done = s.check_finished()
    assert done.end_reason is EndReason.TRANSFER_FAILED and s.live.recording == "kept"


def test_transfer_cancelled_on_shutdown() -> None:
    s = Sim(transfer_dial_string=DIAL)
    to_lead_stored(s)
    cmds = s.send(Shutdown)
    assert cmds[0] == CancelTransfer()
    assert s.check_finished().end_reason is EndReason.SHUTDOWN


# ---------------------------------------------------------------- operator events and the cap
@pytest.mark.parametrize(
    ("event", "reason"),
    [(Shutdown, EndReason.SHUTDOWN), (HangupRequested, EndReason.API_HANGUP)],
)
@pytest.mark.parametrize("recipe", [to_dialing, to_question, to_agent_dialing, to_bridged, to_wrap_up])
def test_operator_ends_cleanly(event: Any, reason: EndReason, recipe: Callable[[Sim], None]) -> None:
    s = Sim()
    recipe(s)
    s.send(event)
    done = s.check_finished()
    assert done.end_reason is reason and s.count(StoreLead) == 0


def test_shutdown_while_store_outstanding_waits_for_the_sink() -> None:
    s = Sim()
    to_confirmed(s)
    cmds = s.send(Shutdown)
    assert HangupLeg("subscriber") in cmds and HangupLeg("agent") in cmds and DestroyBridge() in cmds
    assert not s.finished and s.live.legs == set()
    cmds = s.send(LeadStored, lead_id="L1")
    assert ConfirmAck(None, True, None, "dtmf", "L1") in cmds
    done = s.check_finished()
    assert done.end_reason is EndReason.SHUTDOWN and s.live.recording == "kept"


def test_max_call_timer() -> None:
    s = Sim()
    to_bridged(s)
    s.fire("max_call")
    assert s.check_finished().end_reason is EndReason.TIMEOUT


# ---------------------------------------------------------------- robustness
def test_handle_before_start_raises() -> None:
    call = ConsentCall("c9", Sim().settings)
    with pytest.raises(CallError) as info:
        call.handle(SubscriberAnswered(at=T0))
    assert info.value.code == "not_started"
    call.start(T0)
    with pytest.raises(CallError):
        call.start(T0)


def test_stale_and_out_of_place_events_are_ignored() -> None:
    s = Sim()
    to_waiting_digit(s)
    before = s.call.state
    for e in (
        PlaybackFinished(at=s.now, playback_id="c1-pb999"),
        TimerFired(at=s.now, name="agent_ring"),
        TimerFired(at=s.now, name="nonsense"),
        AgentAnswered(at=s.now),
        LeadStored(at=s.now, lead_id="forged"),
        LeadStoreFailed(at=s.now),
        TransferAnswered(at=s.now),
        SubscriberAnswered(at=s.now),
        SubscriberFailed(at=s.now, reason="busy"),
        RecordingStarted(at=s.now),
        BridgeFailed(at=s.now),
        LegHungUp(at=s.now, leg="agent"),
        Dtmf(at=s.now, leg="agent", digit="#"),  # no agent leg: not a confirm
    ):
        assert s.call.handle(e) == [], e
    assert s.call.state is before and s.call.lead_id is None


def test_every_transition_is_announced() -> None:
    s = Sim()
    to_lead_stored(s)
    s.send(LegHungUp, leg="subscriber")
    chain = states(s)
    assert [new for _, new in chain] == [
        CallState.DIALING,
        CallState.ANSWERED,
        CallState.DISCLOSURE,
        CallState.CONSENT,
        CallState.AGENT_DIALING,
        CallState.WHISPER,
        CallState.BRIDGED,
        CallState.CONFIRMED,
        CallState.LEAD_STORED,
        CallState.ENDED,
    ]
    assert all(old is not new for old, new in chain)
    assert all(a[1] is b[0] for a, b in itertools.pairwise(chain))

"""Property test: random event sequences never break the call's promises.

Whatever a (possibly buggy or racing) driver feeds in: no StoreLead without consent GIVEN and an
accepted confirm, never two outstanding, CallFinished at most once and last, and at the end
nothing the flow created (legs, bridge, playbacks, timers, transfer, recording) is left alive.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reffection_ari.flow import (
    AgentAnswered,
    AgentFailed,
    BridgeFailed,
    CallState,
    ConfirmRequested,
    Dtmf,
    FlowPrompts,
    HangupRequested,
    LeadStored,
    LeadStoreFailed,
    LegHungUp,
    PlaybackFinished,
    RecordingFailed,
    RecordingStarted,
    Shutdown,
    StateChanged,
    StopRecording,
    StoreLead,
    SubscriberAnswered,
    SubscriberFailed,
    TimerFired,
    TransferAnswered,
    TransferFailed,
)
from reffection_ari.lead import ConsentResult

from .test_flow_support import PROMPTS, Sim

MINIMAL = FlowPrompts(disclosure=PROMPTS.disclosure, question=PROMPTS.question)
KINDS = [
    "answered", "failed", "rec_ok", "rec_fail", "playback", "playback_fail", "dtmf", "timer",
    "agent_answered", "agent_failed", "bridge_failed", "hangup", "confirm", "lead_stored",
    "lead_failed", "transfer_ok", "transfer_fail", "api_hangup", "shutdown",
]  # fmt: skip
# bias towards the events that move a call forward
WEIGHTED = KINDS + ["answered", "rec_ok", "playback", "playback", "dtmf", "dtmf", "dtmf", "timer"] * 2


# what a healthy driver would most likely report next, so that random runs get deep into the call
PROGRESS: dict[CallState, list[str]] = {
    CallState.DIALING: ["answered"],
    CallState.ANSWERED: ["rec_ok"],
    CallState.DISCLOSURE: ["playback"],
    CallState.CONSENT: ["playback", "dtmf_yes", "dtmf", "timer"],
    CallState.AGENT_DIALING: ["agent_answered", "playback", "timer"],
    CallState.WHISPER: ["playback"],
    CallState.BRIDGED: ["dtmf_yes", "confirm_key", "confirm", "hangup"],
    CallState.WRAP_UP: ["confirm", "timer"],
    CallState.CONFIRMED: ["lead_stored", "lead_failed", "confirm", "hangup"],
    CallState.LEAD_STORED: ["hangup", "confirm"],
    CallState.TRANSFERRING: ["transfer_ok", "transfer_fail", "hangup"],
    CallState.CLOSING: ["playback", "hangup"],
}


def _event(data: st.DataObject, s: Sim) -> tuple[type[Any], dict[str, Any]]:
    progress = PROGRESS.get(s.call.state)
    if progress and data.draw(st.integers(0, 9)) < 8:
        kind = data.draw(st.sampled_from(progress))
    else:
        kind = data.draw(st.sampled_from(WEIGHTED))
    live = s.live
    match kind:
        case "answered":
            return SubscriberAnswered, {}
        case "failed":
            return SubscriberFailed, {"reason": data.draw(st.sampled_from(["busy", "no_answer", "zzz"]))}
        case "rec_ok":
            return RecordingStarted, {}
        case "rec_fail":
            return RecordingFailed, {}
        case "playback" | "playback_fail":
            pid = data.draw(st.sampled_from([*sorted(live.playbacks), "c1-pb999"]))
            return PlaybackFinished, {"playback_id": pid, "ok": kind == "playback"}
        case "dtmf_yes":
            return Dtmf, {"leg": "subscriber", "digit": "1"}
        case "confirm_key":
            return Dtmf, {"leg": "agent", "digit": "#"}
        case "dtmf":
            leg = data.draw(st.sampled_from(["subscriber", "agent"]))
            return Dtmf, {"leg": leg, "digit": data.draw(st.sampled_from(list("12945#*")))}
        case "timer":
            return TimerFired, {"name": data.draw(st.sampled_from([*sorted(live.timers), "bogus"]))}
        case "agent_answered":
            return AgentAnswered, {}
        case "agent_failed":
            return AgentFailed, {}
        case "bridge_failed":
            return BridgeFailed, {}
        case "hangup":
            return LegHungUp, {"leg": data.draw(st.sampled_from(["subscriber", "agent"])), "cause": 16}
        case "confirm":
            return ConfirmRequested, {"request_id": f"r{len(s.log)}"}
        case "lead_stored":
            return LeadStored, {"lead_id": f"L{len(s.log)}"}
        case "lead_failed":
            return LeadStoreFailed, {}
        case "transfer_ok":
            return TransferAnswered, {}
        case "transfer_fail":
            return TransferFailed, {}
        case "api_hangup":
            return HangupRequested, {}
        case _:
            return Shutdown, {}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    mode=st.sampled_from(["ivr", "agent"]),
    transfer=st.booleans(),
    minimal=st.booleans(),
    retries=st.integers(0, 2),
    steps=st.integers(1, 40),
)
def test_random_event_sequences_keep_the_invariants(
    data: st.DataObject, mode: str, transfer: bool, minimal: bool, retries: int, steps: int
) -> None:
    s = Sim(
        mode,
        transfer_dial_string="PJSIP/adv@trunk" if transfer else None,
        prompts=MINIMAL if minimal else PROMPTS,
        max_retries=retries,
    )
    s.start()
    store_outstanding = False
    lead_stored = False
    for _ in range(steps):
        cls, kw = _event(data, s)
        state_before = s.call.state
        cmds = s.send(cls, after=data.draw(st.sampled_from([0.0, 0.5, 3.0])), **kw)
        stores = [c for c in cmds if isinstance(c, StoreLead)]
        if stores:
            assert len(stores) == 1 and not store_outstanding and not lead_stored
            confirm = cls is ConfirmRequested or (cls is Dtmf and kw == {"leg": "agent", "digit": "#"})
            assert confirm
            assert state_before in (CallState.BRIDGED, CallState.WRAP_UP)
            ev = stores[0].evidence
            assert ev.consent is ConsentResult.GIVEN and ev.confirmed_at is not None
            store_outstanding = True
        if cls in (LeadStored, LeadStoreFailed) and store_outstanding:
            store_outstanding = False
            lead_stored = cls is LeadStored
        for c in cmds:
            if isinstance(c, StopRecording) and c.keep:
                assert lead_stored
        if store_outstanding:
            assert not s.finished, "finished with a StoreLead outstanding"
        if s.finished:
            s.check_finished()
    for _old, new in {(c.old, c.new) for c in s.of(StateChanged)}:
        event(f"reached {new}")
    assert len(s.finished) <= 1
    assert (s.call.lead_id is not None) is lead_stored
    if s.finished:
        s.check_finished()

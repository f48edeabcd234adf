"""A tiny fake driver for the consent-call tests, plus tests of the settings it builds.

``Sim`` feeds events with a controllable clock and keeps a model of what the commands created
(legs, bridge, playbacks, timers, recording, transfer), updated by teardown commands and by the
events a real driver would report. ``Sim.check_finished()`` asserts the call left nothing alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reffection_ari.errors import ConfigError
from reffection_ari.flow import (
    AgentFailed,
    BridgeLegs,
    CallFinished,
    CancelTimer,
    CancelTransfer,
    Command,
    ConfirmAck,
    ConsentCall,
    DestroyBridge,
    FlowEvent,
    FlowPrompts,
    FlowSettings,
    HangupLeg,
    LegHungUp,
    OriginateAgent,
    OriginateSubscriber,
    PlaybackFinished,
    PlayPrompt,
    RecordingFailed,
    StartRecording,
    StartTimer,
    StopPlayback,
    StopRecording,
    SubscriberFailed,
    TimerFired,
    TransferAnswered,
    TransferFailed,
    TransferSubscriber,
)
from reffection_ari.lead import Prompt

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def prompt(pid: str) -> Prompt:
    return Prompt(pid, "3", "en", f"verbatim text of {pid}", f"sound:campaign/{pid}")


PROMPTS = FlowPrompts(
    disclosure=prompt("disclosure"),
    question=prompt("question"),
    invalid=prompt("invalid"),
    goodbye=prompt("goodbye"),
    whisper=prompt("whisper"),
    hold=prompt("hold"),
    apology=prompt("apology"),
    thanks=prompt("thanks"),
)


def make_settings(mode: str = "ivr", **overrides: Any) -> FlowSettings:
    kw: dict[str, Any] = {
        "consent_mode": mode,
        "campaign": "spring-sale",
        "advertiser": "Acme Windows",
        "caller_id_presented": "Partner Telecom",
        "prompts": PROMPTS,
        "policy_checks": ({"check": "dnc", "ok": True},),
    }
    kw.update(overrides)
    return FlowSettings(**kw)


@dataclass
class Live:
    legs: set[str] = field(default_factory=set)
    bridge: bool = False
    playbacks: dict[str, str] = field(default_factory=dict)  # playback id -> prompt id
    timers: set[str] = field(default_factory=set)
    recording: str = "none"  # none | on | kept | deleted
    transfer: bool = False


class Sim:
    def __init__(self, mode: str = "ivr", call_id: str = "c1", **overrides: Any) -> None:
        self.settings = make_settings(mode, **overrides)
        self.call = ConsentCall(call_id, self.settings)
        self.now = T0
        self.log: list[Command] = []
        self.live = Live()
        self.finished: list[CallFinished] = []

    # -- driving
    def start(self) -> list[Command]:
        cmds = self.call.start(self.now)
        self._track(cmds)
        return cmds

    def send(self, cls: type[FlowEvent], *, after: float = 0.1, **kw: Any) -> list[Command]:
        self.now += timedelta(seconds=after)
        event = cls(at=self.now, **kw)
        self._observe(event)
        cmds = self.call.handle(event)
        self._track(cmds)
        return cmds

    def pid(self, prompt_id: str) -> str:
        """The live playback id of a prompt."""
        ids = [p for p, q in self.live.playbacks.items() if q == prompt_id]
        assert ids, f"{prompt_id} is not playing: {self.live.playbacks}"
        return ids[-1]

    def finish(self, prompt_id: str, *, ok: bool = True, after: float = 3.0) -> list[Command]:
        return self.send(PlaybackFinished, playback_id=self.pid(prompt_id), ok=ok, after=after)

    def fire(self, name: str) -> list[Command]:
        assert name in self.live.timers, f"timer {name} not running: {self.live.timers}"
        return self.send(TimerFired, name=name, after=1.0)

    def count(self, cls: type[Command]) -> int:
        return sum(isinstance(c, cls) for c in self.log)

    def of(self, cls: type[Command]) -> list[Any]:
        return [c for c in self.log if isinstance(c, cls)]

    # -- the model
    def _observe(self, e: FlowEvent) -> None:
        live = self.live
        if isinstance(e, SubscriberFailed):
            live.legs.discard("subscriber")
        elif isinstance(e, LegHungUp):
            live.legs.discard(e.leg)
        elif isinstance(e, AgentFailed):
            live.legs.discard("agent")
        elif isinstance(e, PlaybackFinished):
            live.playbacks.pop(e.playback_id, None)
        elif isinstance(e, TimerFired):
            live.timers.discard(e.name)
        elif isinstance(e, RecordingFailed) and live.recording == "on":
            live.recording = "none"
        elif isinstance(e, TransferAnswered) and live.transfer:
            live.transfer = False
            live.legs.discard("subscriber")  # handed over to the transfer
        elif isinstance(e, TransferFailed):
            live.transfer = False

    def _track(self, cmds: list[Command]) -> None:
        live = self.live
        for c in cmds:
            # only a confirm's answer may follow the end (the requester still needs one)
            assert not self.finished or isinstance(c, ConfirmAck), f"{c} after CallFinished"
            self.log.append(c)
            if isinstance(c, OriginateSubscriber):
                live.legs.add("subscriber")
            elif isinstance(c, OriginateAgent):
                live.legs.add("agent")
            elif isinstance(c, HangupLeg):
                live.legs.discard(c.leg)
            elif isinstance(c, BridgeLegs):
                live.bridge = True
            elif isinstance(c, DestroyBridge):
                live.bridge = False
            elif isinstance(c, PlayPrompt):
                assert c.playback_id not in live.playbacks
                live.playbacks[c.playback_id] = c.prompt.id
            elif isinstance(c, StopPlayback):
                live.playbacks.pop(c.playback_id, None)
            elif isinstance(c, StartTimer):
                live.timers.add(c.name)
            elif isinstance(c, CancelTimer):
                live.timers.discard(c.name)
            elif isinstance(c, StartRecording):
                live.recording = "on"
            elif isinstance(c, StopRecording):
                live.recording = "kept" if c.keep else "deleted"
            elif isinstance(c, TransferSubscriber):
                live.transfer = True
            elif isinstance(c, CancelTransfer):
                live.transfer = False
            elif isinstance(c, CallFinished):
                self.finished.append(c)

    def check_finished(self) -> CallFinished:
        assert len(self.finished) == 1, self.finished
        assert self.call.finished
        live = self.live
        assert live.legs == set(), live.legs
        assert not live.bridge
        assert live.playbacks == {}, live.playbacks
        assert live.timers == set(), live.timers
        assert not live.transfer
        assert live.recording != "on"
        if self.call.lead_id is None:
            assert live.recording in ("none", "deleted")
        else:
            assert live.recording == "kept"
        tail = [c for c in self.log if not isinstance(c, ConfirmAck)]
        assert isinstance(tail[-1], CallFinished)
        return self.finished[0]


def test_sim_settings_are_valid() -> None:
    s = make_settings()
    assert (s.yes_key, s.no_key, s.optout_key, s.confirm_key) == ("1", "2", "9", "#")
    assert s.first_digit_timeout == 5.0 and s.max_retries == 2
    assert s.agent_ring_timeout == 20.0 and s.wrap_up_seconds == 30.0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"consent_mode": "robot"}, "consent_mode"),
        ({"campaign": ""}, "campaign"),
        ({"yes_key": "11111"}, "yes_key"),
        ({"yes_key": "1x"}, "yes_key"),
        ({"confirm_key": "##"}, "confirm_key"),
        ({"optout_key": "*9"}, "optout_key"),
        ({"yes_key": "91"}, "yes_key"),
        ({"no_key": "29"}, "no_key"),
        ({"yes_key": "*1", "no_key": "*"}, "no_key"),
        ({"inter_digit_timeout": 0}, "inter_digit_timeout"),
        ({"confirm_key": "x"}, "confirm_key"),
        ({"no_key": "1"}, "no_key"),
        ({"first_digit_timeout": 0}, "first_digit_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"transfer_dial_string": ""}, "transfer_dial_string"),
        ({"prompts": FlowPrompts(disclosure=prompt("d"))}, "prompts.question"),
    ],
)
def test_bad_settings_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(**overrides)
    assert info.value.key == key


def test_agent_mode_needs_no_question() -> None:
    s = make_settings("agent", prompts=FlowPrompts(disclosure=prompt("d")))
    assert s.consent_mode == "agent"

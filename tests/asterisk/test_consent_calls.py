"""Consent calls end to end on the real Asterisk with sipp peers: answers, hangups in every phase,
agent failures, API confirms, agent mode and the transfer to the advertiser.

Peer timing (ms after the subscriber's answer): recording starts at once, the disclosure plays for
~1.4 s, the question for ~2.0 s, then the first-digit timer (2 s) runs. A subscriber key at 3000 ms
lands inside the question (barge-in). The agent hears a 0.4 s whisper before the bridge.
The ``dialer`` fixture checks after each test that no channel/bridge and no unexpected lead remain.
"""

from __future__ import annotations

import asyncio
import hashlib
import wave

from reffection_ari.evidence import verify_receipt
from reffection_ari.evidence.receipts import VerificationKey
from reffection_ari.sandbox import Step, dtmf, hangup, pause, speech

from .conftest import AGENT_MODE, IVR, NUMBER, QUICK, TRANSFER, TWO_KEY, Dialer

KEY_AT = 3000  # subscriber keypress, inside the question
# agent keypress (or hangup) after answering: the whisper (~0.4 s) and bridging come first, with room to spare
AGENT_KEY_AT = 3000

def yes() -> tuple[Step, ...]:
    """The subscriber answers, speaks, and presses 1 during the question."""
    return (speech(), pause(KEY_AT), dtmf("1"))


async def test_consent_yes_gives_lead_with_number_and_recording(dialer: Dialer) -> None:
    await dialer.subscriber(*yes())
    await dialer.agent(pause(AGENT_KEY_AT), dtmf("#"), pause(1500), hangup())
    call_id = await dialer.place(dialer.issue())

    stored = await dialer.wait_state(call_id, ["lead_stored"])
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "completed")
    assert dialer.states(call_id)[:2] == ["dialing", "answered"]
    assert {"disclosure", "consent", "agent_dialing", "bridged", "confirmed"} <= set(dialer.states(call_id))
    assert stored["reason"] is None

    lead = await dialer.wait_lead(call_id)
    assert lead["number_e164"] == NUMBER
    assert lead["campaign"] == IVR and lead["advertiser"] == "acme"
    assert lead["consent"]["result"] == "given" and lead["agent"]["confirm_source"] == "dtmf"
    presses = [k for k in lead["keypresses"] if k["leg"] == "subscriber"]
    assert [k["digit"] for k in presses] == ["1"]
    # real timing: sipp sent it ~KEY_AT after its answer; the daemon stamps the answer when Asterisk reports it
    assert KEY_AT - 500 <= presses[0]["offset_ms"] < KEY_AT + 2000
    assert [k["digit"] for k in lead["keypresses"] if k["leg"] == "agent"] == ["#"]
    prompts = {p["id"]: p for p in lead["prompts"]}
    assert {"disclosure", "consent-question", "whisper"} <= set(prompts)
    assert prompts["disclosure"]["completed"] is True and prompts["whisper"]["leg"] == "agent"
    assert prompts["disclosure"]["text_sha256"] == hashlib.sha256(b"Hello world.").hexdigest()

    path = dialer.recording_path(call_id)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == lead["recording"]["sha256"]
    # StopMixMonitor closed the file before it answered: the lead did not wait out a bound
    assert not [t for _, t in dialer.logs.records if "recording end not announced" in t]
    assert lead["recording"]["size_bytes"] == len(data)
    with wave.open(str(path)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert 2.0 < seconds < 30.0
    assert abs(seconds - lead["recording"]["duration_s"]) < 0.01

    view = await dialer.api("GET", f"/v1/calls/{call_id}")
    assert view.status == 200 and view.body["lead_id"] == lead["lead_id"]
    assert view.body["state"] == "ended" and view.body["end_reason"] == "completed"

    # the advertiser can verify the receipt offline against this very recording and number
    signing_key, kid = dialer.keyring.receipt_signing_key()
    claims = verify_receipt(
        lead["receipt"],
        VerificationKey(signing_key.public_key(), kid),
        audience="acme",
        recording_path=path,
        number_e164=NUMBER,
    )
    assert claims["aud"] == "acme"


async def test_two_key_consent_over_rfc4733(dialer: Dialer) -> None:
    """A campaign whose yes is "1#": "1" alone waits for the next key (inter-digit timer), the pair
    gives consent, and both keys are in the lead's timeline."""
    await dialer.subscriber(speech(), pause(KEY_AT), dtmf("1"), pause(400), dtmf("#"))
    await dialer.agent(pause(AGENT_KEY_AT), dtmf("#"), pause(1500), hangup())
    call_id = await dialer.place(dialer.issue(), TWO_KEY)
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "completed")
    lead = await dialer.wait_lead(call_id)
    assert lead["consent"]["result"] == "given"
    presses = [k for k in lead["keypresses"] if k["leg"] == "subscriber"]
    assert [k["digit"] for k in presses] == ["1", "#"]
    assert presses[0]["offset_ms"] < presses[1]["offset_ms"]


async def test_consent_no_gives_no_lead_and_deletes_recording(dialer: Dialer) -> None:
    await dialer.subscriber(speech(), pause(KEY_AT), dtmf("2"))
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["disclosure"])
    assert await dialer.recording_exists(call_id)  # recorded from answer

    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "declined")
    assert "agent_dialing" not in dialer.states(call_id)
    assert await dialer.recording_deleted(call_id)
    view = await dialer.api("GET", f"/v1/calls/{call_id}")
    assert view.body["consent"] == "declined" and view.body["lead_id"] is None


async def test_no_input_reasks_then_ends_without_lead(dialer: Dialer) -> None:
    await dialer.subscriber(speech())
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id, timeout=25)
    assert (end["state"], end["reason"]) == ("ended", "no_input")
    assert await dialer.recording_deleted(call_id)


async def test_subscriber_busy(dialer: Dialer) -> None:
    await dialer.subscriber(answer="busy")
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("failed", "busy")
    assert dialer.states(call_id) == ["dialing", "failed"]


async def test_subscriber_no_answer(dialer: Dialer) -> None:
    sub = await dialer.subscriber(answer="ring")
    call_id = await dialer.place(dialer.issue(), QUICK)
    end = await dialer.wait_end(call_id, timeout=10)
    assert (end["state"], end["reason"]) == ("failed", "no_answer")
    assert await dialer.sip_seen(sub, "CANCEL sip:")


async def test_subscriber_hangs_up_during_disclosure(dialer: Dialer) -> None:
    await dialer.subscriber(pause(1000), hangup())
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("disclosure", "ended", "subscriber_hangup")
    assert await dialer.recording_deleted(call_id)


async def test_subscriber_hangs_up_during_question(dialer: Dialer) -> None:
    await dialer.subscriber(speech(), pause(3000), hangup())
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("consent", "ended", "subscriber_hangup")
    assert await dialer.recording_deleted(call_id)


async def test_subscriber_hangs_up_while_agent_rings(dialer: Dialer) -> None:
    await dialer.subscriber(*yes(), pause(2500), hangup())
    agent = await dialer.agent(answer="ring")
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("agent_dialing", "ended", "subscriber_hangup")
    assert await dialer.sip_seen(agent, "CANCEL sip:")  # the ringing agent leg was withdrawn
    assert await dialer.recording_deleted(call_id)


async def test_subscriber_hangs_up_while_bridged_then_wrap_up_expires(dialer: Dialer) -> None:
    await dialer.subscriber(*yes(), pause(4000), hangup())
    await dialer.agent()
    call_id = await dialer.place(dialer.issue(), QUICK)
    await dialer.wait_state(call_id, ["bridged"])
    await dialer.wait_state(call_id, ["wrap_up"])
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("wrap_up", "ended", "subscriber_hangup")
    assert await dialer.recording_deleted(call_id)


async def test_confirm_during_wrap_up_after_subscriber_left(dialer: Dialer) -> None:
    await dialer.subscriber(*yes(), pause(4000), hangup())
    await dialer.agent()
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["wrap_up"])
    r = await dialer.confirm(call_id, agent_id="agent-7")
    assert r.status == 200 and r.body["lead_id"], r.text
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "completed")
    lead = await dialer.wait_lead(call_id)
    assert lead["lead_id"] == r.body["lead_id"] and lead["agent"]["id"] == "agent-7"
    # the subscriber's hangup ended the recording; the lead hashed the file its thread had closed
    data = dialer.recording_path(call_id).read_bytes()
    assert hashlib.sha256(data).hexdigest() == lead["recording"]["sha256"]
    assert not [t for _, t in dialer.logs.records if "recording end not announced" in t]


async def test_api_hangup_during_question(dialer: Dialer) -> None:
    await dialer.subscriber(speech())
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["consent"])
    r = await dialer.api("POST", f"/v1/calls/{call_id}/hangup")
    assert r.status == 202 and r.body["call_id"] == call_id
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "api_hangup")
    assert await dialer.recording_deleted(call_id)


async def test_agent_does_not_answer(dialer: Dialer) -> None:
    await dialer.subscriber(*yes())
    agent = await dialer.agent(answer="ring")
    call_id = await dialer.place(dialer.issue(), QUICK)
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "agent_unavailable")
    assert "closing" in dialer.states(call_id)  # the subscriber heard the apology
    assert await dialer.sip_seen(agent, "CANCEL sip:")


async def test_agent_hangs_up_before_confirm(dialer: Dialer) -> None:
    await dialer.subscriber(*yes())
    await dialer.agent(pause(AGENT_KEY_AT), hangup())
    call_id = await dialer.place(dialer.issue())
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("bridged", "ended", "agent_hangup")
    r = await dialer.confirm(call_id)
    assert (r.status, r.code) == (409, "call_ended")
    assert await dialer.recording_deleted(call_id)


async def test_api_confirm_without_consent_is_409(dialer: Dialer) -> None:
    await dialer.subscriber(speech(), pause(KEY_AT), dtmf("2"))
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["consent"])
    r = await dialer.confirm(call_id)
    assert (r.status, r.code) == (409, "not_consented"), r.text
    end = await dialer.wait_end(call_id)
    assert end["reason"] == "declined"


async def test_double_confirm_gives_one_lead(dialer: Dialer) -> None:
    await dialer.subscriber(*yes())
    await dialer.agent()
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["bridged"])
    channels, bridges = await dialer.leftovers()  # the teardown's leak detector sees a live call
    assert {f"{call_id}-s", f"{call_id}-a"} <= set(channels) and bridges == [f"{call_id}-b"]
    first, second = await asyncio.gather(dialer.confirm(call_id), dialer.confirm(call_id))
    third = await dialer.confirm(call_id)
    assert [r.status for r in (first, second, third)] == [200, 200, 200], [first.text, second.text, third.text]
    lead_ids = {r.body["lead_id"] for r in (first, second, third)}
    assert len(lead_ids) == 1
    assert third.body["repeated"] is True
    hung = await dialer.api("POST", f"/v1/calls/{call_id}/hangup")
    assert hung.status == 202
    end = await dialer.wait_end(call_id)
    assert end["state"] == "ended"
    lead = await dialer.wait_lead(call_id)
    assert lead["lead_id"] in lead_ids
    assert [x["call_id"] for x in dialer.leads()] == [call_id]
    assert await dialer.metric("reffection_leads_total") == 1


async def test_confirm_repeated_as_the_call_ends_still_names_the_lead(dialer: Dialer) -> None:
    """A platform retrying its confirm while the call is being torn down must not be told 409
    ``call_ended`` about a lead that exists."""
    await dialer.subscriber(*yes())
    await dialer.agent()
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["bridged"])
    first = await dialer.confirm(call_id)
    assert first.status == 200, first.text
    assert (await dialer.api("POST", f"/v1/calls/{call_id}/hangup")).status == 202
    retry = await dialer.confirm(call_id)  # at once: the daemon is releasing the call
    assert (retry.status, retry.code) == (200, None), retry.text
    assert retry.body["lead_id"] == first.body["lead_id"] and retry.body["repeated"] is True
    end = await dialer.wait_end(call_id)
    assert end["reason"] == "api_hangup"
    late = await dialer.confirm(call_id)
    assert late.status == 200 and late.body["lead_id"] == first.body["lead_id"], late.text
    await dialer.wait_lead(call_id)


async def test_agent_mode_consent_by_keypress_during_bridge(dialer: Dialer) -> None:
    # agent mode: disclosure (~1.4 s) -> agent answers -> whisper (~0.4 s) -> bridged at ~2 s
    await dialer.subscriber(speech(), pause(6500), dtmf("1"))
    await dialer.agent()
    call_id = await dialer.place(dialer.issue(), AGENT_MODE)
    await dialer.wait_state(call_id, ["bridged"])
    assert "consent" not in dialer.states(call_id)  # no IVR question in agent mode
    early = await dialer.confirm(call_id)
    assert (early.status, early.code) == (409, "not_consented")  # the agent asked; no key yet

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (await dialer.api("GET", f"/v1/calls/{call_id}")).body["consent"] != "given":
        assert loop.time() < deadline, "the subscriber's keypress never counted as consent"
        await asyncio.sleep(0.1)  # polling the call's view with a deadline
    r = await dialer.confirm(call_id, agent_id="agent-1")
    assert r.status == 200 and r.body["lead_id"], r.text
    await dialer.api("POST", f"/v1/calls/{call_id}/hangup")
    await dialer.wait_end(call_id)
    lead = await dialer.wait_lead(call_id)
    assert lead["consent"]["mode"] == "agent" and lead["consent"]["result"] == "given"
    assert lead["number_e164"] == NUMBER and lead["agent"]["confirm_source"] == "api"


async def test_transfer_to_advertiser_after_confirm(dialer: Dialer) -> None:
    sub = await dialer.subscriber(*yes())
    agent = await dialer.agent(pause(AGENT_KEY_AT), dtmf("#"))
    advertiser = await dialer.advertiser(pause(3000), hangup())
    call_id = await dialer.place(dialer.issue(), TRANSFER)
    end = await dialer.wait_end(call_id)
    assert (end["old_state"], end["state"], end["reason"]) == ("transferring", "transferred", "completed")
    lead = await dialer.wait_lead(call_id)
    assert lead["number_e164"] == NUMBER
    # the advertiser hangs up; the handed-over subscriber leg must follow
    assert await advertiser.wait(10) == 0
    assert await sub.wait(10) == 0
    assert await agent.wait(10) == 0
    assert "INVITE sip:" in advertiser.messages()

"""The call service against the fake ARI server, a fake AMI and a fake partner.

Each test drives the call the way Asterisk would: the service originates ``<call>-s``, the test
answers it (StasisStart), finishes exactly the playbacks the service asked for (ids read from the
fake's recorded REST calls), presses digits, answers ``<call>-a``, hangs legs up... Every wait is
an awaited condition with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path

import pytest

from reffection_ari.errors import CallError, PolicyRefusal, TokenError
from reffection_ari.lead import ConsentResult
from reffection_ari.service import EVENT_FILTER, PlatformEvent
from tests.leakguard import _leakguard  # noqa: F401  (autouse: no test number in any log record)
from tests.unit._svc_harness import (
    DIAL_STRING,
    KEY_A,
    TOKEN_A,
    WAIT,
    Harness,
    SvcFakeAri,
    bearer,
    contains_number,
    harness,
    refuse,
)


def drain(queue: asyncio.Queue[PlatformEvent]) -> list[PlatformEvent]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def assert_number_only_in_originate_endpoint(h: Harness, originates: int) -> None:
    """The dialled number reaches Asterisk once per subscriber originate, in ``endpoint`` only."""
    hits = [(r, text) for r, text in h.requests_text() if contains_number(text)]
    assert len(hits) == originates
    for r, _text in hits:
        assert (r.method, r.path) == ("POST", "/ari/channels")
        assert r.query["channelId"].endswith("-s")
        assert r.query["endpoint"] == DIAL_STRING
        others = {k: v for k, v in r.query.items() if k != "endpoint"}
        assert not contains_number(json.dumps([others, r.body]))
    for action in h.ami.actions:
        assert not contains_number(json.dumps(action))


def assert_released(h: Harness) -> None:
    assert h.partner.leases and all(lease.released == 1 for lease in h.partner.leases)


# ---- happy path --------------------------------------------------------------------------------------
async def test_happy_path_confirm_via_api_stores_one_lead(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with harness(tmp_path, api=True) as h:
        events = h.service.events("platform-a")
        resp = await h.api.post("/v1/calls", json={"token": TOKEN_A, "campaign": "acme-winter"},
                                headers=bearer(KEY_A))  # fmt: skip
        assert resp.status == 202
        call_id = (await resp.json())["call_id"]
        sub, agent = f"{call_id}-s", f"{call_id}-a"

        await h.to_bridged(call_id)
        # the recording started on the subscriber channel's *name*, before the first prompt
        mix = h.ami.actions[0]
        assert mix["Action"] == "MixMonitor" and mix["Channel"] == h.fake.channels[sub]["name"]
        assert mix["File"].endswith(f"/{call_id}.wav")
        first_play = next(i for i, r in enumerate(h.fake.requests) if "/play/" in r.path)
        assert first_play > next(i for i, r in enumerate(h.fake.requests) if r.query.get("channelId") == sub)
        # the agent leg carries a masked label, never the number
        agent_req = await h.originated(agent)
        assert agent_req.query["endpoint"] == "PJSIP/agent-1"
        assert call_id in agent_req.query["callerId"]
        assert h.service.get(call_id, "platform-a").state == "bridged"

        resp = await h.api.post(f"/v1/calls/{call_id}/confirm", json={"agent_id": "agent-7"},
                                headers=bearer(KEY_A))  # fmt: skip
        assert resp.status == 200
        body = await resp.json()
        assert body == {"call_id": call_id, "confirmed": True, "lead_id": f"lead_{call_id}", "repeated": False}
        assert len(h.partner.leads) == 1
        lead = h.partner.leads[0]
        assert lead.evidence.consent is ConsentResult.GIVEN and lead.evidence.agent_id == "agent-7"
        assert lead.evidence.confirm_source == "api"
        assert [k.digit for k in lead.evidence.keypresses] == ["1"]
        rec_file = h.host_dir / f"{call_id}.wav"
        assert lead.recording is not None
        assert lead.recording.sha256 == hashlib.sha256(rec_file.read_bytes()).hexdigest()
        assert h.ami.actions[-1] == {"Action": "StopMixMonitor", "Channel": mix["Channel"]}

        again = await h.api.post(f"/v1/calls/{call_id}/confirm", headers=bearer(KEY_A))
        assert (await again.json())["repeated"] is True and len(h.partner.leads) == 1

        await h.fake.gone(sub, 16)  # the subscriber hangs up
        view = await h.finished(call_id)
        assert (view.state, view.end_reason, view.lead_id) == ("ended", "completed", f"lead_{call_id}")
        await h.fake.wait_request(lambda r: r.method == "DELETE" and r.path == f"/ari/channels/{agent}")
        assert any(r.method == "DELETE" and r.path == f"/ari/bridges/{call_id}-b" for r in h.fake.requests)
        assert not h.fake.channels and not h.fake.bridges
        assert rec_file.exists() and h.partner.deleted == []
        assert h.partner.outcomes == [("acme-winter", "completed")]
        assert_released(h)
        states = [e.state for e in drain(events)]
        assert states == ["dialing", "answered", "disclosure", "consent", "agent_dialing", "whisper",
                          "bridged", "confirmed", "lead_stored", "ended"]  # fmt: skip
        assert h.service.metrics.leads == 1
        assert_number_only_in_originate_endpoint(h, originates=1)
    messages = [r.getMessage() for r in caplog.records]
    assert any(call_id in m and "call placed" in m for m in messages)
    assert not any(contains_number(m) for m in messages)
    # StopMixMonitor closed the file: the lead did not wait for an end announced only at hangup
    assert not any("recording end not announced" in m for m in messages)


@pytest.mark.parametrize(("digit", "reason", "opt_outs"), [("2", "declined", 0), ("9", "opted_out", 1)])
async def test_refusal_ends_after_goodbye_and_deletes_the_recording(
    tmp_path: Path, digit: str, reason: str, opt_outs: int
) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.to_consent_question(call_id)
        await h.fake.press(sub, digit)
        await h.finish(await h.play(sub, 3))  # goodbye
        view = await h.finished(call_id)
        assert (view.state, view.end_reason, view.consent) == ("ended", reason, reason)
        assert len(h.partner.opt_outs) == opt_outs
        assert not (h.host_dir / f"{call_id}.wav").exists()
        assert h.partner.deleted == [(call_id, "no_consented_lead")]
        assert h.partner.leads == [] and h.partner.outcomes == [("acme-winter", reason)]
        assert not h.fake.channels
        assert_released(h)
        assert_number_only_in_originate_endpoint(h, originates=1)


# ---- failures before answer --------------------------------------------------------------------------
async def test_originate_error_fails_the_call_and_releases_the_lease(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        h.fake.fail("POST", "/ari/channels", 500, "Allocation failed")
        call_id = await h.place()
        view = await h.finished(call_id)
        assert (view.state, view.end_reason) == ("failed", "error")
        assert_released(h)
        assert h.partner.outcomes == [("acme-winter", "error")]
        assert h.ami.actions == [] and not h.fake.channels
        assert h.service.active_calls == 0
        assert_number_only_in_originate_endpoint(h, originates=1)


@pytest.mark.parametrize(("cause", "reason"), [(17, "busy"), (19, "no_answer"), (34, "congestion")])
async def test_destroyed_before_answer_fails_with_the_cause(tmp_path: Path, cause: int, reason: str) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.originated(sub)
        await h.fake.gone(sub, cause)
        view = await h.finished(call_id)
        assert (view.state, view.end_reason) == ("failed", reason)
        assert h.ami.actions == []  # never recorded: never answered
        assert not any(r.method == "DELETE" and r.path == f"/ari/channels/{sub}" for r in h.fake.requests)
        assert_released(h)
        assert h.partner.outcomes == [("acme-winter", reason)]
        assert_number_only_in_originate_endpoint(h, originates=1)


@pytest.mark.parametrize("code", ["bad_token", "dnc"])
async def test_refused_before_dialing_creates_no_channel(tmp_path: Path, code: str) -> None:
    async with harness(tmp_path) as h:
        refuse(h.partner, TOKEN_A, code)
        with pytest.raises((TokenError, PolicyRefusal)) as info:
            await h.place()
        assert info.value.code == code
        assert h.fake.requests_to("POST", "/ari/channels") == []
        assert h.service.metrics.calls_refused[code] == 1 and h.service.active_calls == 0


async def test_unknown_or_foreign_campaign_is_refused(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        for campaign in ("nope", "beta-spring"):  # beta-spring belongs to platform-b
            with pytest.raises(CallError) as info:
                await h.place(campaign=campaign)
            assert info.value.code == "unknown_campaign"
        assert h.partner.prepared == []


# ---- connection loss ---------------------------------------------------------------------------------
async def test_ws_drop_with_subscriber_gone_in_resync_ends_the_call(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.answer_subscriber(call_id)
        disclosure = await h.play(sub, 1)
        lists_before = len(h.fake.requests_to("GET", "/ari/channels"))
        h.fake.vanish(sub)  # the subscriber hangs up while the socket is down: no event reaches us
        await h.fake.drop()
        view = await h.finished(call_id)
        assert (view.state, view.end_reason) == ("ended", "subscriber_hangup")
        assert h.ari.reconnects == 1 and h.service.metrics.ari_reconnects == 1
        assert h.service.ari_connected
        assert len(h.fake.requests_to("GET", "/ari/channels")) == lists_before + 1  # the resync
        # teardown: the playback is stopped, the gone leg is not hung up again, the recording goes
        assert h.fake.requests_to("DELETE", f"/ari/playbacks/{disclosure}")
        assert not h.fake.requests_to("DELETE", f"/ari/channels/{sub}")
        assert not (h.host_dir / f"{call_id}.wav").exists()
        assert h.partner.deleted == [(call_id, "no_consented_lead")]
        assert h.partner.outcomes == [("acme-winter", "subscriber_hangup")]
        assert_released(h)
        assert_number_only_in_originate_endpoint(h, originates=1)


async def test_ws_drop_with_subscriber_still_up_keeps_the_call(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.answer_subscriber(call_id)
        disclosure = await h.play(sub, 1)
        lists_before = len(h.fake.requests_to("GET", "/ari/channels"))
        await h.fake.drop()
        await h.fake.wait_ws(2)
        await h.fake.wait_request(
            lambda r: r.path == "/ari/channels" and len(h.fake.requests_to("GET", "/ari/channels")) > lists_before
        )
        # events of the new socket still drive the call: the disclosure ends, the question plays
        await h.finish(disclosure)
        await h.play(sub, 2)
        assert h.service.get(call_id, None).state == "consent"
        await h.fake.gone(sub)
        assert (await h.finished(call_id)).end_reason == "subscriber_hangup"


# ---- platform operations -----------------------------------------------------------------------------
async def test_hangup_via_api_ends_with_api_hangup(tmp_path: Path) -> None:
    async with harness(tmp_path, api=True) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.to_consent_question(call_id)
        resp = await h.api.post(f"/v1/calls/{call_id}/hangup", headers=bearer(KEY_A))
        assert resp.status == 202
        view = await h.finished(call_id)
        assert (view.state, view.end_reason) == ("ended", "api_hangup")
        delete = await h.fake.wait_request(lambda r: r.method == "DELETE" and r.path == f"/ari/channels/{sub}")
        assert delete.query == {"reason": "normal"}
        assert not h.fake.channels
        assert not (h.host_dir / f"{call_id}.wav").exists()
        assert_released(h)
        got = await h.api.get(f"/v1/calls/{call_id}", headers=bearer(KEY_A))
        assert (await got.json())["end_reason"] == "api_hangup"
        assert_number_only_in_originate_endpoint(h, originates=1)


async def test_hangup_while_ringing_hangs_up_the_ringing_leg(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        await h.originated(f"{call_id}-s")
        await h.service.hangup(call_id, "platform-a")
        view = await h.finished(call_id)
        assert view.end_reason == "api_hangup" and view.state in {"ended", "failed"}
        assert h.fake.requests_to("DELETE", f"/ari/channels/{call_id}-s")
        assert not h.fake.channels and h.ami.actions == []
        assert_released(h)


async def test_shutdown_ends_every_active_call(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        answered = await h.place()
        await h.to_consent_question(answered)
        ringing = await h.place()
        await h.originated(f"{ringing}-s")
        assert h.service.active_calls == 2
        loop = asyncio.get_running_loop()
        started = loop.time()
        await h.service.shutdown(WAIT)
        assert loop.time() - started < WAIT  # ended cleanly, not by the grace timeout
        assert h.service.active_calls == 0
        for call_id in (answered, ringing):
            view = h.service.get(call_id, None)
            assert view.end_reason == "shutdown" and view.state in {"ended", "failed"}
        assert not h.fake.channels  # both legs hung up
        assert not (h.host_dir / f"{answered}.wav").exists()
        assert len(h.partner.leases) == 2
        assert_released(h)
        with pytest.raises(CallError) as info:
            await h.place()
        assert info.value.code == "shutting_down"
        assert_number_only_in_originate_endpoint(h, originates=2)


async def test_confirm_before_consent_is_refused_and_makes_no_lead(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        await h.to_consent_question(call_id)
        result = await h.service.confirm(call_id, "platform-a", timeout=WAIT)
        assert (result.ok, result.code, result.lead_id) == (False, "not_consented", None)
        assert h.partner.leads == []
        assert h.service.metrics.confirms_rejected["not_consented"] == 1


async def test_lead_store_failure_is_reported_and_the_confirm_can_be_retried(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        await h.to_bridged(call_id)
        h.partner.lead_error = RuntimeError("disk full")
        first = await h.service.confirm(call_id, "platform-a", timeout=WAIT)
        assert (first.ok, first.code) == (False, "lead_store_failed")
        assert h.service.get(call_id, None).state == "bridged"
        h.partner.lead_error = None
        second = await h.service.confirm(call_id, "platform-a", timeout=WAIT)
        assert second.ok and second.lead_id == f"lead_{call_id}"
        assert len(h.partner.leads) == 1


async def test_calls_of_one_audience_are_invisible_to_another(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        call_id = await h.place()
        for cid, audience in ((call_id, "platform-b"), ("c" + "0" * 20, "platform-a")):
            with pytest.raises(CallError) as info:
                h.service.get(cid, audience)
            assert info.value.code == "unknown_call"
        with pytest.raises(CallError):
            await h.service.hangup(call_id, "platform-b")
        with pytest.raises(CallError):
            await h.service.confirm(call_id, "platform-b")
        assert h.service.get(call_id, "platform-a").call_id == call_id


async def test_a_pending_lead_outlives_the_hangup_and_is_acknowledged(tmp_path: Path) -> None:
    """No confirmed lead lost: the call cannot finish while the sink still holds the lead."""
    async with harness(tmp_path) as h:
        call_id = await h.place()
        await h.to_bridged(call_id)
        h.partner.lead_gate = asyncio.Event()
        confirm = asyncio.create_task(h.service.confirm(call_id, "platform-a", timeout=WAIT))
        async with asyncio.timeout(WAIT):
            await h.partner.lead_started.wait()
        await h.fake.gone(f"{call_id}-s")  # the subscriber hangs up while the sink works
        assert h.service.active_calls == 1 and not confirm.done()
        h.partner.lead_gate.set()
        result = await confirm
        assert result.ok and result.lead_id == f"lead_{call_id}"
        view = await h.finished(call_id)
        assert (view.end_reason, view.lead_id) == ("completed", f"lead_{call_id}")
        assert h.fake.requests_to("DELETE", f"/ari/channels/{call_id}-a")  # the agent leg released
        assert not h.fake.channels
        assert (h.host_dir / f"{call_id}.wav").exists() and h.partner.deleted == []
        assert_released(h)


async def test_a_lead_in_wrap_up_hashes_the_recording_the_thread_completed(tmp_path: Path) -> None:
    """After the subscriber hung up, Asterisk's recording thread closes the file, possibly a while
    later; on a build that announces the end (the fake's /asterisk/info says TEST_FRAMEWORK, as
    Debian's) the lead waits for it, even on the service's first call."""
    async with harness(tmp_path) as h:
        h.ami.close_after_hangup = 1.0  # twice the bound used when the build announces nothing
        events = h.service.events("platform-a")
        call_id = await h.place()
        await h.to_bridged(call_id)
        await h.fake.gone(f"{call_id}-s")
        async with asyncio.timeout(WAIT):
            while (await events.get()).state != "wrap_up":
                pass
        result = await h.service.confirm(call_id, "platform-a", timeout=WAIT)
        assert result.ok
        rec = h.partner.leads[0].recording
        assert rec is not None
        assert rec.sha256 == hashlib.sha256((h.host_dir / f"{call_id}.wav").read_bytes()).hexdigest()
        assert rec.duration_s == 0.2  # 0.1 s at MixMonitor start + 0.1 s written when the file was closed
        await h.finished(call_id)


async def test_place_call_while_asterisk_is_unreachable(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        life = h.ari.subscribe(types={"ClientDisconnected", "ClientReconnected"})
        h.fake.ws_status = 503  # Asterisk refuses the socket for now
        await h.fake.drop()
        await life.get(timeout=WAIT)
        with pytest.raises(CallError) as info:
            await h.place()
        assert info.value.code == "asterisk_unavailable"
        assert h.partner.prepared == []
        h.fake.ws_status = None
        await life.get(timeout=WAIT)
        assert h.service.ari_connected
        assert h.fake.app_filter("reffection-node1") == set(EVENT_FILTER)  # re-applied after reconnect
        call_id = await h.place()
        await h.originated(f"{call_id}-s")
        life.close()


async def test_start_ends_calls_left_behind_by_a_previous_run(tmp_path: Path) -> None:
    leftover = "c" + "1" * 20

    def preload(fake: SvcFakeAri) -> None:
        fake._new_channel(f"{leftover}-s", "PJSIP/partner-trunk", "reffection-node1")
        fake._new_channel("someone-elses", "PJSIP/other", "other-app")

    async with harness(tmp_path, preload=preload) as h:
        assert h.orphans == [leftover]
        assert h.fake.requests_to("DELETE", f"/ari/channels/{leftover}-s")
        assert list(h.fake.channels) == ["someone-elses"]


async def test_answer_lost_during_a_disconnect_does_not_leave_the_call_silent(tmp_path: Path) -> None:
    """The subscriber answers while the event socket is down (Asterisk drops the StasisStart).
    After the reconnect the channel list shows the leg up and in the app: the service must act on
    it (go on with the disclosure, or end the call), not wait in DIALING until max_call."""
    async with harness(tmp_path) as h:
        call_id = await h.place()
        sub = f"{call_id}-s"
        await h.originated(sub)
        ch = h.fake.channels[sub]
        ch["state"] = "Up"  # answered; its StasisStart is lost with the socket
        ch["dialplan"]["app_data"] = ",".join(["reffection-node1", *h.fake.app_args[sub]])
        life = h.ari.subscribe(types={"ClientReconnected"})
        await h.fake.drop()
        await life.get(timeout=WAIT)
        life.close()
        acted = asyncio.create_task(h.fake.wait_request(lambda r: r.path.startswith(f"/ari/channels/{sub}/")))
        ended = asyncio.create_task(h.finished(call_id))
        done, pending = await asyncio.wait({acted, ended}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert done, f"call stuck in {h.service.get(call_id, None).state!r} with an answered subscriber"

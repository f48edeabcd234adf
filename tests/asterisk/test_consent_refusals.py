"""Refusals before dialing on the real Asterisk: bad tokens and DNC create no channel.

"No channel" is shown three ways: the API answered 4xx with the reason code, no call was started
(``reffection_calls_started_total``) and no channel of the test exists in Asterisk. "No INVITE"
is shown with a positive control: after the refusals, one valid call reaches the same sipp peer,
whose trace must then hold exactly one INVITE -- the control's.
"""

from __future__ import annotations

from reffection_ari.sandbox import dtmf, pause, speech

from .conftest import IVR, KEY_B, NUMBER, QUICK, Dialer

MISTAKE = "020 7946 0999"  # a platform bug: a phone number sent as the token


def tamper(token: str) -> str:
    """Flip the last character inside the token alphabet: well-formed, no longer authentic."""
    last = token[-1]
    return token[:-1] + ("0" if last != "0" else "1")


async def assert_nothing_dialed(dialer: Dialer) -> None:
    assert await dialer.metric("reffection_calls_started_total") == 0
    channels, bridges = await dialer.leftovers()
    assert (channels, bridges) == ([], [])


async def test_bad_tokens_are_refused_without_a_channel(dialer: Dialer) -> None:
    sub = await dialer.subscriber(answer="busy")
    good = dialer.issue()
    cases = {
        "bad_token": tamper(good),
        "expired_token": dialer.issue("+442079460124", days_ago=30),
        "wrong_audience": dialer.issue("+442079460125", audience="platform-b"),
        "malformed_token": MISTAKE,  # a number where a token belongs
    }
    for code, token in cases.items():
        r = await dialer.api("POST", "/v1/calls", {"token": token, "campaign": IVR})
        assert (r.status, r.code) == (400 if code == "malformed_token" else 422, code), r.text
        assert "call_id" not in r.body
    # platform-b's key cannot use platform-a's campaign, even with its own valid token
    r = await dialer.api("POST", "/v1/calls", {"token": cases["wrong_audience"], "campaign": IVR}, key=KEY_B)
    assert (r.status, r.code) == (422, "unknown_campaign"), r.text
    r = await dialer.api("POST", "/v1/calls", {"token": good, "campaign": IVR}, key="not-a-key-000000000000000")
    assert (r.status, r.code) == (401, "unauthorized")
    assert await dialer.metric("reffection_calls_refused_total") >= 3
    await assert_nothing_dialed(dialer)
    assert "INVITE" not in sub.messages()
    assert not [r.text for r in dialer.api_responses if "7946 0999" in r.text or "79460999" in r.text]
    assert not [name for name, text in dialer.logs.records if "7946 0999" in text or "79460999" in text]

    control = await dialer.place(good)  # the same peer does receive a valid call
    end = await dialer.wait_end(control)
    assert (end["state"], end["reason"]) == ("failed", "busy")
    assert sub.messages().count("INVITE sip:") == 1


async def test_opt_out_puts_subscriber_on_dnc_and_refuses_the_next_call(dialer: Dialer) -> None:
    await dialer.subscriber(speech(), pause(3000), dtmf("9"))
    token = dialer.issue()
    call_id = await dialer.place(token)
    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "opted_out")
    assert await dialer.wait_no_leftovers() == ([], [])  # the ended call's legs are gone
    assert await dialer.metric('reffection_dnc_changes_total{source="dtmf_opt_out"}') == 1
    assert await dialer.recording_deleted(call_id)
    assert dialer.tokens.resolve(token, "platform-a").dnc

    started = await dialer.metric("reffection_calls_started_total")
    again = await dialer.api("POST", "/v1/calls", {"token": token, "campaign": IVR})
    assert (again.status, again.code) == (403, "dnc"), again.text
    assert await dialer.metric("reffection_calls_started_total") == started
    assert await dialer.leftovers() == ([], [])
    # the token still names the subscriber: only calling is refused
    assert dialer.tokens.resolve(token, "platform-a").number.e164 == NUMBER


async def test_busy_subscriber_and_full_campaign_are_refused_without_a_channel(dialer: Dialer) -> None:
    sub = await dialer.subscriber(answer="ring")
    token = dialer.issue()
    first = await dialer.place(token, QUICK)  # max_concurrent: 1
    await dialer.wait_state(first, ["dialing"])

    same = await dialer.api("POST", "/v1/calls", {"token": token, "campaign": QUICK})
    assert (same.status, same.code) == (409, "call_in_progress"), same.text
    other = await dialer.api("POST", "/v1/calls", {"token": dialer.issue("+442079460124"), "campaign": QUICK})
    assert (other.status, other.code) == (429, "concurrency_limit"), other.text
    assert await dialer.metric("reffection_calls_started_total") == 1
    channels, bridges = await dialer.leftovers()
    assert (channels, bridges) == ([f"{first}-s"], [])

    assert (await dialer.api("POST", f"/v1/calls/{first}/hangup")).status == 202
    end = await dialer.wait_end(first)
    assert end["reason"] == "api_hangup"
    assert await dialer.wait_no_leftovers() == ([], [])
    assert await dialer.sip_seen(sub, "CANCEL sip:")  # withdrawn (PJSIP sends it from its own thread)
    assert sub.messages().count("INVITE sip:") == 1

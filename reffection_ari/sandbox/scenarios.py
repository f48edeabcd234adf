"""sipp UAS scenarios built from a short, readable script instead of hand-edited XML.

``uas(answer="answer", steps=[speech(), pause(3000), dtmf("1")])`` answers the INVITE, streams
7 s of recorded speech, waits 3 s, presses 1 (RFC 4733), then waits for the BYE. A step list
ending in :func:`hangup` sends the BYE itself. ``answer="busy"`` rejects with 486;
``answer="ring"`` rings until the caller gives up (CANCEL).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

SIPP_SHARE = "/usr/share/sip-tester"
_DTMF_FILES = {**{d: f"dtmf_2833_{d}.pcap" for d in "0123456789"}, "#": "dtmf_2833_pound.pcap",
               "*": "dtmf_2833_star.pcap"}  # fmt: skip
#: The captures' RTP sequence numbers rise in this order. sipp replays them verbatim (same SSRC),
#: so a key whose capture numbers lie below the previous key's is dropped by Asterisk as a late
#: packet: within one call, keys must follow this order (e.g. "1" then "#", not "#" then "1").
_DTMF_SEQ_ORDER = "123456789*#0"


@dataclass(frozen=True, slots=True)
class Step:
    kind: Literal["speech", "pause", "dtmf", "hangup"]
    value: str = ""


def speech() -> Step:
    """Stream 7 s of PCMA speech (non-blocking; a later DTMF step replaces it)."""
    return Step("speech")


def pause(ms: int) -> Step:
    return Step("pause", str(int(ms)))


def dtmf(digit: str) -> Step:
    if digit not in _DTMF_FILES:
        raise ValueError(f"no RFC 4733 capture for digit {digit!r}")
    return Step("dtmf", digit)


def hangup() -> Step:
    return Step("hangup")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    xml: str


_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""

_INVITE = """  <recv request="INVITE" crlf="true"/>
"""

# sipp refuses a scenario with a variable set but never used: capture only when we send a BYE.
_INVITE_CAPTURE = """  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>
    </action>
  </recv>
"""

_RESPONSE = """  <send{retrans}>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:peer@[local_ip]:[local_port];transport=[transport]>
{extra}      Content-Length: {length}
{body}
    ]]>
  </send>
"""

_SDP = """
      v=0
      o=peer 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv
"""

_PLAY = """  <nop>
    <action>
      <exec play_pcap_audio="{path}"/>
    </action>
  </nop>
"""

_BYE_OUT = """  <send retrans="500">
    <![CDATA[

      BYE [$remote_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:peer@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$remote_from]
      [last_Call-ID:]
      CSeq: 1 BYE
      Contact: <sip:peer@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <timewait milliseconds="500"/>
</scenario>
"""

_BYE_IN = """  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="1000"/>
</scenario>
"""


def _response(status: str, *, sdp: bool = False, retrans: bool = False) -> str:
    return _RESPONSE.format(
        status=status,
        retrans=' retrans="500"' if retrans else "",
        extra="      Content-Type: application/sdp\n" if sdp else "",
        length="[len]" if sdp else "0",
        body=_SDP if sdp else "",
    )


def uas(
    name: str,
    *,
    answer: Literal["answer", "busy", "ring"] = "answer",
    ring_ms: int = 0,
    steps: tuple[Step, ...] | list[Step] = (),
) -> Scenario:
    """Build a UAS scenario; ``ring_ms`` of 180 Ringing precede the answer."""
    sends_bye = any(step.kind == "hangup" for step in steps) and answer == "answer"
    xml = _HEAD.format(name=name) + (_INVITE_CAPTURE if sends_bye else _INVITE) + _response("100 Trying")
    if answer == "busy":
        xml += _response("486 Busy Here") + '  <recv request="ACK"/>\n  <timewait milliseconds="500"/>\n</scenario>\n'
        return Scenario(name, xml)
    xml += _response("180 Ringing")
    if answer == "ring":
        xml += '  <recv request="CANCEL"/>\n' + _response("200 OK")
        xml += _response("487 Request Terminated") + '  <recv request="ACK"/>\n'
        xml += '  <timewait milliseconds="500"/>\n</scenario>\n'
        return Scenario(name, xml)
    if ring_ms:
        xml += f'  <pause milliseconds="{ring_ms}"/>\n'
    xml += _response("200 OK", sdp=True, retrans=True)
    xml += '  <recv request="ACK" rtd="true" crlf="true"/>\n'
    keys = [step.value for step in steps if step.kind == "dtmf"]
    for before, after in pairwise(keys):
        if _DTMF_SEQ_ORDER.index(after) <= _DTMF_SEQ_ORDER.index(before):
            raise ValueError(
                f"key {after!r} after {before!r}: its RTP capture would look late to Asterisk;"
                f" keys of one call must follow the order {_DTMF_SEQ_ORDER}"
            )
    for step in steps:
        if step.kind == "speech":
            xml += _PLAY.format(path=f"{SIPP_SHARE}/g711a.pcap")
        elif step.kind == "pause":
            xml += f'  <pause milliseconds="{step.value}"/>\n'
        elif step.kind == "dtmf":
            xml += _PLAY.format(path=f"{SIPP_SHARE}/{_DTMF_FILES[step.value]}")
        elif step.kind == "hangup":
            return Scenario(name, xml + _BYE_OUT)
    return Scenario(name, xml + _BYE_IN)

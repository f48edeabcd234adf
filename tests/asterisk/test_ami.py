"""AMI against the real sandbox: login, MixMonitor on a live channel, errors, no lost events."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from reffection_ari.ami import AmiClient, AmiConfig, AmiError
from reffection_ari.sandbox import Sandbox


def _config(sandbox: Sandbox) -> AmiConfig:
    return AmiConfig(
        host=sandbox.ami_host, port=sandbox.ami_port, username=sandbox.ami_user, secret=sandbox.ami_secret
    )


class EventLog:
    """Collects AMI events and lets a test await one matching a predicate."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []
        self._changed = asyncio.Condition()

    def __call__(self, headers: dict[str, str]) -> None:
        self.events.append(headers)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, pred: object, timeout: float = 10.0) -> dict[str, str]:
        assert callable(pred)

        async def _wait() -> dict[str, str]:
            async with self._changed:
                while True:
                    for ev in self.events:
                        if pred(ev):
                            return ev
                    await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)


async def _originate_local(sandbox: Sandbox, events: EventLog, hold: int = 3) -> tuple[str, str]:
    """Start a Local channel from the CLI (the daemon's AMI user may not originate) and return
    its ``;1`` half's (uniqueid, name) as AMI reports it."""
    tag = uuid.uuid4().hex[:8]
    seen = {e.get("Uniqueid") for e in events.events}
    await asyncio.to_thread(
        sandbox.cli, f"channel originate Local/s{tag}@subscriber application Wait {hold}"
    )
    new = await events.wait_for(
        lambda e: e.get("Event") == "Newchannel"
        and e.get("Channel", "").startswith(f"Local/s{tag}@subscriber")
        and e.get("Channel", "").endswith(";1")
        and e.get("Uniqueid") not in seen
    )
    return new["Uniqueid"], new["Channel"]


async def test_login_and_bad_action(sandbox: Sandbox) -> None:
    ami = AmiClient(_config(sandbox))
    await ami.connect()
    try:
        assert ami.connected
        pong = await ami.action({"Action": "Ping"})
        assert pong["Response"] == "Success"
        with pytest.raises(AmiError) as err:
            await ami.stop_mix_monitor("PJSIP/does-not-exist-00000000")
        assert err.value.code == "ami_action_failed"
    finally:
        await ami.close()
    assert not ami.connected


async def test_bad_secret_is_a_clear_error(sandbox: Sandbox) -> None:
    cfg = AmiConfig(host=sandbox.ami_host, port=sandbox.ami_port, username="reffection", secret="wrong")
    ami = AmiClient(cfg)
    with pytest.raises(AmiError) as err:
        await ami.connect(timeout=2.0)
    assert err.value.code == "ami_unavailable"


async def test_mixmonitor_records_real_frames(sandbox: Sandbox) -> None:
    ami = AmiClient(_config(sandbox))
    events = EventLog()
    ami.add_listener("*", events)
    await ami.connect()
    try:
        cid, channel = await _originate_local(sandbox, events, hold=3)
        name = f"reffection/ami-{cid}.wav"
        await ami.mix_monitor(channel, name)
        await events.wait_for(lambda e: e.get("Event") == "MixMonitorStart" and e.get("Uniqueid") == cid)
        # MixMonitor ends with the channel (no MixMonitorStop event then); its thread closes the
        # file, possibly after the Hangup events, and then announces it (the name without format).
        await events.wait_for(
            lambda e: e.get("Event") == "TestEvent"
            and e.get("State") == "MIXMONITOR_END"
            and e.get("File", "").endswith(f"/ami-{cid}"),
            timeout=15,
        )
        wav = sandbox.host_path(f"/var/spool/asterisk/monitor/{name}")
        size = wav.stat().st_size
        # 8 kHz, 16-bit mono: > 1 s of audio is > 16 kB beyond the 44-byte header
        assert size > 44 + 16000, size
    finally:
        await ami.close()


async def test_no_event_lost_around_mixmonitor_test_events(sandbox: Sandbox) -> None:
    """Debian's build emits TestEvent + an extra CRLF at the end of each MixMonitor; the parser
    must still deliver every Hangup event that follows it."""
    ami = AmiClient(_config(sandbox))
    events = EventLog()
    ami.add_listener("*", events)
    await ami.connect()
    try:
        names: list[str] = []
        files: list[str] = []
        for _ in range(20):
            cid, channel = await _originate_local(sandbox, events, hold=3)
            names += [channel, channel[:-1] + "2"]
            files.append(f"amil-{cid}")  # the event names the file without its format
            await ami.mix_monitor(channel, f"reffection/{files[-1]}.wav")
        # The recording thread may report its end after the channel's Hangup: await each one
        # (the events that carry the extra CRLF really were on the wire) rather than count.
        for file in files:
            await events.wait_for(
                lambda e, file=file: e.get("Event") == "TestEvent"
                and e.get("State") == "MIXMONITOR_END"
                and e.get("File", "").endswith("/" + file),
                timeout=20,
            )
        for name in names:
            await events.wait_for(
                lambda e, name=name: e.get("Event") == "Hangup" and e.get("Channel") == name, timeout=20
            )
    finally:
        await ami.close()


async def test_event_filter_limits_the_session_to_the_named_events(sandbox: Sandbox) -> None:
    """The daemon asks only for TestEvent (end of recording): other events are not even sent."""
    plain = AmiClient(_config(sandbox))
    everything = EventLog()
    plain.add_listener("*", everything)
    cfg = _config(sandbox)
    filtered = AmiClient(AmiConfig(host=cfg.host, port=cfg.port, username=cfg.username, secret=cfg.secret,
                                   event_filter=("TestEvent",)))  # fmt: skip
    few = EventLog()
    filtered.add_listener("*", few)
    await plain.connect()
    await filtered.connect()
    try:
        await filtered.action({"Action": "Ping"})  # the filter actions were sent before this one
        filtered_from = len(few.events)  # events queued before the filter applied may precede the Pong
        cid, channel = await _originate_local(sandbox, everything, hold=3)
        await plain.mix_monitor(channel, f"reffection/amif-{cid}.wav")
        await few.wait_for(lambda e: e.get("Event") == "TestEvent" and e.get("State") == "MIXMONITOR_END"
                           and e.get("File", "").endswith(f"/amif-{cid}"), timeout=15)  # fmt: skip
        other = channel[:-1] + "2"
        await everything.wait_for(lambda e: e.get("Event") == "Hangup" and e.get("Channel") == other, timeout=15)
        # After the filter, only TestEvent (FullyBooted greets every login, before the filter exists).
        assert {e.get("Event") for e in few.events[filtered_from:]} == {"TestEvent"}
        assert any(e.get("Event") == "Newchannel" for e in everything.events)
    finally:
        await filtered.close()
        await plain.close()

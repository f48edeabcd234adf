"""The call service: drives one :class:`~reffection_ari.flow.ConsentCall` per call over ARI/AMI.

Ordering model: the ARI client has one ordered reader per connection and calls
:meth:`CallService._on_ari_event` synchronously for each event. That callback only routes the
event (by channel or playback id) into the owning call's inbox. Each call has one worker task
that takes items from its inbox in order, translates ARI facts into flow events, feeds the flow
and executes the resulting commands. Calls therefore never block one another, and within a call
events are handled strictly in arrival order.

Ids are client-chosen and derived from the call id (``<call>-s`` subscriber, ``<call>-a`` agent,
``<call>-t`` transfer, ``<call>-b`` bridge), so after a reconnect or a restart Asterisk itself
tells which call a channel belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import secrets
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ..ami import AmiClient, AmiError
from ..ari import (
    AriClient,
    AriError,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ClientDisconnected,
    ClientReconnected,
    Event,
    NotFound,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
)
from ..config import CampaignSettings, RecordingSettings
from ..errors import CallError, ReffectionError
from ..flow import ConsentCall
from ..flow import commands as cmd
from ..flow import events as fe
from ..flow.states import CallState
from ..lead import RecordingInfo
from .metrics import Metrics
from .model import CallView, Partner, PlatformEvent, PreparedCall

log = logging.getLogger(__name__)

#: The only ARI events the service needs; the filter cuts per-call traffic roughly in half.
EVENT_FILTER = (
    "StasisStart",
    "StasisEnd",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "PlaybackFinished",
    "ApplicationReplaced",
)

LegName = Literal["subscriber", "agent", "transfer"]
_SUFFIX: dict[LegName, str] = {"subscriber": "s", "agent": "a", "transfer": "t"}
_CHANNEL_ID = re.compile(r"^(c[0-9a-f]{20})-([sat])$")


def _now() -> datetime:
    return datetime.now(UTC)


def new_call_id() -> str:
    return "c" + secrets.token_hex(10)


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    ok: bool
    code: str | None
    lead_id: str | None


@dataclass(slots=True)
class _Recording:
    asterisk_path: str  # without extension, as MixMonitor's end event reports it
    host_path: Path
    started: bool = False
    stopped: bool = False
    keep: bool = False
    done: asyncio.Future[None] | None = None


@dataclass(eq=False, slots=True)
class _Call:
    id: str
    token: str
    audience: str
    campaign: CampaignSettings
    prepared: PreparedCall = field(repr=False)
    flow: ConsentCall
    recording: _Recording
    created_at: datetime
    inbox: asyncio.Queue[fe.FlowEvent | tuple[float, Event]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    live: set[str] = field(default_factory=set)  # channel ids created and not yet destroyed
    answered: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)  # channel id -> Asterisk channel name
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    confirms: dict[str, asyncio.Future[ConfirmResult]] = field(default_factory=dict)
    bridges: set[str] = field(default_factory=set)
    final_state: cmd.StateChanged | None = None
    updated_at: datetime = field(default_factory=_now)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def channel_id(self, leg: LegName) -> str:
        return f"{self.id}-{_SUFFIX[leg]}"

    def view(self) -> CallView:
        reason = self.flow.end_reason
        return CallView(
            call_id=self.id,
            token=self.token,
            audience=self.audience,
            campaign=self.campaign.name,
            state=self.flow.state.value,
            end_reason=reason.value if reason else None,
            consent=self.flow.consent.value,
            created_at=self.created_at,
            updated_at=self.updated_at,
            lead_id=self.flow.lead_id,
        )


class CallService:
    """Places consent calls and runs them to their end; the platform API sits on top of it."""

    def __init__(
        self,
        *,
        ari: AriClient,
        ami: AmiClient,
        partner: Partner,
        campaigns: Mapping[str, CampaignSettings],
        recordings: RecordingSettings,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _now,
        finished_history: int = 10_000,
    ) -> None:
        self.ari = ari
        self.ami = ami
        self.partner = partner
        self.campaigns = campaigns
        self.recordings = recordings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._calls: dict[str, _Call] = {}
        self._active: set[str] = set()  # calls not finished yet
        self._finished_order: list[str] = []
        self._finished_history = finished_history
        self._channels: dict[str, tuple[_Call, LegName]] = {}
        self._playbacks: dict[str, _Call] = {}
        self._mixmon_done: dict[str, asyncio.Future[None]] = {}
        self._mixmon_end_reported = False  # this Asterisk announces a recording's end (TestEvent)
        self._handovers: dict[str, tuple[str, str]] = {}  # channel id -> (other channel, bridge)
        self._leaving: set[str] = set()  # our channels Asterisk reported ending (StasisEnd/Destroyed)
        self._leaving_waiters: dict[str, asyncio.Future[None]] = {}
        self._listeners: list[tuple[str | None, asyncio.Queue[PlatformEvent]]] = []
        self._accepting = True
        self.ari_connected = False
        self.metrics.gauges["reffection_active_calls"] = lambda: float(self.active_calls)

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Listen to ARI/AMI and end calls this node left behind. Returns their call ids."""
        self.ari.add_listener(self._on_ari_event)
        self.ami.add_listener("TestEvent", self._on_ami_test_event)
        self.ari_connected = self.ari.connected
        await self._probe_recording_end_events()
        return await self._end_orphans()

    async def _probe_recording_end_events(self) -> None:
        """Learn whether this Asterisk announces a recording's end (TestEvent MIXMONITOR_END).

        Builds with the test framework (Debian's) do; for them a lead waits for the event, so its
        recording hash covers the complete file even when the subscriber hung up first and the
        recording thread, not StopMixMonitor, closes the file.
        """
        try:
            info = await self.ari.asterisk.info()
        except AriError as exc:
            log.warning("asterisk info unavailable code=%s; recording end bounded to 0.5 s", exc.code)
            return
        if "TEST_FRAMEWORK" in info.build_options:
            self._mixmon_end_reported = True

    @property
    def active_calls(self) -> int:
        return len(self._active)

    async def shutdown(self, grace: float) -> None:
        """Refuse new calls, end active ones cleanly, wait up to ``grace`` seconds for them."""
        self._accepting = False
        active = [self._calls[call_id] for call_id in self._active]
        for call in active:
            call.inbox.put_nowait(fe.Shutdown(at=self.clock()))
        if active:
            done = asyncio.gather(*(c.finished.wait() for c in active))
            try:
                await asyncio.wait_for(done, grace)
            except TimeoutError:
                log.warning("shutdown grace over; %d call(s) still ending", self.active_calls)
        for call in active:
            if call.task is not None and not call.task.done():
                call.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call.task
            for channel_id in list(call.live):
                await self._hangup_quietly(channel_id, "normal")

    # ---- platform operations ---------------------------------------------------------------
    async def place_call(self, token: str, campaign_name: str, audience: str) -> CallView:
        if not self._accepting:
            raise CallError("the dialer is shutting down", code="shutting_down")
        if not self.ari_connected:
            raise CallError("Asterisk is not reachable", code="asterisk_unavailable")
        campaign = self.campaigns.get(campaign_name)
        if campaign is None or campaign.audience != audience:
            raise CallError(f"unknown campaign {campaign_name!r}", code="unknown_campaign")
        try:
            prepared = self.partner.prepare(token, audience, campaign)
        except ReffectionError as exc:
            self.metrics.calls_refused[exc.code] += 1
            raise
        try:
            return self._create_call(token, campaign, audience, prepared)
        except BaseException:
            if prepared.lease is not None:
                prepared.lease.release()
            raise

    def _create_call(self, token: str, campaign: CampaignSettings, audience: str, prepared: PreparedCall) -> CallView:
        call_id = new_call_id()
        settings = dataclasses.replace(campaign.flow, policy_checks=prepared.policy_checks)
        base = f"{self.recordings.asterisk_dir.rstrip('/')}/{call_id}"
        call = _Call(
            id=call_id,
            token=token,
            audience=audience,
            campaign=campaign,
            prepared=prepared,
            flow=ConsentCall(call_id, settings),
            recording=_Recording(asterisk_path=base, host_path=self.recordings.host_dir / f"{call_id}.wav"),
            created_at=self.clock(),
        )
        self._calls[call_id] = call
        self._active.add(call_id)
        self.metrics.calls_started[campaign.name] += 1
        call.task = asyncio.create_task(self._run(call), name=f"call-{call_id}")
        log.info("call placed call_id=%s campaign=%s token=%s", call_id, campaign.name, token)
        return call.view()

    def get(self, call_id: str, audience: str | None) -> CallView:
        return self._owned(call_id, audience).view()

    async def confirm(
        self, call_id: str, audience: str | None, *, agent_id: str | None = None, timeout: float = 20.0
    ) -> ConfirmResult:
        call = self._owned(call_id, audience)
        if call.finished.is_set():
            lead = call.flow.lead_id
            return ConfirmResult(ok=lead is not None, code="already_confirmed" if lead else "call_ended",
                                 lead_id=lead)  # fmt: skip
        request_id = secrets.token_hex(8)
        future: asyncio.Future[ConfirmResult] = asyncio.get_running_loop().create_future()
        call.confirms[request_id] = future
        call.inbox.put_nowait(
            fe.ConfirmRequested(at=self.clock(), source="api", request_id=request_id, agent_id=agent_id)
        )
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallError("the confirm was not answered in time", code="confirm_timeout") from None
        finally:
            call.confirms.pop(request_id, None)

    async def hangup(self, call_id: str, audience: str | None) -> CallView:
        call = self._owned(call_id, audience)
        if not call.finished.is_set():
            call.inbox.put_nowait(fe.HangupRequested(at=self.clock(), source="api"))
        return call.view()

    async def wait_finished(self, call_id: str, timeout: float) -> CallView:
        call = self._owned(call_id, None)
        await asyncio.wait_for(call.finished.wait(), timeout)
        return call.view()

    def events(self, audience: str | None) -> asyncio.Queue[PlatformEvent]:
        """A queue receiving every state change of ``audience``'s calls (None: all)."""
        queue: asyncio.Queue[PlatformEvent] = asyncio.Queue(maxsize=10_000)
        self._listeners.append((audience, queue))
        return queue

    def drop_events(self, queue: asyncio.Queue[PlatformEvent]) -> None:
        self._listeners = [(a, q) for a, q in self._listeners if q is not queue]

    def _owned(self, call_id: str, audience: str | None) -> _Call:
        call = self._calls.get(call_id)
        # Another audience's call is reported exactly like a missing one: no existence oracle.
        if call is None or (audience is not None and call.audience != audience):
            raise CallError(f"no call {call_id!r}", code="unknown_call")
        return call

    # ---- ARI / AMI intake (runs on the ordered reader; must not block) ----------------------
    def _on_ari_event(self, event: Event) -> None:
        received = asyncio.get_running_loop().time()
        if isinstance(event, ClientDisconnected):
            self.ari_connected = False
            log.warning("ari disconnected; calls continue in Asterisk, resync on reconnect")
            return
        if isinstance(event, ClientReconnected):
            self.ari_connected = True
            self.metrics.ari_reconnects += 1
            self._resync(event.channels)
            return
        target: _Call | None = None
        if isinstance(event, PlaybackFinished):
            target = self._playbacks.pop(event.playback.id, None)
        else:
            channel = getattr(event, "channel", None)
            channel_id = getattr(channel, "id", None)
            if channel_id is None:
                return
            if channel_id in self._handovers:
                if isinstance(event, ChannelDestroyed):
                    self._end_handover(channel_id)
                return
            owner = self._channels.get(channel_id)
            target = owner[0] if owner else None
            if target is not None and isinstance(event, StasisEnd | ChannelDestroyed):
                self._leaving.add(channel_id)
                waiter = self._leaving_waiters.get(channel_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            if target is None and isinstance(event, StasisStart):
                # A leg of a call this process does not know (left ringing by a previous run)
                # just answered into our application: end it rather than leave it dangling.
                log.warning("ending unowned channel that entered the application channel=%s", channel_id)
                task = asyncio.get_running_loop().create_task(self._hangup_quietly(channel_id, "normal"))
                task.add_done_callback(_log_task_failure)
                return
        if target is not None and not target.finished.is_set():
            target.inbox.put_nowait((received, event))

    def _on_ami_test_event(self, headers: dict[str, str]) -> None:
        if headers.get("State") == "MIXMONITOR_END":
            self._mixmon_end_reported = True
            future = self._mixmon_done.get(headers.get("File", ""))
            if future is not None and not future.done():
                future.set_result(None)

    def _resync(self, channels: list[Channel]) -> None:
        """After a reconnect, bring every flow up to date with what Asterisk holds.

        A leg that answered while the socket was down entered the application without us seeing
        its StasisStart: replay one, or the subscriber would hear silence. Legs missing from
        the application may still be ringing (not in Stasis yet), so each is confirmed gone with
        ``GET /channels/{id}`` before its flow is told.
        """
        present = {c.id for c in channels}
        loop = asyncio.get_running_loop()
        for channel in channels:
            owner = self._channels.get(channel.id)
            if owner is None or channel.id in owner[0].answered or owner[0].finished.is_set():
                continue
            log.info("resync: leg answered during the disconnect call_id=%s leg=%s", owner[0].id, owner[1])
            replay = StasisStart(
                type="StasisStart", application=self.ari.app, timestamp="", raw={}, channel=channel,
                args=[owner[1], owner[0].id],
            )  # fmt: skip
            owner[0].inbox.put_nowait((loop.time(), replay))
        missing = [
            (channel_id, call, leg)
            for channel_id, (call, leg) in self._channels.items()
            if channel_id not in present and channel_id in call.live and not call.finished.is_set()
        ]
        if missing:
            task = asyncio.get_running_loop().create_task(self._confirm_gone(missing))
            task.add_done_callback(_log_task_failure)

    async def _confirm_gone(self, missing: list[tuple[str, _Call, LegName]]) -> None:
        for channel_id, call, leg in missing:
            try:
                await self.ari.channels.get(channel_id)
                continue  # still there (ringing): its events resume on the new connection
            except NotFound:
                pass
            except AriError as exc:
                log.warning("resync check failed call_id=%s code=%s", call.id, exc.code)
                continue
            if channel_id in call.live and not call.finished.is_set():
                log.info("resync: channel gone during disconnect call_id=%s leg=%s", call.id, leg)
                call.live.discard(channel_id)
                self._channels.pop(channel_id, None)
                call.inbox.put_nowait(_gone_event(call, channel_id, leg, None, self.clock()))

    async def _end_orphans(self) -> list[str]:
        """Channels of this node's app that no call owns (a daemon restart): hang them up."""
        ended: list[str] = []
        try:
            channels = await self.ari.channels.list()
        except AriError as exc:
            log.warning("orphan scan failed code=%s", exc.code)
            return ended
        for channel in channels:
            m = _CHANNEL_ID.match(channel.id)
            if m and channel.in_app(self.ari.app) and m.group(1) not in self._calls:
                await self._hangup_quietly(channel.id, "normal")
                ended.append(m.group(1))
                log.warning("ended orphaned call after restart call_id=%s reason=daemon_restart", m.group(1))
        # Bridges are not tied to an application: ours carry "<app>/<call id>" in their name.
        try:
            bridges = await self.ari.bridges.list()
        except AriError as exc:
            log.warning("orphan bridge scan failed code=%s", exc.code)
            bridges = []
        for bridge in bridges:
            app, _, rest = bridge.name.partition("/")
            call_id = rest.split("/", 1)[0]
            if app == self.ari.app and call_id and call_id not in self._calls:
                await self._destroy_bridge(bridge.id)
                log.warning("destroyed orphaned bridge after restart call_id=%s", call_id)
        return sorted(set(ended))

    # ---- the per-call worker ---------------------------------------------------------------
    async def _run(self, call: _Call) -> None:
        try:
            await self._execute(call, call.flow.start(self.clock()))
            while not call.flow.finished:
                item = await call.inbox.get()
                if isinstance(item, tuple):
                    received, ari_event = item
                    flow_events = await self._translate(call, ari_event)
                    for flow_event in flow_events:
                        commands = call.flow.handle(flow_event)
                        self.metrics.event_latency.observe(asyncio.get_running_loop().time() - received)
                        await self._execute(call, commands)
                else:
                    await self._execute(call, call.flow.handle(item))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call worker failed call_id=%s", call.id)
            with contextlib.suppress(Exception):
                await self._execute(call, call.flow.handle(fe.Shutdown(at=self.clock())))
        finally:
            if not call.finished.is_set():
                await self._cleanup(call)

    async def _translate(self, call: _Call, event: Event) -> list[fe.FlowEvent]:
        at = self.clock()
        if isinstance(event, PlaybackFinished):
            ok = event.playback.state != "failed"
            if not ok and await self._target_gone(call, event.playback.target_uri):
                # Asterisk fails the playback of a channel that is hanging up just before it
                # reports StasisEnd/ChannelDestroyed: that is a hangup, which the destroy event
                # (already on its way) tells the flow -- not a media error.
                return []
            return [fe.PlaybackFinished(at=at, playback_id=event.playback.id, ok=ok)]
        channel = getattr(event, "channel", None)
        channel_id: str | None = getattr(channel, "id", None)
        owner = self._channels.get(channel_id) if channel_id else None
        if owner is None or channel_id is None:
            return []
        leg = owner[1]
        if isinstance(event, StasisStart):
            call.answered.add(channel_id)
            call.names[channel_id] = event.channel.name
            if leg == "subscriber":
                return [fe.SubscriberAnswered(at=at)]
            if leg == "agent":
                return [fe.AgentAnswered(at=at)]
            return [await self._connect_transfer(call, at)]
        if isinstance(event, ChannelDtmfReceived):
            if leg == "transfer":
                return []
            return [fe.Dtmf(at=at, leg=leg, digit=event.digit)]
        if isinstance(event, ChannelDestroyed):
            if channel_id not in call.live:
                return []
            call.live.discard(channel_id)
            self._channels.pop(channel_id, None)
            return [_gone_event(call, channel_id, leg, event.cause, at)]
        return []

    async def _target_gone(self, call: _Call, target_uri: str, grace: float = 1.0) -> bool:
        """Is the playback's channel going away? Asterisk fails a playback as the channel hangs
        up, a moment before StasisEnd/ChannelDestroyed; wait (bounded) for that news, which the
        ordered reader records in ``_leaving`` as soon as it arrives."""
        kind, _, channel_id = target_uri.partition(":")
        if kind != "channel":
            return False
        if channel_id not in call.live or channel_id in self._leaving:
            return True
        waiter = self._leaving_waiters.setdefault(channel_id, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), grace)
        except TimeoutError:
            return False
        finally:
            self._leaving_waiters.pop(channel_id, None)
        return True

    # ---- command execution -----------------------------------------------------------------
    async def _execute(self, call: _Call, commands: list[cmd.Command]) -> None:
        for command in commands:
            try:
                await self._do(call, command)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command failed call_id=%s command=%s", call.id, type(command).__name__)

    async def _do(self, call: _Call, c: cmd.Command) -> None:
        match c:
            case cmd.OriginateSubscriber():
                await self._originate(call, "subscriber", call.prepared.dial_string, c.caller_id, c.timeout)
            case cmd.StartRecording():
                await self._start_recording(call)
            case cmd.PlayPrompt():
                await self._play(call, c)
            case cmd.StopPlayback():
                if self._playbacks.pop(c.playback_id, None) is not None:  # else it already finished
                    with contextlib.suppress(AriError):
                        await self.ari.playbacks.stop(c.playback_id)
            case cmd.StartTimer():
                self._start_timer(call, c.name, c.seconds)
            case cmd.CancelTimer():
                handle = call.timers.pop(c.name, None)
                if handle is not None:
                    handle.cancel()
            case cmd.OriginateAgent():
                caller = f'"{c.label}" <{call.campaign.name}>'
                await self._originate(
                    call, "agent", c.dial_string or call.campaign.flow.agent_dial_string or "", caller, c.timeout
                )
            case cmd.BridgeLegs():
                await self._bridge(call)
            case cmd.DestroyBridge():
                for bridge_id in list(call.bridges):
                    call.bridges.discard(bridge_id)
                    await self._destroy_bridge(bridge_id)
            case cmd.HangupLeg():
                channel_id = call.channel_id(c.leg)
                if channel_id in call.live:  # a leg already destroyed needs no request
                    await self._hangup_quietly(channel_id, c.reason)
            case cmd.AddToDnc():
                self.partner.opt_out(call.prepared.subscriber_id, call.id)
            case cmd.StoreLead():
                await self._store_lead(call, c)
            case cmd.ConfirmAck():
                self._confirm_ack(call, c)
            case cmd.TransferSubscriber():
                call.answered.discard(call.channel_id("transfer"))
                await self._originate(call, "transfer", c.dial_string, call.campaign.caller_id, c.timeout)
            case cmd.CancelTransfer():
                await self._hangup_quietly(call.channel_id("transfer"), "normal")
            case cmd.StopRecording():
                call.recording.keep = call.recording.keep or c.keep
                if not c.keep:
                    await self._stop_recording(call)
            case cmd.StateChanged() if c.new.terminal:
                call.final_state = c  # published once the call is fully released (see _cleanup)
            case cmd.StateChanged():
                self._publish(call, c)
            case cmd.CallFinished():
                await self._cleanup(call)
            case _:
                log.warning("unhandled command %s call_id=%s", type(c).__name__, call.id)

    async def _originate(
        self, call: _Call, leg: LegName, endpoint: str, caller_id: str, timeout: float
    ) -> None:
        channel_id = call.channel_id(leg)
        # Stage and subscribe before create: the id is routed before Asterisk can emit anything.
        self._channels[channel_id] = (call, leg)
        call.live.add(channel_id)
        try:
            await self.ari.channels.originate(
                endpoint,
                channel_id=channel_id,
                app=self.ari.app,
                app_args=[leg, call.id],
                caller_id=caller_id,
                timeout=max(1, round(timeout)),
                formats="ulaw" if endpoint.startswith("Local/") else None,
            )
        except AriError as exc:
            log.warning("originate failed call_id=%s leg=%s code=%s", call.id, leg, exc.code)
            call.live.discard(channel_id)
            self._channels.pop(channel_id, None)
            at = self.clock()
            failure: fe.FlowEvent
            if leg == "subscriber":
                failure = fe.SubscriberFailed(at=at, reason="error")
            elif leg == "agent":
                failure = fe.AgentFailed(at=at, reason="error")
            else:
                failure = fe.TransferFailed(at=at, reason="error")
            call.inbox.put_nowait(failure)

    async def _start_recording(self, call: _Call) -> None:
        rec = call.recording
        name = call.names.get(call.channel_id("subscriber"))
        loop = asyncio.get_running_loop()
        rec.done = loop.create_future()
        self._mixmon_done[rec.asterisk_path] = rec.done
        try:
            if name is None:
                raise AmiError("subscriber channel name unknown", code="ami_action_failed")
            await self.ami.mix_monitor(name, rec.asterisk_path + ".wav", mixmon_id_var="REFFECTION_MIXMON_ID")
        except AmiError as exc:
            log.warning("recording failed to start call_id=%s code=%s", call.id, exc.code)
            call.inbox.put_nowait(fe.RecordingFailed(at=self.clock(), reason=exc.code))
            return
        rec.started = True
        call.inbox.put_nowait(fe.RecordingStarted(at=self.clock()))

    async def _stop_recording(self, call: _Call) -> None:
        """Stop MixMonitor (if the channel is still up) and wait until the file is complete."""
        rec = call.recording
        if not rec.started or rec.stopped:
            return
        rec.stopped = True
        name = call.names.get(call.channel_id("subscriber"))
        closed = False  # StopMixMonitor closes the file before it answers: complete, nothing to await
        if name and call.channel_id("subscriber") in call.live:
            try:
                await self.ami.stop_mix_monitor(name)
                closed = True
            except AmiError:
                pass  # the channel or its recording ended meanwhile: the recording thread closes the file
        if not closed and rec.done is not None:
            # After a hangup the recording thread closes the file. Builds that announce it (see
            # _probe_recording_end_events) are waited for; others get a short bound, after which
            # MixMonitor has closed the file in practice.
            bound = 3.0 if self._mixmon_end_reported else 0.5
            try:
                await asyncio.wait_for(asyncio.shield(rec.done), bound)
            except TimeoutError:
                # expected on builds that announce nothing; worth a warning only where it should come
                level = logging.WARNING if self._mixmon_end_reported else logging.DEBUG
                log.log(level, "recording end not announced within %.1f s call_id=%s", bound, call.id)
        self._mixmon_done.pop(rec.asterisk_path, None)

    async def _play(self, call: _Call, c: cmd.PlayPrompt) -> None:
        self._playbacks[c.playback_id] = call
        try:
            await self.ari.channels.play(
                call.channel_id(c.leg), c.prompt.media, playback_id=c.playback_id, lang=c.prompt.language
            )
        except AriError as exc:
            self._playbacks.pop(c.playback_id, None)
            log.info("playback not started call_id=%s code=%s", call.id, exc.code)
            call.inbox.put_nowait(fe.PlaybackFinished(at=self.clock(), playback_id=c.playback_id, ok=False))

    def _start_timer(self, call: _Call, name: str, seconds: float) -> None:
        old = call.timers.pop(name, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            call.timers.pop(name, None)
            call.inbox.put_nowait(fe.TimerFired(at=self.clock(), name=name))

        call.timers[name] = asyncio.get_running_loop().call_later(seconds, fire)

    async def _bridge(self, call: _Call) -> None:
        bridge_id = f"{call.id}-b"
        call.bridges.add(bridge_id)  # staged before create: even a create that times out is torn down
        try:
            await self.ari.bridges.create(bridge_id, type="mixing", name=f"{self.ari.app}/{call.id}")
            await self.ari.bridges.add_channel(
                bridge_id, [call.channel_id("subscriber"), call.channel_id("agent")]
            )
        except AriError as exc:
            log.warning("bridge failed call_id=%s code=%s", call.id, exc.code)
            call.inbox.put_nowait(fe.BridgeFailed(at=self.clock(), reason=exc.code))

    async def _connect_transfer(self, call: _Call, at: datetime) -> fe.FlowEvent:
        """The advertiser answered: move the subscriber into a bridge with the advertiser."""
        bridge_id = f"{call.id}-x"
        sub, adv = call.channel_id("subscriber"), call.channel_id("transfer")
        with contextlib.suppress(AriError):
            await self.ari.bridges.remove_channel(f"{call.id}-b", sub)
        call.bridges.add(bridge_id)
        try:
            await self.ari.bridges.create(bridge_id, type="mixing", name=f"{self.ari.app}/{call.id}/transfer")
            await self.ari.bridges.add_channel(bridge_id, [sub, adv])
        except AriError as exc:
            log.warning("transfer bridge failed call_id=%s code=%s", call.id, exc.code)
            return fe.TransferFailed(at=at, reason=exc.code)
        call.bridges.discard(bridge_id)
        for one, other in ((sub, adv), (adv, sub)):
            self._handovers[one] = (other, bridge_id)
            self._channels.pop(one, None)
            call.live.discard(one)
        return fe.TransferAnswered(at=at)

    def _end_handover(self, gone: str) -> None:
        other, bridge_id = self._handovers.pop(gone)
        self._handovers.pop(other, None)

        async def finish() -> None:
            await self._hangup_quietly(other, "normal")
            await self._destroy_bridge(bridge_id)

        task = asyncio.get_running_loop().create_task(finish())
        task.add_done_callback(_log_task_failure)

    async def _store_lead(self, call: _Call, c: cmd.StoreLead) -> None:
        try:
            await self._stop_recording(call)
            info = await asyncio.to_thread(_recording_info, call.recording.host_path)
            lead = await self.partner.build_lead(
                call_id=call.id,
                token=call.token,
                audience=call.audience,
                subscriber_id=call.prepared.subscriber_id,
                campaign=call.campaign,
                evidence=c.evidence,
                recording=info,
            )
        except Exception as exc:
            code = exc.code if isinstance(exc, ReffectionError) else "lead_store_failed"
            log.error("lead not stored call_id=%s code=%s", call.id, code)
            call.inbox.put_nowait(fe.LeadStoreFailed(at=self.clock(), code="lead_store_failed"))
            return
        call.recording.keep = True  # only a stored lead keeps its recording (retention)
        self.metrics.leads += 1
        log.info("lead stored call_id=%s lead_id=%s", call.id, lead.lead_id)
        call.inbox.put_nowait(fe.LeadStored(at=self.clock(), lead_id=lead.lead_id))

    def _confirm_ack(self, call: _Call, c: cmd.ConfirmAck) -> None:
        if not c.ok and c.code:
            self.metrics.confirms_rejected[c.code] += 1
        if c.request_id is None:
            return
        future = call.confirms.get(c.request_id)
        if future is not None and not future.done():
            future.set_result(ConfirmResult(ok=c.ok, code=c.code, lead_id=c.lead_id))

    def _publish(self, call: _Call, c: cmd.StateChanged) -> None:
        call.updated_at = self.clock()
        log.debug("call state call_id=%s %s -> %s reason=%s", call.id, c.old.value, c.new.value, c.reason)
        self.metrics.state_transitions[c.new.value] += 1
        event = PlatformEvent(
            call_id=call.id,
            token=call.token,
            audience=call.audience,
            campaign=call.campaign.name,
            state=c.new.value,
            old_state=c.old.value,
            reason=c.reason.value if c.reason else None,
            at=call.updated_at,
        )
        for audience, queue in self._listeners:
            if audience is None or audience == call.audience:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    log.warning("event stream consumer too slow; dropping its stream audience=%s", audience)
                    self.drop_events(queue)

    async def _cleanup(self, call: _Call) -> None:
        """The flow finished: release everything that may still be alive, apply retention."""
        if call.finished.is_set():
            return
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()
        for channel_id in list(call.live):
            await self._hangup_quietly(channel_id, "normal")
        for bridge_id in list(call.bridges):
            await self._destroy_bridge(bridge_id)
        call.bridges.clear()
        for playback_id in [p for p, owner in self._playbacks.items() if owner is call]:
            self._playbacks.pop(playback_id, None)
        for leg in _SUFFIX:
            self._leaving.discard(call.channel_id(leg))
        rec = call.recording
        if rec.started and not rec.keep:
            await self._stop_recording(call)
            deleted = await asyncio.to_thread(_unlink, rec.host_path)
            if deleted:
                self.partner.recording_deleted(call.id, "no_consented_lead")
        self._mixmon_done.pop(rec.asterisk_path, None)
        state, reason = call.flow.state, call.flow.end_reason
        outcome = reason.value if reason else state.value
        try:
            self.partner.record_outcome(
                call.prepared.subscriber_id, call.campaign.name, outcome, self.clock()
            )
        except Exception:
            log.exception("recording the call outcome failed call_id=%s", call.id)
        if call.prepared.lease is not None:
            call.prepared.lease.release()
        self.metrics.calls_ended[(state.value, outcome)] += 1
        lead_id = call.flow.lead_id
        for future in call.confirms.values():
            if not future.done():  # a confirm still queued when the call ended
                if lead_id is not None:
                    future.set_result(ConfirmResult(ok=True, code="already_confirmed", lead_id=lead_id))
                else:
                    future.set_result(ConfirmResult(ok=False, code="call_ended", lead_id=None))
        call.finished.set()
        self._active.discard(call.id)
        if call.final_state is not None:
            # Only now: a platform that reacts to "ended" by calling again must find the
            # subscriber's slot and the campaign's concurrency already released.
            self._publish(call, call.final_state)
        self._finished_order.append(call.id)
        while len(self._finished_order) > self._finished_history:
            self._calls.pop(self._finished_order.pop(0), None)
        log.info("call finished call_id=%s state=%s reason=%s", call.id, state.value, outcome)

    async def _destroy_bridge(self, bridge_id: str, attempts: int = 2) -> None:
        """Destroy a bridge; gone already is fine; a failed request is tried once more."""
        for attempt in range(attempts):
            try:
                await self.ari.bridges.destroy(bridge_id)
                return
            except NotFound:
                return
            except AriError as exc:
                log.warning("bridge destroy failed bridge=%s attempt=%d code=%s", bridge_id, attempt + 1, exc.code)

    async def _hangup_quietly(self, channel_id: str, reason: str) -> None:
        try:
            await self.ari.channels.hangup(channel_id, reason=reason)
        except NotFound:
            pass
        except AriError as exc:
            log.warning("hangup failed channel=%s code=%s", channel_id, exc.code)


def _gone_event(call: _Call, channel_id: str, leg: LegName, cause: int | None, at: datetime) -> fe.FlowEvent:
    answered = channel_id in call.answered
    if leg == "subscriber":
        if answered:
            return fe.LegHungUp(at=at, leg="subscriber", cause=cause)
        return fe.SubscriberFailed(at=at, reason=fe.failure_from_cause(cause))
    if leg == "agent":
        if answered:
            return fe.LegHungUp(at=at, leg="agent", cause=cause)
        return fe.AgentFailed(at=at, reason=fe.failure_from_cause(cause))
    return fe.TransferFailed(at=at, reason=fe.failure_from_cause(cause))


def _recording_info(path: Path) -> RecordingInfo | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
            size += len(chunk)
    duration = 0.0
    with contextlib.suppress(wave.Error, EOFError), wave.open(str(path), "rb") as w:
        duration = w.getnframes() / float(w.getframerate() or 8000)
        fmt = f"wav/{w.getframerate()}/{w.getsampwidth() * 8}/{'mono' if w.getnchannels() == 1 else 'stereo'}"
        return RecordingInfo(path=str(path), sha256=digest.hexdigest(), duration_s=round(duration, 3),
                             size_bytes=size, format=fmt)  # fmt: skip
    return RecordingInfo(path=str(path), sha256=digest.hexdigest(), duration_s=duration, size_bytes=size)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed: %r", task.exception())


__all__ = ["EVENT_FILTER", "CallService", "CallState", "ConfirmResult", "new_call_id"]

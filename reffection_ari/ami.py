"""AMI over panoramisk: login, MixMonitor control, action errors as exceptions, event listeners.

ARI has no MixMonitor, so call recording (both directions, mixed, from the first second) is
started over AMI on the ARI channel's name. panoramisk reconnects by itself and re-sends
unanswered actions after a reconnect, so every action sent here is safe to repeat.
Notes on panoramisk 1.4 that shape this module: the Manager must be created inside a running
loop; ``connect()`` returns before login (we await ``on_login``); ``close()`` would otherwise
schedule a reconnect, which :class:`_Manager` suppresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from panoramisk import Manager
from panoramisk.message import Message

from .errors import ReffectionError

log = logging.getLogger(__name__)

AmiListener = Callable[[dict[str, str]], None]

# panoramisk logs whole AMI messages at DEBUG; some (DialBegin, Newchannel...) carry dial strings,
# i.e. numbers. Its logger never goes below INFO, whatever the application's log level.
_PANORAMISK_LOG = logging.getLogger("reffection_ari.ami.panoramisk")
_PANORAMISK_LOG.setLevel(logging.INFO)


class AmiError(ReffectionError):
    """An AMI action failed (``ami_action_failed``) or AMI is unreachable (``ami_unavailable``)."""

    code = "ami_action_failed"


@dataclass(frozen=True, slots=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "reffection"
    secret: str = ""
    reconnect_timeout: int = 1
    ping_delay: int = 10
    action_timeout: float = 10.0
    #: Event names this session wants; applied with ``Action: Filter`` after every login so that
    #: Asterisk does not send (and we do not parse) the dozens of other events per call. Empty: all.
    event_filter: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"AmiConfig(host={self.host!r}, port={self.port}, username={self.username!r})"


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager that stays closed once :meth:`close` was called."""

    closing = False

    def connect(self, run_forever: bool = False, on_startup: Any = None, on_shutdown: Any = None) -> Any:
        if self.closing:
            return None
        return super().connect(run_forever, on_startup, on_shutdown)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing:
            self._connected = False
            return
        super().connection_lost(exc)


def _report_filter_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ami event filter not applied (all events will be parsed): %r", task.exception())


class AmiClient:
    """One AMI session. ``connected`` is True between login and the next disconnect."""

    def __init__(self, config: AmiConfig) -> None:
        self.config = config
        self._manager: _Manager | None = None
        self._logged_in = asyncio.Event()
        self._listeners: list[tuple[str, AmiListener]] = []
        self.logins = 0
        self.disconnects = 0

    @property
    def connected(self) -> bool:
        return self._manager is not None and self._logged_in.is_set()

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and log in; panoramisk keeps reconnecting afterwards on its own."""
        loop = asyncio.get_running_loop()
        self._manager = _Manager(
            loop=loop,
            host=self.config.host,
            port=self.config.port,
            username=self.config.username,
            secret=self.config.secret,
            ping_delay=self.config.ping_delay,
            reconnect_timeout=self.config.reconnect_timeout,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
            log=_PANORAMISK_LOG,
        )
        self._manager.register_event("*", self._dispatch)
        self._manager.connect()
        try:
            await asyncio.wait_for(self._logged_in.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise AmiError(
                f"AMI login to {self.config.host}:{self.config.port} did not succeed within {timeout:.0f}s",
                code="ami_unavailable",
            ) from None

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        self._logged_in.clear()
        if manager is not None:
            manager.closing = True
            manager.close()
            await asyncio.sleep(0)  # let the transport's connection_lost callback run

    def add_listener(self, event: str, listener: AmiListener) -> None:
        """Call ``listener(headers)`` for every AMI event named ``event`` (``*`` = all)."""
        self._listeners.append((event.lower(), listener))

    async def action(self, action: dict[str, str]) -> dict[str, str]:
        """Send one action and return its response headers; ``Response: Error`` raises."""
        manager = self._manager
        if manager is None or not self._logged_in.is_set():
            raise AmiError("AMI is not connected", code="ami_unavailable")
        try:
            reply = await asyncio.wait_for(manager.send_action(dict(action)), self.config.action_timeout)
        except TimeoutError:
            raise AmiError(f"AMI action {action.get('Action')} timed out", code="ami_timeout") from None
        message: Message = reply[-1] if isinstance(reply, list) else reply
        headers = {str(k): str(v) for k, v in dict(message).items()}
        if headers.get("Response", "").lower() == "error":
            raise AmiError(f"AMI {action.get('Action')} failed: {headers.get('Message', 'error')}")
        return headers

    async def mix_monitor(self, channel: str, file: str, *, mixmon_id_var: str = "MIXMON_ID") -> None:
        """Start MixMonitor on ``channel`` (an ARI channel *name*) writing ``file``."""
        await self.action(
            {"Action": "MixMonitor", "Channel": channel, "File": file, "Options": f"i({mixmon_id_var})"}
        )

    async def stop_mix_monitor(self, channel: str) -> None:
        """Stop MixMonitor; call it before hanging up (afterwards AMI says "No such channel")."""
        await self.action({"Action": "StopMixMonitor", "Channel": channel})

    # ---- panoramisk callbacks ------------------------------------------------------------------
    def _on_login(self, manager: Manager) -> None:
        self.logins += 1
        self._logged_in.set()
        if self.config.event_filter:
            task = asyncio.get_running_loop().create_task(self._apply_filter())
            task.add_done_callback(_report_filter_failure)
        log.info("ami logged in host=%s port=%d logins=%d", self.config.host, self.config.port, self.logins)

    async def _apply_filter(self) -> None:
        for name in self.config.event_filter:
            await self.action({"Action": "Filter", "Operation": "Add", "Filter": f"Event: {name}"})

    def _on_disconnect(self, manager: Manager, exc: Exception | None) -> None:
        self.disconnects += 1
        self._logged_in.clear()
        log.warning("ami disconnected; panoramisk reconnects reason=%s", type(exc).__name__)

    def _dispatch(self, manager: Manager, message: Message) -> None:
        name = str(message.get("Event", "")).lower()
        matching = [listener for wanted, listener in self._listeners if wanted in ("*", name)]
        if not matching:
            return
        headers = {str(k): str(v) for k, v in dict(message).items()}
        for listener in matching:
            try:
                listener(headers)
            except Exception:
                log.exception("ami listener failed event=%s", name)

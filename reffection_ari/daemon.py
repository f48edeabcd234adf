"""``reffection-ari run``: wires config → keyring, vault, policy, evidence, ARI/AMI, API.

Start order matters: everything local (keys, vault, outbox, audit) is opened and validated
before any network connection, so a bad deployment fails at once with the exact key; the API
listens last, when ARI and AMI are up. Stop order is the reverse, with active calls ended
cleanly within ``shutdown_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from .agi import TokenResolver, start_agi_server
from .ami import AmiClient, AmiConfig
from .api import create_app, serve
from .ari import AriClient, AriConfig
from .config import Config
from .evidence import (
    AuditLog,
    DeliveryWorker,
    JsonlFileSink,
    LeadOutbox,
    ReceiptSigner,
    RetentionSweeper,
    WebhookSink,
)
from .evidence.sinks import DeliverySink
from .policy import PolicyEngine
from .service import EVENT_FILTER, CallService, Metrics
from .service.partner import PartnerSide, campaign_policy
from .tokens import Keyring, SqliteVault, TokenCodec, TokenService

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Daemon:
    config: Config
    clock: Callable[[], datetime] = _utcnow
    policy_clock: Callable[[], datetime] | None = None
    service: CallService | None = field(default=None, init=False)
    partner: PartnerSide | None = field(default=None, init=False)
    _closers: list[Callable[[], object]] = field(default_factory=list, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def start(self) -> None:
        cfg = self.config
        try:
            keyring = Keyring.load(cfg.keyring)
            vault = SqliteVault(cfg.vault, keyring.lookup_key())
            self._closers.append(vault.close)
            tokens = TokenService(TokenCodec(keyring), vault)
            routes = cfg.routes.table()
            signing_key, kid = keyring.receipt_signing_key()
            audit = AuditLog(cfg.audit_log, signing_key, kid)
            self._closers.append(audit.close)

            def audit_refusal(code: str, campaign: str) -> None:
                audit.append("policy_refused", {"code": code, "campaign": campaign})

            policy = PolicyEngine(clock=self.policy_clock or self.clock, on_refusal=audit_refusal)
            for campaign in cfg.campaigns.values():
                for trunk in cfg.routes.trunks:
                    policy.rules(campaign_policy(campaign, trunk))  # widening config fails here
                if campaign.policy.pack == "sandbox":
                    log.warning("campaign %s uses the sandbox rule pack: not for real subscribers", campaign.name)
            signer = ReceiptSigner(signing_key, kid, cfg.issuer)
            outbox = LeadOutbox(cfg.delivery.outbox)
            self._closers.append(outbox.close)
            outbox.claim_worker()  # a second daemon on the same files stops here (outbox_busy)
            sink: DeliverySink
            if cfg.delivery.webhook_url:
                sink = WebhookSink(cfg.delivery.webhook_url, cfg.delivery.webhook_secret or "")
            else:
                sink = JsonlFileSink(cfg.delivery.jsonl or cfg.delivery.outbox.with_suffix(".jsonl"))
            worker = DeliveryWorker(outbox, sink, audit=audit, max_attempts=cfg.delivery.max_attempts)
            self.partner = PartnerSide(
                tokens=tokens, routes=routes, policy=policy, sink=outbox, signer=signer, audit=audit,
                clock=self.clock,
            )  # fmt: skip

            ari = AriClient(
                AriConfig(
                    base_url=cfg.ari.url, username=cfg.ari.username, password=cfg.ari.password,
                    app=cfg.app_name, event_filter=EVENT_FILTER, rest_over_websocket=cfg.ari.rest_over_websocket,
                )
            )  # fmt: skip
            await ari.connect()
            self._closers.append(ari.close)
            ami = AmiClient(
                AmiConfig(
                    host=cfg.ami.host, port=cfg.ami.port, username=cfg.ami.username, secret=cfg.ami.secret,
                    event_filter=("TestEvent",),  # the end-of-recording signal is all the service reads
                )
            )
            await ami.connect()
            self._closers.append(ami.close)
            metrics = Metrics()
            self.service = CallService(
                ari=ari, ami=ami, partner=self.partner, campaigns=cfg.campaigns, recordings=cfg.recordings,
                metrics=metrics, clock=self.clock,
            )  # fmt: skip
            partner = self.partner
            metrics.labelled["reffection_dnc_changes_total"] = (
                "Subscribers put on the DNC list by this daemon, by source (CLI changes: the audit log).",
                "source",
                lambda: dict(partner.dnc_changes),
            )
            metrics.gauges["reffection_outbox_pending"] = lambda: float(outbox.counts().get("pending", 0))
            metrics.gauges["reffection_outbox_dead"] = lambda: float(outbox.counts().get("dead", 0))
            orphans = await self.service.start()
            if orphans:
                log.warning("ended %d call(s) left in Asterisk by a previous run", len(orphans))
            worker_task = asyncio.create_task(worker.run(self._stop), name="outbox-worker")
            self._closers.append(lambda: worker_task)
            # Confirmed leads' recordings are kept for the retention period, then deleted (audited).
            sweeper = RetentionSweeper(cfg.recordings.host_dir, cfg.recordings.retention_days, audit)
            sweeper_task = asyncio.create_task(sweeper.run(self._stop), name="retention-sweeper")
            self._closers.append(lambda: sweeper_task)
            if cfg.agi_host:
                agi = await start_agi_server(cfg.agi_host, cfg.agi_port, TokenResolver(tokens, routes))
                self._closers.append(agi.close)
            partner = self.partner
            app = create_app(
                self.service, cfg.api.keys,
                health=lambda: {"ari": ari.connected, "ami": ami.connected},
                opt_out=partner.opt_out_token,
            )  # fmt: skip
            runner: web.AppRunner = await serve(app, cfg.api.host, cfg.api.port)
            self._closers.append(runner.cleanup)
        except BaseException:
            await self._close_all()
            raise
        log.info("reffection-ari running node=%s app=%s api=%s:%d", cfg.node, cfg.app_name, cfg.api.host,
                 cfg.api.port)  # fmt: skip

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.shutdown(self.config.shutdown_grace)
        self._stop.set()
        await self._close_all()

    async def _close_all(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                result = closer()
                if isinstance(result, asyncio.Task):
                    self._stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(result, 5.0)
                elif asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("error while stopping")

    async def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            log.info("stopping: no new calls; ending active calls within %.0fs", self.config.shutdown_grace)
            await self.stop()

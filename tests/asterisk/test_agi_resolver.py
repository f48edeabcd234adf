"""Real Asterisk: Local/<token>@reffection-resolve -> FastAGI resolver -> Dial -> sipp UAS.

Proves the shipped dialplan context, the resolver and the route table together put the right
number on the wire (sipp's message trace), and that a refused token dials nothing.
The audience reaches the dialplan as a global variable set from the CLI, because
`channel originate` cannot set channel variables.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reffection_ari.agi import AgiResult, TokenResolver, start_agi_server
from reffection_ari.routing import RouteTable
from reffection_ari.sandbox import Sandbox
from reffection_ari.sandbox.sipp import SippUAS
from tests.unit.tokens_support import LONDON, num, wire

pytestmark = pytest.mark.asterisk

AGI_PORT = 14573
TRUNK_PORT = 15070
AUDIENCE = "sandbox-platform"


class RecordingResolver(TokenResolver):
    """Hands each answer to the test so it can await the resolver instead of sleeping."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.results: asyncio.Queue[AgiResult] = asyncio.Queue()

    def resolve(self, token: str, audience: str) -> AgiResult:
        result = super().resolve(token, audience)
        self.results.put_nowait(result)
        return result


@pytest.mark.usefixtures("sip_peers")
async def test_token_dials_the_subscriber_through_the_resolver(sandbox: Sandbox, tmp_path: Path) -> None:
    w = wire(tmp_path)
    token = w.service.issue(num(LONDON), AUDIENCE)
    wrong = w.service.issue(num(LONDON), "another-platform")
    routes = RouteTable.from_config([], default="PJSIP/{e164}@partner-trunk")
    resolver = RecordingResolver(w.service, routes)
    server = await start_agi_server("127.0.0.1", AGI_PORT, resolver)
    try:
        await asyncio.to_thread(sandbox.cli, f"dialplan set global REFFECTION_AUDIENCE {AUDIENCE}")
        async with SippUAS("subscriber_uas", TRUNK_PORT, trace_dir=tmp_path / "sip") as uas:
            # refused first: the resolver answers wrong_audience and nothing reaches the trunk
            await asyncio.to_thread(
                sandbox.cli, f"channel originate Local/{wrong}@reffection-resolve application Wait 1"
            )
            refused = await asyncio.wait_for(resolver.results.get(), 15)
            assert refused.status == "wrong_audience" and refused.dial_string is None

            await asyncio.to_thread(
                sandbox.cli, f"channel originate Local/{token}@reffection-resolve application Wait 4"
            )
            ok = await asyncio.wait_for(resolver.results.get(), 15)
            assert ok.status == "ok"
            rc = await uas.wait(40)  # sipp ends after the BYE of its single call
            trace = uas.messages()
        assert rc == 0
        invites = [line for line in trace.splitlines() if line.startswith("INVITE ")]
        assert len(invites) == 1, "exactly one call reached the trunk"
        assert invites[0].startswith(f"INVITE sip:{LONDON}@127.0.0.1:{TRUNK_PORT}")
    finally:
        await server.close()
        await asyncio.to_thread(sandbox.cli, 'dialplan set global REFFECTION_AUDIENCE ""')

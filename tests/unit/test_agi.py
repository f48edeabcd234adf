"""FastAGI resolver over a real TCP socket, with a scripted Asterisk side."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reffection_ari.agi import AgiServer, TokenResolver, start_agi_server
from reffection_ari.routing import RouteTable

from .tokens_support import LONDON, NANP, Wired, num, wire


@pytest.fixture
def w(tmp_path: Path) -> Wired:
    return wire(tmp_path)


@pytest.fixture
async def server(w: Wired) -> AgiServer:
    routes = RouteTable.from_config([{"prefix": "+44", "dial": "PJSIP/{e164}@partner-trunk"}])
    resolver = TokenResolver(w.service, routes, caller_ids={"plat-a": "+442079460999"})
    srv = await start_agi_server("127.0.0.1", 0, resolver)
    yield srv  # type: ignore[misc]
    await srv.close()


async def _agi_call(port: int, args: list[str], extension: str = "s") -> dict[str, str]:
    """Play Asterisk: send AGI headers, answer every command with 200, return the SET variables."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = [
        "agi_network: yes",
        "agi_network_script: resolve",
        "agi_channel: Local/x@reffection-resolve-1;2",
    ]
    headers.append(f"agi_extension: {extension}")
    headers += [f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)]
    writer.write(("\n".join(headers) + "\n\n").encode())
    await writer.drain()
    got: dict[str, str] = {}
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        parts = line.decode().rstrip("\n").split(" ", 3)
        assert parts[:2] == ["SET", "VARIABLE"]
        got[parts[2]] = parts[3].strip('"')
        writer.write(b"200 result=1\n")
        await writer.drain()
    writer.close()
    return got


async def test_resolves_token_to_dial_string(w: Wired, server: AgiServer) -> None:
    token = w.service.issue(num(LONDON), "plat-a")
    got = await _agi_call(server.port, [token, "plat-a"], extension=token)
    assert got == {
        "REFFECTION_STATUS": "ok",
        "REFFECTION_DIALSTR": f"PJSIP/{LONDON}@partner-trunk",
        "REFFECTION_CALLERID": "+442079460999",
    }


async def test_extension_is_used_when_no_argument(w: Wired, server: AgiServer) -> None:
    token = w.service.issue(num(LONDON), "plat-a")
    got = await _agi_call(server.port, ["", "plat-a"], extension=token)
    assert got["REFFECTION_STATUS"] == "ok"


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("wrong_audience", "wrong_audience"),
        ("malformed", "malformed_token"),
        ("no_audience", "bad_request"),
        ("dnc", "dnc"),
        ("no_route", "no_route"),
        ("erased", "erased"),
    ],
)
async def test_refusals_set_only_the_status(w: Wired, server: AgiServer, case: str, status: str) -> None:
    token = w.service.issue(num(LONDON), "plat-a")
    audience = "plat-a"
    if case == "wrong_audience":
        audience = "plat-b"
    elif case == "malformed":
        token = "rf1nottoken"
    elif case == "no_audience":
        audience = ""
    elif case == "dnc":
        w.vault.set_dnc(num(LONDON), True, "test")
    elif case == "no_route":
        token = w.service.issue(num(NANP), "plat-a")
    elif case == "erased":
        w.vault.erase(num(LONDON))
    got = await _agi_call(server.port, [token, audience])
    assert got == {"REFFECTION_STATUS": status}


async def test_peer_closing_early_does_not_wedge_the_server(w: Wired, server: AgiServer) -> None:
    _r, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\n")  # no blank line: incomplete headers
    writer.close()
    token = w.service.issue(num(LONDON), "plat-a")
    got = await asyncio.wait_for(_agi_call(server.port, [token, "plat-a"]), 5)
    assert got["REFFECTION_STATUS"] == "ok"

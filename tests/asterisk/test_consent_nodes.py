"""Two dialer nodes on one Asterisk: ARI apps are namespaced per node, so a node that starts (and
scans for orphans) or stops (and ends its active calls) never touches another node's calls."""

from __future__ import annotations

from reffection_ari.daemon import Daemon
from reffection_ari.sandbox import dtmf, pause, speech
from reffection_ari.tokens import Keyring

from .conftest import Dialer, build_config


async def test_other_node_start_and_stop_leave_calls_alone(dialer: Dialer) -> None:
    await dialer.subscriber(speech(), pause(3000), dtmf("2"))
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["disclosure"])

    other_dir = dialer.workdir / "node-b"
    other_dir.mkdir()
    config = build_config(dialer.sandbox, other_dir, f"{dialer.config.node}-b")
    Keyring.generate(config.keyring)
    other = Daemon(config)
    await other.start()
    try:
        assert other.service is not None and other.service.active_calls == 0
    finally:
        await other.stop()

    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "declined")  # neither shutdown nor error
    assert "consent" in dialer.states(call_id)

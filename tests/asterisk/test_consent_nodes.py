"""Two dialer nodes on one Asterisk: ARI apps are namespaced per node, so a node that starts (and
scans for orphans) or stops (and ends its active calls) never touches another node's calls."""

from __future__ import annotations

import pytest

from reffection_ari.daemon import Daemon
from reffection_ari.errors import EvidenceError
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


async def test_a_second_daemon_on_the_same_files_refuses_to_start(dialer: Dialer) -> None:
    """Two daemons on one outbox would reclaim each other's deliveries (duplicate leads to the
    advertiser): the second stops at start with ``outbox_busy``, before touching Asterisk, and the
    first one's call goes on."""
    await dialer.subscriber(speech(), pause(3000), dtmf("2"))
    call_id = await dialer.place(dialer.issue())
    await dialer.wait_state(call_id, ["disclosure"])

    twin = Daemon(dialer.config)
    with pytest.raises(EvidenceError) as err:
        await twin.start()
    assert err.value.code == "outbox_busy"
    assert twin.service is None  # never reached ARI

    end = await dialer.wait_end(call_id)
    assert (end["state"], end["reason"]) == ("ended", "declined")

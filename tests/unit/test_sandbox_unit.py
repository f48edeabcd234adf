"""The sandbox's clear errors (not root, no debootstrap, port taken) and the sipp scenario builder,
without building or starting anything."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reffection_ari.errors import SandboxError
from reffection_ari.sandbox import (
    Sandbox,
    SandboxPorts,
    apt_mirror,
    chroot,
    dialplan_dir,
    dtmf,
    hangup,
    pause,
    speech,
    uas,
)


def test_not_root_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chroot.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError) as err:
        Sandbox(cache_dir=tmp_path).ensure_built()
    assert err.value.code == "not_root"
    assert "root" in err.value.message


def test_missing_debootstrap_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chroot.os, "geteuid", lambda: 0)
    monkeypatch.setattr(chroot.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError) as err:
        Sandbox(cache_dir=tmp_path).ensure_built()
    assert err.value.code == "debootstrap_missing"
    assert "apt-get install debootstrap" in err.value.message


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        box = Sandbox(cache_dir=tmp_path, ports=SandboxPorts(ari=port, ami=port + 1, sip=port + 2))
        with pytest.raises(SandboxError) as err:
            box._check_ports_free()
        assert err.value.code == "port_in_use"
        assert f"tcp/{port}" in err.value.message
    finally:
        holder.close()


def test_unbuilt_sandbox_reports_itself(tmp_path: Path) -> None:
    box = Sandbox(cache_dir=tmp_path)
    status = box.status()
    assert (status.built, status.running, status.pid) == (False, False, None)
    assert "stopped" in status.describe()


def test_host_path_follows_the_var_run_symlink(tmp_path: Path) -> None:
    box = Sandbox(cache_dir=tmp_path)
    assert box.host_path("/var/run/asterisk/asterisk.ctl") == tmp_path / "root/run/asterisk/asterisk.ctl"
    assert box.recordings_dir == tmp_path / "root/var/spool/asterisk/monitor/reffection"


def test_dialplan_dir_is_the_repository_one() -> None:
    assert (dialplan_dir() / "extensions_reffection.conf").is_file()
    assert apt_mirror().startswith("http")


@pytest.mark.parametrize(
    "scenario",
    [
        uas("answer-dtmf", steps=[speech(), pause(1000), dtmf("1")]),
        uas("answer-hangup", steps=[pause(500), hangup()]),
        uas("busy", answer="busy"),
        uas("ring", answer="ring"),
        uas("pound", ring_ms=200, steps=[dtmf("#")]),
    ],
    ids=lambda s: s.name,
)
def test_scenarios_are_well_formed_sipp_xml(scenario: object) -> None:
    xml = scenario.xml  # type: ignore[attr-defined]
    root = ET.fromstring(xml.split("\n", 2)[2])  # past the XML declaration and DOCTYPE
    assert root.tag == "scenario"
    kinds = [child.tag for child in root]
    assert kinds[0] == "recv"
    if "remote_contact" in xml:  # variables are captured only when a BYE uses them
        assert "[$remote_contact]" in xml


def test_dtmf_rejects_a_digit_without_a_capture() -> None:
    with pytest.raises(ValueError):
        dtmf("x")


def test_keys_of_one_call_must_follow_the_captures_sequence_order() -> None:
    assert "dtmf_2833_pound" in uas("two-keys", steps=[dtmf("1"), pause(300), dtmf("#")]).xml
    for keys in (("#", "1"), ("1", "1")):  # would replay RTP numbers Asterisk already saw
        with pytest.raises(ValueError, match="late"):
            uas("late", steps=[dtmf(keys[0]), pause(300), dtmf(keys[1])])

"""The daemon's YAML config: the shipped example parses, and every class of mistake fails at load
with the exact dotted key of the offending setting (``ConfigError.key``), never echoing a secret."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest

from reffection_ari.config import Config, load_config, load_yaml, parse_config
from reffection_ari.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
CAMPAIGN = "campaigns.acme-winter."
API_SECRET = "demo-platform-a-key-0123456789abcdef"

Raw = dict[str, Any]


def example_raw() -> Raw:
    raw = load_yaml(EXAMPLE.read_text())  # the loader load_config uses
    assert isinstance(raw, dict)
    return raw


def parse(raw: Any, base: Path = Path("/etc/reffection")) -> Config:
    return parse_config(raw, base_dir=base)


def key_of(raw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert info.value.code == "bad_config"
    assert str(info.value).startswith(info.value.key + ": ")
    return info.value.key


def camp(raw: Raw) -> Raw:
    c = raw["campaigns"]["acme-winter"]
    assert isinstance(c, dict)
    return c


# ---- the example ----------------------------------------------------------------------------------
def test_example_config_parses_with_paths_relative_to_its_directory() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.node == "node1" and cfg.app_name == "reffection-node1"
    assert cfg.ari.url == "http://127.0.0.1:18088" and cfg.ami.port == 15038
    assert cfg.api.port == 18090 and [k.audience for k in cfg.api.keys] == ["platform-a"]
    assert cfg.vault == EXAMPLE.parent / "vault.sqlite"
    assert cfg.delivery.outbox == EXAMPLE.parent / "outbox.sqlite"
    assert cfg.recordings.host_dir.is_absolute()
    assert cfg.routes.trunks == ("partner-trunk",)
    c = cfg.campaigns["acme-winter"]
    assert c.flow.consent_mode == "ivr" and c.audience == "platform-a" and c.advertiser == "acme"
    assert c.flow.prompts.question is not None and c.flow.prompts.question.id == "consent-question"
    assert (c.flow.yes_key, c.flow.no_key, c.flow.optout_key, c.flow.confirm_key) == ("1", "2", "9", "#")
    assert c.flow.max_call_seconds == 600.0 and c.policy.pack == "sandbox"


def test_secrets_are_not_in_reprs_and_api_keys_are_kept_hashed() -> None:
    cfg = load_config(EXAMPLE)
    text = repr(cfg)
    assert "reffection-secret" not in text
    assert API_SECRET not in text
    assert all(len(k.sha256) == 32 for k in cfg.api.keys)
    assert API_SECRET.encode() not in b"".join(k.sha256 for k in cfg.api.keys)


def test_optional_settings_take_documented_defaults() -> None:
    raw = example_raw()
    c = camp(raw)
    for opt in ("keys", "timeouts", "policy"):
        del c[opt]
    del raw["node"]
    cfg = parse(raw)
    cs = cfg.campaigns["acme-winter"]
    assert cfg.node == "node1" and cfg.agi_port == 14573 and cfg.shutdown_grace == 10.0
    assert cs.flow.first_digit_timeout == 5.0 and cs.flow.max_retries == 2 and cs.policy.pack == "eu"
    assert cs.policy.calling_window is None


def test_agent_mode_does_not_need_a_question_prompt() -> None:
    raw = example_raw()
    c = camp(raw)
    c["consent_mode"] = "agent"
    del c["prompts"]["question"]
    assert parse(raw).campaigns["acme-winter"].flow.prompts.question is None


def test_calling_window_is_parsed() -> None:
    raw = example_raw()
    camp(raw)["policy"]["calling_window"] = "09:00-20:30"
    assert parse(raw).campaigns["acme-winter"].policy.calling_window == (time(9, 0), time(20, 30))


# ---- each class of mistake names its key -----------------------------------------------------------
Mutation = Callable[[Raw], None]


def _set(path: str, value: Any) -> Mutation:
    """Mutation that sets (or with ``...`` deletes) a '/'-separated path in the raw document."""

    def apply(raw: Raw) -> None:
        node: Any = raw
        *parents, last = path.split("/")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return apply


C = "campaigns/acme-winter/"

CASES: list[tuple[str, Mutation, str]] = [
    # missing keys
    ("missing section", _set("api", ...), "api"),
    ("missing ari url", _set("ari/url", ...), "ari.url"),
    ("null counts as missing", _set("ari/username", None), "ari.username"),
    ("missing ami secret", _set("ami/secret", ...), "ami.secret"),
    ("missing vault path", _set("vault", ...), "vault"),
    ("missing agent dial", _set(C + "agent/dial", ...), CAMPAIGN + "agent.dial"),
    ("missing advertiser", _set(C + "advertiser", ...), CAMPAIGN + "advertiser"),
    ("missing disclosure", _set(C + "prompts/disclosure", ...), CAMPAIGN + "prompts.disclosure"),
    ("missing prompt text", _set(C + "prompts/goodbye/text", ...), CAMPAIGN + "prompts.goodbye.text"),
    ("no routes", _set("routes", []), "routes"),
    ("no campaigns", _set("campaigns", {}), "campaigns"),
    # wrong types
    ("section not a mapping", _set("ari", "http://x"), "ari"),
    ("list for a string", _set("ari/username", ["a"]), "ari.username"),
    ("bool for a string", _set("ari/password", True), "ari.password"),
    ("string for an integer", _set("recordings/retention_days", "90"), "recordings.retention_days"),
    ("bool for an integer", _set("delivery/max_attempts", True), "delivery.max_attempts"),
    ("float for an integer", _set(C + "policy/max_concurrent", 1.5), CAMPAIGN + "policy.max_concurrent"),
    ("string for a number", _set(C + "timeouts/first_digit", "5s"), CAMPAIGN + "timeouts.first_digit"),
    ("non-positive timeout", _set(C + "timeouts/max_call", 0), CAMPAIGN + "timeouts.max_call"),
    ("negative retries", _set(C + "timeouts/retries", -1), CAMPAIGN + "timeouts.retries"),
    ("keys not a list", _set("api/keys", {"name": "x"}), "api.keys"),
    ("campaigns not a mapping", _set("campaigns", ["acme"]), "campaigns"),
    ("campaign not a mapping", _set(C[:-1], "acme"), "campaigns.acme-winter"),
    ("not an http url", _set("ari/url", "ws://127.0.0.1:8088"), "ari.url"),
    ("webhook url", _set("delivery/webhook_url", "ftp://example.org/x"), "delivery.webhook_url"),
    ("short webhook secret", _set("delivery/webhook_secret", "short"), "delivery.webhook_secret"),
    ("bad pack", _set(C + "policy/pack", "mars"), CAMPAIGN + "policy.pack"),
    ("bad node name", _set("node", "Node One"), "node"),
    ("bad audience name", _set("api/keys/0/audience", "Platform A"), "api.keys[0].audience"),
    # ports
    ("port too big", _set("api/port", 70000), "api.port"),
    ("negative port", _set("ami/port", -1), "ami.port"),
    ("port as text", _set("ami/port", "5038"), "ami.port"),
    ("port as bool", _set("api/port", True), "api.port"),
    ("agi port", _set("agi_port", 65536), "agi_port"),
    # consent
    ("unknown consent mode", _set(C + "consent_mode", "robocall"), CAMPAIGN + "consent_mode"),
    ("ivr without question", _set(C + "prompts/question", ...), CAMPAIGN + "prompts.question"),
    # api keys
    ("api key too short", _set("api/keys/0/key", "x" * 23), "api.keys[0].key"),
    ("api key missing", _set("api/keys/0/key", ...), "api.keys[0].key"),
    ("api key name missing", _set("api/keys/0/name", ...), "api.keys[0].name"),
    ("no api keys", _set("api/keys", []), "api.keys"),
    # audience
    ("audience without key", _set(C + "audience", "platform-b"), CAMPAIGN + "audience"),
    # calling window
    ("window reversed", _set(C + "policy/calling_window", "20:00-09:00"), CAMPAIGN + "policy.calling_window"),
    ("window empty", _set(C + "policy/calling_window", "09:00-09:00"), CAMPAIGN + "policy.calling_window"),
    ("window shape", _set(C + "policy/calling_window", "9-17"), CAMPAIGN + "policy.calling_window"),
    ("window hours", _set(C + "policy/calling_window", "08:00-25:00"), CAMPAIGN + "policy.calling_window"),
    ("window minutes", _set(C + "policy/calling_window", "08:61-20:00"), CAMPAIGN + "policy.calling_window"),
    # routes
    ("unknown placeholder", _set("routes/0/dial", "PJSIP/{number}@partner-trunk"), "routes[0].dial"),
    ("no placeholder", _set("routes/1/dial", "PJSIP/partner-trunk"), "routes[1].dial"),
    ("two dial strings", _set("routes/0/dial", "PJSIP/{e164}@a&PJSIP/{e164}@b"), "routes[0].dial"),
    ("broken template", _set("routes/0/dial", "PJSIP/{e164@trunk"), "routes[0].dial"),
    ("prefix not e164", _set("routes/0/prefix", "44"), "routes[0].prefix"),
    ("region not iso", _set("routes/1/region", "Russia"), "routes[1].region"),
    ("prefix and region", _set("routes/0/region", "GB"), "routes[0]"),
    ("unknown route key", _set("routes/0/trunkk", "x"), "routes[0]"),
    ("route dial missing", _set("routes/0/dial", ...), "routes[0].dial"),
    # dtmf keys
    ("no-call date not a list", _set(C + "policy/no_call_dates", "2026-12-25"), CAMPAIGN + "policy.no_call_dates"),
    ("no-call date invalid", _set(C + "policy/no_call_dates", ["2026-12-25", "2026-13-01"]),
     CAMPAIGN + "policy.no_call_dates[1]"),
    ("no-call date a time", _set(C + "policy/no_call_dates", ["2026-12-25T10:00"]),
     CAMPAIGN + "policy.no_call_dates[0]"),
    ("five-key answer", _set(C + "keys/yes", "11111"), CAMPAIGN + "keys.yes"),
    ("two-key confirm", _set(C + "keys/confirm", "##"), CAMPAIGN + "keys.confirm"),
    ("answer begins another", _set(C + "keys/no", "12"), CAMPAIGN + "keys.no"),
    ("two-key opt-out", _set(C + "keys/optout", "*9"), CAMPAIGN + "keys.optout"),
    ("answer holds the opt-out key", _set(C + "keys/yes", "19"), CAMPAIGN + "keys.yes"),
    ("inter-digit timeout zero", _set(C + "timeouts/inter_digit", 0), CAMPAIGN + "timeouts.inter_digit"),
    ("letter key", _set(C + "keys/no", "x"), CAMPAIGN + "keys.no"),
    ("empty key", _set(C + "keys/confirm", ""), CAMPAIGN + "keys.confirm"),
    ("key as list", _set(C + "keys/optout", [9]), CAMPAIGN + "keys.optout"),
]


@pytest.mark.parametrize(("mutate", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_names_the_exact_key(mutate: Mutation, key: str) -> None:
    raw = example_raw()
    mutate(raw)
    assert key_of(raw) == key


def test_duplicate_api_keys_are_refused_without_echoing_them() -> None:
    raw = example_raw()
    raw["api"]["keys"].append({"name": "platform-a-second", "audience": "platform-a", "key": API_SECRET})
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert info.value.key in {"api.keys", "api.keys[1].key"}
    assert API_SECRET not in str(info.value) and API_SECRET not in repr(info.value)


def test_short_api_key_is_not_echoed() -> None:
    raw = example_raw()
    raw["api"]["keys"][0]["key"] = "secret-but-too-short"
    with pytest.raises(ConfigError) as info:
        parse(raw)
    assert "secret-but-too-short" not in str(info.value)


def test_duplicate_route_prefix() -> None:
    raw = example_raw()
    raw["routes"].append({"prefix": "+44", "dial": "PJSIP/{e164}@other"})
    assert key_of(raw) == "routes[2].prefix"


def test_uppercase_campaign_name() -> None:
    raw = example_raw()
    raw["campaigns"]["Acme"] = raw["campaigns"].pop("acme-winter")
    assert key_of(raw) == "campaigns.Acme"


def test_second_audience_needs_its_own_api_key() -> None:
    raw = example_raw()
    raw["campaigns"]["b-spring"] = {**copy.deepcopy(camp(raw)), "audience": "platform-b"}
    assert key_of(raw) == "campaigns.b-spring.audience"
    raw["api"]["keys"].append({"name": "b", "audience": "platform-b", "key": "platform-b-key-0123456789abcdef"})
    assert parse(raw).campaigns["b-spring"].audience == "platform-b"


def test_top_level_must_be_a_mapping() -> None:
    assert key_of(["node"]) == "(top level)"
    assert key_of(None) == "(top level)"


def test_invalid_default_route_names_the_top_level_key() -> None:
    raw = example_raw()
    raw["default_route"] = "PJSIP/partner-trunk"  # no placeholder
    assert key_of(raw) == "default_route"


def test_yes_no_and_optout_keys_must_differ() -> None:
    """Otherwise the daemon starts and every place_call of the campaign fails in FlowSettings."""
    raw = example_raw()
    camp(raw)["keys"]["no"] = "1"
    assert key_of(raw) == CAMPAIGN + "keys.no"


@pytest.mark.parametrize(
    ("path", "key"),
    [("shutdown_grce", "shutdown_grce"), (C + "policy/calling_windw", CAMPAIGN + "policy.calling_windw")],
    ids=["top level", "campaign policy"],
)
def test_misspelt_setting_is_refused_not_ignored(path: str, key: str) -> None:
    """A typo in an optional setting (say the calling window) must not silently drop the rule."""
    raw = example_raw()
    _set(path, "09:00-20:00")(raw)
    assert key_of(raw) == key


# ---- the file ---------------------------------------------------------------------------------------
def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path) and "not found" in info.value.reason


def test_invalid_yaml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path) and "YAML" in info.value.reason


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    """A key given twice in one mapping (here the API port) must not silently keep the last one."""
    text = EXAMPLE.read_text().replace("  port: 18090\n", "  port: 18090\n  port: 18091\n", 1)
    assert text.count("port: 18091") == 1
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "api.port" in str(info.value)


def test_yes_and_no_dtmf_settings_are_not_yaml_booleans(tmp_path: Path) -> None:
    """Under YAML 1.1 ``yes:``/``no:`` are booleans: the settings must still reach the campaign."""
    text, n = re.subn(
        r"(?m)^    keys: \{.*$", '    keys: {yes: "3", no: "4", optout: "5", confirm: "#"}', EXAMPLE.read_text()
    )
    assert n == 1
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    c = load_config(path).campaigns["acme-winter"]
    assert (c.flow.yes_key, c.flow.no_key, c.flow.optout_key) == ("3", "4", "5")


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.mkdir()
    path = target / "c.yaml"
    path.write_text(EXAMPLE.read_text())
    cfg = load_config(path)
    assert cfg.keyring == target / "keyring.json" and cfg.audit_log == target / "audit.jsonl"


def test_no_call_dates_are_read_as_dates_quoted_or_not() -> None:
    extra = "      pack: sandbox\n      no_call_dates: [2026-12-25, '2027-01-01']"
    text = EXAMPLE.read_text().replace("      pack: sandbox", extra, 1)
    assert "no_call_dates" in text
    raw = load_yaml(text)  # the loader load_config uses
    cfg = parse_config(raw, base_dir=EXAMPLE.parent)
    dates = next(iter(cfg.campaigns.values())).policy.no_call_dates
    assert dates == frozenset({date(2026, 12, 25), date(2027, 1, 1)})

"""The daemon's one YAML file, validated at start into typed, frozen settings.

Every error names the exact key (dotted path) and the reason, so a bad deployment fails before
it dials anyone. Paths are resolved relative to the config file's directory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .flow import FlowPrompts, FlowSettings
from .flow.settings import MAX_ANSWER_DIGITS, is_answer_key
from .lead import Prompt
from .routing import RouteTable

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: FlowSettings field -> the YAML key a campaign sets it with
_FLOW_KEYS = {
    "caller_id_presented": "caller_id",
    "transfer_dial_string": "transfer_dial",
    "yes_key": "keys.yes",
    "no_key": "keys.no",
    "optout_key": "keys.optout",
    "confirm_key": "keys.confirm",
    "first_digit_timeout": "timeouts.first_digit",
    "inter_digit_timeout": "timeouts.inter_digit",
    "max_retries": "timeouts.retries",
    "subscriber_ring_timeout": "timeouts.subscriber_ring",
    "agent_ring_timeout": "timeouts.agent_ring",
    "wrap_up_seconds": "timeouts.wrap_up",
    "max_call_seconds": "timeouts.max_call",
}
_PROMPT_NAMES = ("disclosure", "question", "invalid", "goodbye", "whisper", "hold", "apology", "thanks")


@dataclass(frozen=True, slots=True)
class AriSettings:
    url: str
    username: str
    password: str = field(repr=False)
    app: str = "reffection"
    rest_over_websocket: bool = False


@dataclass(frozen=True, slots=True)
class AmiSettings:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A platform's bearer key. Only its SHA-256 is kept in memory after load."""

    name: str
    audience: str
    sha256: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str
    port: int
    keys: tuple[ApiKey, ...]


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """The route table as configured: ``{prefix|region, dial, trunk?}`` items and a default."""

    items: tuple[Mapping[str, Any], ...]
    default: str | None
    trunks: tuple[str, ...]

    def table(self) -> RouteTable:
        return RouteTable.from_config(self.items, self.default)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    pack: str = "eu"
    calling_window: tuple[time, time] | None = None
    max_concurrent: int = 10
    max_cps: float = 5.0
    max_attempts_24h: int | None = None
    cooldown_after_decline_hours: float | None = None
    trunk_max_concurrent: int | None = None
    trunk_max_cps: float | None = None
    no_call_dates: frozenset[date] = frozenset()  # local dates (public holidays...) with no calls


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    """A campaign: who may call it, its advertiser, its pre-dial policy, and the call itself as
    the flow's settings (built and validated here, once; each call adds its policy checks)."""

    name: str
    audience: str
    advertiser: str  # advertiser id (receipt audience)
    advertiser_name: str
    flow: FlowSettings
    policy: PolicySettings = field(default_factory=PolicySettings)

    @property
    def caller_id(self) -> str:
        """The partner's caller ID presented to the subscriber."""
        return self.flow.caller_id_presented


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    asterisk_dir: str  # where MixMonitor writes, as Asterisk sees it
    host_dir: Path  # the same directory from this process's view
    retention_days: int = 90


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    outbox: Path
    jsonl: Path | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    max_attempts: int = 8


@dataclass(frozen=True, slots=True)
class Config:
    node: str
    issuer: str  # the partner's name in receipts
    ari: AriSettings
    ami: AmiSettings
    api: ApiSettings
    keyring: Path
    vault: Path
    audit_log: Path
    recordings: RecordingSettings
    delivery: DeliverySettings
    routes: RouteSettings
    campaigns: Mapping[str, CampaignSettings]
    default_region: str | None = None
    agi_host: str | None = None
    agi_port: int = 14573
    shutdown_grace: float = 10.0

    @property
    def app_name(self) -> str:
        """ARI application name, namespaced per node so a restart resyncs only its own calls."""
        return f"{self.ari.app}-{self.node}"


# ---- loading ---------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one) and reads
    booleans as YAML 1.2 does: only true/false, so ``yes:``/``no:``/``on:`` stay strings (under
    YAML 1.1 the DTMF settings ``keys: {yes: "1", no: "2"}`` would become True/False keys)."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _refuse_duplicates(node: yaml.Node, path: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigError(f"{path}{key}", f"duplicate key (line {key_node.start_mark.line + 1})")
            seen.add(key)
            _refuse_duplicates(value_node, f"{path}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path.rstrip('.')}[{i}].")


def load_yaml(text: str) -> Any:
    """Parse config YAML: duplicate keys are errors, and only true/false are booleans."""
    node = yaml.compose(text, Loader=_StrictLoader)
    if node is not None:
        _refuse_duplicates(node)
    return yaml.load(text, Loader=_StrictLoader)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw: Any, *, base_dir: Path) -> Config:
    readers: list[_Reader] = []
    config = _parse(_Reader(raw, "", base_dir, readers))
    for reader in readers:
        reader.refuse_unknown()
    return config


def _parse(r: _Reader) -> Config:
    node = r.name("node", default="node1")
    ari = r.sub("ari")
    ami = r.sub("ami")
    api = r.sub("api")
    rec = r.sub("recordings")
    delivery = r.sub("delivery")
    route_items = tuple(x.raw for x in r.items("routes", min_len=1, passthrough=True))
    default_route = r.text("default_route", default=None)
    try:
        table = RouteTable.from_config(route_items, default_route)
    except ConfigError as exc:
        key = exc.key if exc.key.startswith(("routes", "default_route")) else f"routes.{exc.key}"
        raise ConfigError(key, exc.reason) from None
    cfg_routes = RouteSettings(items=route_items, default=default_route, trunks=table.trunks())
    keys = []
    for k in api.items("keys", min_len=1):
        secret = k.text("key", min_len=24)
        keys.append(ApiKey(name=k.name("name"), audience=k.name("audience"), sha256=_sha(secret)))
    if len({k.sha256 for k in keys}) != len(keys):
        raise ConfigError("api.keys", "two keys are identical")
    campaigns = {}
    audiences = {k.audience for k in keys}
    for name, c in r.mapping("campaigns", min_len=1):
        if not _NAME.match(name):
            raise ConfigError(f"campaigns.{name}", "campaign names are lowercase [a-z0-9_.-]")
        campaigns[name] = _campaign(name, c, audiences)
    return Config(
        node=node,
        issuer=r.text("issuer", default="partner"),
        ari=AriSettings(
            url=ari.url("url"), username=ari.text("username"), password=ari.text("password"),
            app=ari.name("app", default="reffection"),
            rest_over_websocket=ari.flag("rest_over_websocket", default=False),
        ),
        ami=AmiSettings(
            host=ami.text("host", default="127.0.0.1"), port=ami.port("port"),
            username=ami.text("username"), secret=ami.text("secret"),
        ),
        api=ApiSettings(host=api.text("host", default="127.0.0.1"), port=api.port("port"), keys=tuple(keys)),
        keyring=r.file("keyring"),
        vault=r.file("vault"),
        audit_log=r.file("audit_log"),
        recordings=RecordingSettings(
            asterisk_dir=rec.text("asterisk_dir", default="/var/spool/asterisk/monitor/reffection"),
            host_dir=rec.file("host_dir"),
            retention_days=rec.integer("retention_days", default=90, minimum=1),
        ),
        delivery=DeliverySettings(
            outbox=delivery.file("outbox"),
            jsonl=delivery.file("jsonl", optional=True),
            webhook_url=delivery.url("webhook_url", optional=True),
            webhook_secret=delivery.text("webhook_secret", default=None, min_len=16),
            max_attempts=delivery.integer("max_attempts", default=8, minimum=1),
        ),
        routes=cfg_routes,
        campaigns=campaigns,
        default_region=r.text("default_region", default=None),
        agi_host=r.text("agi_host", default=None),
        agi_port=r.port("agi_port", default=14573),
        shutdown_grace=r.number("shutdown_grace", default=10.0),
    )  # fmt: skip


def _campaign(name: str, c: _Reader, audiences: set[str]) -> CampaignSettings:
    audience = c.name("audience")
    if audience not in audiences:
        raise ConfigError(f"{c.path}audience", f"no API key has audience {audience!r}")
    mode = c.choice("consent_mode", ("ivr", "agent"))
    prompts_r = c.sub("prompts")
    prompts: dict[str, Prompt | None] = {}
    for pname in _PROMPT_NAMES:
        p = prompts_r.sub(pname, optional=True)
        prompts[pname] = (
            None
            if p is None
            else Prompt(
                id=p.text("id"), version=p.text("version"), language=p.text("language", default="en"),
                text=p.text("text"), media=p.text("media"),
            )
        )  # fmt: skip
    disclosure = prompts.pop("disclosure")
    if disclosure is None:
        raise ConfigError(f"{prompts_r.path}disclosure", "required")
    if mode == "ivr" and prompts["question"] is None:
        raise ConfigError(f"{prompts_r.path}question", "required when consent_mode is 'ivr'")
    keys = c.sub("keys", optional=True) or c.empty("keys")
    t = c.sub("timeouts", optional=True) or c.empty("timeouts")
    pol = c.sub("policy", optional=True) or c.empty("policy")
    adv = c.sub("advertiser")
    agent = c.sub("agent")
    digits = {k: keys.answer(k, d) for k, d in (("yes", "1"), ("no", "2"))}
    digits |= {k: keys.dtmf(k, d) for k, d in (("optout", "9"), ("confirm", "#"))}
    # how the answers relate (distinct, prefix-free, no opt-out key inside) is FlowSettings' check
    advertiser = adv.name("id")
    try:
        flow = FlowSettings(
            consent_mode=mode, campaign=name, advertiser=advertiser, caller_id_presented=c.text("caller_id"),
            prompts=FlowPrompts(disclosure=disclosure, **prompts),
            yes_key=digits["yes"], no_key=digits["no"], optout_key=digits["optout"], confirm_key=digits["confirm"],
            first_digit_timeout=t.number("first_digit", default=5.0),
            inter_digit_timeout=t.number("inter_digit", default=3.0),
            max_retries=t.integer("retries", default=2, minimum=0),
            subscriber_ring_timeout=t.number("subscriber_ring", default=30.0),
            agent_ring_timeout=t.number("agent_ring", default=20.0),
            wrap_up_seconds=t.number("wrap_up", default=30.0),
            max_call_seconds=t.number("max_call", default=900.0),
            transfer_dial_string=c.text("transfer_dial", default=None),
            agent_dial_string=agent.text("dial"), agent_id=agent.text("id", default=None),
        )
    except ConfigError as exc:  # the flow's own checks (the readers' errors are already named)
        if exc.key.startswith(c.path):
            raise
        raise ConfigError(f"{c.path}{_FLOW_KEYS.get(exc.key, exc.key)}", exc.reason) from None
    return CampaignSettings(
        name=name, audience=audience, advertiser=advertiser, advertiser_name=adv.text("name"), flow=flow,
        policy=PolicySettings(
            pack=pol.choice("pack", ("ru", "us", "eu", "sandbox"), default="eu"),
            calling_window=pol.window("calling_window"),
            no_call_dates=pol.dates("no_call_dates"),
            max_concurrent=pol.integer("max_concurrent", default=10, minimum=1),
            max_cps=pol.number("max_cps", default=5.0),
            max_attempts_24h=pol.integer("max_attempts_24h", default=None, minimum=1),
            cooldown_after_decline_hours=pol.number("cooldown_after_decline_hours", default=None),
            trunk_max_concurrent=pol.integer("trunk_max_concurrent", default=None, minimum=1),
            trunk_max_cps=pol.number("trunk_max_cps", default=None),
        ),
    )  # fmt: skip


def _sha(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


_MISSING = object()


class _Reader:
    """Typed access to one YAML mapping that reports errors with the full dotted key."""

    def __init__(self, raw: Any, path: str, base_dir: Path, registry: list[_Reader], check: bool = True) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path.rstrip(".") or "(top level)", "must be a mapping")
        self.raw = raw
        self.path = path
        self.base_dir = base_dir
        self.registry = registry
        self.seen: set[str] = set()
        if check:
            registry.append(self)

    def refuse_unknown(self) -> None:
        """A misspelt optional setting must fail, not silently drop the rule it was meant to set."""
        for key in self.raw:
            if str(key) not in self.seen:
                raise ConfigError(f"{self.path}{key}", "unknown setting")

    def empty(self, key: str) -> _Reader:
        return _Reader({}, f"{self.path}{key}.", self.base_dir, self.registry)

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        value = self.raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ConfigError(self.path + key, "required")
            return default
        return value

    def sub(self, key: str, optional: bool = False) -> Any:
        value = self._get(key, None if optional else _MISSING)
        return None if value is None else _Reader(value, f"{self.path}{key}.", self.base_dir, self.registry)

    def items(self, key: str, min_len: int = 0, passthrough: bool = False) -> list[_Reader]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list) or len(value) < min_len:
            raise ConfigError(self.path + key, f"must be a list with at least {min_len} item(s)")
        return [
            _Reader(v, f"{self.path}{key}[{i}].", self.base_dir, self.registry, check=not passthrough)
            for i, v in enumerate(value)
        ]

    def mapping(self, key: str, min_len: int = 0) -> list[tuple[str, _Reader]]:
        value = self._get(key, _MISSING)
        if not isinstance(value, dict) or len(value) < min_len:
            raise ConfigError(self.path + key, f"must be a mapping with at least {min_len} entry")
        return [
            (str(k), _Reader(v, f"{self.path}{key}.{k}.", self.base_dir, self.registry)) for k, v in value.items()
        ]

    def text(self, key: str, default: Any = _MISSING, min_len: int = 1) -> Any:
        value = self._get(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(self.path + key, "must be a string")
        value = str(value)
        if len(value) < min_len:
            raise ConfigError(self.path + key, f"must be at least {min_len} characters")
        return value

    def name(self, key: str, default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value is not None and not _NAME.match(value):
            raise ConfigError(self.path + key, "must match [a-z0-9][a-z0-9_.-]* (max 63)")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value not in options:
            raise ConfigError(self.path + key, f"must be one of {', '.join(options)}")
        return value

    def number(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(self.path + key, "must be a positive number")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.path + key, "must be true or false")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: int = 0) -> Any:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(self.path + key, f"must be an integer >= {minimum}")
        return value

    def port(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(self.path + key, "must be a TCP/UDP port (0-65535)")
        return value

    def url(self, key: str, optional: bool = False) -> Any:
        value = self.text(key, None if optional else _MISSING)
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ConfigError(self.path + key, "must be an http(s) URL")
        return value

    def file(self, key: str, optional: bool = False) -> Any:
        value = self.text(key, None if optional else _MISSING)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def dtmf(self, key: str, default: str) -> Any:
        value = self.text(key, default)
        if len(value) != 1 or value not in "0123456789*#ABCD":
            raise ConfigError(self.path + key, "must be one DTMF key (0-9, *, #, A-D)")
        return value

    def answer(self, key: str, default: str) -> Any:
        value = self.text(key, default)
        if not is_answer_key(value):
            raise ConfigError(self.path + key, f"must be 1 to {MAX_ANSWER_DIGITS} DTMF keys (0-9, *, #, A-D)")
        return value

    def dial_template(self, key: str) -> Any:
        value = self.text(key)
        if "{e164}" not in value and "{national}" not in value and "{digits}" not in value:
            raise ConfigError(self.path + key, "must contain {e164}, {digits} or {national}")
        return value

    def dates(self, key: str) -> frozenset[date]:
        value = self._get(key, None)
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            raise ConfigError(self.path + key, "must be a list of dates like 2026-12-25")
        out: set[date] = set()
        for i, item in enumerate(value):
            if isinstance(item, date) and not isinstance(item, datetime):  # YAML reads 2026-12-25 as a date
                out.add(item)
                continue
            if isinstance(item, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", item):
                try:
                    out.add(date.fromisoformat(item))
                    continue
                except ValueError:
                    pass
            raise ConfigError(f"{self.path}{key}[{i}]", "must be a date like 2026-12-25")
        return frozenset(out)

    def window(self, key: str) -> tuple[time, time] | None:
        value = self.text(key, None)
        if value is None:
            return None
        m = re.fullmatch(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})", value)
        if not m:
            raise ConfigError(self.path + key, "must look like 09:00-20:00")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        try:
            start, end = time(h1, m1), time(h2, m2)
        except ValueError:
            raise ConfigError(self.path + key, "not a valid time range") from None
        if start >= end:
            raise ConfigError(self.path + key, "start must be before end")
        return (start, end)

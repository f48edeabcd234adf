"""N concurrent consent calls on the sandbox Asterisk: daemon CPU beside Asterisk CPU, same run.

usage: python bench/calls.py [--n 50 100 200] [--quick] [--cps 40] [--profile] [--json PATH]

For each N, in one sitting: a fresh work directory (keyring, vault, outbox), N tokens for N
distinct subscribers (020 7946 0xxx, Ofcom's drama range), the real daemon started as a
subprocess (``python -m reffection_ari run -c config.yaml``) so its CPU is its own, N calls placed
through the platform API at ``--cps`` per second, followed on the SSE stream until every call is
over (with a deadline). Subscribers and agents are Local channels into the sandbox's
``[bench-subscriber]`` / ``[bench-agent]`` contexts, so every call is a whole consent call:
answer, MixMonitor, disclosure, question, key 1, agent leg, whisper, bridge, agent key ``#``,
lead (reveal, signed receipt, fsynced outbox, JSONL delivery), agent hangs up.

CPU is ``utime + stime`` from ``/proc/PID/stat`` for the daemon and for Asterisk over the same
window (first POST to last terminal event); the bench's own client CPU is separate and reported.
Event→command latency is the daemon's ``reffection_event_handling_seconds`` histogram (from
``GET /metrics``; quantiles are bucket upper bounds, as ``Histogram.quantile``). After each size
the bench asserts that no channel or bridge of its calls is left in Asterisk, before and after
the daemon stops, and deletes the recordings it caused (``--keep-recordings`` keeps them).

The sandbox is shared: the bench holds a lease, takes the SIP-peer lock the real-Asterisk tests
use (so their timed scenarios and our CPU window do not overlap), and reports any channels of
other users it saw during the window. Run the big sizes once, not in a loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import phonenumbers
import yaml

import reffection_ari.sandbox as sandbox_pkg
from reffection_ari.errors import ReffectionError
from reffection_ari.phone import PhoneNumber
from reffection_ari.sandbox import Sandbox
from reffection_ari.tokens import Keyring, SqliteVault, TokenCodec, TokenService

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
CAMPAIGN = "acme-winter"
AUDIENCE = "platform-a"
TERMINAL = frozenset({"ended", "failed", "transferred"})
CLK_TCK = os.sysconf("SC_CLK_TCK")
HIST = "reffection_event_handling_seconds"

#: From /work/shared/asterisk-sandbox.md, "Figures measured here" (2 vCPU, simpler flows:
#: Local originate -> play -> DTMF -> hangup, 200 concurrent, one sitting).
BASELINE = {
    "naive_client_ms_per_flow": "4.1-4.7 (all 20 events); 3.4 with an event filter",
    "asterisk_ms_per_flow": "14-15 under ARI (12 dialplan floor; MixMonitor +6)",
    "ratio": "~28-31% (naive prototype)",
}


class BenchError(ReffectionError):
    """The bench could not run or measure (not a product failure: those are reported)."""


# ---- measurement primitives -----------------------------------------------------------------
def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB: the resident set now and its peak since the process started."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def host_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host since boot, from ``/proc/stat``."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def schedstat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(seconds on CPU, seconds runnable but waiting for a CPU) of one thread, or summed over every
    thread of ``pid``. The wait is what an oversubscribed host costs a thread in latency."""
    tids = [tid] if tid is not None else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    run = wait = 0
    for t in tids:
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread may exit meanwhile
            fields = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
    return run / 1e9, wait / 1e9


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """CPU counters of every party at one instant (seconds)."""

    at: float
    daemon: float
    asterisk: float
    bench: float
    host_busy: float
    host_total: float
    loop_run: float  # the daemon's event-loop thread: on CPU
    loop_wait: float  # ... and runnable, waiting for a CPU
    asterisk_wait: float  # all Asterisk threads, runnable and waiting

    @classmethod
    def take(cls, daemon_pid: int, asterisk_pid: int) -> Snapshot:
        busy, total = host_cpu_seconds()
        loop_run, loop_wait = schedstat(daemon_pid, daemon_pid)
        return cls(time.monotonic(), proc_cpu_seconds(daemon_pid), proc_cpu_seconds(asterisk_pid),
                   self_cpu_seconds(), busy, total, loop_run, loop_wait,
                   schedstat(asterisk_pid)[1])  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative bucket counts of one Prometheus histogram (``le`` ascending, +Inf last)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    total: float

    def minus(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        if earlier.bounds != self.bounds:
            return self
        return HistogramSnapshot(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.count - earlier.count,
            self.total - earlier.total,
        )

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (same rule as ``Histogram.quantile``)."""
        if self.count <= 0:
            return 0.0
        target = q * self.count
        for bound, seen in zip(self.bounds, self.cumulative, strict=True):
            if seen >= target:
                return bound
        return float("inf")


def parse_histogram(text: str, name: str) -> HistogramSnapshot:
    """Read ``name``'s buckets, ``_count`` and ``_sum`` from Prometheus text exposition."""
    buckets: list[tuple[float, int]] = []
    count, total = 0, 0.0
    pattern = re.compile(rf'^{re.escape(name)}_bucket\{{le="([^"]+)"\}} (\S+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            buckets.append((float(m.group(1)), int(float(m.group(2)))))
        elif line.startswith(f"{name}_count "):
            count = int(float(line.split()[1]))
        elif line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
    buckets.sort()
    return HistogramSnapshot(tuple(b for b, _ in buckets), tuple(c for _, c in buckets), count, total)


def parse_gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def bench_numbers(start: int, count: int) -> list[str]:
    """``count`` distinct valid GB numbers from 020 7946 0000-0999 (never assigned to anyone)."""
    if start < 0 or start + count > 1000:
        raise BenchError(f"numbers {start}..{start + count - 1} exceed the 1000-number range", code="range")
    out = []
    for i in range(start, start + count):
        e164 = f"+44207946{i:04d}"
        if not phonenumbers.is_valid_number(phonenumbers.parse(e164)):
            raise BenchError(f"bench number #{i} is not a valid number", code="invalid_number")
        out.append(e164)
    return out


def number_leaks(text: str, numbers: Sequence[str]) -> int:
    """Lines of ``text`` that contain a used number in E.164, digits-only or national form."""
    needles = set()
    for e164 in numbers:
        digits = e164[1:]
        needles.update({digits, digits[2:], "0" + digits[2:], f"{digits[2:4]} {digits[4:8]} {digits[8:]}"})
    return sum(1 for line in text.splitlines() if any(n in line for n in needles))


# ---- one size ------------------------------------------------------------------------------
@dataclass
class CallTrack:
    states: list[str] = field(default_factory=list)
    final: str | None = None
    reason: str | None = None
    lead: bool = False
    placed_at: float = 0.0
    ended_at: float = 0.0


@dataclass
class SizeResult:
    n: int
    accepted: int
    refused: dict[str, int]
    completed_with_lead: int
    outcomes: dict[str, int]  # "state/reason" -> count, every terminal call
    unfinished: int
    leads_delivered: int
    peak_active: int
    wall_s: float
    ramp_s: float
    daemon_cpu_s: float
    asterisk_cpu_s: float
    bench_cpu_s: float
    other_cpu_s: float
    host_util: float  # busy share of the host's CPUs over the window, 0..1
    events: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    post_p50_ms: float
    post_p99_ms: float
    loop_run_s: float
    loop_wait_s: float
    asterisk_wait_s: float
    daemon_rtt_ms: tuple[float, float, float]  # /healthz p50, p99, max during the window
    asterisk_rtt_ms: tuple[float, float, float]  # /ari/asterisk/ping p50, p99, max
    rss_idle_kib: int
    rss_peak_kib: int
    leftover_channels: int
    leftover_bridges: int
    leftover_after_stop: int
    foreign_channels_max: int
    log_number_lines: int
    daemon_exit: int | None
    profiled: bool
    variant: str = "stock"

    @property
    def failures(self) -> int:
        return self.n - self.completed_with_lead

    def per_call(self, seconds: float) -> float:
        return seconds / max(1, self.accepted)


def ari_headers(sandbox: Sandbox) -> dict[str, str]:
    token = base64.b64encode(f"{sandbox.ari_user}:{sandbox.ari_password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(workdir: Path, sandbox: Sandbox, n: int, cps: float) -> tuple[Path, dict[str, Any]]:
    """The example config, pointed at the sandbox, with Local-channel subscriber and agent routes."""
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    raw["node"] = f"bench{uuid.uuid4().hex[:8]}"
    raw["ari"].update(url=sandbox.ari_url, username=sandbox.ari_user, password=sandbox.ari_password)
    raw["ami"].update(host=sandbox.ami_host, port=sandbox.ami_port, username=sandbox.ami_user,
                      secret=sandbox.ami_secret)  # fmt: skip
    raw["api"]["port"] = free_port()
    raw["recordings"]["host_dir"] = str(sandbox.recordings_dir)
    raw["routes"] = [{"prefix": "+44", "dial": "Local/{digits}@bench-subscriber"}]
    raw["shutdown_grace"] = 10
    campaign = raw["campaigns"][CAMPAIGN]
    campaign["agent"] = {"dial": "Local/s@bench-agent", "id": "bench-agent"}
    # 2*cps fits the policy's token bucket with headroom: pacing, not the limiter, sets the rate.
    campaign["policy"] = {"pack": "sandbox", "max_concurrent": n + 50, "max_cps": max(50.0, 2 * cps)}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, raw


def issue_tokens(workdir: Path, raw: dict[str, Any], numbers: Sequence[str]) -> list[str]:
    keyring = Keyring.generate(workdir / raw["keyring"], overwrite=True)
    vault = SqliteVault(workdir / raw["vault"], keyring.lookup_key())
    try:
        service = TokenService(TokenCodec(keyring), vault)
        return [service.issue(PhoneNumber.parse(n), AUDIENCE, consent_source="bench") for n in numbers]
    finally:
        vault.close()


class DaemonProcess:
    """The daemon as a child process: its CPU and memory are measurable apart from the bench."""

    def __init__(self, config: Path, log_path: Path, profile: Path | None, variant: str = "stock") -> None:
        cmd = [sys.executable]
        if profile is not None:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        if variant == "stock":
            cmd += ["-m", "reffection_ari", "run", "-c", str(config)]
        else:  # the same daemon with bench-side patches that estimate a lever (see ``daemon_child``)
            cmd += [str(Path(__file__).resolve()), "--daemon-child", variant, "-c", str(config)]
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(config.parent), start_new_session=True)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_healthy(self, http: aiohttp.ClientSession, base: str, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"daemon exited with {self.proc.returncode}; see {self.log_path}", code="daemon")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            if loop.time() > deadline:
                raise BenchError(f"daemon not healthy after {timeout:.0f}s; see {self.log_path}", code="daemon")
            await asyncio.sleep(0.1)  # polling a readiness condition with a deadline

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: active calls end within shutdown_grace), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self._log.close()
        return self.proc.returncode


class Run:
    """The platform's side of one size: POSTs, the SSE stream, and each call's fate."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: dict[str, CallTrack] = {}
        self.refused: Counter[str] = Counter()
        self.accepted: set[str] = set()
        self.terminal: set[str] = set()
        self.posts_done = 0
        self.post_ms: list[float] = []
        self.active = 0
        self.peak_active = 0
        self.done = asyncio.Event()
        self.stream_open = asyncio.Event()

    def track(self, call_id: str) -> CallTrack:
        track = self.calls.get(call_id)
        if track is None:
            track = self.calls[call_id] = CallTrack()
        return track

    def _check(self) -> None:
        if self.posts_done == self.n and self.accepted <= self.terminal:
            self.done.set()

    def posted(self, call_id: str | None, code: str | None, took: float) -> None:
        self.posts_done += 1
        self.post_ms.append(took * 1000)
        if call_id is None:
            self.refused[code or "unknown"] += 1
        else:
            self.accepted.add(call_id)
            track = self.track(call_id)
            track.placed_at = time.monotonic()
            if call_id not in self.terminal:
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
        self._check()

    def event(self, data: dict[str, Any]) -> None:
        call_id = str(data["call_id"])
        track = self.track(call_id)
        state = str(data["state"])
        track.states.append(state)
        if state == "lead_stored":
            track.lead = True
        if state in TERMINAL and call_id not in self.terminal:
            self.terminal.add(call_id)
            track.final, track.reason = state, data.get("reason")
            track.ended_at = time.monotonic()
            if call_id in self.accepted:
                self.active -= 1
        self._check()

    async def read_sse(self, response: aiohttp.ClientResponse) -> None:
        async for raw in response.content:
            line = raw.decode()
            if line.startswith(": stream open"):
                self.stream_open.set()
            elif line.startswith("data:"):
                self.event(json.loads(line[5:]))


async def place_calls(run: Run, http: aiohttp.ClientSession, base: str, key: str, tokens: Sequence[str],
                      cps: float) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}

    async def post(token: str) -> None:
        started = time.perf_counter()
        call_id: str | None = None
        code: str | None = None
        try:
            async with http.post(f"{base}/v1/calls", json={"token": token, "campaign": CAMPAIGN},
                                 headers=headers) as r:  # fmt: skip
                body = await r.json()
                if r.status == 202:
                    call_id = str(body["call_id"])
                else:
                    code = f"http_{r.status}:{body.get('error', {}).get('code')}"
        except (aiohttp.ClientError, json.JSONDecodeError, TimeoutError) as exc:
            code = f"client_{type(exc).__name__}"
        run.posted(call_id, code, time.perf_counter() - started)

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i, token in enumerate(tokens):
        delay = start + i / cps - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load (calls per second), not synchronising
        tasks.append(asyncio.create_task(post(token)))
    await asyncio.gather(*tasks)


def _ours(obj: dict[str, Any], call_ids: tuple[str, ...]) -> bool:
    """A channel/bridge of this run: id derived from a call id, or a ;2 half in a bench context."""
    if call_ids and str(obj.get("id", "")).startswith(call_ids):
        return True
    name = str(obj.get("name", ""))
    return "@bench-subscriber-" in name or "@bench-agent-" in name


async def asterisk_objects(ari: aiohttp.ClientSession, url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with ari.get(f"{url}/ari/channels") as r:
        r.raise_for_status()
        channels: list[dict[str, Any]] = await r.json()
    async with ari.get(f"{url}/ari/bridges") as r:
        r.raise_for_status()
        bridges: list[dict[str, Any]] = await r.json()
    return channels, bridges


async def leftovers(ari: aiohttp.ClientSession, url: str, call_ids: tuple[str, ...],
                    settle: float = 8.0) -> tuple[list[str], list[str]]:  # fmt: skip
    """Channels and bridges of this run still in Asterisk, after up to ``settle`` s of teardown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        channels, bridges = await asterisk_objects(ari, url)
        left_c = [str(c["id"]) for c in channels if _ours(c, call_ids)]
        left_b = [str(b["id"]) for b in bridges if _ours(b, call_ids)]
        if not (left_c or left_b) or loop.time() > deadline:
            return left_c, left_b
        await asyncio.sleep(0.25)  # polling Asterisk's state with a deadline


async def watch_foreign(ari: aiohttp.ClientSession, url: str, run: Run, stop: asyncio.Event, every: float,
                        seen: list[int]) -> None:  # fmt: skip
    """Max channels of other users during the window (their load would inflate Asterisk's CPU)."""
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError):
            channels, _ = await asterisk_objects(ari, url)
            ids = tuple(run.calls)
            seen.append(sum(1 for c in channels if not _ours(c, ids)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def probe(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None, stop: asyncio.Event,
                every: float, rtts: list[float]) -> None:  # fmt: skip
    """Round-trip times of a trivial request: the responsiveness of the daemon's event loop
    (``/healthz``) or of Asterisk's HTTP server (``/ari/asterisk/ping``) under the load."""
    while not stop.is_set():
        started = time.perf_counter()
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url, headers=headers) as r:
                await r.read()
            rtts.append((time.perf_counter() - started) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def wait_leads(path: Path, want: int, timeout: float = 15.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        have = sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0
        if have >= want or loop.time() > deadline:
            return have
        await asyncio.sleep(0.1)  # polling the sink's file with a deadline


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    return percentile(values, 0.5), percentile(values, 0.99), max(values, default=0.0)


async def run_size(n: int, numbers: Sequence[str], args: argparse.Namespace, sandbox: Sandbox,
                   asterisk_pid: int, workroot: Path) -> SizeResult:  # fmt: skip
    workdir = workroot / f"n{n}"
    if workdir.exists():
        shutil.rmtree(workdir)  # each size starts from nothing: new keyring, vault, outbox
    workdir.mkdir(parents=True)
    config_path, raw = write_config(workdir, sandbox, n, args.cps)
    tokens = await asyncio.to_thread(issue_tokens, workdir, raw, numbers)
    key = raw["api"]["keys"][0]["key"]
    base = f"http://{raw['api']['host']}:{raw['api']['port']}"
    profile = workdir / "daemon.prof" if args.profile else None
    daemon = DaemonProcess(config_path, workdir / "daemon.log", profile, args.variant)
    run = Run(n)
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http, \
            aiohttp.ClientSession(headers=ari_headers(sandbox)) as ari:  # fmt: skip
        exit_code: int | None = None
        stop_watch = asyncio.Event()
        sse_task: asyncio.Task[None] | None = None
        watch_task: asyncio.Task[None] | None = None
        try:
            await daemon.wait_healthy(http, base)
            stream = await http.get(f"{base}/v1/events", headers={"Authorization": f"Bearer {key}"})
            if stream.status != 200:
                raise BenchError(f"event stream refused: HTTP {stream.status}", code="sse")
            sse_task = asyncio.create_task(run.read_sse(stream))
            await asyncio.wait_for(run.stream_open.wait(), 10)
            async with http.get(f"{base}/metrics") as r:
                hist0 = parse_histogram(await r.text(), HIST)
            rss_idle, _ = proc_memory_kib(daemon.pid)
            foreign: list[int] = []
            watch_task = asyncio.create_task(
                watch_foreign(ari, sandbox.ari_url, run, stop_watch, args.watch_every, foreign)
            )
            rtt_daemon: list[float] = []
            rtt_ast: list[float] = []
            probes = [
                asyncio.create_task(probe(http, f"{base}/healthz", None, stop_watch, args.probe_every, rtt_daemon)),
                asyncio.create_task(probe(ari, f"{sandbox.ari_url}/ari/asterisk/ping", None, stop_watch,
                                          args.probe_every, rtt_ast)),
            ]  # fmt: skip
            spy = PySpy(args.py_spy, daemon.pid, workdir / "daemon.spy") if args.py_spy else None
            before = Snapshot.take(daemon.pid, asterisk_pid)
            await place_calls(run, http, base, key, tokens, args.cps)
            ramp = time.monotonic() - before.at
            deadline = n / args.cps + args.deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.done.wait(), max(1.0, deadline - ramp))
            after = Snapshot.take(daemon.pid, asterisk_pid)
            if spy is not None:
                await spy.stop()
            _, rss_peak = proc_memory_kib(daemon.pid)
            stop_watch.set()
            await watch_task
            await asyncio.gather(*probes)
            async with http.get(f"{base}/metrics") as r:
                hist = parse_histogram(await r.text(), HIST).minus(hist0)
            call_ids = tuple(run.accepted)
            left_c, left_b = await leftovers(ari, sandbox.ari_url, call_ids)
            leads = sum(1 for t in run.calls.values() if t.lead)
            delivered = await wait_leads(workdir / raw["delivery"]["jsonl"], leads)
        finally:
            stop_watch.set()
            exit_code = await daemon.stop()
            for task in (sse_task, watch_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                        await task
        after_stop_c, after_stop_b = await leftovers(ari, sandbox.ari_url, tuple(run.accepted), settle=5.0)
        if after_stop_c or after_stop_b:  # never leave the shared sandbox dirty
            for cid in after_stop_c:
                async with ari.delete(f"{sandbox.ari_url}/ari/channels/{cid}"):
                    pass
            for bid in after_stop_b:
                async with ari.delete(f"{sandbox.ari_url}/ari/bridges/{bid}"):
                    pass
    if not args.keep_recordings:
        for call_id in run.accepted:
            with contextlib.suppress(FileNotFoundError):
                (sandbox.recordings_dir / f"{call_id}.wav").unlink()
    outcomes: Counter[str] = Counter()
    for call_id in run.accepted:
        t = run.calls[call_id]
        outcomes[f"{t.final}/{t.reason}" if t.final else "unfinished"] += 1
    completed = sum(
        1 for cid in run.accepted if run.calls[cid].lead and run.calls[cid].final in ("ended", "transferred")
        and run.calls[cid].reason == "completed"
    )  # fmt: skip
    log_text = daemon.log_path.read_text(errors="replace")
    wall = after.at - before.at
    d_daemon, d_ast, d_bench = (
        after.daemon - before.daemon,
        after.asterisk - before.asterisk,
        after.bench - before.bench,
    )
    d_busy, d_total = after.host_busy - before.host_busy, after.host_total - before.host_total
    return SizeResult(
        n=n, accepted=len(run.accepted), refused=dict(run.refused), completed_with_lead=completed,
        outcomes=dict(outcomes), unfinished=outcomes.get("unfinished", 0), leads_delivered=delivered,
        peak_active=run.peak_active, wall_s=wall, ramp_s=ramp,
        daemon_cpu_s=d_daemon, asterisk_cpu_s=d_ast, bench_cpu_s=d_bench,
        other_cpu_s=max(0.0, d_busy - d_daemon - d_ast - d_bench),
        host_util=d_busy / d_total if d_total else 0.0,
        events=hist.count, latency_p50_ms=hist.quantile(0.5) * 1000, latency_p99_ms=hist.quantile(0.99) * 1000,
        latency_mean_ms=hist.total / hist.count * 1000 if hist.count else 0.0,
        post_p50_ms=percentile(run.post_ms, 0.5), post_p99_ms=percentile(run.post_ms, 0.99),
        loop_run_s=after.loop_run - before.loop_run, loop_wait_s=after.loop_wait - before.loop_wait,
        asterisk_wait_s=after.asterisk_wait - before.asterisk_wait,
        daemon_rtt_ms=spread(rtt_daemon), asterisk_rtt_ms=spread(rtt_ast),
        rss_idle_kib=rss_idle, rss_peak_kib=rss_peak,
        leftover_channels=len(left_c), leftover_bridges=len(left_b),
        leftover_after_stop=len(after_stop_c) + len(after_stop_b),
        foreign_channels_max=max(foreign, default=0),
        log_number_lines=number_leaks(log_text, numbers), daemon_exit=exit_code, profiled=profile is not None,
        variant=args.variant,
    )  # fmt: skip


# ---- report --------------------------------------------------------------------------------
def render(results: Sequence[SizeResult]) -> str:
    def ms(v: float) -> str:
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"

    def trio(v: tuple[float, float, float]) -> str:
        return "/".join(f"{x:.0f}" if x >= 10 else f"{x:.1f}" for x in v)

    def lat(v: float) -> str:
        return "inf" if v == float("inf") else f"<={v:g}"

    rows: list[tuple[str, list[str], str]] = [
        ("calls placed (202)", [f"{r.accepted}/{r.n}" for r in results], ""),
        ("peak active calls", [str(r.peak_active) for r in results], ""),
        ("completed with a lead", [str(r.completed_with_lead) for r in results], ""),
        ("failures", [str(r.failures) for r in results], "target 0"),
        ("leads delivered (JSONL)", [str(r.leads_delivered) for r in results], ""),
        ("daemon CPU ms / call", [ms(r.per_call(r.daemon_cpu_s) * 1000) for r in results],
         BASELINE["naive_client_ms_per_flow"]),
        ("Asterisk CPU ms / call", [ms(r.per_call(r.asterisk_cpu_s) * 1000) for r in results],
         BASELINE["asterisk_ms_per_flow"]),
        ("daemon / Asterisk CPU", [f"{r.daemon_cpu_s / r.asterisk_cpu_s:.1%}" if r.asterisk_cpu_s else "-"
                                   for r in results], f"target <=10%; {BASELINE['ratio']}"),
        ("flow events / call", [f"{r.events / max(1, r.accepted):.1f}" for r in results], ""),
        ("event->command p50 ms", [lat(r.latency_p50_ms) for r in results], "bucket upper bound"),
        ("event->command p99 ms", [lat(r.latency_p99_ms) for r in results], "target <=20 at 200"),
        ("event->command mean ms", [ms(r.latency_mean_ms) for r in results], ""),
        ("POST /v1/calls p50/p99 ms", [f"{r.post_p50_ms:.1f}/{r.post_p99_ms:.1f}" for r in results], ""),
        ("daemon /healthz RTT p50/p99/max ms", [trio(r.daemon_rtt_ms) for r in results], "event-loop lag"),
        ("loop thread on CPU / runq wait s", [f"{r.loop_run_s:.2f}/{r.loop_wait_s:.2f}" for r in results],
         "waiting = host oversubscribed"),
        ("Asterisk threads runq wait s", [f"{r.asterisk_wait_s:.2f}" for r in results], ""),
        ("Asterisk ARI ping p50/p99/max ms", [trio(r.asterisk_rtt_ms) for r in results], "Asterisk HTTP lag"),
        ("daemon RSS idle / peak MiB", [f"{r.rss_idle_kib / 1024:.0f}/{r.rss_peak_kib / 1024:.0f}" for r in results],
         ""),
        ("RSS per active call KiB", [f"{(r.rss_peak_kib - r.rss_idle_kib) / max(1, r.peak_active):.0f}"
                                     for r in results], "(peak - idle) / peak active"),
        ("wall s (ramp s)", [f"{r.wall_s:.1f} ({r.ramp_s:.1f})" for r in results], ""),
        ("host CPU busy (2 vCPU = 100%)", [f"{r.host_util:.0%}" for r in results], ""),
        ("bench client / other CPU s", [f"{r.bench_cpu_s:.2f}/{r.other_cpu_s:.2f}" for r in results],
         "not in the ratio"),
        ("foreign channels seen (max)", [str(r.foreign_channels_max) for r in results], "other sandbox users"),
        ("left in Asterisk (ch/br)", [f"{r.leftover_channels}/{r.leftover_bridges}" for r in results], "must be 0/0"),
        ("left after daemon stop", [str(r.leftover_after_stop) for r in results], "must be 0"),
        ("log lines with a number", [str(r.log_number_lines) for r in results], "must be 0"),
    ]  # fmt: skip
    head = [
        f"N = {r.n}" + (" (profiled)" if r.profiled else "") + (f" {r.variant}" if r.variant != "stock" else "")
        for r in results
    ]
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(h), *(len(row[1][i]) for row in rows)) for i, h in enumerate(head)]
    lines = [" | ".join([" " * w0, *(h.rjust(w) for h, w in zip(head, widths, strict=True)), "baseline / note"])]
    lines.append("-+-".join(["-" * w0, *("-" * w for w in widths), "-" * 15]))
    for label, values, note in rows:
        lines.append(" | ".join([label.ljust(w0), *(v.rjust(w) for v, w in zip(values, widths, strict=True)), note]))
    for r in results:
        bad = {k: v for k, v in sorted(r.outcomes.items()) if k != "ended/completed"}
        bad.update({f"refused:{k}": v for k, v in sorted(r.refused.items())})
        no_lead = r.outcomes.get("ended/completed", 0) - r.completed_with_lead
        if no_lead > 0:
            bad["ended/completed without lead"] = no_lead
        lines.append(f"N={r.n} failures by end reason: {json.dumps(bad) if bad else 'none'}"
                     f"  (daemon exit {r.daemon_exit})")  # fmt: skip
    return "\n".join(lines)


class PySpy:
    """py-spy sampling the daemon during the measurement window only (not its start-up)."""

    def __init__(self, binary: str, pid: int, out: Path, rate: int = 250) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", str(rate),
             "--nonblocking", "--nolineno", "--idle", "--threads"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


#: Where the daemon's time goes, by the innermost matching frame of each sample's stack.
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("AMI (panoramisk parse + dispatch)", r"panoramisk/|reffection_ari/ami\.py"),
    ("lead: receipt/outbox/audit/vault/hash", r"evidence/|tokens/|service/partner\.py|_recording_info|sqlite3"),
    ("logging", r"logging/|reffection_ari/phone\.py"),
    ("ARI WebSocket read + event decode", r"reffection_ari/ari/(events|models)\.py|_ws_|websocket|_reader"),
    ("ARI REST requests (aiohttp client)", r"aiohttp/client|reffection_ari/ari/(rest|client)\.py"),
    ("platform API server + SSE (aiohttp web)", r"aiohttp/web|reffection_ari/api\.py"),
    ("flow state machine", r"reffection_ari/flow/"),
    ("call service (routing, translate, execute)", r"reffection_ari/service/calls\.py"),
)


def spy_summary(path: Path, top: int = 20) -> str:
    """From py-spy's raw stacks (``--idle --threads``): how busy the event-loop thread was
    (wall-clock, so blocking I/O on the loop shows up, unlike CPU time), where that busy time went
    by subsystem and by leaf frame, and what the executor threads did."""
    main_total = main_idle = 0
    workers_busy = 0
    leaf: Counter[str] = Counter()
    category: Counter[str] = Counter()
    worker_leaf: Counter[str] = Counter()
    compiled = [(name, re.compile(rx)) for name, rx in _CATEGORIES]
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack.startswith("thread (") or not count_s.isdigit():
            continue
        count = int(count_s)
        _thread, _, rest = stack.partition(": ")
        name, _, frames_s = rest.partition(";")
        frames = frames_s.split(";") if frames_s else [name]
        if name != "MainThread":
            if not frames[-1].startswith("_worker ("):  # an executor thread doing work, not waiting
                workers_busy += count
                worker_leaf[frames[-1]] += count
            continue
        main_total += count
        if frames[-1].endswith("select (selectors.py)"):
            main_idle += count
            continue
        leaf[frames[-1]] += count
        for frame in reversed(frames):  # the innermost subsystem frame wins
            hit = next((label for label, rx in compiled if rx.search(frame)), None)
            if hit is not None:
                category[hit] += count
                break
        else:
            category["event loop / other"] += count
    busy = main_total - main_idle
    if not busy:
        return "py-spy: no busy samples"
    out = [
        f"py-spy: event-loop thread busy {busy / main_total:.0%} of the window's wall time "
        f"({busy} of {main_total} samples); executor threads busy {workers_busy} samples",
        "loop busy time by subsystem (innermost match):",
    ]
    out += [f"  {n / busy:6.1%}  {label}" for label, n in category.most_common()]
    out.append("loop busy time, top leaf frames:")
    out += [f"  {n / busy:6.1%}  {frame}" for frame, n in leaf.most_common(top)]
    if worker_leaf:
        out.append("executor threads, top leaf frames (share of loop-busy samples):")
        out += [f"  {n / busy:6.1%}  {frame}" for frame, n in worker_leaf.most_common(6)]
    return "\n".join(out)


def profile_summary(path: Path, top: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# ---- sandbox sharing -----------------------------------------------------------------------
@contextlib.contextmanager
def sip_peer_lock(sandbox: Sandbox, wait: float) -> Iterator[bool]:
    """The lock the real-Asterisk call tests hold: while we hold it they queue instead of overlapping
    our CPU window (and our load does not break their timed scenarios). Yields whether we got it."""
    sandbox.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(sandbox.cache_dir / "sip-peers.lock", "a+") as fh:
        deadline = time.monotonic() + wait
        got = False
        while not got:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # waiting for another process's lock, with a deadline
        try:
            yield got
        finally:
            if got:
                fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_bench_dialplan(sandbox: Sandbox) -> bool:
    """Make sure the running Asterisk has ``[bench-subscriber]``/``[bench-agent]``.

    An Asterisk started before those contexts were added to the sandbox config lacks them and every
    call fails at once. Install the sandbox's own ``extensions.conf`` (the file ``Sandbox.start``
    installs) and ``dialplan reload``: contexts are added, calls in progress are not touched.
    Returns True if a reload was needed.
    """

    def present(context: str) -> bool:
        return f"Context '{context}' created" in sandbox.cli(f"dialplan show {context}")

    if present("bench-subscriber") and present("bench-agent"):
        return False
    source = Path(sandbox_pkg.__file__).with_name("conf") / "extensions.conf"
    if "[bench-subscriber]" not in source.read_text():
        raise BenchError(f"{source} has no [bench-subscriber] context", code="dialplan")
    shutil.copyfile(source, sandbox.host_path("/etc/asterisk/extensions.conf"))
    sandbox.cli("dialplan reload")
    if not (present("bench-subscriber") and present("bench-agent")):
        raise BenchError("dialplan reload did not load [bench-subscriber]", code="dialplan")
    return True


async def run_all(args: argparse.Namespace, sandbox: Sandbox, workroot: Path) -> list[SizeResult]:
    asterisk_pid = sandbox.pid()
    if asterisk_pid is None:
        raise BenchError("the sandbox Asterisk is not running", code="sandbox")
    if await asyncio.to_thread(ensure_bench_dialplan, sandbox):
        print("note: the running Asterisk lacked the bench contexts; installed extensions.conf, dialplan reload")
    results: list[SizeResult] = []
    offset = args.number_offset
    for n in args.n:
        numbers = bench_numbers(offset, n)
        offset += n
        print(f"N={n}: placing {n} calls at {args.cps:g}/s ...", flush=True)
        result = await run_size(n, numbers, args, sandbox, asterisk_pid, workroot)
        results.append(result)
        print(render([result]).splitlines()[-1], flush=True)
        if args.profile:
            print(profile_summary(workroot / f"n{n}" / "daemon.prof"))
        if args.py_spy:
            print(spy_summary(workroot / f"n{n}" / "daemon.spy"), flush=True)
    return results


VARIANTS = ("stock", "ami-filter", "uvloop", "ami-filter+uvloop")


def daemon_child(variant: str, config: str) -> int:
    """Run the product's daemon with what-if patches applied from outside (nothing in the package
    changes): ``ami-filter`` asks Asterisk to send this AMI session only ``TestEvent`` (the one event
    the service listens to; an AMI ``Filter`` action after login), ``uvloop`` swaps the event loop.
    Used to put a number on a lever before anyone changes the product."""
    from reffection_ari import ami as ami_mod
    from reffection_ari.cli import main as cli_main

    parts = set(variant.split("+"))
    if "uvloop" in parts:
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        uvloop.install()
    if "ami-filter" in parts:
        original = ami_mod.AmiClient._on_login
        pending: set[asyncio.Future[Any]] = set()

        def on_login(self: ami_mod.AmiClient, manager: Any) -> None:
            original(self, manager)
            action = {"Action": "Filter", "Operation": "Add", "Filter": "Event: TestEvent"}
            future = asyncio.ensure_future(manager.send_action(action))
            pending.add(future)
            future.add_done_callback(reported)

        def reported(future: asyncio.Future[Any]) -> None:
            pending.discard(future)
            reply = future.result()
            reply = reply[-1] if isinstance(reply, list) else reply
            print(f"bench ami-filter: Filter action -> {dict(reply).get('Response')}", file=sys.stderr, flush=True)

        ami_mod.AmiClient._on_login = on_login  # type: ignore[method-assign]
    return cli_main(["run", "-c", config])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, nargs="+", default=[50, 100, 200], help="concurrent call counts")
    p.add_argument("--quick", action="store_true", help="one tiny run (N=5) to check the set-up")
    p.add_argument("--cps", type=float, default=40.0, help="API requests per second (policy max_cps is 2x)")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds after the ramp for calls to finish")
    p.add_argument("--profile", action="store_true", help="run the daemon under cProfile (CPU figures inflate)")
    p.add_argument("--py-spy", metavar="BIN", help="sample the daemon with this py-spy during the window")
    p.add_argument("--variant", choices=VARIANTS, default="stock", help="what-if patches on the daemon")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--workdir", type=Path, help="keep work files here (default: a temporary directory)")
    p.add_argument("--keep-recordings", action="store_true", help="keep the recordings the calls made")
    p.add_argument("--number-offset", type=int, default=100, help="first of the 020 7946 0xxx numbers used")
    p.add_argument("--watch-every", type=float, default=5.0, help="seconds between foreign-channel samples")
    p.add_argument("--probe-every", type=float, default=0.25, help="seconds between responsiveness probes")
    p.add_argument("--lock-wait", type=float, default=300.0, help="max seconds to wait for the SIP-peer lock")
    args = p.parse_args(argv)
    if args.quick:
        args.n = [5]
    if sum(args.n) + args.number_offset > 1000:
        p.error("the sizes need more than the 1000 numbers of 020 7946 0xxx; lower --n or --number-offset")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    if raw_argv[:1] == ["--daemon-child"] and len(raw_argv) == 4 and raw_argv[2] == "-c":
        return daemon_child(raw_argv[1], raw_argv[3])
    args = parse_args(argv)
    sandbox = Sandbox()
    with contextlib.ExitStack() as stack:
        workroot = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-calls-")))
        workroot.mkdir(parents=True, exist_ok=True)
        stack.enter_context(sandbox.lease())
        if not stack.enter_context(sip_peer_lock(sandbox, args.lock_wait)):
            print("warning: SIP-peer lock not obtained; other tests may overlap the measurement", file=sys.stderr)
        results = asyncio.run(run_all(args, sandbox, workroot))
    print()
    print(f"consent calls on the sandbox ({sandbox.version()}, {os.cpu_count()} vCPU, {args.cps:g} calls/s offered)")
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    clean = all(r.leftover_channels == r.leftover_bridges == r.leftover_after_stop == 0 for r in results)
    print(f"no channels or bridges of the bench left in Asterisk: {'yes' if clean else 'NO'}")
    ok = clean and all(r.failures == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

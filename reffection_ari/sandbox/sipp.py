"""Real SIP peers for the sandbox: sipp user agents on loopback, driven from asyncio.

A :class:`SippUAS` plays a scenario from ``sandbox/sipp/`` (or a path) on ``127.0.0.1:port``.
With ``trace_dir`` set, every SIP message the peer saw is written to
``trace_dir/<scenario>-<port>-messages.log`` -- the proof of what crossed the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import SandboxError
from .scenarios import Scenario

SCENARIO_DIR = Path(__file__).with_name("sipp")


def scenario_path(scenario: str) -> Path:
    path = Path(scenario)
    if path.suffix == ".xml" and path.is_file():
        return path
    candidate = SCENARIO_DIR / f"{scenario}.xml"
    if not candidate.is_file():
        raise SandboxError(f"unknown sipp scenario {scenario!r}", code="unknown_scenario")
    return candidate


def _udp_bound(port: int, pid: int) -> bool:
    """True when process ``pid`` itself holds a UDP socket bound to ``port`` (another process
    holding the port must not count as our peer being ready)."""
    needle = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 9 and parts[1].endswith(needle):
                    inodes.add(parts[9])
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return True
    return False


class SippUAS:
    """A sipp user agent server answering one call (``-m calls``) with a scenario."""

    def __init__(
        self,
        scenario: str | Scenario,
        port: int,
        *,
        trace_dir: Path | None = None,
        calls: int = 1,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if shutil.which("sipp") is None:
            raise SandboxError("sipp is not installed (apt-get install sip-tester)", code="sipp_missing")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if isinstance(scenario, Scenario):
            self._tmp = tempfile.TemporaryDirectory(prefix="reffection-sipp-")
            path = Path(self._tmp.name) / f"{scenario.name}.xml"
            path.write_text(scenario.xml)
            self.scenario = path
        else:
            self.scenario = scenario_path(scenario)
        self.port = port
        self.trace_dir = trace_dir
        self.calls = calls
        self.extra_args = extra_args
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def message_log(self) -> Path | None:
        if self.trace_dir is None:
            return None
        return self.trace_dir / f"{self.scenario.stem}-{self.port}-messages.log"

    def messages(self) -> str:
        """Every SIP message this peer sent or received (needs ``trace_dir``)."""
        path = self.message_log
        return path.read_text(errors="replace") if path and path.exists() else ""

    async def start(self, ready_timeout: float = 5.0) -> None:
        args = [
            "-sf", str(self.scenario),
            "-i", "127.0.0.1", "-p", str(self.port),
            "-ci", "127.0.0.1", "-cp", str(self.port + 5),
            "-mi", "127.0.0.1", "-mp", str(20000 + (self.port % 1000) * 8),
            "-m", str(self.calls), "-nostdin", "-timeout_error", "-timeout", "120s",
        ]  # fmt: skip
        if self.message_log is not None:
            assert self.trace_dir is not None
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            args += ["-trace_msg", "-message_file", str(self.message_log)]
        self._proc = await asyncio.create_subprocess_exec(
            "sipp", *args, *self.extra_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while not _udp_bound(self.port, self._proc.pid):
            if self._proc.returncode is not None or loop.time() > deadline:
                err = b""
                if self._proc.stderr is not None and self._proc.returncode is not None:
                    err = await self._proc.stderr.read()
                await self.stop()
                raise SandboxError(
                    f"sipp {self.scenario.stem} did not bind 127.0.0.1:{self.port}: "
                    f"{err.decode(errors='replace').strip()[-300:]}",
                    code="sipp_failed",
                )
            await asyncio.sleep(0.02)  # polling a readiness condition with a deadline

    async def wait(self, timeout: float) -> int:
        """Wait for sipp to finish its calls; returns its exit code (0 = all calls succeeded)."""
        assert self._proc is not None
        return await asyncio.wait_for(self._proc.wait(), timeout)

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self._cleanup()
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> SippUAS:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

"""A real Asterisk 22 in a Debian sid chroot: build once, start, wait until ready, stop by PID.

Debian 12 ships no ``asterisk`` package, Debian sid does. The chroot is built with debootstrap
into a cache directory and reused; it is rebuilt only when missing or broken (no marker, no
binary). The Asterisk configuration is installed on every start from two places: the sandbox's
own base files (``sandbox/conf``) and the partner-facing files in the repository's ``dialplan/``
(contexts, PJSIP endpoints, ARI/HTTP/AMI) -- so the dialplan that ships is the dialplan tested.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SandboxError

log = logging.getLogger(__name__)

_MARKER = ".reffection-sandbox"
_BASE_CONF = Path(__file__).with_name("conf")
_DEFAULT_MIRROR = "http://deb.debian.org/debian"


def default_cache_dir() -> Path:
    return Path(os.environ.get("REFFECTION_SANDBOX_DIR", "/var/cache/reffection-ari"))


def dialplan_dir() -> Path:
    """The repository's ``dialplan/`` (or ``$REFFECTION_DIALPLAN_DIR``)."""
    env = os.environ.get("REFFECTION_DIALPLAN_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "dialplan")
    for path in candidates:
        if (path / "extensions_reffection.conf").is_file():
            return path
    raise SandboxError(
        "dialplan/ not found; set REFFECTION_DIALPLAN_DIR to the project's dialplan directory",
        code="dialplan_missing",
    )


def apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for src in sources:
        for line in src.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri.rstrip("/")
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                uri = parts[2] if parts[1].startswith("[") else parts[1]
                return uri.rstrip("/")
    return _DEFAULT_MIRROR


@dataclass(frozen=True, slots=True)
class SandboxPorts:
    ari: int = 18088
    ami: int = 15038
    sip: int = 15060


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    built: bool
    running: bool
    pid: int | None
    version: str | None
    ari_reachable: bool

    def describe(self) -> str:
        state = "running" if self.running else "stopped"
        ari = "reachable" if self.ari_reachable else "unreachable"
        return (
            f"asterisk: {state} pid={self.pid or '-'} version={self.version or '-'} "
            f"ari={ari} built={'yes' if self.built else 'no'}"
        )


@dataclass(slots=True)
class Sandbox:
    """One Asterisk sandbox. Credentials and ports are the ones in ``dialplan/``."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    ports: SandboxPorts = field(default_factory=SandboxPorts)
    ari_user: str = "reffection"
    ari_password: str = "reffection-secret"
    ami_user: str = "reffection"
    ami_secret: str = "reffection-secret"
    mirror: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    # ---- locations -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.cache_dir / "root"

    @property
    def pid_file(self) -> Path:
        return self.cache_dir / "asterisk.pid"

    @property
    def log_file(self) -> Path:
        return self.cache_dir / "asterisk.log"

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ari}"

    @property
    def ami_host(self) -> str:
        return "127.0.0.1"

    @property
    def ami_port(self) -> int:
        return self.ports.ami

    @property
    def sip_port(self) -> int:
        return self.ports.sip

    @property
    def recordings_dir(self) -> Path:
        """Host path of the directory MixMonitor writes call recordings to."""
        return self.host_path("/var/spool/asterisk/monitor/reffection")

    def host_path(self, chroot_path: str) -> Path:
        """Translate a path as Asterisk sees it into the host's view of the chroot."""
        rel = chroot_path.lstrip("/")
        if rel.startswith("var/run/"):  # ROOT/var/run is an absolute symlink to /run
            rel = "run/" + rel[len("var/run/") :]
        return self.root / rel

    # ---- build -----------------------------------------------------------------------------
    def is_built(self) -> bool:
        return (self.root / _MARKER).is_file() and (self.root / "usr/sbin/asterisk").is_file()

    def ensure_built(self) -> float:
        """Build the chroot unless a good one is cached. Returns the seconds spent building."""
        if self.is_built():
            return 0.0
        _require_root()
        if shutil.which("debootstrap") is None:
            raise SandboxError(
                "debootstrap is not installed (apt-get install debootstrap)", code="debootstrap_missing"
            )
        started = time.monotonic()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / "root.tmp"
        for stale in (tmp, self.root):
            if stale.exists():
                log.info("sandbox removing incomplete chroot path=%s", stale)
                shutil.rmtree(stale)
        mirror = self.mirror or apt_mirror()
        log.info("sandbox building chroot suite=sid mirror=%s", mirror)
        cmd = [
            "debootstrap", "--variant=minbase", "--include=asterisk,asterisk-modules",
            "sid", str(tmp), mirror,
        ]  # fmt: skip
        with open(self.cache_dir / "debootstrap.log", "wb") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise SandboxError(
                f"debootstrap failed (exit {proc.returncode}); see {self.cache_dir / 'debootstrap.log'}",
                code="build_failed",
            )
        version = _asterisk_version(tmp)
        if not version.startswith("Asterisk "):
            raise SandboxError(f"built chroot has no working asterisk: {version!r}", code="build_failed")
        (tmp / _MARKER).write_text(json.dumps({"version": version, "mirror": mirror}) + "\n")
        tmp.rename(self.root)
        return time.monotonic() - started

    def version(self) -> str | None:
        if not self.is_built():
            return None
        marker = json.loads((self.root / _MARKER).read_text())
        return str(marker.get("version"))

    def install_config(self) -> None:
        """Install the base config and the project's ``dialplan/`` files into the chroot."""
        etc = self.root / "etc/asterisk"
        if etc.exists():
            shutil.rmtree(etc)
        etc.mkdir(parents=True)
        for source_dir in (_BASE_CONF, dialplan_dir()):
            for conf in sorted(source_dir.glob("*.conf")):
                shutil.copyfile(conf, etc / conf.name)
        for rel in ("run/asterisk", "var/spool/asterisk/monitor/reffection", "var/log/asterisk"):
            (self.root / rel).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "run/asterisk/asterisk.ctl").unlink()

    # ---- shared use ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, start_timeout: float = 30.0) -> Iterator[Sandbox]:
        """Use the sandbox, starting it if needed; several processes may hold leases at once.

        Each holder keeps a shared lock on ``users.lock``. Asterisk is stopped on exit only by the
        holder that started it, and only when no other holder remains -- so a test run, the demo
        and an operator's ``sandbox up`` can overlap without pulling Asterisk from under each other.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        users = open(self.cache_dir / "users.lock", "a+")
        started = False
        try:
            with open(self.cache_dir / "start.lock", "a+") as start_lock:
                fcntl.flock(start_lock, fcntl.LOCK_EX)
                fcntl.flock(users, fcntl.LOCK_SH)
                if self.pid() is None:
                    self.start(start_timeout)
                    started = True
                else:
                    self.wait_ready(start_timeout)
            yield self
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            if started:
                with open(self.cache_dir / "start.lock", "a+") as start_lock:
                    fcntl.flock(start_lock, fcntl.LOCK_EX)
                    try:
                        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        log.info("sandbox still in use by another process; leaving Asterisk running")
                    else:
                        self.stop()
            users.close()

    @contextlib.contextmanager
    def sip_peers(self) -> Iterator[None]:
        """Exclusive use of the sandbox's SIP peer ports (15070 subscriber, 15080 agent, 15090
        advertiser): the PJSIP endpoints point at fixed addresses, so one process at a time."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / "sip-peers.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- run -------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_asterisk(pid) else None

    def start(self, timeout: float = 30.0) -> float:
        """Start Asterisk and wait until ARI answers and it is fully booted. Returns seconds."""
        _require_root()
        if not self.is_built():
            raise SandboxError("sandbox is not built (reffection-ari sandbox build)", code="not_built")
        if self.pid() is not None:
            raise SandboxError(f"sandbox already running (pid {self.pid()})", code="already_running")
        self._check_ports_free()
        self.install_config()
        started = time.monotonic()
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-n", "-q"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                umask=0o077,  # recordings are personal data: owner-only files
            )  # fmt: skip
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            self.wait_ready(timeout, proc=proc)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def wait_ready(self, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not self.ari_reachable():
            if proc is not None and proc.poll() is not None:
                raise SandboxError(
                    f"asterisk exited with {proc.returncode} during start; see {self.log_file}",
                    code="start_failed",
                )
            if time.monotonic() > deadline:
                raise SandboxError(f"ARI not reachable after {timeout:.0f}s", code="start_timeout")
            time.sleep(0.05)  # polling a readiness condition with a deadline
        self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))

    def stop(self, grace: float = 25.0) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Returns True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid):
            log.warning("sandbox asterisk ignored SIGTERM for %.0fs; killing pid=%d", grace, pid)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                _reap(pid)
                time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)  # collect our child's exit status (no zombie, no warning)
            self._proc = None
        return True

    def status(self) -> SandboxStatus:
        pid = self.pid()
        return SandboxStatus(
            built=self.is_built(),
            running=pid is not None,
            pid=pid,
            version=self.version(),
            ari_reachable=pid is not None and self.ari_reachable(),
        )

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        proc = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-rx", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SandboxError(
                f"asterisk -rx {command!r} failed: {proc.stderr.strip() or proc.stdout.strip()}",
                code="cli_failed",
            )
        return proc.stdout

    def ari_reachable(self) -> bool:
        token = base64.b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        req = urllib.request.Request(
            f"{self.ari_url}/ari/asterisk/info", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _check_ports_free(self) -> None:
        for kind, port in (("tcp", self.ports.ari), ("tcp", self.ports.ami), ("udp", self.ports.sip)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
            try:
                # SO_REUSEADDR as Asterisk itself does: TIME_WAIT leftovers are not a conflict.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise SandboxError(
                    f"port {kind}/{port} on 127.0.0.1 is already in use ({exc.strerror}); "
                    "stop whatever holds it or change the ports",
                    code="port_in_use",
                ) from None
            finally:
                sock.close()


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the Asterisk sandbox needs root (debootstrap and chroot); run as root or use sudo",
            code="not_root",
        )


def _asterisk_version(root: Path) -> str:
    proc = subprocess.run(
        ["chroot", str(root), "/usr/sbin/asterisk", "-V"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


def _is_asterisk(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"asterisk" in cmdline and ") Z" not in stat


def _alive(pid: int) -> bool:
    return _is_asterisk(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)

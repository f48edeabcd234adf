"""The embedded Asterisk sandbox: a real Asterisk 22 (Debian sid chroot) plus sipp peers."""

from .chroot import Sandbox, SandboxPorts, SandboxStatus, apt_mirror, default_cache_dir, dialplan_dir
from .sipp import SippUAS, scenario_path

__all__ = [
    "Sandbox",
    "SandboxPorts",
    "SandboxStatus",
    "SippUAS",
    "apt_mirror",
    "default_cache_dir",
    "dialplan_dir",
    "scenario_path",
]

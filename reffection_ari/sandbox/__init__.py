"""The embedded Asterisk sandbox: a real Asterisk 22 (Debian sid chroot) plus sipp peers."""

from .chroot import Sandbox, SandboxPorts, SandboxStatus, apt_mirror, default_cache_dir, dialplan_dir
from .scenarios import Scenario, Step, dtmf, hangup, pause, speech, uas
from .sipp import SippUAS, scenario_path

__all__ = [
    "Sandbox",
    "SandboxPorts",
    "SandboxStatus",
    "Scenario",
    "SippUAS",
    "Step",
    "apt_mirror",
    "default_cache_dir",
    "dialplan_dir",
    "dtmf",
    "hangup",
    "pause",
    "scenario_path",
    "speech",
    "uas",
]

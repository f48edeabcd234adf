"""``reffection-ari sandbox build|up|down|status|cli``: the embedded Asterisk 22 sandbox."""

from __future__ import annotations

import argparse
from typing import Any

from ..sandbox import Sandbox


def register(sub: Any) -> None:
    parser = sub.add_parser("sandbox", help="build, start, stop and inspect the Asterisk sandbox")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("build", help="build the Debian sid chroot with Asterisk (cached)")
    actions.add_parser("up", help="build if needed, start Asterisk and wait until ready")
    actions.add_parser("down", help="stop Asterisk (SIGTERM, then SIGKILL)")
    actions.add_parser("status", help="show whether Asterisk runs and ARI answers")
    cli = actions.add_parser("cli", help="run an Asterisk CLI command")
    cli.add_argument("cli_command", metavar="COMMAND", help='e.g. "core show channels"')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    box = Sandbox()
    if args.action == "build":
        seconds = box.ensure_built()
        print(f"sandbox built in {seconds:.1f}s" if seconds else "sandbox already built (cached)")
        print(f"root: {box.root}\nversion: {box.version()}")
    elif args.action == "up":
        built = box.ensure_built()
        if box.pid() is not None:
            print(f"already running: {box.status().describe()}")
            return 0
        seconds = box.start()
        prefix = f"built in {built:.1f}s, " if built else ""
        print(f"sandbox {prefix}started in {seconds:.2f}s")
        print(box.status().describe())
        print(f"ARI {box.ari_url} user={box.ari_user}  AMI 127.0.0.1:{box.ami_port}  SIP 127.0.0.1:{box.sip_port}")
    elif args.action == "down":
        print("stopped" if box.stop() else "not running")
    elif args.action == "status":
        status = box.status()
        print(status.describe())
        return 0 if status.running and status.ari_reachable else 3
    elif args.action == "cli":
        print(box.cli(args.cli_command), end="")
    return 0

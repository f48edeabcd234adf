"""``reffection-ari run -c config.yaml``: the dialer daemon."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the daemon (ARI/AMI, platform API, delivery)")
    parser.add_argument("-c", "--config", required=True, help="YAML configuration file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..daemon import Daemon

    config = load_config(args.config)
    asyncio.run(Daemon(config).run_forever())
    return 0

"""``reffection-ari check-config -c config.yaml``: validate without connecting to anything."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("check-config", help="validate a configuration file and exit")
    parser.add_argument("-c", "--config", required=True, help="YAML configuration file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..policy import PolicyEngine
    from ..service.partner import campaign_policy

    config = load_config(args.config)
    engine = PolicyEngine()
    for campaign in config.campaigns.values():
        for trunk in config.routes.trunks:
            engine.rules(campaign_policy(campaign, trunk))
    print(
        f"ok: node={config.node} campaigns={len(config.campaigns)} "
        f"routes={len(config.routes.items)} api_keys={len(config.api.keys)}"
    )
    return 0

"""``reffection-ari demo``: a full consented call end to end on the embedded sandbox."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run one consented call end to end on the Asterisk sandbox")
    parser.add_argument("--workdir", help="where keys, vault, outbox, leads and SIP traces go (default: temp)")
    parser.add_argument("--keep-sandbox", action="store_true", help="leave Asterisk running afterwards")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import main

    return main(args.workdir, args.keep_sandbox)

"""``reffection-ari`` command line: one subcommand module per concern.

Each module in :data:`SUBCOMMAND_MODULES` exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` (``(args) -> int``) as the default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..errors import ReffectionError

SUBCOMMAND_MODULES = (
    "sandbox",
    "keys",
    "tokenize",
    "run",
    "demo",
    "receipt",
    "outbox",
    "audit",
    "dnc",
    "check_config",
    "erase",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reffection-ari", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..logging_setup import configure_logging

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        rc: int = args.func(args)
    except ReffectionError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())

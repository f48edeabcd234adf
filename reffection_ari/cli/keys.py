"""`reffection-ari keys` (not yet available)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Placeholder: the command is registered when implemented."""
    del sub


def _unused(args: argparse.Namespace) -> int:  # pragma: no cover
    return 0

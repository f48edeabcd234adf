"""Logging configuration for the CLI and the daemon: structured key=value lines on stderr.

Every record passes :class:`~reffection_ari.phone.PhoneMaskFilter` on the handler, the second line
of defence after :class:`~reffection_ari.phone.PhoneNumber`'s own masking.
"""

from __future__ import annotations

import logging
import sys

from .phone import PhoneMaskFilter


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(PhoneMaskFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # panoramisk logs raw AGI/AMI headers (caller ids, dial strings) at debug: never below INFO.
    logging.getLogger("panoramisk").setLevel(max(level, logging.INFO))

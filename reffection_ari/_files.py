"""Files that hold personal data are created owner-only (0600), whatever the process umask."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite's -wal/-shm files
    then inherit that mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

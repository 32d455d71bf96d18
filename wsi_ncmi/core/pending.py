"""What this process is writing now (temporary files, lock files), so a stopped process removes them: the one
registry the atomic writers and the locks share."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

PENDING: set[Path] = set()
"""Temporary files and lock files this process is writing now; `remove_pending` deletes them when it is stopped."""


def remove_pending() -> None:
    """Delete every temporary and lock file this process holds (a pool worker being stopped calls this, then exits)."""
    for path in list(PENDING):
        with suppress(OSError):
            path.unlink(missing_ok=True)
    PENDING.clear()

"""Per-slide lock files, so two workers (processes, hosts, array tasks) never write the same output.

A lock is `{output}.lock`, created atomically (O_EXCL) and holding JSON {host, pid, time}. A lock left by a dead
process on this host, or older than the timeout anywhere, is stale: it is removed with a warning and taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.pending import PENDING

STALE_AFTER_S = 24 * 3600.0


class LockedError(WsiNcmiError):
    """Another live worker holds the slide's lock; the message says who."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path, stale_after: float) -> str | None:
    """Why an existing lock is stale (None when it is held)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    age = time.time() - float(info.get("time", path.stat().st_mtime))
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return f"its process {info.get('pid')} on this host is gone"
    if age > stale_after:
        return f"it is {age / 3600:.1f} h old"
    return None


def stale_reason(lock: Path, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why the lock file `lock` is stale (its process is gone, or it is too old); None while it is held."""
    return _stale(Path(lock), stale_after)


def acquire_lock(output: Path, stale_after: float = STALE_AFTER_S) -> Path:
    """Take `{output}.lock` (clearing a stale one with a warning); raise LockedError if a live worker holds it."""
    lock = Path(f"{output}.lock")
    payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            reason = _stale(lock, stale_after)
            if reason is None:
                holder = lock.read_text(errors="replace").strip()
                raise LockedError(
                    f"{output}: being written by another worker ({holder}); if it died, remove {lock}"
                ) from None
            warnings.warn(f"{lock}: removing a stale lock ({reason})", stacklevel=3)
            lock.unlink(missing_ok=True)
            continue
        PENDING.add(lock)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
        except BaseException:
            release_lock(lock)
            raise
        return lock
    raise LockedError(f"{output}: could not take {lock}")


def lock_holder(output: Path, stale_after: float = STALE_AFTER_S) -> str | None:
    """Who holds `{output}.lock` ({host, pid, time} as written), or None when nobody does or the holder is gone."""
    lock = Path(f"{output}.lock")
    try:
        if _stale(lock, stale_after) is not None:
            return None
        return lock.read_text(errors="replace").strip() or "a process that has not written its name yet"
    except FileNotFoundError:
        return None


def release_lock(lock: Path) -> None:
    Path(lock).unlink(missing_ok=True)
    PENDING.discard(Path(lock))


@contextmanager
def slide_lock(output: Path, stale_after: float = STALE_AFTER_S) -> Iterator[None]:
    """Hold `{output}.lock` while the body writes `output`."""
    lock = acquire_lock(output, stale_after)
    try:
        yield
    finally:
        release_lock(lock)

"""Atomic file writes: write to a temporary name in the same folder, then rename over the final name.

HDF5 files are written through `h5_atomic`, whose file object never reports a failed write (a full disk) to
HDF5: the HDF5 library crashes the process (segmentation fault) when it releases a file whose write failed, so
the error is held back, the rest of the file is discarded, and the error is raised once HDF5 has closed it.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wsi_ncmi.core.folders import make_parents
from wsi_ncmi.core.pending import PENDING

TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")
"""Temporary files `atomic_path` and the bag writer leave behind when their process is killed: .NAME.tmp-PID."""
ABANDONED_AFTER_S = 600.0
"""A temporary file whose process is gone is removed once it has not changed for this long (a writer on another
host sharing the folder keeps its file changing)."""


def sweep_leftovers(folder: Path | str, now: float | None = None) -> list[Path]:
    """Remove what killed processes left under `folder`: temporary files of processes no longer running on this
    host (unchanged for ABANDONED_AFTER_S) and stale lock files (see wsi_ncmi.core.locks); returns what was removed."""
    import time

    from wsi_ncmi.core.locks import STALE_AFTER_S, stale_reason

    folder, now = Path(folder), time.time() if now is None else now
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*"):
        match = TEMP_NAME.match(path.name)
        try:
            if match and path.is_file():
                age = now - path.stat().st_mtime
                if (age > ABANDONED_AFTER_S and not _running(int(match.group(1)))) or age > STALE_AFTER_S:
                    path.unlink()
                    removed.append(path)
        except OSError:
            continue
    for path in folder.rglob("*.lock"):
        try:
            if path.is_file() and path not in PENDING and stale_reason(path) is not None:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (creating the folders above it); on success rename it to `path`, on
    error remove it.

    An interrupted writer therefore never leaves a half-written file under the final name; an OSError that names
    no file (a full disk) is raised again naming `path`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(path))
    make_parents(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    PENDING.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        PENDING.discard(tmp)


class GuardedFile:
    """A binary file for h5py's `fileobj` driver that swallows write errors and remembers the first one.

    After a failed write, later writes are discarded (the position still advances) and reads of missing bytes
    return zeros, so HDF5 never sees an I/O error; `error` holds the OSError to raise after closing.
    """

    def __init__(self, path: Path | str):
        self.raw = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by close()
        self.error: OSError | None = None

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) or b""
        return data + bytes(max(0, size - len(data)))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self.raw.readinto(view) or 0
        view[n:] = bytes(len(view) - n)
        return len(view)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        start = self.raw.tell()
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self.raw.write(view[done:]) or 0
                return len(view)
            except OSError as exc:
                self._fail(exc)
        self.raw.seek(start + len(view))
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        try:
            return self.raw.truncate(size)
        except OSError as exc:
            self._fail(exc)
            return self.raw.tell() if size is None else size

    def flush(self) -> None:
        return None

    def close(self) -> None:
        try:
            self.raw.close()
        except OSError as exc:
            self._fail(exc)


@contextmanager
def h5_atomic(path: Path | str) -> Iterator[Any]:
    """Yield a writable h5py.File that becomes `path` atomically; a write error (full disk) raises a clean OSError
    naming `path` after HDF5 has let go of the file, and leaves no temporary file behind."""
    import h5py

    with atomic_path(path) as tmp:
        guard = GuardedFile(tmp)
        try:
            with h5py.File(guard, "w") as h5:
                yield h5
        finally:
            guard.close()
        raise_write_error(guard, path)


def raise_write_error(guard: GuardedFile, path: Path | str) -> None:
    """Raise the first write error `guard` held back, as an OSError naming `path`."""
    if guard.error is not None:
        exc = guard.error
        raise OSError(exc.errno, f"{path}: could not write ({exc.strerror}); free some space and run again") from exc


def save_torch(obj: Any, path: Path | str) -> None:
    """torch.save `obj` to `path` atomically; serialised in memory first, so a full disk is a plain OSError (torch's
    own writer reports it as an opaque RuntimeError)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())

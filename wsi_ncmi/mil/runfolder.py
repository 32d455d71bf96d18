"""The run folder's own rules: the error that names a run folder's problem, its lock (one `train` at a time writes a run
folder, taken before anything is), and which of its files are outputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.folders import FolderError, make_parents
from wsi_ncmi.core.locks import LockedError, acquire_lock, lock_holder, release_lock
from wsi_ncmi.formats.layout import RUN_OUTPUT_FOLDERS, RUN_OUTPUT_PATTERNS, RUN_OUTPUTS, RunFolder


class RunError(WsiNcmiError):
    """A run folder or checkpoint that cannot be used; the message says what to do."""


@contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold RUN's lock, PARENT/.RUN.lock (beside RUN, so taking it creates nothing inside RUN); a RunError names the
    live process holding it (a stale one is taken over)."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise RunError(f"{run}: exists and is not a folder; choose another --out")
    try:
        make_parents(run)
    except FolderError as exc:
        raise RunError(str(exc)) from exc
    try:
        lock = acquire_lock(RunFolder(run).lock)
    except LockedError as exc:
        raise RunError(
            f"{run}: another `wsi-ncmi train` is writing this run folder ({exc}); wait for it or use another --out"
        ) from exc
    try:
        yield
    finally:
        release_lock(lock)


def check_run_idle(run: Path) -> None:
    """Refuse to read a run folder that `train` is writing now (its lock is held by a live process): its model,
    history and metrics are those of an unfinished epoch."""
    run = Path(run)
    holder = lock_holder(RunFolder(run).lock)
    if holder is not None:
        raise RunError(
            f"{run}: `wsi-ncmi train` is still writing this run ({holder}); wait for it to finish, then run this "
            "command again"
        )


def run_outputs(run: Path) -> list[Path]:
    """Files a previous run left in RUN: checkpoints, history, config and every evaluation output."""
    run = Path(run)
    if not run.is_dir():
        return []
    found = [run / name for name in (*RUN_OUTPUTS, *RUN_OUTPUT_FOLDERS) if (run / name).exists()]
    for pattern in RUN_OUTPUT_PATTERNS:
        found += sorted(run.glob(pattern))
    return found


def clear_outputs(run: Path) -> None:
    """Remove a previous run's outputs, its report included (for --overwrite, after every input was validated)."""
    import shutil

    for path in run_outputs(run):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

"""Job folders (their layout: formats.layout) made and checked before any slide is touched."""

from __future__ import annotations

import os
from pathlib import Path

from wsi_ncmi.core.errors import WsiNcmiError
from wsi_ncmi.core.folders import FolderError, make_parents
from wsi_ncmi.formats.layout import STATUS


class JobDirError(WsiNcmiError):
    """The job folder cannot be used; the message says why and what to do."""


def prepare_job(job: Path | str, subfolders: tuple[str, ...] = (STATUS,)) -> Path:
    """Create JOB (and the folders above it) and its subfolders; refuse a JOB that is a file or not writable."""
    job = Path(job)
    if job.exists() and not job.is_dir():
        raise JobDirError(f"{job}: exists and is not a folder; choose another --out")
    if not job.exists():
        try:
            make_parents(job).mkdir()
        except FolderError as exc:
            raise JobDirError(str(exc)) from exc
        except OSError as exc:
            raise JobDirError(f"{job}: cannot create the job folder ({exc.strerror})") from exc
    if not os.access(job, os.R_OK | os.W_OK | os.X_OK):
        raise JobDirError(f"{job}: job folder is not readable and writable by this user; fix its permissions")
    for name in subfolders:
        try:
            (job / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise JobDirError(
                f"{job / name}: cannot create ({exc.strerror}); fix the job folder's permissions"
            ) from exc
    sweep_job(job)
    return job


def sweep_job(job: Path) -> None:
    """Remove the temporary and lock files killed processes left in JOB, saying how many."""
    import warnings

    from wsi_ncmi.core.atomic import sweep_leftovers

    removed = sweep_leftovers(job)
    if removed:
        warnings.warn(
            f"{job}: removed {len(removed)} temporary or lock file(s) left by stopped processes "
            f"({', '.join(p.name for p in removed[:3])}{' ...' if len(removed) > 3 else ''})",
            stacklevel=2,
        )

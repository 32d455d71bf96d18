"""Output folders: every --out may name a path under folders that do not exist yet; they are created as `mkdir -p`
would, so a command never asks the user to create them first."""

from __future__ import annotations

from pathlib import Path

from wsi_ncmi.core.errors import EXIT_ERROR, WsiNcmiError


class FolderError(WsiNcmiError, OSError):
    """A folder above an output cannot be created; the message names it, says why and what to do."""

    exit_code = EXIT_ERROR


def make_parents(path: Path | str) -> Path:
    """Create the folders above PATH (not PATH itself) and return PATH; a FolderError names the first folder that
    could not be made: a file is in the way, or permission is missing."""
    path = Path(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise FolderError(f"{path}: {blocker} is a file, not a folder; choose another path") from exc
        raise FolderError(f"{path}: cannot create folder {parent} ({exc.strerror}); choose another path") from exc
    return path

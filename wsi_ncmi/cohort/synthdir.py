"""A synthetic cohort's folder remembers the settings that made it (cohort.json), so `synth` never mixes two cohorts:
the same settings continue an interrupted run; other settings need --overwrite, which removes the old files first."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wsi_ncmi.core.errors import WsiNcmiError

SPEC_FILE = "cohort.json"
OUTPUTS = ("slides", "truth", "manifest.csv", SPEC_FILE)


class SynthFolderError(WsiNcmiError):
    """The --out folder holds another cohort; the message says what differs and what to do."""


def _spec_record(cohort: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cohort)))


def prepare_synth_folder(out: Path, cohort: Any, overwrite: bool) -> None:
    """Refuse an --out holding another cohort unless `overwrite` (then remove its files); record `cohort`'s settings."""
    from wsi_ncmi.core.atomic import atomic_path
    from wsi_ncmi.core.folders import make_parents

    out = Path(out)
    wanted = _spec_record(cohort)
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not overwrite:
        try:
            found = json.loads((out / SPEC_FILE).read_text())
        except (OSError, ValueError):
            found = None
        if found != wanted:
            differing = (
                ", ".join(f"{k} {found.get(k)!r} -> {v!r}" for k, v in wanted.items() if found.get(k) != v)
                if isinstance(found, dict)
                else f"files ({', '.join(present)}) of a cohort whose settings were not recorded"
            )
            raise SynthFolderError(
                f"{out}: holds another synthetic cohort ({differing}); pass --overwrite to replace it "
                "or choose another --out"
            )
    if overwrite:
        for name in present:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    make_parents(out).mkdir(exist_ok=True)
    with atomic_path(out / SPEC_FILE) as tmp:
        tmp.write_text(json.dumps(wanted, indent=1))

"""Static sharding for array jobs without a scheduler (Slurm --array, Kubernetes indexed jobs).

Slide I of N is chosen by a stable hash of its slide_id, so every shard agrees on the assignment without talking
to the others, and the union of all shards is every slide exactly once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from wsi_ncmi.status import StatusRow, read_status

_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (0-based, as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are)."""
    match = _SHARD.match(text.strip())
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/8")
    return int(match.group(1)), int(match.group(2))


def shard_of(slide_id: str, count: int) -> int:
    """The shard (0..count-1) a slide belongs to: sha256 of the id, modulo count."""
    return int(hashlib.sha256(slide_id.encode()).hexdigest(), 16) % count


def status_file(job: Path, stage: str, shard: tuple[int, int] | None) -> Path:
    """JOB/status/{stage}.csv, or JOB/status/{stage}.shard-I-of-N.csv for a shard."""
    if shard is None:
        return Path(job) / "status" / f"{stage}.csv"
    return Path(job) / "status" / f"{stage}.shard-{shard[0]}-of-{shard[1]}.csv"


def status_stages(job: Path) -> list[str]:
    """Stages with a status file in JOB/status (whole or per shard): tile first, then embed and each encoder's
    embed-{encoder} stage; the QC table is not a stage."""
    names = {re.sub(r"\.shard-\d+-of-\d+$", "", path.stem) for path in (Path(job) / "status").glob("*.csv")}
    names.discard("qc")
    return sorted(names, key=lambda name: (name != "tile", name))


def merged_status(job: Path, stage: str) -> list[StatusRow]:
    """Rows of JOB/status/{stage}.csv and every shard file of that stage, one per slide (newest file wins)."""
    folder = Path(job) / "status"
    files = [folder / f"{stage}.csv", *folder.glob(f"{stage}.shard-*-of-*.csv")]
    files = sorted((f for f in files if f.exists()), key=lambda f: f.stat().st_mtime_ns)
    rows: dict[str, StatusRow] = {}
    for path in files:
        rows.update({row.slide_id: row for row in read_status(path)})
    return [rows[k] for k in sorted(rows)]

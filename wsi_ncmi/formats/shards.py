"""Static sharding for array jobs without a scheduler (Slurm --array, Kubernetes indexed jobs).

Slide I of N is chosen by a stable hash of its slide_id, so every shard agrees on the assignment without talking
to the others, and the union of all shards is every slide exactly once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from wsi_ncmi.formats.layout import QC_TABLE, JobFolder
from wsi_ncmi.formats.status import SUCCESS, StatusRow, read_status

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
    return JobFolder(job).status_file(stage, shard)


def status_stages(job: Path) -> list[str]:
    """Stages with a status file in JOB/status (whole or per shard): tile first, then embed and each encoder's
    embed-{encoder} stage; the QC table is not a stage."""
    names = JobFolder(job).status_stages() - {QC_TABLE}
    return sorted(names, key=lambda name: (name != "tile", name))


def merged_status(job: Path, stage: str) -> list[StatusRow]:
    """Rows of JOB/status/{stage}.csv and every shard file of that stage, one per slide (newest file wins)."""
    files = sorted(JobFolder(job).status_files(stage), key=lambda f: f.stat().st_mtime_ns)
    rows: dict[str, StatusRow] = {}
    for path in files:
        rows.update({row.slide_id: row for row in read_status(path)})
    return [rows[k] for k in sorted(rows)]


def merge_job_status(job: Path) -> dict[str, list[StatusRow]]:
    """Merge every stage's whole and shard status files into JOB/status/{stage}.csv, and the whole and shard QC
    tables into qc.csv; return the rows per stage (tile first), empty when nothing has run."""
    from wsi_ncmi.formats.qc_table import merge_qc_tables
    from wsi_ncmi.formats.status import write_status

    merged = {}
    for stage in status_stages(job):
        rows = merged_status(job, stage)
        if not rows:
            continue
        write_status(status_file(job, stage, None), rows)
        merged[stage] = rows
    merge_qc_tables(job)
    return merged


def slides_left(merged: dict[str, list[StatusRow]], wanted: set[str]) -> dict[str, list[str]]:
    """Per stage to finish (tile, and each embed stage that has run, or `embed` when none has): the wanted slides
    it has not done, sorted."""
    embed_stages = [stage for stage in merged if stage.startswith("embed")] or ["embed"]
    done = {stage: {r.slide_id for r in rows if r.status in SUCCESS} for stage, rows in merged.items()}
    return {stage: sorted(wanted - done.get(stage, set())) for stage in ("tile", *embed_stages)}

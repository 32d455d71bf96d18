"""Where every file lives: the job folder (`tile` and `embed` write it) and the run folder (`train`, `evaluate`,
`report` and `heatmap` write it), spelled out once so no stage builds these paths by hand.

JOB/tiles/{slide}.h5                      coords file (formats.bags)
JOB/thumbnails/{slide}.jpg                thumbnail; {slide}.{label|macro}.png its associated images
JOB/features/{encoder folder}/{slide}.h5  feature bag (and {slide}.pt with --also-pt)
JOB/status/{stage}.csv                    status of a stage; {stage}.shard-I-of-N.csv for one shard of it
JOB/status/qc.csv                         the QC table (qc.shard-I-of-N.csv likewise)

RUN/config.yaml, model.pt, last.pt, history.csv, curves.png, report.html (+ report_files/),
RUN/metrics_{split}.json, predictions_{split}.csv, confusion_{split}.png, heatmap_{slide}.png

RUNS/{model}_{loss}_seed{seed}_fold{k}/ (one run folder each), RUNS/splits/, comparison.csv, comparison.md and
report.html: what `wsi-ncmi run` writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TILES = "tiles"
THUMBNAILS = "thumbnails"
FEATURES = "features"
STATUS = "status"
QC_TABLE = "qc"
"""The QC table's name in JOB/status: a CSV beside the stages' status files, but not a stage."""

SHARD_SUFFIX = re.compile(r"\.shard-\d+-of-\d+$")
"""How a shard's status file stem ends (after the stage's name)."""

MODEL = "model.pt"
LAST = "last.pt"
CONFIG = "config.yaml"
HISTORY = "history.csv"
CURVES = "curves.png"
REPORT = "report.html"
REPORT_FILES = "report_files"

RUN_OUTPUTS = (MODEL, LAST, HISTORY, CONFIG, CURVES, REPORT)
"""A run folder's fixed output files."""
RUN_OUTPUT_FOLDERS = (REPORT_FILES,)
RUN_OUTPUT_PATTERNS = ("metrics_*.json", "predictions_*.csv", "confusion_*.png", "heatmap_*.png")
"""A run folder's outputs per split or slide, as glob patterns."""


def encoder_folder(name: str) -> str:
    """A file-system-safe folder name for an encoder ('timm:hf-hub:MahmoodLab/uni' -> 'timm-hf-hub-MahmoodLab-uni')."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def tensor_beside(bag: Path) -> Path:
    """The PyTorch copy of a bag (--also-pt): the same name with .pt, beside it."""
    return Path(bag).with_suffix(".pt")


def report_files(report: Path) -> Path:
    """The folder written beside a report for its images: REPORT's stem + '_files'."""
    report = Path(report)
    return report.with_name(f"{report.stem}_files")


@dataclass(frozen=True)
class JobFolder:
    """A job folder: what `tile` and `embed` write, one file per slide (and encoder) plus status tables."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def tiles(self) -> Path:
        return self.root / TILES

    @property
    def thumbnails(self) -> Path:
        return self.root / THUMBNAILS

    @property
    def features(self) -> Path:
        return self.root / FEATURES

    @property
    def status(self) -> Path:
        return self.root / STATUS

    def coords(self, slide_id: str) -> Path:
        """JOB/tiles/{slide_id}.h5, the slide's coords file."""
        return self.tiles / f"{slide_id}.h5"

    def tiled(self) -> list[str]:
        """The slide ids with a coords file, sorted (empty when there is no tiles/ folder)."""
        return sorted(p.stem for p in self.tiles.glob("*.h5")) if self.tiles.is_dir() else []

    def thumbnail(self, slide_id: str) -> Path:
        return self.thumbnails / f"{slide_id}.jpg"

    def associated(self, slide_id: str, name: str) -> Path:
        """Where a slide's associated image (label, macro) is saved: beside its thumbnail, as PNG."""
        return self.thumbnails / f"{slide_id}.{name}.png"

    def bags(self, encoder: str) -> Path:
        """JOB/features/{encoder folder}: the bags of one encoder."""
        return self.features / encoder_folder(encoder)

    def bag(self, encoder: str, slide_id: str) -> Path:
        return self.bags(encoder) / f"{slide_id}.h5"

    def status_file(self, stage: str, shard: tuple[int, int] | None = None) -> Path:
        """JOB/status/{stage}.csv, or JOB/status/{stage}.shard-I-of-N.csv for a shard."""
        if shard is None:
            return self.status / f"{stage}.csv"
        return self.status / f"{stage}.shard-{shard[0]}-of-{shard[1]}.csv"

    def status_files(self, stage: str) -> list[Path]:
        """The existing whole and shard status files of a stage (or of the QC table), in no particular order."""
        files = [self.status_file(stage), *self.status.glob(f"{stage}.shard-*-of-*.csv")]
        return [f for f in files if f.exists()]

    def status_stages(self) -> set[str]:
        """Names with a status file (whole or per shard) in JOB/status, the QC table's included."""
        return {SHARD_SUFFIX.sub("", path.stem) for path in self.status.glob("*.csv")}

    def qc_table(self, shard: tuple[int, int] | None = None) -> Path:
        """JOB/status/qc.csv, or qc.shard-I-of-N.csv for a shard."""
        return self.status_file(QC_TABLE, shard)


def coords_path(job: Path, slide_id: str) -> Path:
    """JOB/tiles/{slide_id}.h5."""
    return JobFolder(job).coords(slide_id)


def bag_path(job: Path, encoder: str, slide_id: str) -> Path:
    """JOB/features/{encoder folder}/{slide_id}.h5."""
    return JobFolder(job).bag(encoder, slide_id)


def thumbnail_path(job: Path, slide_id: str) -> Path:
    """JOB/thumbnails/{slide_id}.jpg."""
    return JobFolder(job).thumbnail(slide_id)


@dataclass(frozen=True)
class RunFolder:
    """A run folder: one trained model, its checkpoints and history, and every evaluation of it."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def model(self) -> Path:
        """The selected epoch's checkpoint."""
        return self.root / MODEL

    @property
    def last(self) -> Path:
        """The last epoch's checkpoint, with everything needed to resume."""
        return self.root / LAST

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def report_files(self) -> Path:
        return report_files(self.report)

    @property
    def lock(self) -> Path:
        """What the run's lock is taken on: PARENT/.RUN (the lock file adds .lock), beside RUN so taking it creates
        nothing inside RUN."""
        return self.root.parent / f".{self.root.name}"

    def checkpoint(self, name: str = MODEL) -> Path:
        return self.root / name

    def metrics(self, split: str) -> Path:
        return self.root / f"metrics_{split}.json"

    def predictions(self, split: str) -> Path:
        return self.root / f"predictions_{split}.csv"

    def confusion(self, split: str) -> Path:
        return self.root / f"confusion_{split}.png"

    def heatmap(self, slide_id: str) -> Path:
        return self.root / f"heatmap_{slide_id}.png"


@dataclass(frozen=True)
class RunsFolder:
    """What `wsi-ncmi run` writes under --runs: one run folder per (model, loss, seed, fold), the split files, the
    comparison tables and the report comparing the runs."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def run(self, model: str, loss: str, seed: int, fold: int) -> RunFolder:
        return RunFolder(self.root / f"{model}_{loss}_seed{seed}_fold{fold}")

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def comparison_csv(self) -> Path:
        return self.root / "comparison.csv"

    @property
    def comparison_md(self) -> Path:
        return self.root / "comparison.md"

    @property
    def report(self) -> Path:
        return self.root / REPORT

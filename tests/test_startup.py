"""Start-up of `wsi-ncmi tile`: what a tile run imports before its first slide opens and over the whole run, and
that building only the invoked command changes nothing a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wsi_ncmi.cli import _only_command, app
from wsi_ncmi.synthetic import SlideSpec, write_slide

ROOT = Path(__file__).resolve().parents[1]

NEVER_IN_TILE = (
    "pandas", "pydantic", "torch", "torchvision", "matplotlib", "sklearn", "scipy", "timm", "dask", "distributed"
)
"""Libraries no part of a tile run uses (pydantic came with typer 0.29, which pyproject.toml keeps out)."""
NOT_BEFORE_FIRST_OPEN = (*NEVER_IN_TILE, "h5py", "tifffile", "tiffslide", "openslide", "yaml")
"""Also used by a tile run, but only once a slide is open (readers) or written (coords files)."""

PROBE = """
import atexit, json, sys

report = {}
if sys.argv[1] != "--help-only":
    import wsi_ncmi.slides.backend as backend

    opened = backend.open_slide

    def open_slide(*args, **kwargs):
        report.setdefault("first_open", sorted(sys.modules))
        return opened(*args, **kwargs)

    backend.open_slide = open_slide
atexit.register(lambda: print(json.dumps({**report, "exit": sorted(sys.modules)}), file=sys.stderr))
sys.argv = ["wsi-ncmi", *[a for a in sys.argv[1:] if a != "--help-only"]]
from wsi_ncmi.cli import main
main()
"""
"""Runs the CLI as `wsi-ncmi` would, recording the loaded modules at the first slide open and at exit. To see the
first open the probe imports the slide backend first, which the tile command imports before opening anyway;
`--help-only` leaves that out."""


def _loaded(args: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "COLUMNS": "100"},
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return done, report


def _top(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(names))


@pytest.mark.parametrize("source", ["slides", "manifest"])
def test_tile_imports_only_what_it_uses(tmp_path: Path, source: str) -> None:
    (tmp_path / "in").mkdir()
    slide = write_slide(SlideSpec("tiny", 2048, 1536, 0.5, seed=3), tmp_path / "in" / "tiny.tif")
    if source == "manifest":
        (tmp_path / "m.csv").write_text(f"slide_id,path,label\ntiny,{slide},a\n")
        where = ["--manifest", str(tmp_path / "m.csv")]
    else:
        where = ["--slides", str(slide.parent)]
    done, report = _loaded(["tile", *where, "--out", str(tmp_path / "job"), "--mpp", "2", "--tile-size", "64"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "job" / "tiles" / "tiny.h5").is_file()
    assert "first_open" in report
    assert _top(report["first_open"], NOT_BEFORE_FIRST_OPEN) == []
    assert _top(report["exit"], NEVER_IN_TILE) == []
    assert "h5py" in report["exit"], "the probe saw the whole run (the coords file is written with h5py)"


def test_tile_help_loads_no_array_or_table_library() -> None:
    done, report = _loaded(["--help-only", "tile", "--help"])
    assert done.returncode == 0 and "--min-tissue" in done.stdout
    assert _top(report["exit"], ("numpy", "PIL", *NOT_BEFORE_FIRST_OPEN)) == []


def _shown(command: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        command(args, prog_name="wsi-ncmi")  # type: ignore[operator]
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


@pytest.mark.parametrize(
    "args",
    [["tile", "--help"], ["train", "--help"], ["tile"], ["tile", "--qc", "maybe", "--out", "x", "--slides", "y"]],
)
def test_one_command_line_reads_as_the_whole_app(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert _shown(_only_command(args), args, capsys) == _shown(app, args, capsys)


@pytest.mark.parametrize("args", [[], ["--help"], ["manifest", "check", "--help"], ["tiles"], ["export"]])
def test_groups_help_and_typos_go_to_the_whole_app(args: list[str]) -> None:
    assert _only_command(args) is app

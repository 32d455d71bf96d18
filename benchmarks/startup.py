"""Start-up of `wsi-ncmi tile`: CPU seconds before the first slide opens, of the whole run, and of `tile --help`;
writes results/startup.json.

Each figure is the CPU time (user + system) of a fresh process, as a user starts it (`python -m wsi_ncmi ...`).
The start-up of a run is read inside the process at the moment it opens its first slide (`time.process_time()`,
which counts from the interpreter's own start); a probe wraps the slide opener for that, importing the slide backend
first, which the tile command imports before opening anyway. The run tiles one 8k x 6k px synthetic slide at the
defaults (QC and thumbnails on). With `--baseline REF`, the same figures for the code of a git revision (its
wsi_ncmi/ folder, run from a temporary copy), the two alternating in every repeat. Goal: start-up <= 0.35 s.
`--imports` adds the modules each way loads before the first slide opens, by cumulative import time
(`python -X importtime`), largest first.

    python benchmarks/startup.py [--repeats 15] [--baseline main] [--imports]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, summary, write_result

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys, time
import wsi_ncmi.slides.backend as backend
opened = backend.open_slide
def open_slide(*args, **kwargs):
    if not getattr(open_slide, "seen", False):
        open_slide.seen = True
        print(f"startup-cpu-seconds {time.process_time():.6f}", file=sys.stderr, flush=True)
    return opened(*args, **kwargs)
backend.open_slide = open_slide
sys.argv = ["wsi-ncmi", *sys.argv[1:]]
from wsi_ncmi.cli import main
main()
"""
GOAL_SECONDS = 0.35


def slide(folder: Path) -> Path:
    """The benchmark's slide, written on first use."""
    from wsi_ncmi.synthetic import Lesion, SlideSpec, write_slide

    path = folder / "startup_8k.tif"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_slide(SlideSpec("startup_8k", 8192, 6144, 0.25, seed=4, lesions=(Lesion(2000, 2000, 900),)), path)
    return path


def checkout(ref: str, into: Path) -> Path:
    """The wsi_ncmi/ folder of git revision `ref`, extracted under `into`; returns the folder to put on the path."""
    into.mkdir(parents=True)
    archive = into / "code.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, "wsi_ncmi"], stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def run(code: Path, args: list[str], probe: bool, importtime: bool = False) -> tuple[float, float | None, str]:
    """Whole-process CPU seconds, the CPU seconds at the first slide open (probe only) and stderr of one run, with
    `code` as the working folder (python puts it first on the path) and on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    flags = ["-X", "importtime"] if importtime else []
    command = [sys.executable, *flags, *(["-c", PROBE] if probe else ["-m", "wsi_ncmi"]), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}")
    startup = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("startup-cpu-seconds")]
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu, float(startup[0]) if startup else None, done.stderr


def imports_before_open(stderr: str, top: int = 15) -> list[dict]:
    """The largest imports (cumulative microseconds, as `-X importtime` counts them) up to the first slide open."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("startup-cpu-seconds"):
            break
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append({"module": name.rstrip(), "cumulative_us": int(cumulative)})
    rows = [row for row in rows if not row["module"].startswith("  ")]
    return sorted(rows, key=lambda row: -row["cumulative_us"])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs of each figure per code tree, alternated")
    parser.add_argument("--baseline", help="a git revision to measure alongside this tree (e.g. main)")
    parser.add_argument("--imports", action="store_true", help="also list the largest imports before the first open")
    parser.add_argument("--full", action="store_true", help="30 repeats")
    args = parser.parse_args()
    repeats = max(args.repeats, 30) if args.full else args.repeats

    path = slide(RESULTS / "tmp" / "startup-slides")
    payload: dict = {"benchmark": "startup", "repeats": repeats, "slide": "8192 x 6144 px, 0.25 um/px, synthetic"}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.baseline:
            trees[f"baseline {args.baseline}"] = checkout(args.baseline, Path(tmp) / "baseline")
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for repeat in range(repeats):
            for index, name in list(enumerate(trees))[:: 1 if repeat % 2 == 0 else -1]:
                tile = ["tile", "--slides", str(path.parent), "--out", str(Path(tmp) / f"job-{repeat}-{index}")]
                cpu, startup, _ = run(trees[name], tile, probe=True)
                help_cpu, _, _ = run(trees[name], ["tile", "--help"], probe=False)
                for key, value in (("tile_run", cpu), ("tile_startup", startup), ("tile_help", help_cpu)):
                    figures[name].setdefault(key, []).append(value)
        for index, (name, code) in enumerate(trees.items()):
            result = {f"{key}_cpu_seconds": summary(values) for key, values in figures[name].items()}
            if args.imports:
                tile = ["tile", "--slides", str(path.parent), "--out", str(Path(tmp) / f"imports-{index}")]
                _, _, stderr = run(code, tile, probe=True, importtime=True)
                result["largest_imports_before_first_open"] = imports_before_open(stderr)
            payload[name] = result
            print(
                f"startup {name}: tile start-up {result['tile_startup_cpu_seconds']['median']:.3f} s CPU (goal <= "
                f"{GOAL_SECONDS}), whole run {result['tile_run_cpu_seconds']['median']:.3f} s, `tile --help` "
                f"{result['tile_help_cpu_seconds']['median']:.3f} s (medians of {repeats})"
            )
    payload["goal_startup_cpu_seconds"] = GOAL_SECONDS
    print(f"wrote {write_result('startup', payload)}")
    print(json.dumps(payload["this tree"].get("largest_imports_before_first_open", [])[:8], indent=1))


if __name__ == "__main__":
    main()

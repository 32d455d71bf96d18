"""Fault injection: full disks, signals, concurrent runs, corrupt slides and bags, bad settings and swapped files.

Each test reproduces one fault as a user meets it and asserts the clear error, the exit code, the status rows, and
that nothing finished was lost, left locked or overwritten without consent. Full disks are small tmpfs mounts
(root only; skipped otherwise); signals go to real subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from cli_run import run_main as _main
from typer.testing import CliRunner

from wsi_ncmi.cli import app
from wsi_ncmi.formats.status import read_status
from wsi_ncmi.synthetic import SlideSpec, write_slide, write_synthetic_bags
from wsi_ncmi.tiling.tile import thumbnail_path

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m wsi_ncmi ARGS` in a real process (the installed entry point's error handling included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "wsi_ncmi", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )




def _one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode not in (0, -11, 139), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    for needle in needles:
        assert needle in result.stderr + result.stdout, result.stderr + result.stdout


@contextmanager
def _tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `mount` with `options` (size=1m, ro); skips the test when mounting is not permitted."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (-o {options}; needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the disk that fills up."""
    with _tmpfs(tmp_path / "disk", "size=1m") as mount:
        yield mount


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small slides (one fully covered by tissue) and a manifest listing them `copies` times each."""
    folder = tmp_path_factory.mktemp("fault_slides")
    for i, fraction in enumerate((0.5, 0.6, 1.0)):
        write_slide(SlideSpec(f"s{i}", 2048, 1536, 0.25, seed=40 + i, tissue_fraction=fraction), folder / f"s{i}.tif")
    return folder


def _manifest(cohort: Path, out: Path, copies: int) -> Path:
    rows = [{"slide_id": f"slide_{k:03d}", "path": str(cohort / f"s{k % 3}.tif")} for k in range(copies)]
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def _train_args(bags: tuple[Path, Path, Path], folder: Path) -> list[str]:
    """`train` arguments for one epoch without warm-up on `bags` (no --out)."""
    (folder / "w.yaml").write_text("warmup_epochs: 0\n")
    manifest, features, split = bags
    args = ["train", "--manifest", str(manifest), "--features", str(features), "--split", str(split)]
    return [*args, "--config", str(folder / "w.yaml"), "--epochs", "1", "--loss", "ce", "--device", "cpu"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock"))


# --- full disk -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_during_tile_is_a_clean_failure(cohort: Path, small_disk: Path, tmp_path: Path, workers: int) -> None:
    copies = 40  # about 2 MiB of coords files and thumbnails: twice the disk
    manifest = _manifest(cohort, tmp_path / "m.csv", copies)
    job = small_disk / "job"
    result = _cli("tile", "--manifest", str(manifest), "--out", str(job), "--mpp", "0.25", "--tile-size", "16",
                  "--workers", str(workers))  # fmt: skip
    _one_clear_line(result, "No space left on device")
    assert _leftovers(small_disk) == []
    rows = read_status(job / "status" / "tile.csv") if (job / "status" / "tile.csv").exists() else []
    if rows:
        assert len(rows) == copies and not [r for r in rows if "worker" in r.error]
        assert all(r.status == "ok" or "No space left" in r.error for r in rows)
    else:
        assert "status" in result.stderr


def test_full_disk_while_writing_hdf5_raises_instead_of_crashing(small_disk: Path) -> None:
    code = f"""
import numpy as np
from wsi_ncmi.formats.bags import BagWriter, CoordsFile
writer = BagWriter({str(small_disk / "b.h5")!r}, 4000, 128)
for start in range(0, 4000, 500):
    writer.write(start, np.ones((500, 128), np.float32))
coords = CoordsFile(np.zeros((4000, 2), np.int64), np.ones(4000, np.float32), {{}})
try:
    writer.finish(coords, {{}}, [])
except OSError as exc:
    print("bag:", type(exc).__name__, exc)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "bag: OSError" in result.stdout and "No space left on device" in result.stdout
    assert sorted(p.name for p in small_disk.iterdir()) == []


def test_full_disk_during_train_is_one_clear_line(
    bags: tuple[Path, Path, Path], small_disk: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = [*_train_args(bags, tmp_path), "--out", str(small_disk / "run")]
    _one_clear_line(_main(capfd, *args), "error:", "No space left on device")
    assert _leftovers(small_disk) == []


# --- signals and concurrent processes --------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM", "SIGKILL"])
def test_stopping_tile_with_workers(cohort: Path, tmp_path: Path, how: str) -> None:
    manifest = _manifest(cohort, tmp_path / "m.csv", 300)
    job = tmp_path / "job"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "wsi_ncmi", "tile", "--manifest", str(manifest), "--out", str(job), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while len(list((job / "tiles").glob("*.h5"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(workers) == 2
    signum = {"SIGINT to the group": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}[how]
    sent = time.monotonic()
    (os.killpg if "group" in how else os.kill)(process.pid, signum)
    _, err = process.communicate(timeout=60)
    stopped_after = time.monotonic() - sent
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "pool workers outlived the main process"
    if signum == signal.SIGKILL:
        return
    assert process.returncode == 128 + signum and stopped_after < 15, (process.returncode, stopped_after, err)
    assert "run the same command again to resume" in err and "Traceback" not in err
    rows = read_status(job / "status" / "tile.csv")
    thumbnails = {p.stem for p in (job / "thumbnails").glob("*.jpg")}
    assert 0 < len(rows) < 300 and {r.slide_id for r in rows} <= thumbnails and all(r.status == "ok" for r in rows)
    assert _leftovers(job) == []


def test_a_slide_another_process_is_tiling_is_busy_not_failed(cohort: Path, tmp_path: Path) -> None:
    manifest = _manifest(cohort, tmp_path / "m.csv", 3)
    job = tmp_path / "job"
    first = runner.invoke(app, ["tile", "--manifest", str(manifest), "--out", str(job)])
    assert first.exit_code == 0, first.output
    thumbnail_path(job, "slide_001").unlink()
    lock = (job / "tiles").joinpath("slide_001.h5.lock")
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "time": time.time()}))
    second = runner.invoke(app, ["tile", "--manifest", str(manifest), "--out", str(job)])
    assert second.exit_code == 0, second.output
    assert "busy" in second.output and lock.exists(), "the locked slide is left to its writer"
    assert not thumbnail_path(job, "slide_001").exists(), "the locked slide was tiled again"
    rows = {r.slide_id: r for r in read_status(job / "status" / "tile.csv")}
    assert rows["slide_001"].status == "ok" and not any(r.failed for r in rows.values())


def test_a_fully_tissue_covered_slide_keeps_its_tissue(cohort: Path, tmp_path: Path) -> None:
    pd.DataFrame([{"slide_id": "full", "path": str(cohort / "s2.tif")}]).to_csv(tmp_path / "m.csv", index=False)
    result = runner.invoke(app, ["tile", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "job")])
    row = read_status(tmp_path / "job" / "status" / "tile.csv")[0]
    assert result.exit_code == 0 and row.status == "ok" and row.n_tiles > 0, result.output


# --- training runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out = tmp_path_factory.mktemp("fault_bags")
    manifest, split = write_synthetic_bags(out, slides=40, dim=8, tiles=(150, 160))
    return manifest, out / "features", split


def _train(bags: tuple[Path, Path, Path], out: Path, *extra: str) -> object:
    """`wsi-ncmi train` for one epoch (no warm-up unless --epochs is passed too, which leaves it to the CLI)."""
    manifest, features, split = bags
    args = ["train", "--manifest", str(manifest), "--features", str(features), "--split", str(split)]
    if "--epochs" not in extra and "--config" not in extra:
        config = out.parent / f"{out.name}.yaml"
        config.write_text("warmup_epochs: 0\n")
        args += ["--config", str(config), "--epochs", "1"]
    return runner.invoke(app, [*args, "--out", str(out), "--device", "cpu", "--loss", "ce", *extra])


@pytest.fixture(scope="module")
def trained(bags: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("fault_runs") / "run"
    result = _train(bags, run)
    assert result.exit_code == 0, result.output
    return run


def test_a_second_train_into_a_locked_run_folder_is_refused(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from wsi_ncmi.mil.runfolder import run_lock

    run = tmp_path / "run"
    with run_lock(run):
        result = _train(bags, run)
    assert result.exit_code == 2 and "another `wsi-ncmi train`" in result.output, result.output
    assert not run.exists()


def test_overwrite_validates_first_then_removes_the_old_metrics(
    bags: tuple[Path, Path, Path], trained: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "metrics_test.json").write_text('{"macro_f1": 0.99}')
    kept = {p.name: p.read_bytes() for p in run.iterdir()}
    missing_split = tmp_path / "no_such_split.csv"
    bad = _train((bags[0], bags[1], missing_split), run, "--overwrite")
    assert bad.exit_code == 2 and "no_such_split.csv" in bad.output, bad.output
    assert {p.name: p.read_bytes() for p in run.iterdir()} == kept
    good = _train(bags, run, "--overwrite")
    assert good.exit_code == 0, good.output
    assert not (run / "metrics_test.json").exists() and (run / "model.pt").exists()


def test_a_settings_error_leaves_no_run_folder(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model_args: {no_such_setting: 1}\nepochs: 1\nwarmup_epochs: 0\n")
    result = _train(bags, tmp_path / "run", "--config", str(config))
    assert result.exit_code == 2 and "no_such_setting" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_few_epochs_fit_the_warmup(bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    result = _train(bags, tmp_path / "run", "--epochs", "2")
    assert result.exit_code == 0 and "warmup_epochs" in result.output, result.output


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("tiling", {"tile_size": 256.7}, "tiling.tile_size must be integer"),
        ("tiling", {"tile_size": "256"}, "tiling.tile_size must be integer"),
        ("tiling", {"tissue": {"median_um": -5}}, "tiling.tissue.median_um must not be negative"),
        ("training", {"patience": -3}, "training.patience must not be negative"),
        ("training", {"lr": "fast"}, "training.lr must be"),
    ],
)
def test_settings_errors_name_the_key(section: str, values: dict, message: str) -> None:
    from wsi_ncmi.mil.train import TrainConfig
    from wsi_ncmi.tiling.tile import TilingParams

    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        (TilingParams if section == "tiling" else TrainConfig).from_dict(values)


def test_evaluate_refuses_bags_from_other_weights(trained: Path, bags: tuple[Path, Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(bags[1], other)
    for path in other.glob("*.h5"):
        with h5py.File(path, "r+") as h5:
            h5["features"].attrs["weights"] = "another-checkpoint"
    before = (trained / "metrics_test.json").read_bytes() if (trained / "metrics_test.json").exists() else None
    result = runner.invoke(app, ["evaluate", "--run", str(trained), "--features", str(other), "--bootstrap", "0"])
    assert result.exit_code == 2 and "weights" in result.output, result.output
    after = (trained / "metrics_test.json").read_bytes() if (trained / "metrics_test.json").exists() else None
    assert after == before


def test_a_model_copied_from_another_run_is_refused(
    trained: Path, bags: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    assert _train(bags, other, "--seed", "7").exit_code == 0
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.copy(other / "model.pt", run / "model.pt")
    result = runner.invoke(app, ["evaluate", "--run", str(run), "--bootstrap", "0"])
    assert result.exit_code == 2 and "not the model of this run folder" in result.output, result.output


def test_resume_from_a_foreign_last_pt_is_one_clear_line(
    trained: Path, bags: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import pickle

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "last.pt").write_bytes(pickle.dumps({"x": print}))
    result = _train(bags, run, "--resume")
    assert result.exit_code == 2 and "last.pt" in result.output, (result.output, result.exception)


# --- labels, synth, heatmap, corrupt tiles ---------------------------------------------------------------------


def test_labels_are_stripped_and_near_duplicates_refused(tmp_path: Path) -> None:
    from wsi_ncmi.cohort.manifest import ManifestError, read_manifest

    path = tmp_path / "m.csv"
    pd.DataFrame({"slide_id": ["a", "b", "c"], "label": ["itc", "itc ", "negative"]}).to_csv(path, index=False)
    assert sorted(set(read_manifest(path)["label"])) == ["itc", "negative"]
    pd.DataFrame({"slide_id": ["a", "b", "c"], "label": ["itc", "ITC", "negative"]}).to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"'ITC' .*'itc' .*differ only in case"):
        read_manifest(path)


def test_a_class_with_very_few_slides_warns(bags: tuple[Path, Path, Path], tmp_path: Path, capfd) -> None:
    manifest = pd.read_csv(bags[0], dtype=str, keep_default_na=False)
    split = pd.read_csv(bags[2], dtype=str)
    first_train = split.loc[split["split"] == "train", "slide_id"].iloc[0]
    manifest.loc[manifest["slide_id"] == first_train, "label"] = "macro_typo"
    manifest.to_csv(tmp_path / "m.csv", index=False)
    result = _train((tmp_path / "m.csv", bags[1], bags[2]), tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "class 'macro_typo' has only 1 training slide" in capfd.readouterr().err + result.output


def test_synth_into_another_cohort_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    base = ["synth", "--out", str(out), "--slides", "2", "--size", "1024x768"]
    assert runner.invoke(app, [*base, "--seed", "0"]).exit_code == 0
    before = (out / "manifest.csv").read_bytes()
    refused = runner.invoke(app, [*base, "--seed", "1"])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert (out / "manifest.csv").read_bytes() == before
    again = runner.invoke(app, [*base, "--seed", "0"])
    assert again.exit_code == 0 and (out / "manifest.csv").read_bytes() == before
    (out / "slides" / "stale.tif").write_bytes(b"old")
    replaced = runner.invoke(app, [*base, "--seed", "1", "--overwrite"])
    assert replaced.exit_code == 0 and not (out / "slides" / "stale.tif").exists()
    assert json.loads((out / "cohort.json").read_text())["seed"] == 1


def test_heatmap_refuses_a_bag_from_an_earlier_tiling(cohort: Path, tmp_path: Path) -> None:
    from wsi_ncmi.formats.bags import BagFormatError, read_coords
    from wsi_ncmi.mil.runs import check_bag_tiles

    manifest = tmp_path / "m.csv"
    pd.DataFrame([{"slide_id": "s", "path": str(cohort / "s0.tif")}]).to_csv(manifest, index=False)
    job = tmp_path / "job"
    assert runner.invoke(app, ["tile", "--manifest", str(manifest), "--out", str(job)]).exit_code == 0
    coords = read_coords(job / "tiles" / "s.h5").coords
    bag = tmp_path / "bag.h5"
    with h5py.File(bag, "w") as h5:
        h5["features"] = np.zeros((len(coords), 4), np.float32)
        h5["coords"] = coords
    check_bag_tiles(bag, job / "tiles" / "s.h5")
    retiled = runner.invoke(app, ["tile", "--manifest", str(manifest), "--out", str(job), "--tile-size", "128",
                                  "--overwrite"])  # fmt: skip
    assert retiled.exit_code == 0
    with pytest.raises(BagFormatError, match="tiled again"):
        check_bag_tiles(bag, job / "tiles" / "s.h5")


@pytest.mark.parametrize(
    "colour",
    [(255, 182, 213), (255, 120, 200), (120, 90, 255), (250, 250, 250)],
    ids=["eosin, red saturated", "dense eosin", "hematoxylin, blue saturated", "glass"],
)
def test_bright_stains_are_not_taken_for_corrupt_data(colour: tuple[int, int, int]) -> None:
    from wsi_ncmi.slides.integrity import check_tile

    check_tile(np.full((64, 64, 3), colour, np.uint8), "a stained tile")


def test_tiles_of_a_strongly_stain_shifted_centre_are_not_flagged(tmp_path: Path) -> None:
    from wsi_ncmi.slides.backend import open_slide
    from wsi_ncmi.slides.integrity import impossible_fraction
    from wsi_ncmi.synthetic import center_stain_shift

    path = tmp_path / "shifted.tif"
    write_slide(SlideSpec("shifted", 1536, 1024, 0.5, seed=3, stain_shift=center_stain_shift(4)), path)
    with open_slide(path) as slide:
        tiles = [slide.read_region((x, y), 0, (256, 256)) for x in range(0, 1280, 256) for y in range(0, 768, 256)]
    assert max(impossible_fraction(t) for t in tiles) <= 0.05


def test_garbled_jpeg_tiles_are_recorded_as_unreadable(cohort: Path, tmp_path: Path) -> None:
    import tifffile

    from wsi_ncmi.embedding.embed import SlideWork, TileDataset
    from wsi_ncmi.embedding.registry import Preprocess
    from wsi_ncmi.formats.bags import read_coords
    from wsi_ncmi.slides.backend import open_slide

    damaged = tmp_path / "damaged.tif"
    shutil.copy(cohort / "s1.tif", damaged)
    with tifffile.TiffFile(damaged) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    data = bytearray(damaged.read_bytes())
    rng = np.random.default_rng(0)
    for offset, count in zip(offsets, counts, strict=True):
        for _ in range(3):
            position = offset + int(rng.integers(count // 4, count - 4))
            data[position] ^= 1 << int(rng.integers(8))
    damaged.write_bytes(data)
    pd.DataFrame([{"slide_id": "d", "path": str(cohort / "s1.tif")}]).to_csv(tmp_path / "m.csv", index=False)
    job = tmp_path / "job"
    args = ["tile", "--manifest", str(tmp_path / "m.csv"), "--out", str(job), "--mpp", "0.25", "--tile-size", "256"]
    assert runner.invoke(app, args).exit_code == 0
    coords = read_coords(job / "tiles" / "d.h5")
    size = int(coords.attrs["patch_size"])
    silent = []
    with open_slide(cohort / "s1.tif", "tiffslide") as clean, open_slide(damaged, "tiffslide") as garbled:
        for i, (x, y) in enumerate(coords.coords):
            try:
                tile = garbled.read_region((int(x), int(y)), 0, (size, size))
            except Exception:
                continue
            if np.abs(tile.astype(int) - clean.read_region((int(x), int(y)), 0, (size, size))).mean() > 2:
                silent.append(i)
    assert len(silent) >= 10, "the byte flips should leave tiles that decode into garbage without an error"
    outputs = {"e": tmp_path / "x.h5"}
    dataset = TileDataset([SlideWork("d", str(damaged), outputs, coords)], [Preprocess(32, 32)], "tiffslide")
    flagged = [i for i in silent if not dataset[(0, i)][3]]
    assert len(flagged) >= len(silent) // 4, (len(flagged), len(silent))
    clean = [SlideWork("d", str(cohort / "s1.tif"), outputs, coords)]
    clean_set = TileDataset(clean, [Preprocess(32, 32)], "tiffslide")
    assert all(clean_set[(0, i)][3] for i in range(len(coords.coords)))


# --- bad input and output paths: one clear line, non-zero exit --------------------------------------------------


def test_bad_inputs_and_outputs_give_one_clear_line(
    trained: Path, bags: tuple[Path, Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest, features, _ = bags
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    first = sorted(features.glob("*.h5"))[0]
    (truncated / first.name).write_bytes(first.read_bytes()[:2000])
    wide = tmp_path / "wide"
    wide.mkdir()
    for path in features.glob("*.h5"):
        with h5py.File(path) as src, h5py.File(wide / path.name, "w") as dst:
            dst["features"] = np.zeros((len(src["features"]), 16), np.float32)
            dst["coords"] = src["coords"][:]
            for key, value in src["features"].attrs.items():
                dst["features"].attrs[key] = value
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["predict", "--run", str(trained), "--features", str(truncated), "--out", str(tmp_path / "p.csv")], "h5"),
        (["evaluate", "--run", str(trained), "--features", str(wide), "--bootstrap", "0"], "feature"),
        ([*_train_args(bags, tmp_path), "--out", str(a_file)], str(a_file)),
        (["splits", "--manifest", str(manifest), "--out", str(a_file), "--scheme", "kfold"], str(a_file)),
        (["predict", "--run", str(trained), "--features", str(features), "--out", str(tmp_path)], str(tmp_path)),
    ]
    for args, needle in cases:
        _one_clear_line(_main(capfd, *args), "error:", needle)


def test_read_only_outputs_give_one_clear_line(
    trained: Path, bags: tuple[Path, Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    features = bags[1]
    with _tmpfs(tmp_path / "frozen", "ro,size=1m") as frozen:
        cases = [
            [*_train_args(bags, tmp_path), "--out", str(frozen / "run")],
            ["predict", "--run", str(trained), "--features", str(features), "--out", str(frozen / "p.csv")],
            ["synth", "--out", str(frozen / "cohort"), "--slides", "1", "--size", "1024x768"],
        ]
        for args in cases:
            _one_clear_line(_main(capfd, *args), "error:", "Read-only file system")


def test_an_empty_split_file_is_named() -> None:
    from wsi_ncmi.cohort.splits import SplitError, read_split

    path = Path(os.devnull)
    with pytest.raises(SplitError, match=str(path)):
        read_split(path)

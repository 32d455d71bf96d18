"""Concurrent training jobs: wall time of a batch of independent training runs with --jobs 2 against --jobs 1 on
this machine, the CPU time of each run either way, and projections (not measurements) for 16 cores.

The batch is what `run`, `tune` and the ablation hand to wsi_ncmi.batch.jobs: several seeds of the ablation's synthetic
cohort (240 bags, abmil, CE, its default 20 epochs, the product's training loop), each run single-threaded.
--jobs 1 runs them one after another in this process (warmed up first); --jobs 2 in a spawn pool of two workers,
whose start-up (a fresh interpreter per worker importing torch and training one 1-epoch run) is timed apart from
the batch. The two are interleaved and repeated, one ratio per pair, because other processes share the machine;
the load average before each measurement is recorded. Writes benchmarks/results/concurrency.json."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result

PROJECTED_CORES = 16


def _jobs(runs: int, epochs: int) -> list[Any]:
    from benchmarks.ncmi_ablation import CLASSES_SYNTHETIC, DEFAULT, run_one, synthetic_folds
    from wsi_ncmi.batch.jobs import Job

    grid = replace(DEFAULT, epochs=epochs, warmup_epochs=1)
    arm = {"loss": "ce", "neck": "none", "temperature": None}
    return [
        Job(f"seed{fold.seed}", timed_run, (run_one, fold, arm, grid, CLASSES_SYNTHETIC))
        for fold in synthetic_folds(runs)
    ]


def timed_run(run: Any, *args: Any) -> dict[str, Any]:
    """run(*args) and the CPU seconds it took in its process (unlike wall time, not stretched by other tenants)."""
    started = time.process_time()
    result = run(*args)
    return {"result": result, "cpu_s": time.process_time() - started}


def measure(jobs: list[Any], n_jobs: int, warm: list[Any]) -> tuple[float, float, list[Any]]:
    """(start-up seconds, seconds of the batch once started, results) at n_jobs. jobs 1 runs in this process, warmed
    up before the first measurement (start-up 0); more start a spawn pool whose workers first each train one
    short run (`warm`: imports, first-call initialisation), so the start-up and the steady state are timed apart."""
    from wsi_ncmi.batch.jobs import Workers

    started = time.perf_counter()
    with Workers(n_jobs) as workers:
        if n_jobs > 1:
            workers.run(warm[:n_jobs], "start-up")
        ready = time.perf_counter()
        outcomes = workers.run(jobs, f"jobs {n_jobs}")
        done = time.perf_counter()
    failed = [o.name for o in outcomes if o.failed]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    return ready - started, done - ready, [o.value for o in outcomes]


def projection(serial: float, warm: float, start: float, runs: int) -> dict[str, Any]:
    """A projection for PROJECTED_CORES cores from the 2-core figures: the per-worker efficiency seen at 2 jobs
    (serial time / (2 x the warm pool's time)) held constant, the pool start-up measured here paid once, and twice
    as many runs as cores, each as long as these. Memory bandwidth, clock speeds and other tenants of a larger
    machine are not modelled."""
    efficiency = (serial / 2) / max(warm, 1e-9)
    batch = PROJECTED_CORES * 2
    projected_serial = serial / runs * batch
    projected_parallel = start + projected_serial / (PROJECTED_CORES * efficiency)
    return {
        "is_projection": True,
        "cores": PROJECTED_CORES,
        "runs": batch,
        "efficiency_at_2_jobs": efficiency,
        "speedup": projected_serial / projected_parallel,
        "assumptions": "per-worker efficiency at 16 jobs equal to the one measured at 2; pool start-up as measured "
        "here, paid once; 32 runs as long as these; not measured on a 16-core machine",
    }


def cpu_projection(pairs: list[dict[str, Any]], start: float, runs: int) -> dict[str, Any]:
    """A projection for PROJECTED_CORES idle cores from CPU time, which other tenants do not stretch: a run costs
    the CPU seconds it took beside another run (jobs 2), each of the 16 workers gets a whole core, and the pool
    start-up measured here is paid once; one at a time, a run costs the CPU seconds it took alone (jobs 1)."""
    alone = statistics.median(p["jobs_1_cpu_per_run_s"] for p in pairs)
    beside = statistics.median(p["jobs_2_cpu_per_run_s"] for p in pairs)
    batch = PROJECTED_CORES * 2
    return {
        "is_projection": True,
        "cores": PROJECTED_CORES,
        "runs": batch,
        "cpu_s_per_run_alone": alone,
        "cpu_s_per_run_beside_another": beside,
        "speedup": (alone * batch) / (start + beside * batch / PROJECTED_CORES),
        "assumptions": "16 idle cores, one per worker; a run's CPU time as measured here beside another run; "
        "pool start-up as measured here (on a loaded machine, so likely longer than on an idle one), paid once; "
        "not measured on a 16-core machine",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="training runs in the batch")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (the ablation's default)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs (jobs 1, jobs 2)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = _jobs(args.runs, args.epochs)
    warm = [replace(job, name=f"warm-{job.name}") for job in _jobs(2, 1)]
    measure(warm[:1], 1, warm)
    pairs, results_equal = [], True
    for repeat in range(args.repeats):
        row: dict[str, Any] = {}
        values: dict[int, list[Any]] = {}
        for n_jobs in (1, 2) if repeat % 2 == 0 else (2, 1):
            row[f"load_before_jobs_{n_jobs}"] = os.getloadavg()[0]
            start, work, values[n_jobs] = measure(jobs, n_jobs, warm)
            row[f"jobs_{n_jobs}_startup_s"], row[f"jobs_{n_jobs}_s"] = start, work
        results_equal &= [v["result"] for v in values[1]] == [v["result"] for v in values[2]]
        for n_jobs in (1, 2):
            row[f"jobs_{n_jobs}_cpu_per_run_s"] = statistics.mean(v["cpu_s"] for v in values[n_jobs])
        row["ratio_warm"] = row["jobs_1_s"] / row["jobs_2_s"]
        row["ratio_end_to_end"] = row["jobs_1_s"] / (row["jobs_2_s"] + row["jobs_2_startup_s"])
        pairs.append(row)
        print(
            f"pair {repeat + 1}: jobs 1 {row['jobs_1_s']:.1f} s; jobs 2 {row['jobs_2_s']:.1f} s after a "
            f"{row['jobs_2_startup_s']:.1f} s start-up; speed-up {row['ratio_warm']:.2f} warm, "
            f"{row['ratio_end_to_end']:.2f} end to end"
        )
    serial = statistics.median(p["jobs_1_s"] for p in pairs)
    parallel = statistics.median(p["jobs_2_s"] for p in pairs)
    start = statistics.median(p["jobs_2_startup_s"] for p in pairs)
    warm = [p["ratio_warm"] for p in pairs]
    whole = [p["ratio_end_to_end"] for p in pairs]
    payload = {
        "workload": f"{args.runs} training runs (abmil dim 64, CE, synthetic cohort of 240 bags, {args.epochs} "
        "epochs, one thread each), train and test",
        "cpu_cores": os.cpu_count(),
        "pairs": pairs,
        "speedup_2_vs_1_warm": {"median": statistics.median(warm), "min": min(warm), "max": max(warm)},
        "speedup_2_vs_1_end_to_end": {"median": statistics.median(whole), "min": min(whole), "max": max(whole)},
        "pool_startup_2_workers_s": start,
        "identical_results": results_equal,
        "cpu_per_run_s": {f"jobs_{n}": statistics.median(p[f"jobs_{n}_cpu_per_run_s"] for p in pairs) for n in (1, 2)},
        "projection_16_cores": projection(serial, parallel, start, args.runs),
        "projection_16_cores_from_cpu_time": cpu_projection(pairs, start, args.runs),
    }
    path = write_result("concurrency", payload)
    print(
        f"speed-up 2 vs 1 job(s), medians: {statistics.median(warm):.2f} warm, {statistics.median(whole):.2f} end to "
        f"end; identical results: {results_equal}; CPU s per run {payload['cpu_per_run_s']}; projected for "
        f"{PROJECTED_CORES} idle cores: {payload['projection_16_cores_from_cpu_time']['speedup']:.1f}x from CPU time, "
        f"{payload['projection_16_cores']['speedup']:.1f}x from the wall times here (projections); {path}"
    )


if __name__ == "__main__":
    main()

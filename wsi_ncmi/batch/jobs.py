"""Independent training jobs run concurrently: in this process, in a spawn process pool, or on a Dask cluster.

Every job runs on one intra-op thread (unless its own settings ask for more), so a job's arithmetic is the same
whether it runs alone or beside others, and results equal those of one job at a time. A job that raises becomes a
failed Outcome naming the job; the others go on. Ctrl-C (or SIGTERM) stops the workers, which remove their
temporary and lock files, and re-raises in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

THREADS_ENV = "WSI_NCMI_THREADS"


@dataclass(frozen=True)
class Job:
    """One unit of work: `func(*args)`; `func` must be importable (a module-level function) and `args` picklable."""

    name: str
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class Outcome:
    """What a job returned, or why it failed (`error`, one line)."""

    name: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


def default_jobs(tasks: int) -> int:
    """Concurrent jobs for `tasks` independent ones: the idle cores by the project's rule (cores.usable_cores),
    at most one per task."""
    from wsi_ncmi.core.cores import usable_cores

    return max(1, min(tasks, usable_cores()))


def failed_names(outcomes: Sequence[Outcome]) -> list[str]:
    """The names of the jobs that failed, in order."""
    return [o.name for o in outcomes if o.failed]


@contextmanager
def single_threaded() -> Iterator[None]:
    """One intra-op thread for the training inside the block (WSI_NCMI_THREADS=1; a job's `threads` setting still
    wins), restored afterwards."""
    before = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before


def _message(exc: BaseException) -> str:
    """One line: this package's errors as they are, anything else with its type."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if type(exc).__module__.startswith("wsi_ncmi") and name.endswith("Error"):
        return text
    return f"{name}: {text}"


def _call(func: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any, float]:
    """Run one job single-threaded: (True, value, seconds) or (False, error line, seconds)."""
    started = time.perf_counter()
    try:
        with single_threaded():
            value = func(*args)
    except Exception as exc:
        return False, _message(exc), time.perf_counter() - started
    return True, value, time.perf_counter() - started


def _outcome(name: str, result: tuple[bool, Any, float]) -> Outcome:
    ok, value, seconds = result
    return Outcome(name, value, None, seconds) if ok else Outcome(name, None, value, seconds)


def run_jobs(
    jobs: Sequence[Job],
    n_jobs: int = 1,
    scheduler: str | None = None,
    description: str = "jobs",
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every job and return the outcomes in the jobs' order.

    n_jobs 1 (or a single job): one after another in this process. More: a spawn process pool of n_jobs workers,
    with a progress bar. `scheduler` (tcp://host:8786): one task per job on that Dask cluster (start its workers
    with `--nthreads 1`). `on_done` is called with each outcome as it arrives.
    """
    with Workers(n_jobs, scheduler) as workers:
        return workers.run(jobs, description, on_done)


class Workers:
    """Where jobs run, kept across several batches of jobs (a search's rounds): this process, a spawn process
    pool (started with the first batch that needs it) or a Dask client. Use as a context manager."""

    def __init__(self, n_jobs: int = 1, scheduler: str | None = None):
        self.n_jobs, self.scheduler = max(1, n_jobs), scheduler
        self._pool: Any = None
        self._client: Any = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: Any, exc: Any, trace: Any) -> None:
        if self._pool is not None:
            from wsi_ncmi.batch.runner import _stop_pool

            if kind is None:
                self._pool.shutdown(wait=True)
            else:
                _stop_pool(self._pool)
        if self._client is not None:
            self._client.close()

    def run(
        self, jobs: Sequence[Job], description: str = "jobs", on_done: Callable[[Outcome], None] | None = None
    ) -> list[Outcome]:
        """Every job's outcome, in the jobs' order."""
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError("job names must be unique")
        outcomes: dict[int, Outcome] = {}

        def record(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            if on_done is not None:
                on_done(outcome)

        if self.scheduler:
            self._run_dask(jobs, record)
        elif self.n_jobs == 1 or (len(jobs) <= 1 and self._pool is None):
            for index, job in enumerate(jobs):
                record(index, _outcome(job.name, _call(job.func, job.args)))
        else:
            self._run_pool(jobs, description, record)
        return [outcomes[i] for i in range(len(jobs))]

    def _run_pool(self, jobs: Sequence[Job], description: str, record: Callable[[int, Outcome], None]) -> None:
        """The jobs in the spawn pool; Ctrl-C or SIGTERM propagates (the context manager stops the workers, which
        remove their temporary files)."""
        import multiprocessing
        from concurrent.futures import Future, ProcessPoolExecutor, as_completed

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from wsi_ncmi.batch.runner import _watch_parent

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.n_jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
        )
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(f"{description} ({self.n_jobs} at once)", total=len(jobs), last="")
            futures: dict[Future[Any], int] = {
                self._pool.submit(_call, job.func, job.args): i for i, job in enumerate(jobs)
            }
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcome = _outcome(jobs[index].name, future.result())
                except Exception as exc:
                    outcome = Outcome(jobs[index].name, error=f"worker process died: {_message(exc)}")
                record(index, outcome)
                progress.update(task, advance=1, last=f"{outcome.name}: {'failed' if outcome.failed else 'done'}")

    def _run_dask(self, jobs: Sequence[Job], record: Callable[[int, Outcome], None]) -> None:
        """One task per job on the Dask cluster; Ctrl-C cancels the tasks still queued or running."""
        try:
            from distributed import Client, as_completed
        except ImportError as exc:
            raise RuntimeError("--dask-scheduler needs dask.distributed: pip install 'wsi-ncmi[dask]'") from exc
        import uuid

        if self._client is None:
            self._client = Client(self.scheduler)
        batch = uuid.uuid4().hex[:8]
        futures = [
            self._client.submit(_call, job.func, job.args, key=f"{job.name}-{batch}", pure=False, retries=0)
            for job in jobs
        ]
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                i = index[future.key]
                try:
                    outcome = _outcome(jobs[i].name, future.result())
                except Exception as exc:
                    outcome = Outcome(jobs[i].name, error=f"dask task failed: {_message(exc)}")
                record(i, outcome)
        except KeyboardInterrupt:
            self._client.cancel(futures)
            raise

"""Run a per-slide function over many slides: in-process, in a process pool, or on a Dask cluster.

The per-slide function must never raise for a bad slide: it returns a failed StatusRow instead, so one bad
slide never stops a batch. Anything that does escape (a crashed worker) becomes that slide's failed row here.
With Dask, each slide is one task running the same function; a task whose worker dies is retried once on another
worker, and the rows come back to this process, which writes the status file and draws the progress bar.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import TypeVar

from wsi_ncmi.core.faults import Interrupted, signal_of
from wsi_ncmi.formats.status import FAILED, StatusRow

T = TypeVar("T")
EXECUTORS = ("local", "dask")


def _crash_row(slide_id: str, exc: BaseException) -> StatusRow:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):
        return StatusRow(slide_id, FAILED, error=f"not finished: a worker process died ({exc}); run again to redo it")
    return StatusRow(slide_id, FAILED, error=f"worker crashed: {type(exc).__name__}: {exc}")


def _watch_parent(parent: int) -> None:
    """Pool-worker initializer: leave Ctrl-C to the main process, and exit as soon as the main process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _stop_worker(signal.SIGTERM, None)

    threading.Thread(target=watch, daemon=True).start()


def _stop_worker(signum: int, frame: object) -> None:
    """SIGTERM in a pool worker: remove the temporary and lock files of the slide it is writing, then exit."""
    from wsi_ncmi.core.pending import remove_pending

    remove_pending()
    os._exit(1)


def _stop_pool(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """Cancel what has not started and stop the running workers (SIGTERM, then SIGKILL after `grace_s`)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def run_slides(
    func: Callable[[T], StatusRow],
    items: Sequence[T],
    slide_ids: Sequence[str],
    workers: int = 1,
    description: str = "slides",
    show_progress: bool = True,
    executor: str = "local",
    scheduler: str | None = None,
    resources: dict[str, float] | None = None,
) -> list[StatusRow]:
    """Apply `func` to every item (one per slide) and return the rows in the items' order.

    executor 'local': in this process (workers 1) or a spawn process pool. 'dask': on the dask.distributed
    scheduler at `scheduler` (tcp://host:8786), or on a LocalCluster of `workers` processes when none is given;
    `resources` (e.g. {"GPU": 1}) is requested per task.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    rows: dict[int, StatusRow] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task(description, total=len(items), last="")

        def record(index: int, row: StatusRow) -> None:
            rows[index] = row
            progress.update(task, advance=1, last=f"{row.slide_id}: {row.status}")

        if executor == "dask":
            for index, row in _run_dask(func, items, slide_ids, workers, description, scheduler, resources):
                record(index, row)
        else:
            try:
                if workers <= 1 or len(items) <= 1:
                    for index, item in enumerate(items):
                        record(index, _row_of(slide_ids[index], func, item))
                else:
                    _run_pool(func, items, slide_ids, workers, record)
            except KeyboardInterrupt as stop:
                raise Interrupted([rows[i] for i in sorted(rows)], len(items), signal_of(stop)) from stop
    return [rows[i] for i in range(len(items))]


def _row_of(slide_id: str, get: Callable[..., StatusRow], *args: object) -> StatusRow:
    """`get(*args)`, or the slide's failed row when it raised (a bug, or a worker that died)."""
    try:
        return get(*args)
    except Exception as exc:
        return _crash_row(slide_id, exc)


def _run_pool(
    func: Callable[[T], StatusRow],
    items: Sequence[T],
    slide_ids: Sequence[str],
    workers: int,
    record: Callable[[int, StatusRow], None],
) -> None:
    """Run the items in a spawn process pool; on Ctrl-C or SIGTERM stop the pool promptly and re-raise."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_watch_parent, initargs=(os.getpid(),)
    )
    try:
        futures: dict[Future[StatusRow], int] = {pool.submit(func, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            index = futures[future]
            record(index, _row_of(slide_ids[index], future.result))
    except KeyboardInterrupt:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _run_dask(
    func: Callable[[T], StatusRow],
    items: Sequence[T],
    slide_ids: Sequence[str],
    workers: int,
    description: str,
    scheduler: str | None,
    resources: dict[str, float] | None,
) -> Iterator[tuple[int, StatusRow]]:
    """Yield (item index, row) as the cluster's tasks finish."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise RuntimeError("--executor dask needs dask.distributed: pip install 'wsi-ncmi[dask]'") from exc
    cluster = (
        None
        if scheduler
        else LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None)
    )
    client = Client(scheduler or cluster)
    try:
        futures = client.map(
            func, list(items), key=[f"{description}-{s}" for s in slide_ids], pure=False, retries=1, resources=resources
        )
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            yield i, _row_of(slide_ids[i], future.result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

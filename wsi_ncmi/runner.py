"""Run a per-slide function over many slides: in-process or in a process pool, with a progress bar.

The per-slide function must never raise for a bad slide: it returns a failed StatusRow instead, so one bad
slide never stops a batch. Anything that does escape (a crashed worker) becomes that slide's failed row here.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import TypeVar

from wsi_ncmi.status import FAILED, StatusRow

T = TypeVar("T")


def _crash_row(slide_id: str, exc: BaseException) -> StatusRow:
    return StatusRow(slide_id, FAILED, error=f"worker crashed: {type(exc).__name__}: {exc}")


def run_slides(
    func: Callable[[T], StatusRow],
    items: Sequence[T],
    slide_ids: Sequence[str],
    workers: int = 1,
    description: str = "slides",
    show_progress: bool = True,
) -> list[StatusRow]:
    """Apply `func` to every item (one per slide) and return the rows in the items' order."""
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

        if workers <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                try:
                    row = func(item)
                except Exception as exc:
                    row = _crash_row(slide_ids[index], exc)
                record(index, row)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures: dict[Future[StatusRow], int] = {pool.submit(func, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    index = futures[future]
                    try:
                        row = future.result()
                    except Exception as exc:
                        row = _crash_row(slide_ids[index], exc)
                    record(index, row)
    return [rows[i] for i in range(len(items))]

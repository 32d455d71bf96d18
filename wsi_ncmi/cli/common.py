"""What the commands share: the one-line failure and the one way errors become it, the per-slide summary table,
--shard parsing, the slide table of --manifest/--slides and the options several commands take.

Nothing heavy is imported here at module level: every command module imports this one at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wsi_ncmi.core.errors import EXIT_USAGE, WsiNcmiError

if TYPE_CHECKING:
    from wsi_ncmi.cohort.manifest import Columns
    from wsi_ncmi.core.faults import Interrupted

ShardOption = Annotated[str | None, typer.Option("--shard", help="Only shard I of N (I/N, 0-based) for array jobs.")]
ExecutorOption = Annotated[str, typer.Option("--executor", help="local or dask (a task per slide).")]
SchedulerOption = Annotated[
    str | None, typer.Option("--dask-scheduler", help="tcp://HOST:8786 of a running cluster [a LocalCluster].")
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
"""Where a run's model computes (commands that read trained runs; default cpu)."""


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one clear error line to stderr and return the Exit to raise."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


@contextmanager
def reported(*builtins: type[Exception], prefix: str = "") -> Iterator[None]:
    """Turn this package's errors (WsiNcmiError) raised inside, and the `builtins` exceptions a command expects of
    the library it calls (bad values, a model that cannot read a bag), into the one `error:` line and the exit code
    (the error's own; 2 for a builtin one). `prefix` names what was being read, e.g. "tiling settings: "."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except WsiNcmiError as exc:
        raise fail(prefix + _message(exc), exc.exit_code) from exc
    except builtins as exc:
        raise fail(prefix + _message(exc)) from exc


def _message(exc: Exception) -> str:
    """The text of an error; a KeyError's without the quotes its str() adds around a message holding a quote."""
    return str(exc).strip('"') if isinstance(exc, KeyError) else str(exc)


def interrupted(stop: Interrupted, status_csv: Path) -> typer.Exit:
    """Say what finished before Ctrl-C/SIGTERM and how to resume; return the Exit (128 + signal) to raise."""
    import signal

    name = signal.Signals(stop.signum).name
    return fail(
        f"interrupted by {name}: {len(stop.rows)} of {stop.total} slide(s) finished (status: {status_csv}); "
        "run the same command again to resume (finished slides are skipped)",
        128 + stop.signum,
    )


def shard_part(text: str | None) -> tuple[int, int] | None:
    """The (I, N) of a --shard I/N option, None without one; a malformed one fails the command."""
    from wsi_ncmi.formats.shards import parse_shard

    if text is None:
        return None
    with reported(ValueError):
        return parse_shard(text)


def summary(rows: list, stage: str, status_csv: Path) -> int:
    """Print a per-status summary and the failures; return the exit code (1 when any slide failed)."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    counts = Counter(row.status for row in rows)
    table = Table(title=f"{stage}: {len(rows)} slide(s)")
    table.add_column("status")
    table.add_column("slides", justify="right")
    table.add_column("tiles", justify="right")
    for status in sorted(counts):
        tiles = sum(row.n_tiles for row in rows if row.status == status)
        table.add_row(status, str(counts[status]), str(tiles))
    console.print(table)
    failed = [row for row in rows if row.failed]
    for row in failed[:20]:
        console.print(f"[red]failed[/] {row.slide_id}: {row.error}", markup=True, soft_wrap=True)
    if len(failed) > 20:
        console.print(f"... and {len(failed) - 20} more failures")
    warned = [row for row in rows if row.warning and not row.failed]
    for row in warned[:10]:
        console.print(f"[yellow]warning[/] {row.slide_id}: {row.warning}", markup=True, soft_wrap=True)
    console.print(f"status table: {status_csv}")
    return 1 if failed else 0


def slide_table(manifest: Path | None, slides: Path | None) -> Columns:
    """The slides of --manifest or --slides as validated manifest columns (no pandas: `tile` starts fast)."""
    from wsi_ncmi.cohort.manifest import read_columns, slide_columns

    if (manifest is None) == (slides is None):
        raise fail("give exactly one of --manifest M.csv or --slides DIR")
    if slides is not None and not slides.is_dir():
        raise fail(f"{slides}: --slides folder does not exist or is not a folder; give the folder of slide files")
    with reported():
        return read_columns(manifest, require=["path"]) if manifest else slide_columns(slides)

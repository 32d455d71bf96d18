"""How the command line meets faults: SIGTERM handled like Ctrl-C, and any escaped error shown as one clear line.

Known errors (this package's errors, all WsiNcmiError, and OSError such as a full or read-only disk) print
`error: ...` and exit with the code the error carries, without a traceback; an unexpected one prints its type and
message, and the traceback only when WSI_NCMI_DEBUG=1 is set.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsi_ncmi.core.errors import EXIT_BUG, EXIT_ERROR, WsiNcmiError


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised in the main thread like Ctrl-C's KeyboardInterrupt, so cleanup runs the same way."""

    signum = signal.SIGTERM


class Interrupted(Exception):
    """A batch stopped by Ctrl-C or SIGTERM; `rows` are the slides that finished before it stopped."""

    def __init__(self, rows: list[Any], total: int, signum: int):
        super().__init__(f"interrupted after {len(rows)} of {total} slide(s)")
        self.rows, self.total, self.signum = rows, total, signum


def signal_of(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT) or Terminated (SIGTERM)."""
    return int(getattr(exc, "signum", signal.SIGINT))


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def install_sigterm() -> None:
    """Turn SIGTERM into Terminated in the main thread, so `finally` blocks remove temp files and locks."""
    signal.signal(signal.SIGTERM, _raise_terminated)


MAX_MESSAGE = 400
"""Longest error or warning text shown (a value quoted in a message can be megabytes long)."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


LIBRARIES = {"sklearn": "scikit-learn", "torch": "PyTorch", "h5py": "h5py", "PIL": "Pillow", "tifffile": "tifffile"}
"""Libraries whose warnings the CLI attributes by name (found in the warning's module or file path)."""


def show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Print a warning as one `warning: ...` line, without the source path and line Python adds; a library's
    warning names the library."""
    module = category.__module__.split(".")[0]
    path = Path(filename).parts
    origin = next((part for part in path if part in LIBRARIES), None)
    origin = LIBRARIES.get(origin or module)
    text = one_line(str(message))
    print(f"warning: {text}" + (f" ({origin})" if origin else ""), file=file or sys.stderr)


def install_warnings() -> None:
    """Show every warning of a command as one line in the project's format (see show_warning)."""
    import warnings

    warnings.showwarning = show_warning


def describe(exc: BaseException) -> tuple[str, int]:
    """One line for an error that escaped a command, and the exit code to go with it."""
    if isinstance(exc, WsiNcmiError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", EXIT_ERROR
    if isinstance(exc, OSError):
        return str(exc), EXIT_ERROR
    name = type(exc).__name__
    return f"unexpected {name}: {exc} (set WSI_NCMI_DEBUG=1 to see the traceback)", EXIT_BUG


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or Terminated) that typer turned into exit code 130, if any; None when a command
    already reported it (Interrupted)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Interrupted):
            return None
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run_command_line(app: Callable[[], Any]) -> None:
    """Run the typer `app` in this process; faults become one line on stderr and a non-zero exit code."""
    install_sigterm()
    install_warnings()
    try:
        app()
    except SystemExit as done:
        interrupt = _interrupt_behind(done)
        if interrupt is None:
            raise
        signum = signal_of(interrupt)
        print(f"interrupted by {signal.Signals(signum).name}; run the same command again to resume", file=sys.stderr)
        sys.exit(128 + signum)
    except Exception as exc:
        if os.environ.get("WSI_NCMI_DEBUG"):
            raise
        message, code = describe(exc)
        print(f"error: {one_line(message)}", file=sys.stderr)
        sys.exit(code)

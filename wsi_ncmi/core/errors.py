"""The one base of this package's errors: each says in one line what is wrong and the fix, and carries the exit
code the command line ends with, so a command catches `WsiNcmiError` once instead of listing every kind."""

from __future__ import annotations

EXIT_ERROR, EXIT_USAGE, EXIT_BUG = 1, 2, 3
"""Exit codes: something failed on the way (a disk, a slide); bad input or settings; a bug (an unexpected error)."""


class WsiNcmiError(Exception):
    """Bad input, settings or files that the message names, with the fix; the command exits with `exit_code`."""

    exit_code: int = EXIT_USAGE

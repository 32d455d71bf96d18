"""Run the `wsi-ncmi` entry point in the test process, its error handling included, as a finished process reports."""

from __future__ import annotations

import signal
import subprocess
import sys
import warnings

import pytest


def run_main(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`wsi-ncmi ARGS` through wsi_ncmi.cli.main: exit code, stdout and stderr; argv, the SIGTERM handler and the
    warnings display it installs are put back afterwards."""
    from wsi_ncmi.cli import main

    argv, handler, shown = sys.argv, signal.getsignal(signal.SIGTERM), warnings.showwarning
    sys.argv = ["wsi-ncmi", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, handler)
        warnings.showwarning = shown
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)

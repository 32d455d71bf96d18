"""The one way a command's errors end it (cli.common.reported): this package's errors and the builtin ones a
command names become one `error:` line with the error's exit code; anything else, and the command's own exits,
pass through untouched."""

from __future__ import annotations

import pytest
import typer

from wsi_ncmi.cli.common import reported
from wsi_ncmi.core.errors import EXIT_ERROR, WsiNcmiError


class DiskGone(WsiNcmiError):
    exit_code = EXIT_ERROR


def _ended(error: BaseException, *builtins: type[Exception], prefix: str = "") -> int:
    with pytest.raises(typer.Exit) as done, reported(*builtins, prefix=prefix):
        raise error
    return done.value.exit_code


def test_package_errors_end_with_their_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ended(WsiNcmiError("bad [input]")) == 2
    assert capsys.readouterr().err == "error: bad [input]\n", "text in brackets is shown, not read as markup"
    assert _ended(DiskGone("full"), prefix="settings: ") == EXIT_ERROR
    assert capsys.readouterr().err == "error: settings: full\n"


def test_only_the_builtin_errors_named_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ended(ValueError("no good"), ValueError) == 2
    assert _ended(KeyError("unknown encoder 'x'"), KeyError) == 2
    assert capsys.readouterr().err == "error: no good\nerror: unknown encoder 'x'\n"
    with pytest.raises(TypeError), reported(ValueError):
        raise TypeError("a bug")


def test_a_command_s_own_exit_passes_through() -> None:
    with pytest.raises(typer.Exit) as done, reported(RuntimeError):
        raise typer.Exit(7)
    assert done.value.exit_code == 7

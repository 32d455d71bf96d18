"""The command-line interface: one command per pipeline stage, nothing but argument handling and reporting.

Each module of this package holds the commands of one stage; this one builds the app from them in the order
`wsi-ncmi --help` lists them. Heavy libraries are imported inside the commands that need them, so `wsi-ncmi --help`
starts fast, and `main` builds only the command it runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wsi_ncmi.cli import cohort, embed, evaluate, export, report, run, status, tile, train

app = typer.Typer(
    name="wsi-ncmi",
    help="Whole-slide images -> tiles -> feature bags -> MIL aggregators trained with NCMI -> honest metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    """--version: print the package version and stop before any command runs."""
    if value:
        from wsi_ncmi import __version__

        typer.echo(f"wsi-ncmi {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Options that come before the command."""


COMMANDS = (
    cohort.synth,
    tile.tile,
    embed.embed,
    embed.encoders,
    status.status,
    cohort.splits,
    train.train,
    train.tune,
    evaluate.evaluate,
    evaluate.predict,
    report.heatmap,
    evaluate.compare,
    report.report,
    run.run,
    run.demo,
)
"""The top-level commands, in the order `wsi-ncmi --help` lists them."""
for _command in COMMANDS:
    app.command(epilog=train.EPILOG if _command is train.train else None)(_command)
app.add_typer(cohort.manifest_app, name="manifest")
app.add_typer(export.export_app, name="export")


def _only_command(args: list[str]) -> Any:
    """The command line for `args`: when they start with a command's name, a group holding only that command, so
    start-up skips building every other command's options (typer reads each signature's type hints); the whole app
    otherwise (top-level help, command groups, typos)."""
    import copy

    import typer.main

    name = args[0] if args else None
    chosen = [
        info
        for info in app.registered_commands
        if info.callback is not None and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    if not chosen:
        return app
    lean = copy.copy(app)
    lean.registered_commands, lean.registered_groups = chosen, []
    return typer.main.get_group(lean)


def main() -> None:
    """The `wsi-ncmi` entry point: faults (bad input, full disk, Ctrl-C, SIGTERM) end in one line and an exit code."""
    import sys

    from wsi_ncmi.core.faults import run_command_line

    run_command_line(_only_command(sys.argv[1:]))

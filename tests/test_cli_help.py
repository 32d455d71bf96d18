"""What `--help` prints is what the code means: defaults in brackets survive, no doubled %, no stray " .", no type
shown for on/off flags, and `wsi-ncmi --version` agrees with the package metadata."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tomllib
import typer
from typer.testing import CliRunner

from wsi_ncmi.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command and sub-command of the CLI, as the words that call it."""
    paths: list[list[str]] = [[]]

    def walk(group: Any, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            paths.append([*prefix, name])
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


PATHS = command_paths()


def test_every_stage_has_a_command() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"tile", "embed", "train", "evaluate", "report", "run", "demo", "export qupath"} <= names


@pytest.mark.parametrize("words", PATHS, ids=lambda p: " ".join(p) or "wsi-ncmi")
def test_help_text_is_clean(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "%%" not in text
    assert not re.search(r"\S \.(\s|$)", text), [line for line in text.splitlines() if re.search(r" \.", line)]
    assert "<bool>" not in text and "BOOLEAN" not in text


def test_bracketed_defaults_are_shown() -> None:
    text = " ".join(runner.invoke(app, ["tile", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "Target microns per pixel [config: 0.5]." in text
    assert "wsidicom or pylibczirw [auto]." in text
    assert "bootstrap 95% CI" in runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).output


def test_version_matches_the_package() -> None:
    result = runner.invoke(app, ["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.exit_code == 0 and result.output.strip() == f"wsi-ncmi {version}"

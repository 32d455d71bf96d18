"""Every `wsi-ncmi ...` command shown in the README and data_manifests/README.md parses against the real CLI.

The commands that need real slides, weights or a GPU cannot run here; the stages they call are exercised end to
end on synthetic data by the other tests (tiling, embedding, training, evaluation, pipeline and demo tests).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from wsi_ncmi.cli import app

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """`wsi-ncmi` command lines of the READMEs' code blocks, with backslash continuations joined."""
    commands = []
    for path in (ROOT / "README.md", ROOT / "data_manifests" / "README.md"):
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            shown = line.startswith("wsi-ncmi ") or (line.startswith("torchrun ") and " -m wsi_ncmi " in line)
            if shown or (line.startswith("docker run") and " wsi-ncmi " in line):
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                commands.append(line.split("#")[0].strip())
            i += 1
    return commands


def parse(command: Any, args: list[str], parent: Any = None) -> dict[str, Any]:
    ctx = command.make_context(command.name or "wsi-ncmi", list(args), parent=parent)
    if hasattr(command, "resolve_command"):
        _, sub, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        return parse(sub, rest, ctx)
    return ctx.params


COMMANDS = readme_commands()


def test_the_readme_shows_commands() -> None:
    shown = {shlex.split(c)[1] for c in COMMANDS if c.startswith("wsi-ncmi ")}
    assert {
        "synth",
        "tile",
        "embed",
        "manifest",
        "splits",
        "train",
        "tune",
        "evaluate",
        "predict",
        "heatmap",
        "compare",
        "run",
        "demo",
    } <= shown


@pytest.mark.parametrize("line", [c for c in COMMANDS if "..." not in c])
def test_readme_command_parses(line: str) -> None:
    words = shlex.split(line.replace("<slide_id>", "patient_000_node_0"))
    if "wsi_ncmi" in words:
        words = words[words.index("wsi_ncmi") :]
    elif words[0] == "docker":
        words = words[words.index("wsi-ncmi") :]
    parse(typer.main.get_command(app), words[1:])


def test_cpu_only_install_is_documented_not_default() -> None:
    text = (ROOT / "README.md").read_text()
    line = next(c.strip() for c in text.splitlines() if "download.pytorch.org/whl/cpu" in c and "pip install" in c)
    words = shlex.split(line)
    assert words[:2] == [".venv/bin/pip", "install"] and {"torch", "torchvision"} <= set(words)
    assert words[words.index("-c") + 1] == "constraints.txt", "the CPU wheels follow the pinned versions"
    assert "index-url" not in (ROOT / "Makefile").read_text(), "PyPI's (CUDA) torch stays the default"

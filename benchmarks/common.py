"""Helpers shared by the benchmark scripts: repeated timing, child-process peak memory, JSON results."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import os
    import sys

    figures: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        figures["gpu"] = torch.cuda.get_device_name(0)
        figures["torch"] = torch.__version__
    return figures


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def timed(func: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls (time.perf_counter)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        out.append(time.perf_counter() - start)
    return out


def _child(queue: Any, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    start = time.perf_counter()
    result = func(*args)
    seconds = time.perf_counter() - start
    queue.put((result, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def in_child(func: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run func(*args) in a fresh process; return (result, seconds, peak RSS in MiB of that process)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, func, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def write_result(name: str, payload: dict[str, Any], folder: Path = RESULTS) -> Path:
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def slide_size_args(doc: str) -> tuple[argparse.Namespace, int, int]:
    """Parse --full and --repeats; return them with the slide size they choose (16k x 12k px, 32k x 24k with --full)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (32_768, 24_576) if args.full else (16_384, 12_288)
    return args, width, height

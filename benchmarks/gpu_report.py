"""The GPU figures as the README's tables (Markdown), from the JSON that benchmarks/gpu.sh writes.

Embedding, per encoder: FLOPs per tile, the ceiling at the assumed peak, model-alone and whole-pipeline tiles/s
(tiles decoded on the CPU and on the GPU) and their shares of the ceiling. MIL training: bags/s of train() at each
bags_per_step timed, or the note saying why a row was skipped.

    python benchmarks/gpu_report.py [benchmarks/results/gpu]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def embedding_table(folder: Path) -> list[str]:
    lines = [
        "| encoder | GFLOP/tile | ceiling tiles/s | model alone | pipeline, CPU decode | pipeline, GPU decode "
        "| model / ceiling | pipeline / model alone (best) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peaks = set()
    for path in sorted(folder.glob("embedding-*.json")):
        figures = json.loads(path.read_text())
        peaks.add(figures.get("assumed_peak_tflops"))
        by_decode = figures["by_decode"]
        pipe = {d: by_decode[d]["pipeline_tiles_per_s"] for d in by_decode}
        best = max(by_decode[d]["pipeline_over_model_alone"] for d in by_decode)
        lines.append(
            f"| {figures['encoder']} | {figures['flops_per_tile'] / 1e9:.1f} | {_rate(figures['ceiling_tiles_per_s'])} "
            f"| {_rate(figures['model_alone_tiles_per_s'])} | {_rate(pipe.get('cpu'))} | {_rate(pipe.get('device'))} "
            f"| {_share(figures.get('model_alone_over_ceiling'))} | {best:.2f} |"
        )
    any_figure = next(iter(sorted(folder.glob("embedding-*.json"))), None)
    if any_figure is not None:
        figures = json.loads(any_figure.read_text())
        gpu = figures.get("machine", {}).get("gpu", figures.get("device"))
        lines.append("")
        assumed = ", ".join(map(str, sorted(peaks, key=str)))
        lines.append(
            f"{gpu}; {figures['tiles']} tiles, batch {figures['batch_size']}, {figures['precision']}, "
            f"{figures['workers']} reader processes; ceiling at an assumed {assumed} TFLOPS."
        )
    return lines


def mil_table(folder: Path) -> list[str]:
    path = folder / "mil_throughput.json"
    if not path.exists():
        return []
    figures = json.loads(path.read_text())
    lines = ["| bags_per_step | train() bags/s |", "|---|---|"]
    for key, row in figures.items():
        if key.startswith("bags_per_step_"):
            value = f"{row['bags_per_s']:,.1f}" if "bags_per_s" in row else row["note"]
            lines.append(f"| {key.removeprefix('bags_per_step_')} | {value} |")
    lines.append("")
    lines.append(
        f"{figures['model']} with {figures['loss']}, {figures['bags']} bags of {figures['tiles_per_bag']} x "
        f"{figures['feature_dim']} features in memory, {figures['device']}."
    )
    return lines


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "gpu"
    print("\n".join([*embedding_table(folder), "", *mil_table(folder)]))


if __name__ == "__main__":
    main()

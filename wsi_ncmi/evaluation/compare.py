"""Comparing runs: mean +- std over seeds/folds per (model, loss), and paired differences against a baseline with
a bootstrap CI and a Wilcoxon signed-rank test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wsi_ncmi.core.atomic import atomic_path
from wsi_ncmi.formats.layout import RunFolder
from wsi_ncmi.mil.runfolder import RunError

METRICS = ("macro_f1", "accuracy", "balanced_accuracy", "auc", "ncmi")


def collect(runs: list[Path], split: str = "test") -> pd.DataFrame:
    """One row per run: run, model, loss, seed, split file, and the split's metrics from metrics_{split}.json."""
    from wsi_ncmi.evaluation.evaluate import run_config
    from wsi_ncmi.evaluation.runfiles import read_metrics
    from wsi_ncmi.mil.runs import check_metrics_current, model_epoch

    check_comparable(runs)
    rows = []
    for run in runs:
        config = run_config(run)
        path = RunFolder(run).metrics(split)
        if not path.exists():
            raise RunError(f"{path}: missing; run `wsi-ncmi evaluate --run {run} --split {split}` first")
        metrics = read_metrics(path, f"run `wsi-ncmi evaluate --run {run} --split {split}` again")
        check_metrics_current(run, split, metrics, model_epoch(run))
        training = config["training"]
        rows.append(
            {
                "run": str(run),
                "model": training["model"],
                "loss": training["loss"],
                "seed": training["seed"],
                "split_file": config["inputs"].get("split", ""),
                **{m: np.nan if metrics.get(m) is None else float(metrics[m]) for m in METRICS},
            }
        )
    return pd.DataFrame(rows)


def check_comparable(runs: list[Path]) -> None:
    """Refuse a run folder given twice, and runs of different cohorts (manifests) or class sets, whose metrics
    cannot be averaged in one row."""
    from wsi_ncmi.evaluation.evaluate import run_config

    seen: dict[Path, Path] = {}
    for run in runs:
        key = Path(run).resolve()
        if key in seen:
            raise RunError(f"{run}: given twice (as {seen[key]}); list each run folder once")
        seen[key] = Path(run)
    for what, get in (
        ("class sets", lambda c: c.get("classes")),
        ("cohorts (manifests)", lambda c: (c.get("inputs") or {}).get("manifest")),
    ):
        found: dict[str, list[str]] = {}
        for run in runs:
            value = get(run_config(run))
            if value is not None:
                found.setdefault(json.dumps(value), []).append(str(run))
        if len(found) > 1:
            listed = "; ".join(f"{value}: {', '.join(names[:3])}" for value, names in found.items())
            raise RunError(f"the runs have different {what} ({listed}); compare runs of one cohort and class set")


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """mean and std (ddof 1; 0 for a single run) of every metric per (model, loss), with the number of runs."""
    out = []
    for (model, loss), group in frame.groupby(["model", "loss"], sort=True):
        row = {"model": model, "loss": loss, "runs": len(group)}
        for metric in METRICS:
            values = group[metric].dropna()
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return pd.DataFrame(out)


def paired(frame: pd.DataFrame, baseline: str = "ce") -> pd.DataFrame:
    """Per (model, seed, split file): each loss's metrics minus the baseline loss's, on the same data."""
    out = []
    keys = ["model", "seed", "split_file"]
    for key, group in frame.groupby(keys, sort=True):
        base = group[group["loss"] == baseline]
        if base.empty:
            continue
        for _, row in group[group["loss"] != baseline].iterrows():
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "loss": row["loss"],
                    "baseline": baseline,
                    **{f"delta_{m}": row[m] - float(base[m].iloc[0]) for m in METRICS},
                }
            )
    return pd.DataFrame(out)


def signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences; 1.0 when every difference is zero (no evidence
    either way, where scipy would refuse)."""
    from scipy.stats import wilcoxon

    return float(wilcoxon(differences).pvalue) if np.any(differences != 0) else 1.0


def paired_statistics(
    differences: pd.DataFrame, resamples: int = 10000, seed: int = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """Per (model, loss) and metric: the mean paired difference, its bootstrap 95% CI (resampling pairs) and the
    two-sided Wilcoxon signed-rank p-value, with a verdict in words ('not significant' when p >= alpha)."""
    out = []
    rng = np.random.default_rng(seed)
    for (model, loss), group in differences.groupby(["model", "loss"], sort=True):
        for metric in METRICS:
            delta = group[f"delta_{metric}"].dropna().to_numpy(dtype=float)
            row = {"model": model, "loss": loss, "baseline": group["baseline"].iloc[0], "metric": metric}
            row["pairs"] = len(delta)
            if len(delta) == 0:
                out.append(row | {"mean_difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan})
                continue
            means = delta[rng.integers(0, len(delta), (resamples, len(delta)))].mean(1)
            p_value = signed_rank_p(delta)
            row |= {
                "mean_difference": float(delta.mean()),
                "ci_low": float(np.percentile(means, 2.5)),
                "ci_high": float(np.percentile(means, 97.5)),
                "p_value": p_value,
            }
            out.append(row | {"verdict": verdict(row, alpha)})
    return pd.DataFrame(out)


def verdict(row: dict, alpha: float = 0.05) -> str:
    """The paired result in words: which way, and whether the Wilcoxon test calls it significant."""
    if not row["pairs"]:
        return "no pairs"
    if not row["p_value"] < alpha:
        few = " (fewer than 6 pairs cannot reach p < 0.05)" if row["pairs"] < 6 else ""
        return f"not significant (p = {row['p_value']:.3g}, {row['pairs']} pairs){few}"
    direction = "higher" if row["mean_difference"] > 0 else "lower"
    return f"{row['loss']} {direction} than {row['baseline']} (p = {row['p_value']:.3g}, {row['pairs']} pairs)"


def paired_markdown(stats: pd.DataFrame) -> str:
    """A markdown table of paired differences: mean [95% CI], Wilcoxon p and the verdict."""
    lines = ["| model | loss vs baseline | metric | pairs | mean difference [95% CI] | Wilcoxon p | verdict |"]
    lines.append("|" + "---|" * 7)
    for _, row in stats.iterrows():
        if not row["pairs"]:
            continue
        lines.append(
            f"| {row['model']} | {row['loss']} vs {row['baseline']} | {row['metric']} | {row['pairs']} | "
            f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | {row['p_value']:.3g} | "
            f"{row['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with 'mean +- std' cells."""
    header = ["model", "loss", "runs", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["model"], row["loss"], str(row["runs"])]
        cells += [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

"""CAMELYON-17: the challenge's stage_labels.csv, node labels -> patient pN-stage, and the stage kappa."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from wsi_ncmi.core.errors import WsiNcmiError

NODE_LABELS = ("negative", "itc", "micro", "macro")
STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
PATIENTS_PER_CENTER = 20
_PATIENT = re.compile(r"^patient_(\d+)\.zip$")
_NODE = re.compile(r"^(patient_(\d+)_node_\d+)\.tif$")


class StageLabelsError(WsiNcmiError):
    """A stage_labels.csv that cannot be used; the message names the rows."""


def pn_stage(node_labels: Iterable[str]) -> str:
    """Patient pN-stage from its lymph-node labels (CAMELYON-17 rules; ITC nodes do not count as positive).

    pN0: all negative; pN0(i+): only ITC; pN1mi: micro-metastases, no macro; pN1: 1-3 nodes with micro or
    macro, at least one macro; pN2: 4-9 such nodes, at least one macro.
    """
    labels = list(node_labels)
    unknown = sorted(set(labels) - set(NODE_LABELS))
    if unknown:
        raise ValueError(f"unknown node label(s) {unknown}; expected {', '.join(NODE_LABELS)}")
    positive = sum(label in ("micro", "macro") for label in labels)
    if "macro" in labels:
        return "pN1" if positive <= 3 else "pN2"
    if "micro" in labels:
        return "pN1mi"
    if "itc" in labels:
        return "pN0(i+)"
    return "pN0"


def stage_kappa(true_stages: Sequence[str], predicted_stages: Sequence[str]) -> float:
    """Quadratic-weighted Cohen's kappa over the five stages in their clinical order (the challenge metric)."""
    from sklearn.metrics import cohen_kappa_score

    unknown = sorted((set(true_stages) | set(predicted_stages)) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown pN-stage(s) {unknown}; expected {', '.join(STAGES)}")
    if len(true_stages) == 0:
        return float("nan")
    return float(cohen_kappa_score(list(true_stages), list(predicted_stages), labels=list(STAGES), weights="quadratic"))


def patient_stages(slides: pd.DataFrame, label_column: str = "label") -> pd.DataFrame:
    """Per case_id: its centre, node count and the pN-stage derived from the node labels in `label_column`."""
    rows = []
    for case, group in slides.groupby("case_id", sort=True):
        rows.append(
            {
                "case_id": case,
                "center": group["center"].iloc[0],
                "nodes": len(group),
                "stage": pn_stage(group[label_column]),
            }
        )
    return pd.DataFrame(rows, columns=["case_id", "center", "nodes", "stage"])


def read_stage_labels(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse the challenge's stage_labels.csv into (slides, patients) tables.

    slides: slide_id, case_id, center (patient // 20), label. patients: case_id, center, stage (official),
    stage_derived (from the node labels). Raises StageLabelsError naming every row that does not parse and every
    patient whose official stage disagrees with its node labels.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise StageLabelsError(f"{path}: not a readable CSV ({exc})") from exc
    if raw.shape[1] < 2:
        raise StageLabelsError(f"{path}: expected two columns (file name, stage or label)")
    problems, slides, stages = [], [], {}
    for index, (name, value) in enumerate(zip(raw.iloc[:, 0].str.strip(), raw.iloc[:, 1].str.strip(), strict=True)):
        row = f"row {index + 2}"
        if match := _PATIENT.match(name):
            if value not in STAGES:
                problems.append(f"{row}: {name} has stage {value!r}, expected one of {', '.join(STAGES)}")
            stages[f"patient_{match.group(1)}"] = value
        elif match := _NODE.match(name):
            if value not in NODE_LABELS:
                problems.append(f"{row}: {name} has label {value!r}, expected one of {', '.join(NODE_LABELS)}")
            number = int(match.group(2))
            slides.append(
                {
                    "slide_id": match.group(1),
                    "case_id": f"patient_{match.group(2)}",
                    "center": str(number // PATIENTS_PER_CENTER),
                    "label": value,
                }
            )
        else:
            problems.append(f"{row}: {name!r} is neither patient_XXX.zip nor patient_XXX_node_N.tif")
    if problems:
        raise StageLabelsError(f"{path}: " + "; ".join(problems[:20]))
    slide_table = pd.DataFrame(slides, columns=["slide_id", "case_id", "center", "label"])
    derived = patient_stages(slide_table).set_index("case_id")["stage"]
    patients = pd.DataFrame({"case_id": sorted(stages)})
    patients["center"] = [str(int(c.split("_")[1]) // PATIENTS_PER_CENTER) for c in patients["case_id"]]
    patients["stage"] = [stages[c] for c in patients["case_id"]]
    patients["stage_derived"] = [derived.get(c, "") for c in patients["case_id"]]
    disagree = patients[patients["stage"] != patients["stage_derived"]]
    if len(disagree):
        listed = ", ".join(
            f"{r.case_id} (official {r.stage}, from nodes {r.stage_derived or 'no nodes'})"
            for r in disagree.itertuples()
        )
        raise StageLabelsError(f"{path}: official pN-stage disagrees with the node labels for {listed}")
    return slide_table, patients


def find_slides(slide_ids: Iterable[str], slides_dir: Path) -> dict[str, str]:
    """Locate `{slide_id}.tif` under the official layout (`center_k/`) or anywhere below `slides_dir`."""
    found = {p.stem: str(p.resolve()) for p in Path(slides_dir).rglob("*.tif")}
    return {slide_id: found.get(slide_id, "") for slide_id in slide_ids}

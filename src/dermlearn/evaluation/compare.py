"""``dermlearn compare EVAL_A EVAL_B``: two evaluations of the same images, compared paired.

Both folders are ``dermlearn evaluate`` outputs (``predictions.csv``: image, one column per
class, ``label`` and, since this version, ``lesion_id``). For accuracy, balanced accuracy and
the AUC of each binary task their classes reach (melanoma vs rest, malignant vs benign, by PA),
the table gives A, B, the difference B - A with a percentile-bootstrap 95% interval and a
two-sided p-value, resampling whole lesions (:mod:`dermlearn.evaluation.paired`).

>>> table = compare_evaluations("eval/default", "eval/ensemble")
>>> table["rows"]["balanced_accuracy"]["ci"]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.errors import DataError, TaxonomyError
from dermlearn.evaluation.binary import BINARY_LEVELS
from dermlearn.evaluation.levels import binary_scores
from dermlearn.evaluation.paired import paired_comparison
from dermlearn.taxonomy import Taxonomy, assign_classes, load_taxonomy

__all__ = ["compare_evaluations", "comparison_markdown", "format_comparison", "read_comparison"]


def _read(folder: Path) -> pd.DataFrame:
    path = folder / "predictions.csv"
    if not path.is_file():
        raise DataError(f"{folder}: no predictions.csv (give folders written by dermlearn "
                        f"evaluate)")
    frame = pd.read_csv(path, dtype={"image": str, "label": str, "lesion_id": str})
    if "label" not in frame:
        raise DataError(f"{path}: no label column (written by dermlearn evaluate?)")
    return frame.set_index("image")


def compare_evaluations(eval_a: str | Path, eval_b: str | Path, *,
                        taxonomy: str | Path | Taxonomy = "dermatology", n_boot: int = 2000,
                        seed: int = 0) -> dict[str, Any]:
    """``{"n", "lesions", "grouping", "rows": {metric: {a, b, diff, ci, p}}}`` for the images
    both evaluations scored (which must be the same images with the same labels)."""
    a, b = _read(Path(eval_a)), _read(Path(eval_b))
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise DataError(f"{eval_a} and {eval_b} scored different images ({len(a)} and {len(b)};"
                        f" e.g. {only[0]} is in one only): compare evaluations of the same "
                        f"images (the same --part on the same data)")
    b = b.loc[a.index]
    if not (a["label"] == b["label"]).all():
        raise DataError(f"{eval_a} and {eval_b} give the same images different labels")
    meta = {"label", "lesion_id", "fold"}
    classes_a = [c for c in a.columns if c not in meta]
    classes_b = [c for c in b.columns if c not in meta]
    if sorted(classes_a) != sorted(classes_b):
        raise DataError(f"{eval_a} predicts {classes_a}, {eval_b} {classes_b}: compare models "
                        f"of the same classes")
    tree = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
    labels = a["label"].tolist()
    targets = np.array([classes_a.index(c) for c in assign_classes(tree, labels, classes_a)])
    pa, pb = a[classes_a].to_numpy(float), b[classes_a].to_numpy(float)
    grouped = "lesion_id" in a and a["lesion_id"].notna().all()
    groups = a["lesion_id"].to_numpy() if grouped else None
    rows = paired_comparison(targets, pa, pb, groups=groups, n_boot=n_boot, seed=seed)
    for level in BINARY_LEVELS:
        try:
            y, sa = binary_scores(pa, labels, classes_a, tree, level)
            _, sb = binary_scores(pb, labels, classes_a, tree, level)
        except TaxonomyError:  # the classes do not reach this level
            continue
        if y.all() or not y.any():
            continue
        table = paired_comparison(targets, pa, pb, groups=groups, score_a=sa, score_b=sb,
                                  is_positive=y, n_boot=n_boot, seed=seed)
        rows[f"{level}_auc"] = table["auc"]
    return {"a": str(eval_a), "b": str(eval_b), "n": int(len(a)),
            "lesions": int(pd.Series(groups).nunique()) if grouped else None,
            "grouping": "lesion" if grouped else "image", "n_boot": n_boot, "rows": rows}


def _cells(row: dict[str, Any]) -> tuple[str, str]:
    ci = "n/a" if row["ci"] is None else f"{row['ci'][0]:+.3f} to {row['ci'][1]:+.3f}"
    p = "n/a" if row["p"] is None else ("< 0.001" if row["p"] < 0.001 else f"{row['p']:.3f}")
    return ci, p


def _unit(result: dict[str, Any]) -> str:
    unit = (f"{result['lesions']} lesions" if result["grouping"] == "lesion"
            else "images (no lesion ids)")
    return f"{result['n']} images; B - A, bootstrap over {unit}, {result['n_boot']} resamples"


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a text table."""
    lines = [f"A: {result['a']}", f"B: {result['b']}", _unit(result),
             f"{'metric':<26}{'A':>8}{'B':>8}{'B - A':>9}   95% CI             p"]
    for name, row in result["rows"].items():
        ci, p = _cells(row)
        lines.append(f"{name:<26}{row['a']:>8.3f}{row['b']:>8.3f}{row['diff']:>+9.3f}   "
                     f"{ci:<18} {p}")
    return "\n".join(lines)


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table with a line saying what was resampled (the
    report's comparison section and ``comparison.md``)."""
    lines = [f"A: `{result['a']}`; B: `{result['b']}`; {_unit(result)}.", "",
             "| metric | A | B | B - A | 95% CI | p |", "|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        ci, p = _cells(row)
        label = name.removesuffix("_auc").replace("_", " ") + (" AUC" if name.endswith("_auc")
                                                               else "")
        lines.append(f"| {label} | {row['a']:.3f} | {row['b']:.3f} | "
                     f"{row['diff']:+.3f} | {ci} | {p} |")
    return "\n".join(lines)


def read_comparison(path: str | Path) -> dict[str, Any]:
    """A comparison written by ``dermlearn compare --out`` (its folder or comparison.json)."""
    path = Path(path)
    file = path / "comparison.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no comparison.json (give the --out folder of dermlearn "
                        f"compare)")
    result = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(result, dict) or "rows" not in result:
        raise DataError(f"{file}: not a comparison written by dermlearn compare")
    return result

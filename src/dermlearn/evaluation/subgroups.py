"""Metrics per patient subgroup: sex, age band and anatomical site.

``y_true`` (N,) int class indices and ``probs`` (N, C) as in :mod:`dermlearn.evaluation.metrics`;
``table`` has one row per case in the same order (its index is ignored) and optionally the
columns ``sex``, ``age`` (years) and ``site``. Missing values form the group ``unknown``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dermlearn.evaluation.metrics import accuracy, balanced_accuracy, per_class_auc

#: Age bands as ``(label, lower, upper)``: ``lower <= age < upper`` (years; None = open).
AGE_BANDS: tuple[tuple[str, float | None, float | None], ...] = (
    ("<30", None, 30), ("30-44", 30, 45), ("45-59", 45, 60), ("60-74", 60, 75), (">=75", 75, None))
#: Subgroup columns, in report order.
SUBGROUP_COLUMNS = ("sex", "age", "site")
#: Groups with fewer cases are reported with ``n`` only (metrics ``None``).
MIN_GROUP_SIZE = 10
UNKNOWN = "unknown"


def age_band(age: Sequence[float] | pd.Series) -> pd.Series:
    """Label of :data:`AGE_BANDS` for each age (years); :data:`UNKNOWN` where missing or not
    a number."""
    years = pd.to_numeric(pd.Series(list(age), dtype=object), errors="coerce")
    out = pd.Series(UNKNOWN, index=years.index, dtype=object)
    for label, lower, upper in AGE_BANDS:
        inside = years.notna()
        if lower is not None:
            inside &= years >= lower
        if upper is not None:
            inside &= years < upper
        out[inside] = label
    return out


def _groups(table: pd.DataFrame, column: str) -> pd.Series | None:
    if column not in table.columns:
        return None
    values = table[column].reset_index(drop=True)
    if column == "age":
        labels = age_band(values)
    else:
        text = values.astype(object).where(values.notna(), None)
        labels = pd.Series([UNKNOWN if v is None or not str(v).strip() else str(v).strip().lower()
                            for v in text], dtype=object)
    return None if (labels == UNKNOWN).all() else labels


def _order(column: str, labels: pd.Series) -> list[str]:
    present = set(labels)
    if column == "age":
        order = [label for label, _, _ in AGE_BANDS]
    else:
        order = sorted(present - {UNKNOWN})
    return [g for g in order + [UNKNOWN] if g in present]


def subgroup_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                     table: pd.DataFrame, *, min_n: int = MIN_GROUP_SIZE) -> dict:
    """``{column: {group: {n, accuracy, balanced_accuracy, auc_macro}}}`` for each of
    :data:`SUBGROUP_COLUMNS` the table has with any known value.

    ``sex`` and ``site`` group by their lower-cased values, ``age`` by :data:`AGE_BANDS`.
    ``auc_macro`` averages the one-vs-rest AUCs defined within the group. Metrics are ``None``
    where undefined or where the group has fewer than ``min_n`` cases.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (len(y_true), len(classes)) or len(table) != len(y_true):
        raise ValueError(f"shapes disagree: y_true {y_true.shape}, probs {probs.shape}, "
                         f"{len(classes)} classes, table {len(table)} rows")
    out: dict[str, dict] = {}
    for column in SUBGROUP_COLUMNS:
        labels = _groups(table, column)
        if labels is None:
            continue
        out[column] = {}
        for group in _order(column, labels):
            rows = (labels == group).to_numpy()
            out[column][group] = _group_metrics(y_true[rows], probs[rows], min_n)
    return out


def _group_metrics(y_true: np.ndarray, probs: np.ndarray, min_n: int) -> dict:
    n = int(len(y_true))
    if n < max(min_n, 1):
        return {"n": n, "accuracy": None, "balanced_accuracy": None, "auc_macro": None}
    auc = per_class_auc(y_true, probs)
    return {"n": n, "accuracy": accuracy(y_true, probs),
            "balanced_accuracy": balanced_accuracy(y_true, probs),
            "auc_macro": float(np.nanmean(auc)) if np.isfinite(auc).any() else None}

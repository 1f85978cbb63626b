"""A locked operating point, the way Esteva et al. (2017) and Haenssle et al. (2018) report a
test: a threshold chosen on validation data, then applied unchanged to the test images, with
sensitivity, specificity, PPV and NPV (Wilson 95% intervals) at it, per image or per lesion
(or patient), overall and in subgroups.

``y`` (N,) bool, the positive class (e.g. melanoma); ``score`` (N,) its probability; a case is
called positive where ``score >= threshold``.

>>> t = threshold_for(y_val, score_val, "sensitivity", 0.95)     # on validation data
>>> locked = rates_at(y_test, score_test, t)                       # on the test, unchanged
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from dermlearn.evaluation.binary import bootstrap_auc_ci

__all__ = ["TARGETS", "aggregate_cases", "parse_target", "rates_at", "subgroups_at",
           "threshold_for", "wilson"]

#: What a target may fix on the validation data.
TARGETS = ("sensitivity", "specificity")
#: Subgroups with fewer cases, or fewer positive (or negative) cases, are flagged as too small.
MIN_SUBGROUP = 30
MIN_SUBGROUP_CLASS = 5


def parse_target(text: str) -> tuple[str, float]:
    """``"sensitivity=0.95"`` -> ("sensitivity", 0.95); ValueError naming what is wrong."""
    kind, sep, value = str(text).partition("=")
    kind = kind.strip().lower()
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not sep or kind not in TARGETS or not 0 < number < 1:
        raise ValueError(f"target {text!r}: expected sensitivity=X or specificity=X with X in "
                         f"(0, 1), e.g. sensitivity=0.95")
    return kind, number


def _binary(y: Sequence, score: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=float)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"y and score must be (N,) alike, got {y.shape} and {score.shape}")
    return y, score


def threshold_for(y: Sequence, score: Sequence, kind: str, value: float) -> float:
    """The threshold meeting ``kind >= value`` on these cases that is best on the other rate:
    for a sensitivity target the highest such threshold (most specific), for a specificity
    target the lowest (most sensitive)."""
    y, score = _binary(y, score)
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {kind!r}")
    if not y.any() or y.all():
        raise ValueError("choosing a threshold needs positive and negative cases")
    candidates = np.unique(score)
    if kind == "sensitivity":  # the largest t with mean(score[y] >= t) >= value
        positives = np.sort(score[y])
        k = int(np.ceil(value * len(positives) - 1e-12))  # positives to keep at least
        return float(positives[len(positives) - k])
    negatives = np.sort(score[~y])
    k = int(np.ceil(value * len(negatives) - 1e-12))  # negatives to keep below t
    below = negatives[k - 1] if k > 0 else -np.inf
    above = candidates[candidates > below]
    return float(above[0]) if len(above) else float(np.nextafter(below, np.inf))


def wilson(successes: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """The Wilson score interval of ``successes / n`` (scipy), None for n = 0."""
    if n == 0:
        return None
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                        method="wilson")
    return [float(ci.low), float(ci.high)]


def rates_at(y: Sequence, score: Sequence, threshold: float, *, n_boot: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Counts and sensitivity, specificity, PPV, NPV (each ``{"value", "ci"}``, Wilson 95%)
    at ``threshold``, and the ROC AUC of ``score`` with its percentile-bootstrap 95% interval
    over the cases (``n_boot`` resamples; both None with one class only)."""
    y, score = _binary(y, score)
    called = score >= threshold
    tp, fn = int(np.sum(called & y)), int(np.sum(~called & y))
    fp, tn = int(np.sum(called & ~y)), int(np.sum(~called & ~y))

    def rate(k: int, n: int) -> dict[str, Any]:
        return {"value": k / n if n else None, "ci": wilson(k, n), "k": k, "n": n}

    return {"threshold": float(threshold), "n": int(len(y)), "n_positive": int(y.sum()),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": rate(tp, tp + fn), "specificity": rate(tn, tn + fp),
            "ppv": rate(tp, tp + fp), "npv": rate(tn, tn + fn), **_auc(y, score, n_boot, seed)}


def _auc(y: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    if not 0 < y.sum() < len(y):
        return {"auc": None, "auc_ci": None}
    low, high = bootstrap_auc_ci(y, score, n_boot=n_boot, seed=seed)
    return {"auc": float(roc_auc_score(y, score)),
            "auc_ci": None if np.isnan(low) else [low, high]}


def aggregate_cases(y: Sequence, score: Sequence, groups: Sequence, how: str = "max"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lesion (or patient) ``groups``: (y (G,): any image positive, score (G,): the max or
    mean of its images' scores, the group ids (G,))."""
    y, score = _binary(y, score)
    if how not in ("max", "mean"):
        raise ValueError(f"aggregate by 'max' or 'mean', not {how!r}")
    frame = pd.DataFrame({"g": np.asarray(groups).astype(str), "y": y, "s": score})
    grouped = frame.groupby("g", sort=True)
    return (grouped["y"].any().to_numpy(), grouped["s"].agg(how).to_numpy(),
            grouped["y"].any().index.to_numpy())


def subgroups_at(y: Sequence, score: Sequence, threshold: float, values: pd.Series, *,
                 min_n: int = MIN_SUBGROUP, min_class: int = MIN_SUBGROUP_CLASS,
                 n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """For each value of ``values`` (N,; missing -> "unknown"): :func:`rates_at` at the locked
    threshold, with ``too_small`` set (and the reason) where the group has fewer than ``min_n``
    cases or fewer than ``min_class`` positive or negative ones."""
    y, score = _binary(y, score)
    labels = pd.Series(values).reset_index(drop=True).astype(object)
    labels = labels.where(labels.notna() & (labels.astype(str).str.strip() != ""), "unknown")
    labels = labels.astype(str).str.strip()
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(set(labels), key=lambda g: (g == "unknown", g)):
        rows = (labels == group).to_numpy()
        result = rates_at(y[rows], score[rows], threshold, n_boot=n_boot, seed=seed)
        positives, negatives = result["n_positive"], result["n"] - result["n_positive"]
        reasons = ([f"n {result['n']} < {min_n}"] if result["n"] < min_n else []) + (
            [f"{min(positives, negatives)} {'positive' if positives < negatives else 'negative'}"
             f" case(s) < {min_class}"] if min(positives, negatives) < min_class else [])
        out[group] = {**result, "too_small": bool(reasons), "why": "; ".join(reasons) or None}
    return out

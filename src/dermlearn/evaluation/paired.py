"""Two models on the same images, compared paired: the difference in accuracy, balanced accuracy
and a binary task's AUC, with a percentile-bootstrap 95% interval that resamples lesions (a
lesion's images stay together, as they are not independent) and a two-sided bootstrap p-value.

>>> table = paired_comparison(targets, probs_a, probs_b, groups=lesion_ids,
...                           positive=probs_a_mel, positive_b=probs_b_mel, is_positive=y_mel)
>>> table["balanced_accuracy"]["diff"], table["balanced_accuracy"]["ci"]     # b - a

Shapes: ``targets`` (N,) class indices; ``probs_*`` (N, C); ``groups`` (N,) lesion (or
patient) ids; the binary task's ``score_*`` (N,) and ``is_positive`` (N,) bool.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from dermlearn.evaluation.metrics import accuracy, balanced_accuracy

__all__ = ["paired_comparison"]


def _resample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one bootstrap sample that draws whole groups with replacement."""
    unique, inverse = np.unique(groups, return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"),
                       np.cumsum(np.bincount(inverse))[:-1])
    chosen = rng.integers(0, len(unique), size=len(unique))
    return np.concatenate([members[g] for g in chosen])


def paired_comparison(targets: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, *,
                      groups: Sequence | None = None, score_a: np.ndarray | None = None,
                      score_b: np.ndarray | None = None, is_positive: np.ndarray | None = None,
                      n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
                      ) -> dict[str, dict[str, float | list[float] | None]]:
    """For each metric: ``a``, ``b``, ``diff`` (b - a), ``ci`` ([low, high] of the difference,
    level ``1 - alpha``) and ``p`` (two-sided: twice the smaller share of bootstrap differences
    on either side of 0). Metrics: ``accuracy``, ``balanced_accuracy`` and, with the binary
    scores, ``auc``. ``groups`` default: every image its own group."""
    targets = np.asarray(targets)
    probs_a, probs_b = np.asarray(probs_a, float), np.asarray(probs_b, float)
    if probs_a.shape != probs_b.shape or len(probs_a) != len(targets):
        raise ValueError(f"probabilities {probs_a.shape} and {probs_b.shape} must both be "
                         f"(N, C) for the same {len(targets)} images")
    groups = np.arange(len(targets)) if groups is None else np.asarray(groups)
    metrics: dict[str, Callable[[np.ndarray], tuple[float, float]]] = {
        "accuracy": lambda r: (accuracy(targets[r], probs_a[r]), accuracy(targets[r], probs_b[r])),
        "balanced_accuracy": lambda r: (balanced_accuracy(targets[r], probs_a[r]),
                                        balanced_accuracy(targets[r], probs_b[r])),
    }
    if score_a is not None and score_b is not None and is_positive is not None:
        y = np.asarray(is_positive, bool)
        sa, sb = np.asarray(score_a, float), np.asarray(score_b, float)

        def auc(r: np.ndarray) -> tuple[float, float]:
            if y[r].all() or not y[r].any():
                return np.nan, np.nan
            return roc_auc_score(y[r], sa[r]), roc_auc_score(y[r], sb[r])

        metrics["auc"] = auc
    everyone = np.arange(len(targets))
    rng = np.random.default_rng(seed)
    samples = [_resample(groups, rng) for _ in range(n_boot)]
    out: dict[str, dict] = {}
    for name, fn in metrics.items():
        a, b = fn(everyone)
        diffs = np.array([np.subtract(*fn(r)[::-1]) for r in samples], float)
        diffs = diffs[np.isfinite(diffs)]
        if not len(diffs):
            out[name] = {"a": a, "b": b, "diff": b - a, "ci": None, "p": None}
            continue
        low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
        out[name] = {"a": float(a), "b": float(b), "diff": float(b - a),
                     "ci": [float(low), float(high)], "p": float(p)}
    return out

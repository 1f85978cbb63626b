"""Classification metrics in the ISIC challenge's conventions (pure functions on arrays).

``y_true``: (N,) int class indices; ``probs``: (N, C) probabilities (rows sum to 1).
Predictions are the argmax; a row whose maximum is tied counts as wrong (as ISIC scores it).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def predictions(probs: np.ndarray) -> np.ndarray:
    """Argmax per row, or -1 where the maximum is shared by several classes."""
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(axis=1)
    tied = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    pred[tied] = -1
    return pred


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(predictions(probs) == np.asarray(y_true)))


def per_class_sensitivity(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for classes absent from ``y_true``), shape (C,)."""
    y_true = np.asarray(y_true)
    pred = predictions(probs)
    out = np.full(np.asarray(probs).shape[1], np.nan)
    for c in range(len(out)):
        mask = y_true == c
        if mask.any():
            out[c] = np.mean(pred[mask] == c)
    return out


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (ISIC's headline metric)."""
    return float(np.nanmean(per_class_sensitivity(y_true, probs)))


def per_class_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC per class, shape (C,); NaN where a class has no positives or negatives."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=float)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = y_true == c
        if 0 < positive.sum() < len(y_true):
            out[c] = roc_auc_score(positive, probs[:, c])
    return out


def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           classes: Sequence[str]) -> dict:
    """Headline metrics: accuracy, balanced accuracy, macro AUC and per-class sensitivity/AUC."""
    sens = per_class_sensitivity(y_true, probs)
    auc = per_class_auc(y_true, probs)
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, probs),
        "balanced_accuracy": balanced_accuracy(y_true, probs),
        "auc_macro": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        "per_class": {c: {"sensitivity": _num(sens[i]), "auc": _num(auc[i]),
                          "n": int(np.sum(np.asarray(y_true) == i))}
                      for i, c in enumerate(classes)},
    }


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

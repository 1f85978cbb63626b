"""Classification metrics in the ISIC challenge's conventions (pure functions on arrays).

``y_true``: (N,) int class indices in ``[0, C)``; ``probs``: (N, C) probabilities.

Two families, kept apart on purpose (they are what ``isic-challenge-scoring`` 5.6 reports):

* **Multi-class, argmax.** The prediction is the argmax of a row; a row whose maximum is
  shared by several classes is *undecided* (index ``-1``) and counts as wrong. ``accuracy``,
  per-class ``recall`` and balanced accuracy (the mean recall over the classes present in
  ``y_true``, ISIC 2018/2019's headline metric) come from these predictions.
* **Per class, one-vs-rest.** Class ``c`` is predicted positive where ``probs[:, c] > 0.5``
  (strictly). From those binary counts: ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
  ``accuracy`` and ``dice``; an empty denominator scores 1.0 (ISIC's "freebie"). From the
  scores: ``auc``, ``auc_sens_80`` (raw partial AUC above 80% sensitivity, not
  McClish-corrected) and ``ap`` (average precision); NaN where undefined (a class without
  positives or negatives), ``None`` in :func:`classification_metrics`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    auc as _trapezoid_auc,
    average_precision_score,
    confusion_matrix as _sk_confusion_matrix,
    roc_auc_score,
    roc_curve,
)

#: Index :func:`predictions` gives a row whose maximum probability is tied.
UNDECIDED = -1
#: Probability above which a class counts as predicted in the one-vs-rest metrics (ISIC).
THRESHOLD = 0.5
#: Sensitivity above which ``auc_sens_80`` integrates the ROC curve.
PARTIAL_AUC_SENSITIVITY = 0.8
#: Keys of each ``per_class`` entry (besides ``n``) and of ``macro`` in classification_metrics.
PER_CLASS_KEYS = ("recall", "sensitivity", "specificity", "ppv", "npv", "accuracy", "dice",
                  "auc", "auc_sens_80", "ap")


# -- argmax (multi-class) -------------------------------------------------------------------
def predictions(probs: np.ndarray) -> np.ndarray:
    """Argmax per row, shape (N,), or :data:`UNDECIDED` (-1) where the maximum is tied."""
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(axis=1)
    tied = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    pred[tied] = UNDECIDED
    return pred


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of rows whose (untied) argmax is the true class."""
    return float(np.mean(predictions(probs) == np.asarray(y_true)))


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray,
                     n_classes: int | None = None) -> np.ndarray:
    """Counts, shape (C, C + 1): rows the true class, columns the argmax class; the last
    column counts undecided (tied) rows of each true class. ``C`` is ``probs.shape[1]``
    unless ``n_classes`` says otherwise."""
    if n_classes is None:
        n_classes = np.asarray(probs).shape[1]
    labels = list(range(n_classes)) + [UNDECIDED]
    cm = _sk_confusion_matrix(np.asarray(y_true), predictions(probs), labels=labels)
    return cm[:n_classes].astype(int)


def per_class_recall(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Argmax recall of each class, shape (C,); NaN for classes absent from ``y_true``."""
    cm = confusion_matrix(y_true, probs)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm[:, :-1]) / support, np.nan)


def per_class_sensitivity(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Argmax recall per class, shape (C,); same as :func:`per_class_recall` (kept for
    compatibility). ISIC's thresholded per-category sensitivity is in :func:`one_vs_rest_rates`."""
    return per_class_recall(y_true, probs)


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean argmax recall over the classes present in ``y_true`` (ISIC's headline metric)."""
    return float(np.nanmean(per_class_recall(y_true, probs)))


# -- one-vs-rest at a threshold -------------------------------------------------------------
def one_vs_rest_counts(y_true: np.ndarray, probs: np.ndarray,
                       threshold: float = THRESHOLD) -> dict[str, np.ndarray]:
    """Per-class binary counts ``{'tp', 'fp', 'tn', 'fn'}``, each shape (C,), predicting class
    ``c`` where ``probs[:, c] > threshold``."""
    probs = np.asarray(probs, dtype=float)
    truth = np.asarray(y_true)[:, None] == np.arange(probs.shape[1])[None, :]
    pred = probs > threshold
    return {"tp": np.sum(truth & pred, axis=0), "fp": np.sum(~truth & pred, axis=0),
            "tn": np.sum(~truth & ~pred, axis=0), "fn": np.sum(truth & ~pred, axis=0)}


def one_vs_rest_rates(y_true: np.ndarray, probs: np.ndarray,
                      threshold: float = THRESHOLD) -> dict[str, np.ndarray]:
    """Per-class ``sensitivity, specificity, ppv, npv, accuracy, dice``, each shape (C,), from
    :func:`one_vs_rest_counts`; a rate with an empty denominator is 1.0 (ISIC's freebie)."""
    k = one_vs_rest_counts(y_true, probs, threshold)
    tp, fp, tn, fn = (k[name].astype(float) for name in ("tp", "fp", "tn", "fn"))
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
            "dice": _ratio(2 * tp, 2 * tp + fp + fn)}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


# -- one-vs-rest from scores ----------------------------------------------------------------
def auc_above_sensitivity(y: np.ndarray, score: np.ndarray,
                          sensitivity: float = PARTIAL_AUC_SENSITIVITY) -> float:
    """Raw (not McClish-corrected) area under the ROC curve where TPR >= ``sensitivity``,
    in [0, 1 - sensitivity]; ``y`` (N,) bool, ``score`` (N,) float. As ISIC's ``auc_sens_80``:
    the curve (all thresholds) is cut at the interpolated point with TPR == ``sensitivity``."""
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    fpr, tpr, _ = roc_curve(np.asarray(y, dtype=bool), np.asarray(score, dtype=float),
                            drop_intermediate=False)
    i = int(np.searchsorted(tpr, sensitivity, side="left"))
    fpr_cut = np.interp(sensitivity, tpr[i - 1:i + 1], fpr[i - 1:i + 1])
    return float(_trapezoid_auc(np.r_[fpr_cut, fpr[i:]], np.r_[sensitivity, tpr[i:]]))


def per_class_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC per class, shape (C,); NaN where a class lacks positives or negatives."""
    return _per_class_score(y_true, probs, lambda y, s: roc_auc_score(y, s))


def per_class_auc_above_sensitivity(y_true: np.ndarray, probs: np.ndarray,
                                    sensitivity: float = PARTIAL_AUC_SENSITIVITY) -> np.ndarray:
    """:func:`auc_above_sensitivity` per class (one-vs-rest), shape (C,); NaN where undefined."""
    return _per_class_score(y_true, probs, lambda y, s: auc_above_sensitivity(y, s, sensitivity))


def per_class_average_precision(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest average precision per class (sklearn's step-wise AP), shape (C,); NaN where
    a class has no positives or negatives."""
    return _per_class_score(y_true, probs, lambda y, s: average_precision_score(y, s))


def _per_class_score(y_true: np.ndarray, probs: np.ndarray, fn) -> np.ndarray:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=float)
    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = y_true == c
        if 0 < positive.sum() < len(y_true):
            out[c] = float(fn(positive, probs[:, c]))
    return out


# -- everything -----------------------------------------------------------------------------
def classification_metrics(y_true: np.ndarray, probs: np.ndarray,
                           classes: Sequence[str]) -> dict:
    """All metrics of one evaluation as a JSON-able dict.

    Keys: ``n``, ``accuracy``, ``balanced_accuracy``, ``auc_macro`` (mean of the defined
    per-class AUCs), ``n_undecided`` (rows with a tied maximum), ``macro`` (mean over classes of
    each :data:`PER_CLASS_KEYS` metric, undefined values skipped, as ISIC's macro average),
    ``per_class`` (``{label: {n, recall, sensitivity, ...}}``) and ``confusion_matrix``
    (``{'labels': columns, 'matrix': rows}``, see :func:`confusion_matrix`). ``recall`` is the
    argmax recall balanced accuracy averages; ``sensitivity`` is ISIC's one-vs-rest
    sensitivity at ``probs > 0.5``. Undefined values are ``None``.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=float)
    per = {"recall": per_class_recall(y_true, probs), **one_vs_rest_rates(y_true, probs),
           "auc": per_class_auc(y_true, probs),
           "auc_sens_80": per_class_auc_above_sensitivity(y_true, probs),
           "ap": per_class_average_precision(y_true, probs)}
    cm = confusion_matrix(y_true, probs)
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, probs),
        "balanced_accuracy": balanced_accuracy(y_true, probs),
        "auc_macro": _nanmean(per["auc"]),
        "n_undecided": int(cm[:, -1].sum()),
        "macro": {k: _num(_nanmean(per[k])) for k in PER_CLASS_KEYS},
        "per_class": {c: {"n": int(cm[i].sum()), **{k: _num(per[k][i]) for k in PER_CLASS_KEYS}}
                      for i, c in enumerate(classes)},
        "confusion_matrix": {"labels": [*map(str, classes), "undecided"],
                             "matrix": cm.tolist()},
    }


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)

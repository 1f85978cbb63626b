"""Binary tasks (e.g. melanoma vs rest): ROC curve, bootstrap CI of the AUC, operating points,
and dermatologists' operating points against the curve.

``y``: (N,) bool or 0/1, the positive class; ``score``: (N,) float, higher = more positive.
A threshold ``t`` calls a case positive where ``score >= t`` (sklearn's ``roc_curve``); the
first ROC threshold is ``inf`` (nothing positive).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from dermlearn.errors import DataError
from dermlearn.evaluation.metrics import auc_above_sensitivity

#: Columns of a readers CSV (``task`` is optional).
READER_COLUMNS = ("name", "sensitivity", "specificity")
#: Binary tasks reported with ROC, bootstrap CI and operating points (Esteva's Fig. 3 tasks);
#: a readers CSV's ``task`` names one of them.
BINARY_LEVELS = ("malignant_vs_benign", "melanoma_vs_rest")


def _binary(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    score = np.asarray(score, dtype=float).ravel()
    if y.shape != score.shape:
        raise ValueError(f"y and score differ in length: {len(y)} vs {len(score)}")
    if y.all() or not y.any():
        raise ValueError("a binary task needs both positive and negative cases")
    return y, score


def roc_points(y: np.ndarray, score: np.ndarray, *, drop_intermediate: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the ROC curve (sklearn), each shape (K,), fpr/tpr rising."""
    y, score = _binary(y, score)
    return roc_curve(y, score, drop_intermediate=drop_intermediate)


def roc_summary(y: np.ndarray, score: np.ndarray, max_points: int = 200) -> dict[str, list]:
    """JSON-able ROC curve: ``fpr``, ``tpr``, ``threshold`` lists thinned to at most
    ``max_points`` (both ends kept); the ``inf`` threshold is ``None``."""
    fpr, tpr, thresholds = roc_points(y, score)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "threshold": [_finite(t) for t in thresholds]}


def bootstrap_auc_ci(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of the ROC AUC at level ``1 - alpha``.

    Cases are resampled with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``);
    resamples lacking a class are skipped. Each AUC is the Mann-Whitney statistic with mid-ranks
    (identical to sklearn's ``roc_auc_score``), vectorised over resamples.
    """
    y, score = _binary(y, score)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n = len(y)
    chunk = max(1, min(n_boot, 2_000_000 // n))
    aucs: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        pos, s = y[idx], score[idx]
        n_pos = pos.sum(axis=1)
        n_neg = n - n_pos
        ok = (n_pos > 0) & (n_neg > 0)
        ranks = rankdata(s[ok], axis=1)
        u = (ranks * pos[ok]).sum(axis=1) - n_pos[ok] * (n_pos[ok] + 1) / 2
        aucs.append(u / (n_pos[ok] * n_neg[ok]))
    values = np.concatenate(aucs) if aucs else np.zeros(0)
    if len(values) == 0:  # n_boot = 0, or no resample held both classes
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_roc_band(y: np.ndarray, score: np.ndarray, n_boot: int = 1000,
                       alpha: float = 0.05, seed: int = 0, points: int = 101) -> dict | None:
    """A pointwise percentile-bootstrap band of the ROC curve: for ``points`` false-positive
    rates in [0, 1], the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the resampled curves'
    sensitivity there (vertical averaging). Cases are resampled as in :func:`bootstrap_auc_ci`;
    None without resamples holding both classes."""
    y, score = _binary(y, score)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, points)
    curves = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), size=len(y))
        if y[idx].all() or not y[idx].any():
            continue
        fpr, tpr, _ = roc_curve(y[idx], score[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return None
    low, high = np.quantile(np.stack(curves), [alpha / 2, 1 - alpha / 2], axis=0)
    return {"fpr": grid.tolist(), "low": low.tolist(), "high": high.tolist(),
            "level": 1 - alpha, "n_boot": len(curves)}


def sensitivity_at_specificity(y: np.ndarray, score: np.ndarray, specificity: float
                               ) -> tuple[float, float]:
    """``(sensitivity, threshold)``: the highest sensitivity among thresholds whose specificity
    is at least ``specificity`` (the highest such threshold on ties)."""
    fpr, tpr, thresholds = roc_points(y, score, drop_intermediate=False)
    eligible = np.flatnonzero(fpr <= 1 - specificity + 1e-12)
    best = eligible[np.argmax(tpr[eligible])]        # first maximum: highest threshold
    return float(tpr[best]), float(thresholds[best])


def specificity_at_sensitivity(y: np.ndarray, score: np.ndarray, sensitivity: float
                               ) -> tuple[float, float]:
    """``(specificity, threshold)``: the highest specificity among thresholds whose sensitivity
    is at least ``sensitivity`` (the highest such threshold on ties)."""
    fpr, tpr, thresholds = roc_points(y, score, drop_intermediate=False)
    best = int(np.argmax(tpr >= sensitivity - 1e-12))  # fpr rises along the curve
    return float(1 - fpr[best]), float(thresholds[best])


def binary_report(y: np.ndarray, score: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05,
                  specificities: Sequence[float] = (0.8, 0.9, 0.95),
                  sensitivities: Sequence[float] = (0.8, 0.9, 0.95), seed: int = 0,
                  max_roc_points: int = 200) -> dict:
    """JSON-able summary of a binary task.

    Keys: ``n``, ``n_positive``, ``auc``, ``auc_ci`` ([low, high], :func:`bootstrap_auc_ci`),
    ``alpha``, ``n_boot``, ``auc_sens_80``, ``roc`` (``fpr``, ``tpr``, ``threshold`` lists,
    thinned to at most ``max_roc_points`` keeping both ends; the ``inf`` threshold is ``None``;
    ``band``: :func:`bootstrap_roc_band`), ``at_half``: sensitivity and specificity at
    threshold 0.5 (the probability a binary decision takes by default)
    and ``operating_points``: one dict per target, ``fixed`` (``'specificity'`` or
    ``'sensitivity'``), ``at`` (the target), the achieved ``sensitivity`` and ``specificity``
    and the ``threshold`` (score >= threshold is positive), specificities first.
    """
    y, score = _binary(y, score)
    low, high = bootstrap_auc_ci(y, score, n_boot=n_boot, alpha=alpha, seed=seed)
    points = []
    for target in specificities:
        sens, thr = sensitivity_at_specificity(y, score, target)
        points.append({"fixed": "specificity", "at": float(target), "sensitivity": sens,
                       "specificity": _specificity(y, score, thr), "threshold": _finite(thr)})
    for target in sensitivities:
        spec, thr = specificity_at_sensitivity(y, score, target)
        points.append({"fixed": "sensitivity", "at": float(target),
                       "sensitivity": _sensitivity(y, score, thr), "specificity": spec,
                       "threshold": _finite(thr)})
    roc = roc_summary(y, score, max_roc_points)
    roc["band"] = bootstrap_roc_band(y, score, n_boot=n_boot, alpha=alpha, seed=seed) \
        if n_boot else None
    return {
        "n": int(len(y)), "n_positive": int(y.sum()),
        "auc": float(roc_auc_score(y, score)), "auc_ci": [low, high],
        "alpha": float(alpha), "n_boot": int(n_boot),
        "auc_sens_80": auc_above_sensitivity(y, score, 0.8),
        "roc": roc,
        "operating_points": points,
        "at_half": {"threshold": 0.5, "sensitivity": _sensitivity(y, score, 0.5),
                    "specificity": _specificity(y, score, 0.5)},
    }


def _sensitivity(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    return float(np.mean(score[y] >= threshold))


def _specificity(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    return float(np.mean(score[~y] < threshold))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# -- readers (dermatologists' operating points) ---------------------------------------------
def load_readers(path: str | Path) -> pd.DataFrame:
    """Readers CSV -> frame with ``name``, ``sensitivity``, ``specificity`` (floats in [0, 1])
    and ``task`` (one of :data:`BINARY_LEVELS`; ``None`` where empty or the file has no such
    column). Raises :class:`DataError` naming the file and every bad row (missing column, empty
    name, value missing, non-numeric or outside [0, 1], unknown task)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read readers CSV", [str(e)]) from e
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in READER_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: readers CSV lacks column(s) {', '.join(missing)}",
                        [f"columns found: {', '.join(table.columns) or '(none)'}"])
    problems: list[str] = []
    out = pd.DataFrame({"name": table["name"].str.strip()})
    for i, name in enumerate(out["name"]):
        if not name:
            problems.append(f"row {i + 2}: empty name")
    for col in ("sensitivity", "specificity"):
        values = pd.to_numeric(table[col].str.strip(), errors="coerce")
        for i, (text, v) in enumerate(zip(table[col], values)):
            if not text.strip():
                problems.append(f"row {i + 2} ({out['name'].iat[i]}): {col} missing")
            elif not v == v:
                problems.append(f"row {i + 2} ({out['name'].iat[i]}): {col} {text!r} "
                                "is not a number")
            elif not 0 <= v <= 1:
                problems.append(f"row {i + 2} ({out['name'].iat[i]}): {col} {v} outside [0, 1]")
        out[col] = values.astype(float)
    if "task" in table.columns:
        task = table["task"].str.strip()
        for i, text in enumerate(task):
            if text and text not in BINARY_LEVELS:
                problems.append(f"row {i + 2} ({out['name'].iat[i]}): task {text!r} is not one "
                                f"of {', '.join(BINARY_LEVELS)} (or empty)")
        out["task"] = task.astype(object).where(task != "", None)
    else:
        out["task"] = None
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s) in readers CSV", problems)
    return out


def readers_vs_curve(fpr: np.ndarray, tpr: np.ndarray,
                     readers: pd.DataFrame | Iterable[Mapping]) -> dict:
    """Each reader against a ROC curve.

    A reader is *below* the curve when its sensitivity is below the curve's sensitivity at the
    reader's false-positive rate ``1 - specificity`` (linear interpolation along the curve; at
    an FPR where the curve rises vertically, its highest TPR). Returns ``{'points': [{name,
    sensitivity, specificity, curve_sensitivity, below_curve}], 'n_below', 'n_readers'}``.
    """
    fpr = np.asarray(fpr, dtype=float)
    tpr = np.asarray(tpr, dtype=float)
    order = np.lexsort((tpr, fpr))
    fpr, tpr = fpr[order], tpr[order]
    xs, first = np.unique(fpr, return_index=True)
    top = np.maximum.reduceat(tpr, first)             # a vertical run at one FPR: its ends
    bottom = np.minimum.reduceat(tpr, first)
    rows = readers.to_dict("records") if isinstance(readers, pd.DataFrame) else list(readers)
    out = []
    for r in rows:
        sens, spec = float(r["sensitivity"]), float(r["specificity"])
        curve = _curve_at(xs, top, bottom, 1 - spec)
        out.append({"name": str(r["name"]), "sensitivity": sens, "specificity": spec,
                    "curve_sensitivity": curve, "below_curve": bool(sens < curve)})
    return {"points": out, "n_below": sum(r["below_curve"] for r in out), "n_readers": len(out)}


def _curve_at(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray, x: float) -> float:
    """TPR of the polyline at FPR ``x``: the top of a vertical run at ``x``, else linear between
    the top of the run to the left and the bottom of the run to the right."""
    j = int(np.searchsorted(xs, x, side="right")) - 1
    if j < 0:
        return float(bottom[0])
    if xs[j] == x or j == len(xs) - 1:
        return float(top[j])
    w = (x - xs[j]) / (xs[j + 1] - xs[j])
    return float(top[j] + w * (bottom[j + 1] - top[j]))


def fold_summary(values: Sequence[float | None]) -> dict:
    """``{'mean', 'sd', 'n'}`` over k folds (sample sd, ddof=1); ``None``/NaN values are left
    out; ``sd`` is ``None`` with fewer than two values, ``mean`` with none."""
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()) if len(v) else None,
            "sd": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v))}

"""Calibration: expected calibration error, reliability bins and temperature scaling.

``y_true``: (N,) int class indices; ``probs``: (N, C) probabilities; ``logits``: (N, C)
unnormalised scores or log-probabilities (softmax is shift-invariant, so either works).
Confidence is the top-label probability and the prediction its argmax (Guo et al., 2017).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Smallest probability :func:`apply_temperature` takes the log of (zeros are clipped to it).
EPS = 1e-12
#: Search interval of the temperature in :func:`fit_temperature`.
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15
                     ) -> dict[str, np.ndarray]:
    """Equal-width confidence bins ``(lower, upper]`` over [0, 1] for a reliability diagram.

    Returns arrays of shape (n_bins,): ``lower``, ``upper``, ``confidence`` (mean top-label
    probability), ``accuracy`` (fraction of argmax predictions that are right) and ``count``;
    ``confidence``/``accuracy`` are NaN in empty bins.
    """
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds edges[b] < conf <= edges[b + 1]; conf == 0 (impossible for a top label) -> bin 0
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"lower": edges[:-1], "upper": edges[1:], "confidence": confidence,
            "accuracy": accuracy, "count": count}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum over bins of ``count / N * |accuracy - confidence|`` (:func:`reliability_bins`)."""
    bins = reliability_bins(y_true, probs, n_bins)
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(bins["count"][used] * gap) / np.sum(bins["count"]))


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    logp = log_softmax(logits / temperature, axis=1)
    return float(-np.mean(logp[np.arange(len(y_true)), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature ``T > 0`` minimising the mean NLL of ``softmax(logits / T)`` on ``y_true``.

    A bounded scalar search over ``log T`` in :data:`TEMPERATURE_BOUNDS` (the NLL is convex in
    ``1 / T``, so unimodal in ``log T``); deterministic.
    """
    logits = np.asarray(logits, dtype=float)
    y_true = np.asarray(y_true, dtype=int)
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: _nll(logits, y_true, float(np.exp(log_t))),
                             bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(result.x))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)``, shape (N, C); zeros are clipped to :data:`EPS` first."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logp = np.log(np.clip(np.asarray(probs, dtype=float), EPS, None))
    return softmax(logp / temperature, axis=1)

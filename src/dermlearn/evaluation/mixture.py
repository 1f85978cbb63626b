"""Combining models' probabilities: member weights and one temperature for a weighted mixture,
each fitted on held-out images by maximum likelihood.

``probs``: a list of R arrays (N, C), each a member's probabilities for the same N images (at
temperature 1); ``targets`` (N,) class indices. The mixture is
``sum_r w_r softmax(log p_r / T)`` with ``w`` on the simplex.

>>> w = mixture_weights(probs, targets)                # (R,), >= 0, sums to 1
>>> t = fit_mixture_temperature(probs, w, targets)     # the one temperature of the mixture
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from dermlearn.evaluation.calibration import EPS, TEMPERATURE_BOUNDS, apply_temperature

__all__ = ["fit_mixture_temperature", "mixture_nll", "mixture_weights"]


def _stack(probs: Sequence[np.ndarray], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stacked = np.stack([np.asarray(p, dtype=float) for p in probs])  # (R, N, C)
    targets = np.asarray(targets, dtype=int)
    if stacked.ndim != 3 or stacked.shape[1] != len(targets):
        raise ValueError(f"probabilities of shape {stacked.shape} do not hold {len(targets)} "
                         f"images for every member")
    return stacked, targets


def mixture_nll(probs: Sequence[np.ndarray], weights: Sequence[float], targets: np.ndarray,
                temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the mixture on ``targets``."""
    stacked, targets = _stack(probs, targets)
    w = np.asarray(weights, dtype=float)
    mixed = sum(wr * apply_temperature(p, temperature) for wr, p in zip(w, stacked))
    return float(-np.mean(np.log(np.clip(mixed[np.arange(len(targets)), targets], EPS, None))))


def mixture_weights(probs: Sequence[np.ndarray], targets: np.ndarray, *,
                    iterations: int = 500, tol: float = 1e-10) -> np.ndarray:
    """Weights (R,) maximising the mixture's likelihood of ``targets`` (EM for mixture
    proportions: each step cannot lower the likelihood; the problem is concave, so it converges
    to the maximum). Starts from equal weights."""
    stacked, targets = _stack(probs, targets)
    likelihood = np.clip(stacked[:, np.arange(len(targets)), targets], EPS, None)  # (R, N)
    w = np.full(len(stacked), 1.0 / len(stacked))
    for _ in range(iterations):
        responsibility = w[:, None] * likelihood
        responsibility /= responsibility.sum(axis=0, keepdims=True)
        updated = responsibility.mean(axis=1)
        if np.abs(updated - w).max() < tol:
            w = updated
            break
        w = updated
    return w / w.sum()


def fit_mixture_temperature(probs: Sequence[np.ndarray], weights: Sequence[float],
                            targets: np.ndarray) -> float:
    """The temperature ``T`` (within :data:`TEMPERATURE_BOUNDS`) minimising the mixture's NLL,
    every member's logits divided by the same ``T`` (as a Predictor applies it)."""
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: mixture_nll(probs, weights, targets,
                                                       float(np.exp(log_t))),
                             bounds=(lo, hi), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(result.x))

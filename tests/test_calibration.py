"""Calibration: ECE and reliability bins by hand, temperature scaling recovers a known T."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from dermlearn.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def test_reliability_bins_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.35, 0.65]])
    y = np.array([0, 1, 1, 0])
    bins = reliability_bins(y, probs, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    np.testing.assert_allclose(bins["lower"], np.arange(10) / 10)
    np.testing.assert_allclose(bins["upper"], np.arange(1, 11) / 10)
    assert bins["confidence"][9] == pytest.approx(0.95) and bins["accuracy"][9] == 0.5
    assert bins["confidence"][5] == pytest.approx(0.55) and bins["accuracy"][5] == 1.0
    assert bins["confidence"][6] == pytest.approx(0.65) and bins["accuracy"][6] == 0.0
    assert np.isnan(bins["confidence"][0]) and np.isnan(bins["accuracy"][0])
    # ECE = 2/4 * |.5 - .95| + 1/4 * |1 - .55| + 1/4 * |0 - .65|
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(
        0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.65)


def test_bins_include_their_upper_edge():
    probs = np.array([[0.6, 0.4], [0.5, 0.5], [1.0, 0.0]])
    counts = reliability_bins(np.zeros(3, int), probs, n_bins=10)["count"]
    assert counts[5] == 1 and counts[4] == 1 and counts[9] == 1   # (.5,.6], (.4,.5], (.9,1]


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.tile([0.75, 0.25], (8, 1))
    y = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros(3, int), np.tile([1.0, 0.0], (3, 1))) == 0.0


def _calibrated(n: int = 4000, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, c))
    p = softmax(logits, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, np.minimum(y, c - 1)


def test_fit_temperature_recovers_a_known_scale():
    logits, y = _calibrated()
    t = fit_temperature(3 * logits, y)                # overconfident by a factor of 3
    assert t == pytest.approx(3.0, rel=0.08)
    before = expected_calibration_error(y, softmax(3 * logits, axis=1))
    after = expected_calibration_error(y, softmax(3 * logits / t, axis=1))
    assert after < before / 3
    assert fit_temperature(3 * logits, y) == t        # deterministic


def test_fit_temperature_accepts_log_probabilities():
    logits, y = _calibrated(n=1000, seed=1)
    assert fit_temperature(log_softmax(0.5 * logits, axis=1), y) == pytest.approx(
        fit_temperature(0.5 * logits, y), rel=1e-6)
    assert fit_temperature(0.5 * logits, y) == pytest.approx(0.5, rel=0.15)  # underconfident


def test_apply_temperature():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    probs = softmax(logits, axis=1)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    np.testing.assert_allclose(apply_temperature(probs, 2.0), softmax(logits / 2, axis=1),
                               atol=1e-12)
    flat = apply_temperature(probs, 100.0)
    assert flat.max() - flat.min() < 0.02
    with_zero = apply_temperature(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]), 3.0)
    assert np.isfinite(with_zero).all()
    np.testing.assert_allclose(with_zero.sum(axis=1), 1.0)
    assert with_zero[0, 0] > 0.99 and with_zero[1, 0] == pytest.approx(with_zero[1, 1])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            apply_temperature(probs, bad)

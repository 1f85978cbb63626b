"""dermlearn.evaluation.paired: paired, lesion-grouped bootstrap comparison of two models."""
from __future__ import annotations

import numpy as np
import pytest

from dermlearn.evaluation.paired import _resample, paired_comparison


def _probs(targets: np.ndarray, right: float, rng: np.random.Generator, n_classes: int = 3):
    """Probabilities that put most mass on the true class for a share ``right`` of images."""
    wrong = (targets + rng.integers(1, n_classes, len(targets))) % n_classes
    top = np.where(rng.random(len(targets)) < right, targets, wrong)
    probs = np.full((len(targets), n_classes), 0.1)
    probs[np.arange(len(targets)), top] = 0.8
    return probs


def test_the_same_model_twice_differs_by_nothing():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 200)
    probs = _probs(targets, 0.7, rng)
    table = paired_comparison(targets, probs, probs.copy(), n_boot=200)
    for name in ("accuracy", "balanced_accuracy"):
        assert table[name]["diff"] == 0 and table[name]["ci"] == [0.0, 0.0]
        assert table[name]["p"] == 1.0


def test_a_better_model_is_found_with_an_interval_above_zero():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 300)
    groups = np.repeat(np.arange(150), 2)
    a, b = _probs(targets, 0.6, rng), _probs(targets, 0.9, rng)
    y = targets == 2
    table = paired_comparison(targets, a, b, groups=groups, score_a=a[:, 2], score_b=b[:, 2],
                              is_positive=y, n_boot=300)
    for name in ("accuracy", "balanced_accuracy", "auc"):
        row = table[name]
        assert row["diff"] > 0 and row["ci"][0] > 0 and row["p"] < 0.05, (name, row)
        assert row["ci"][0] <= row["diff"] <= row["ci"][1]
    assert table["accuracy"]["a"] == pytest.approx(np.mean(a.argmax(1) == targets))


def test_resampling_keeps_a_lesion_together():
    rng = np.random.default_rng(2)
    groups = np.array(["L1", "L1", "L2", "L3", "L3", "L3"])
    for _ in range(20):
        rows = _resample(groups, rng)
        counts = {g: int(np.sum(groups[rows] == g)) for g in ("L1", "L2", "L3")}
        size = {"L1": 2, "L2": 1, "L3": 3}
        assert all(counts[g] % size[g] == 0 for g in counts)
        assert sum(counts[g] // size[g] for g in counts) == 3  # three lesions drawn


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="must both be"):
        paired_comparison(np.zeros(3, int), np.ones((3, 2)), np.ones((4, 2)))

"""dermlearn.evaluation.mixture: member weights and one temperature for a mixture of models."""
from __future__ import annotations

import numpy as np
import pytest

from dermlearn.evaluation.calibration import apply_temperature
from dermlearn.evaluation.mixture import fit_mixture_temperature, mixture_nll, mixture_weights


def _member(targets, right, rng, sharp=0.8, n_classes=3):
    wrong = (targets + rng.integers(1, n_classes, len(targets))) % n_classes
    top = np.where(rng.random(len(targets)) < right, targets, wrong)
    probs = np.full((len(targets), n_classes), (1 - sharp) / (n_classes - 1))
    probs[np.arange(len(targets)), top] = sharp
    return probs


def test_a_useless_member_gets_little_weight():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 500)
    good, noise = _member(targets, 0.9, rng), _member(targets, 1 / 3, rng)
    w = mixture_weights([good, noise], targets)
    assert w.sum() == pytest.approx(1) and w[0] > 0.85
    # The fitted weights are at least as likely as any on a grid (the maximum).
    best = mixture_nll([good, noise], w, targets)
    for a in np.linspace(0, 1, 21):
        assert best <= mixture_nll([good, noise], [a, 1 - a], targets) + 1e-9


def test_two_equal_members_share_the_weight():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 400)
    p = _member(targets, 0.8, rng)
    np.testing.assert_allclose(mixture_weights([p, p.copy()], targets), [0.5, 0.5])


def test_one_temperature_cools_overconfident_members():
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 3, 600)
    members = [_member(targets, 0.7, rng, sharp=0.98) for _ in range(2)]
    t = fit_mixture_temperature(members, [0.5, 0.5], targets)
    assert t > 1.5
    assert mixture_nll(members, [0.5, 0.5], targets, t) < mixture_nll(members, [0.5, 0.5],
                                                                          targets)
    # A single member: the same as fitting its temperature on its own probabilities.
    one = fit_mixture_temperature(members[:1], [1.0], targets)
    cooled = apply_temperature(members[0], one)
    assert -np.mean(np.log(cooled[np.arange(600), targets])) == pytest.approx(
        mixture_nll(members[:1], [1.0], targets, one))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="do not hold 3 images"):
        mixture_weights([np.ones((4, 2)) / 2], np.zeros(3, int))

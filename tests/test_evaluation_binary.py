"""Binary tasks: ROC, bootstrap CI, operating points, readers against the curve, fold summary."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from dermlearn.errors import DataError, DermlearnError
from dermlearn.evaluation.binary import (
    binary_report,
    bootstrap_auc_ci,
    fold_summary,
    load_readers,
    readers_vs_curve,
    roc_points,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)

# 4 negatives, 4 positives; one negative (0.6) above one positive (0.4)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def _noisy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    return y, rng.normal(size=n) + 1.2 * y


def test_roc_points_are_sklearns():
    fpr, tpr, thr = roc_points(Y, S)
    ref = roc_curve(Y, S)
    for a, b in zip((fpr, tpr, thr), ref):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        roc_points(np.zeros(3), np.arange(3.0))


def test_operating_points_by_hand():
    assert sensitivity_at_specificity(Y, S, 0.75) == (1.0, 0.4)   # t=.4: FP .6 only
    assert sensitivity_at_specificity(Y, S, 1.0) == (0.75, 0.7)
    assert sensitivity_at_specificity(Y, S, 0.8) == (0.75, 0.7)   # .75 < .8: must go to t=.7
    assert specificity_at_sensitivity(Y, S, 1.0) == (0.75, 0.4)
    assert specificity_at_sensitivity(Y, S, 0.5) == (1.0, 0.8)    # highest threshold reaching it
    assert specificity_at_sensitivity(Y, S, 0.7) == (1.0, 0.7)


def test_operating_points_hold_their_promise_on_random_data():
    y, s = _noisy(300, seed=1)
    for target in (0.8, 0.9, 0.95):
        sens, thr = sensitivity_at_specificity(y, s, target)
        assert np.mean(s[~y] < thr) >= target and sens == pytest.approx(np.mean(s[y] >= thr))
        spec, thr = specificity_at_sensitivity(y, s, target)
        assert np.mean(s[y] >= thr) >= target and spec == pytest.approx(np.mean(s[~y] < thr))


def test_bootstrap_matches_a_plain_sklearn_loop():
    y, s = _noisy(80, seed=2)
    low, high = bootstrap_auc_ci(y, s, n_boot=200, alpha=0.1, seed=5)
    rng = np.random.default_rng(5)
    idx = rng.integers(0, len(y), size=(200, len(y)))
    ref = [roc_auc_score(y[i], s[i]) for i in idx if 0 < y[i].sum() < len(y)]
    assert (low, high) == pytest.approx(tuple(np.quantile(ref, [0.05, 0.95])), abs=1e-12)
    assert low < roc_auc_score(y, s) < high


def test_bootstrap_is_seeded_and_skips_one_class_resamples():
    y, s = _noisy(200, seed=3)
    assert bootstrap_auc_ci(y, s, n_boot=300, seed=1) == bootstrap_auc_ci(y, s, n_boot=300, seed=1)
    assert bootstrap_auc_ci(y, s, n_boot=300, seed=1) != bootstrap_auc_ci(y, s, n_boot=300, seed=2)
    low, high = bootstrap_auc_ci([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.9], n_boot=200)
    assert low == high == 1.0                         # many resamples lack the positive
    wide = bootstrap_auc_ci(*_noisy(60, seed=4), n_boot=300)
    narrow = bootstrap_auc_ci(*_noisy(2000, seed=4), n_boot=300)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_binary_report():
    y, s = _noisy(1000, seed=6)
    r = binary_report(y, s, n_boot=100, max_roc_points=50, seed=0)
    assert r["n"] == 1000 and r["n_positive"] == int(y.sum())
    assert r["auc"] == pytest.approx(roc_auc_score(y, s))
    assert r["auc_ci"][0] < r["auc"] < r["auc_ci"][1]
    assert 0 < r["auc_sens_80"] < r["auc"]            # raw partial AUC: part of the whole
    assert len(r["roc"]["fpr"]) == len(r["roc"]["tpr"]) == len(r["roc"]["threshold"]) <= 50
    assert r["roc"]["fpr"][0] == 0 and r["roc"]["tpr"][-1] == 1 and r["roc"]["threshold"][0] is None
    points = r["operating_points"]
    assert [(p["fixed"], p["at"]) for p in points] == [
        ("specificity", 0.8), ("specificity", 0.9), ("specificity", 0.95),
        ("sensitivity", 0.8), ("sensitivity", 0.9), ("sensitivity", 0.95)]
    for p in points:
        assert p[p["fixed"]] >= p["at"]
        if p["fixed"] == "specificity":
            assert (p["sensitivity"], p["threshold"]) == sensitivity_at_specificity(y, s, p["at"])
        else:
            assert (p["specificity"], p["threshold"]) == specificity_at_sensitivity(y, s, p["at"])
    json.dumps(r, allow_nan=False)


def test_load_readers(tmp_path):
    path = tmp_path / "readers.csv"
    path.write_text("name,sensitivity,specificity,task\n"
                    "derm 1,0.80,0.70,melanoma_vs_rest\nderm 2, 0.9 ,0.6,\n")
    readers = load_readers(path)
    assert readers["name"].tolist() == ["derm 1", "derm 2"]
    assert readers["sensitivity"].tolist() == [0.8, 0.9]
    assert readers["task"].tolist() == ["melanoma_vs_rest", None]
    path.write_text("name,sensitivity,specificity\nA,0.5,0.5\n")
    assert load_readers(path)["task"].tolist() == [None]


def test_load_readers_errors_name_file_and_rows(tmp_path):
    path = tmp_path / "readers.csv"
    path.write_text("name,sens,specificity\nA,0.5,0.5\n")
    with pytest.raises(DataError, match="sensitivity") as e:
        load_readers(path)
    assert str(path) in str(e.value)
    path.write_text("name,sensitivity,specificity\nA,0.5,1.5\nB,x,0.5\nC,,0.5\nD,0.5,0.5\n")
    with pytest.raises(DermlearnError) as e:
        load_readers(path)
    msg = str(e.value)
    assert str(path) in msg and "row 2 (A): specificity 1.5 outside [0, 1]" in msg
    assert "row 3 (B): sensitivity 'x' is not a number" in msg
    assert "row 4 (C): sensitivity missing" in msg and "(D)" not in msg
    assert len(e.value.problems) == 3
    path.write_text("name,sensitivity,specificity,task\nA,0.5,0.5,melanoma\n")  # never drawn
    with pytest.raises(DataError, match="1 problem") as e:
        load_readers(path)
    assert "row 2 (A): task 'melanoma' is not one of malignant_vs_benign" in str(e.value)


def test_readers_vs_curve_by_hand():
    fpr, tpr, _ = roc_points(Y, S)          # (0,0) (0,.25) (0,.75) (.25,.75) (.25,1) (1,1)
    readers = [{"name": "low", "sensitivity": 0.7, "specificity": 0.9},     # curve .75 there
               {"name": "high", "sensitivity": 0.8, "specificity": 0.9},
               {"name": "jump", "sensitivity": 0.9, "specificity": 0.75},   # vertical: top 1.0
               {"name": "top", "sensitivity": 1.0, "specificity": 0.5}]
    out = readers_vs_curve(fpr, tpr, readers)
    assert [r["below_curve"] for r in out["points"]] == [True, False, True, False]
    assert [r["curve_sensitivity"] for r in out["points"]] == pytest.approx([0.75, 0.75, 1, 1])
    assert out["n_below"] == 2 and out["n_readers"] == 4


def test_readers_vs_curve_interpolates_along_the_curve(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("name,sensitivity,specificity\nunder,0.29,0.7\nover,0.31,0.7\n")
    out = readers_vs_curve([0, 1], [0, 1], load_readers(path))        # chance diagonal
    assert [r["below_curve"] for r in out["points"]] == [True, False]
    assert out["points"][0]["curve_sensitivity"] == pytest.approx(0.3)
    json.dumps(out)


def test_readers_vs_curve_with_steps_on_both_sides():
    fpr, tpr = [0, 0, 0.5, 0.5, 1], [0, 0.2, 0.4, 0.9, 1]     # vertical runs at 0 and .5
    readers = [{"name": n, "sensitivity": 0.5, "specificity": 1 - x}
               for n, x in (("a", 0.0), ("b", 0.25), ("c", 0.5), ("d", 0.75))]
    out = readers_vs_curve(fpr, tpr, readers)
    assert [r["curve_sensitivity"] for r in out["points"]] == pytest.approx([0.2, 0.3, 0.9, 0.95])
    assert [r["below_curve"] for r in out["points"]] == [False, False, True, True]


def test_fold_summary():
    s = fold_summary([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["sd"] == pytest.approx(0.1) and s["n"] == 3
    assert fold_summary([0.8, None, float("nan"), 1.0]) == pytest.approx(
        {"mean": 0.9, "sd": np.sqrt(0.02), "n": 2})
    assert fold_summary([0.7]) == {"mean": 0.7, "sd": None, "n": 1}
    assert fold_summary([]) == {"mean": None, "sd": None, "n": 0}

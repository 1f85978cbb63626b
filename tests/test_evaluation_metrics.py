"""Classification metrics: hand-computed cases, agreement with the ISIC challenge's own scorer
(``isic-challenge-scoring`` 5.6.0) to 1e-9, and subgroup metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dermlearn.evaluation.metrics import (
    PER_CLASS_KEYS,
    UNDECIDED,
    accuracy,
    auc_above_sensitivity,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    one_vs_rest_counts,
    one_vs_rest_rates,
    per_class_auc,
    per_class_auc_above_sensitivity,
    per_class_average_precision,
    per_class_recall,
    per_class_sensitivity,
    predictions,
)
from dermlearn.evaluation.subgroups import AGE_BANDS, age_band, subgroup_metrics

# y = [0, 0, 1, 1, 2]; argmax: 0, 1, 1, tie(0/1) -> undecided, 2
Y = np.array([0, 0, 1, 1, 2])
P = np.array([[0.7, 0.2, 0.1],
              [0.3, 0.6, 0.1],
              [0.2, 0.5, 0.3],
              [0.4, 0.4, 0.2],
              [0.1, 0.1, 0.8]])


# -- hand-computed ----------------------------------------------------------------------------
def test_predictions_mark_ties_undecided():
    assert predictions(P).tolist() == [0, 1, 1, UNDECIDED, 2]
    assert UNDECIDED == -1


def test_accuracy_recall_and_balanced_accuracy():
    assert accuracy(Y, P) == pytest.approx(3 / 5)
    np.testing.assert_allclose(per_class_recall(Y, P), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(per_class_sensitivity(Y, P), [0.5, 0.5, 1.0])
    assert balanced_accuracy(Y, P) == pytest.approx(2 / 3)


def test_recall_is_nan_for_absent_class_and_ba_skips_it():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 1])                          # class 2 absent
    recall = per_class_recall(y, probs)
    assert recall[:2].tolist() == [1.0, 0.5] and np.isnan(recall[2])
    assert balanced_accuracy(y, probs) == pytest.approx(0.75)


def test_confusion_matrix_rows_truth_with_undecided_column():
    cm = confusion_matrix(Y, P)
    assert cm.shape == (3, 4)
    assert cm.tolist() == [[1, 1, 0, 0],
                           [0, 1, 0, 1],
                           [0, 0, 1, 0]]
    assert cm.sum() == len(Y)
    assert confusion_matrix(Y, P, 4).shape == (4, 5)          # n_classes may exceed probs' C


def test_one_vs_rest_counts_use_strictly_greater_than_half():
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.5, 0.5], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    k = one_vs_rest_counts(y, probs)
    # class 1: predicted only in row 1 (0.5 is not > 0.5)
    assert [k[n][1] for n in ("tp", "fp", "tn", "fn")] == [1, 0, 2, 1]
    # class 0: predicted only in row 2 (a true 0); row 0 (a true 0 at exactly .5) missed
    assert [k[n][0] for n in ("tp", "fp", "tn", "fn")] == [1, 0, 2, 1]
    r = one_vs_rest_rates(y, probs)
    assert r["sensitivity"][1] == pytest.approx(0.5)
    assert r["specificity"][1] == pytest.approx(1.0)
    assert r["ppv"][1] == pytest.approx(1.0)
    assert r["npv"][1] == pytest.approx(2 / 3)
    assert r["accuracy"][1] == pytest.approx(0.75)
    assert r["dice"][1] == pytest.approx(2 / 3)


def test_one_vs_rest_freebies_for_empty_denominators():
    y = np.array([0, 0, 1])                          # class 2 never true
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3]])
    r = one_vs_rest_rates(y, probs)
    assert r["sensitivity"][2] == 1.0                # no positives: TP + FN == 0
    assert r["ppv"][1] == 1.0 and r["ppv"][2] == 1.0  # never predicted: TP + FP == 0
    assert r["dice"][2] == 1.0
    all_positive = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]])
    r = one_vs_rest_rates(np.array([0, 1, 0]), all_positive)
    assert r["npv"][0] == 1.0                        # always predicted: TN + FN == 0
    assert r["specificity"][0] == 0.0
    assert one_vs_rest_rates(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]]))[
        "specificity"][0] == 1.0                     # no negatives


def test_auc_partial_auc_and_average_precision_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.c_[1 - s, s]
    assert per_class_auc(y, probs)[1] == pytest.approx(0.75)
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): cut at TPR .8 -> FPR .5; area from .5 to 1 = .5
    assert auc_above_sensitivity(y == 1, s) == pytest.approx(0.5)
    assert per_class_auc_above_sensitivity(y, probs)[1] == pytest.approx(0.5)
    # ranked: pos (P 1, R .5), neg, pos (P 2/3, R 1) -> AP = .5 * 1 + .5 * 2/3
    assert per_class_average_precision(y, probs)[1] == pytest.approx(0.5 + 1 / 3)


def test_partial_auc_perfect_and_chance():
    y = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    assert auc_above_sensitivity(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == pytest.approx(1.0)
    # chance: every score tied -> diagonal; area under y = x over [.8, 1] = .18
    assert auc_above_sensitivity(y, np.full(6, 0.5)) == pytest.approx(0.18)
    with pytest.raises(ValueError):
        auc_above_sensitivity(y, np.full(6, 0.5), 0.0)


def test_scores_are_nan_where_a_class_lacks_positives_or_negatives():
    y = np.array([0, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3]])
    for fn in (per_class_auc, per_class_auc_above_sensitivity, per_class_average_precision):
        out = fn(y, probs)
        assert np.isfinite(out[:2]).all() and np.isnan(out[2])


def test_classification_metrics_keys_and_values():
    m = classification_metrics(Y, P, ["a", "b", "c"])
    assert {"n", "accuracy", "balanced_accuracy", "auc_macro", "n_undecided", "macro",
            "per_class", "confusion_matrix"} <= set(m)
    assert m["n"] == 5 and m["n_undecided"] == 1
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert set(m["per_class"]) == {"a", "b", "c"}
    for entry in m["per_class"].values():
        assert set(entry) == {"n", *PER_CLASS_KEYS}
    assert [m["per_class"][c]["n"] for c in "abc"] == [2, 2, 1]
    # b: argmax recall 1/2 (row 2 wins at p = .5), but no true b has p > .5 -> sensitivity 0
    assert m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["sensitivity"] == 0.0
    assert m["per_class"]["b"]["ppv"] == 0.0                # row 1 (a true a) at .6
    # a: only row 0 has p > .5 -> sensitivity 1/2; no negative above .5 -> specificity 1
    assert m["per_class"]["a"]["sensitivity"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(1.0)
    assert m["confusion_matrix"]["labels"] == ["a", "b", "c", "undecided"]
    assert m["confusion_matrix"]["matrix"][1] == [0, 1, 0, 1]
    auc = per_class_auc(Y, P)
    assert m["auc_macro"] == pytest.approx(np.mean(auc))
    assert m["macro"]["auc"] == pytest.approx(m["auc_macro"])
    assert m["macro"]["recall"] == pytest.approx(m["balanced_accuracy"])
    json.dumps(m, allow_nan=False)


def test_classification_metrics_undefined_values_are_none():
    y = np.array([0, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.4, 0.3, 0.3]])
    m = classification_metrics(y, probs, ["a", "b", "c"])
    c = m["per_class"]["c"]
    assert c["n"] == 0 and c["recall"] is None and c["auc"] is None and c["ap"] is None
    assert c["sensitivity"] == 1.0                   # ISIC freebie, as its scorer reports
    assert m["macro"]["auc"] == pytest.approx(np.nanmean(per_class_auc(y, probs)))


# -- agreement with isic-challenge-scoring ----------------------------------------------------
def _case(seed: int, n: int, classes: list[str], decimals: int | None
          ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = len(classes)
    y = np.r_[np.arange(c), rng.integers(0, c, n - c)]          # every class present
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:                          # coarse scores: many ties within a column
        probs = np.round(probs, decimals)
    probs[3] = 0
    probs[3, :2] = 0.5                                # a tied row, two classes at exactly 0.5
    probs[4] = [0.3, 0.3, 0.3] + [0.1 / (c - 3)] * (c - 3)  # a three-way tie
    probs[5] = 0
    probs[5, 2] = 0.5                                 # exactly 0.5 and the argmax
    probs[5, 1] = 0.2
    probs[5, 3:] = 0.3 / (c - 3)
    rows = rng.choice(np.arange(6, n), size=n // 5, replace=False)
    probs[rows, 1] = 0.5                              # class 1 often exactly at the threshold
    return y, probs


def _write_isic(tmp_path, y, probs, classes):
    images = [f"ISIC_{i:07d}" for i in range(len(y))]
    truth = pd.DataFrame(np.eye(len(classes))[y], columns=classes)
    truth.insert(0, "image", images)
    pred = pd.DataFrame(probs, columns=classes)
    pred.insert(0, "image", images)
    truth_path, pred_path = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.to_csv(truth_path, index=False)
    pred.to_csv(pred_path, index=False)
    return truth_path, pred_path


@pytest.mark.filterwarnings("ignore:::isic_challenge_scoring")  # its pandas deprecations
@pytest.mark.parametrize("seed,n,classes,decimals", [
    (0, 60, ["mel", "nv", "bcc", "akiec"], None),
    (1, 120, ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"], 1),
    (2, 40, ["a", "b", "c", "d", "e"], 2),
    (3, 200, ["mel", "nv", "bkl", "bcc"], 1),
])
def test_matches_isic_challenge_scoring(tmp_path, monkeypatch, seed, n, classes, decimals):
    pytest.importorskip("isic_challenge_scoring")
    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    if not hasattr(pd.DataFrame, "applymap"):         # removed in pandas 3; the scorer calls it
        monkeypatch.setattr(pd.DataFrame, "applymap", pd.DataFrame.map, raising=False)
    y, probs = _case(seed, n, classes, decimals)
    truth_path, pred_path = _write_isic(tmp_path, y, probs, classes)
    score = ClassificationScore.from_file(truth_path, pred_path,
                                          ClassificationMetric.BALANCED_ACCURACY).to_dict(rocs=False)
    ours = classification_metrics(y, probs, classes)

    assert ours["n_undecided"] >= 2
    assert ours["balanced_accuracy"] == pytest.approx(score["aggregate"]["balanced_accuracy"],
                                                      abs=1e-9)
    assert score["overall"] == pytest.approx(ours["balanced_accuracy"], abs=1e-9)
    per_category = score["per_category"]              # {metric: {category: value}}
    for key in ("accuracy", "sensitivity", "specificity", "dice", "ppv", "npv", "auc",
                "auc_sens_80", "ap"):
        for c in classes:
            assert ours["per_class"][c][key] == pytest.approx(per_category[key][c], abs=1e-9), \
                (key, c)
        assert ours["macro"][key] == pytest.approx(score["macro_average"][key], abs=1e-9), key
    assert ours["auc_macro"] == pytest.approx(score["macro_average"]["auc"], abs=1e-9)


# -- subgroups --------------------------------------------------------------------------------
def test_age_bands():
    assert [label for label, _, _ in AGE_BANDS] == ["<30", "30-44", "45-59", "60-74", ">=75"]
    assert age_band([0, 29.9, 30, 44, 45, 59, 60, 74.5, 75, 90, None, "x", np.nan]).tolist() == [
        "<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74", ">=75", ">=75",
        "unknown", "unknown", "unknown"]


def test_subgroup_metrics_by_hand():
    y = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4],       # male: all right
                      [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])      # female: 1 right, 1 wrong, 1 tie
    table = pd.DataFrame({"sex": ["male", "Male", "male", "female", "female", "female"],
                          "age": [25, 25, 50, 50, 80, None]}, index=[10, 11, 12, 13, 14, 15])
    out = subgroup_metrics(y, probs, ["a", "b"], table, min_n=2)
    assert set(out) == {"sex", "age"}                            # no site column: skipped
    assert list(out["sex"]) == ["female", "male"]
    male, female = out["sex"]["male"], out["sex"]["female"]
    assert male == {"n": 3, "accuracy": 1.0, "balanced_accuracy": 1.0, "auc_macro": 1.0}
    assert female["n"] == 3 and female["accuracy"] == pytest.approx(1 / 3)
    assert female["balanced_accuracy"] == pytest.approx(0.25)  # a: 0/1, b: 1/2
    assert female["auc_macro"] == pytest.approx(0.5)            # b: 0.7 vs (0.6) pos, 0.5 pos
    assert list(out["age"]) == ["<30", "45-59", ">=75", "unknown"]
    assert out["age"]["<30"]["n"] == 2 and out["age"]["<30"]["accuracy"] == 1.0
    assert out["age"][">=75"] == {"n": 1, "accuracy": None, "balanced_accuracy": None,
                                  "auc_macro": None}            # below min_n
    json.dumps(out, allow_nan=False)


def test_subgroup_metrics_auc_undefined_is_none_and_empty_columns_skipped():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    table = pd.DataFrame({"site": ["back", "back", "face", "face"], "sex": [None] * 4})
    out = subgroup_metrics(y, probs, ["a", "b"], table, min_n=1)
    assert set(out) == {"site"}
    assert out["site"]["back"]["auc_macro"] is None              # one class only
    assert out["site"]["back"]["accuracy"] == 1.0
    with pytest.raises(ValueError):
        subgroup_metrics(y, probs, ["a", "b"], table.iloc[:3])

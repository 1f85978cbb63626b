"""The locked-threshold test (issue 22): a threshold chosen on validation data, applied unchanged
to a test set per image or per lesion, overall and by subgroup; figures pinned against
scikit-learn and the closed-form Wilson interval."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

import dermlearn
from dermlearn.cli import main
from dermlearn.data.synthetic import make_synthetic_dataset
from dermlearn.evaluation.operating_point import (
    aggregate_cases,
    parse_target,
    rates_at,
    subgroups_at,
    threshold_for,
    wilson,
)


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1).round(3)  # ties on purpose
    return y, score


@pytest.mark.parametrize("value", [0.5, 0.8, 0.95])
def test_threshold_for_matches_the_roc_curve(value):
    y, score = _data()
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    sens = threshold_for(y, score, "sensitivity", value)
    assert sens == max(t for t, r in zip(thresholds, tpr) if r >= value - 1e-12)
    spec = threshold_for(y, score, "specificity", value)
    assert spec == min(t for t, f in zip(thresholds, fpr) if 1 - f >= value - 1e-12)
    assert rates_at(y, score, sens)["sensitivity"]["value"] >= value
    assert rates_at(y, score, spec)["specificity"]["value"] >= value


def test_rates_and_wilson_intervals():
    y, score = _data(1)
    r = rates_at(y, score, 0.5)
    called = score >= 0.5
    assert (r["tp"], r["fp"]) == (int((called & y).sum()), int((called & ~y).sum()))
    k, n = r["sensitivity"]["k"], r["sensitivity"]["n"]
    z = 1.959963984540054
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert r["sensitivity"]["ci"] == pytest.approx([centre - half, centre + half], abs=1e-9)
    assert wilson(0, 0) is None
    assert parse_target("specificity=0.9") == ("specificity", 0.9)
    with pytest.raises(ValueError, match="sensitivity=X or specificity=X"):
        parse_target("accuracy=0.9")


def test_lesions_decide_by_their_worst_image_and_small_groups_are_flagged():
    y = np.array([1, 1, 0, 0, 0], bool)
    score = np.array([0.2, 0.9, 0.4, 0.1, 0.3])
    ly, ls, ids = aggregate_cases(y, score, ["a", "a", "b", "b", "c"], "max")
    assert ids.tolist() == ["a", "b", "c"] and ly.tolist() == [True, False, False]
    assert ls.tolist() == [0.9, 0.4, 0.3]
    assert aggregate_cases(y, score, ["a", "a", "b", "b", "c"], "mean")[1].tolist() == pytest.approx(
        [0.55, 0.25, 0.3])
    groups = subgroups_at(y, score, 0.5, pd.Series(["x", "x", "x", None, "x"]))
    assert set(groups) == {"x", "unknown"} and groups["x"]["too_small"]
    assert "n 4 < 30" in groups["x"]["why"]


def test_each_subgroup_auc_has_a_bootstrap_interval_over_its_own_cases():
    y, score = _data(2)
    column = pd.Series(np.where(np.arange(len(y)) % 3 == 0, "a", "b"))
    groups = subgroups_at(y, score, 0.5, column, n_boot=200, seed=4)
    for name, g in groups.items():
        rows = (column == name).to_numpy()
        rng = np.random.default_rng(4)  # the same resamples, scored by scikit-learn
        idx = rng.integers(0, rows.sum(), size=(200, rows.sum()))
        yy, ss = y[rows], score[rows]
        ref = [roc_auc_score(yy[i], ss[i]) for i in idx if 0 < yy[i].sum() < len(i)]
        assert g["auc"] == pytest.approx(roc_auc_score(yy, ss))
        assert g["auc_ci"] == pytest.approx(list(np.quantile(ref, [0.025, 0.975])), abs=1e-12)
        assert g["auc_ci"][0] <= g["auc"] <= g["auc_ci"][1]
    one_class = rates_at(np.zeros(5, bool), np.linspace(0, 1, 5), 0.5)
    assert one_class["auc"] is None and one_class["auc_ci"] is None


@pytest.fixture(scope="module")
def run_and_test(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("locked")
    dermlearn.train(tiny_data, root / "run", overrides=dict(
        image_size=64, batch_size=8, num_workers=0, epochs=1), progress=False)
    make_synthetic_dataset(root / "test", n_lesions_per_class=8, images_per_lesion=(1, 3),
                           classes=("mel", "nv", "bkl"), size=96, seed=7)
    manifest = pd.read_csv(root / "test" / "manifest.csv")  # other patients: other ids
    for column in ("image_id", "lesion_id", "patient_id"):
        manifest[column] = "T" + manifest[column].astype(str)
    manifest.to_csv(root / "test" / "manifest.csv", index=False)
    return root


def test_evaluate_applies_a_threshold_chosen_on_the_runs_validation_part(run_and_test, capsys):
    root = run_and_test
    out = root / "ev"
    assert main(["evaluate", str(root / "run"), str(root / "test"), "--out", str(out),
                 "--threshold-from", str(root / "run"), "--target", "sensitivity=0.8",
                 "--aggregate", "lesion", "--subgroup", "sex", "--subgroup", "localization",
                 "--explain", "none", "--no-embed", "--bootstrap", "10", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "melanoma_vs_rest at threshold" in said and "per lesion" in said
    locked = json.loads((out / "metrics.json").read_text())["locked"]
    # The threshold is the validation part's (its images at the model's temperature).
    val = pd.read_csv(root / "run" / "val_predictions.csv")
    assert locked["threshold"] == pytest.approx(
        threshold_for(val["label"] == "mel", val["mel"], "sensitivity", 0.8))
    # Per lesion: a lesion is positive when its images are, scored by its highest image.
    predictions = pd.read_csv(out / "predictions.csv")
    per_lesion = predictions.groupby("lesion_id").agg(y=("label", lambda s: (s == "mel").any()),
                                                      s=("mel", "max"))
    expected = rates_at(per_lesion["y"].to_numpy(), per_lesion["s"].to_numpy(),
                        locked["threshold"])
    assert locked["n"] == len(per_lesion) and locked["tp"] == expected["tp"]
    assert set(locked["subgroups"]) == {"sex", "localization"}
    assert (out / "report.html").read_text().count("Locked operating point") == 1


def test_a_threshold_from_the_test_images_is_refused_before_scoring(run_and_test, tiny_data,
                                                                    capsys, monkeypatch):
    from dermlearn.inference import Predictor

    root = run_and_test
    monkeypatch.setattr(Predictor, "run_batch", lambda *a, **k: pytest.fail("scored"))
    # The run's own data: its validation images are both the threshold's source and the test.
    assert main(["evaluate", str(root / "run"), str(tiny_data), "--out", str(root / "ev2"),
                 "--threshold-from", str(root / "run"), "--target", "sensitivity=0.8"]) == 2
    assert "are also being evaluated" in capsys.readouterr().err
    assert main(["evaluate", str(root / "run"), str(root / "test"), "--out", str(root / "ev3"),
                 "--subgroup", "sex"]) == 2
    assert "at a locked threshold" in capsys.readouterr().err
    assert main(["evaluate", str(root / "run"), str(root / "test"), "--out", str(root / "ev4"),
                 "--threshold", "0.5", "--subgroup", "nosuch"]) == 2
    assert "no such column" in capsys.readouterr().err

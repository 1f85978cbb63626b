"""dermlearn compare: two evaluations of the same images, paired, with lesion-level bootstrap
intervals; figures pinned against scikit-learn on the same predictions."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import dermlearn
from dermlearn.cli import main
from dermlearn.errors import DermlearnError
from dermlearn.evaluation.compare import compare_evaluations
from dermlearn.evaluation.model_report import model_report


@pytest.fixture(scope="module")
def evaluations(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    dermlearn.train(tiny_data, root / "run", overrides=dict(
        image_size=64, batch_size=8, num_workers=0, epochs=1), progress=False)
    for name, tta in (("a", 1), ("b", 8)):
        dermlearn.evaluate(root / "run", tiny_data, root / name, tta=tta, explain=None,
                           embed=False, n_boot=10, progress=False)
    return root


def test_compare_gives_both_figures_and_their_paired_difference(evaluations, capsys):
    a = pd.read_csv(evaluations / "a" / "predictions.csv")
    b = pd.read_csv(evaluations / "b" / "predictions.csv")
    assert "lesion_id" in a.columns and a["image"].tolist() == b["image"].tolist()
    out = evaluations / "cmp"
    assert main(["compare", str(evaluations / "a"), str(evaluations / "b"), "--out", str(out),
                 "--bootstrap", "200"]) == 0
    said = capsys.readouterr().out
    assert "bootstrap over" in said and "lesions" in said
    result = json.loads((out / "comparison.json").read_text())
    classes = [c for c in a.columns if c not in ("image", "label", "lesion_id")]
    truth = a["label"].map(classes.index).to_numpy()
    for name, frame in (("a", a), ("b", b)):
        predicted = frame[classes].to_numpy().argmax(axis=1)
        assert result["rows"]["balanced_accuracy"][name] == pytest.approx(
            balanced_accuracy_score(truth, predicted))
        assert result["rows"]["melanoma_vs_rest_auc"][name] == pytest.approx(
            roc_auc_score(frame["label"] == "mel", frame["mel"]))
    row = result["rows"]["accuracy"]
    assert row["diff"] == pytest.approx(row["b"] - row["a"])
    assert row["ci"][0] <= row["diff"] <= row["ci"][1] and 0 <= row["p"] <= 1
    assert result["grouping"] == "lesion" and result["lesions"] == a["lesion_id"].nunique()


def test_compare_refuses_evaluations_of_other_images(evaluations, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    a = pd.read_csv(evaluations / "a" / "predictions.csv")
    a.iloc[1:].to_csv(other / "predictions.csv", index=False)
    with pytest.raises(DermlearnError, match="scored different images"):
        compare_evaluations(evaluations / "a", other)
    with pytest.raises(DermlearnError, match="no predictions.csv"):
        compare_evaluations(evaluations / "a", tmp_path)
    changed = a.assign(label=np.where(a["label"] == "nv", "mel", "nv"))
    changed.to_csv(other / "predictions.csv", index=False)
    with pytest.raises(DermlearnError, match="different labels"):
        compare_evaluations(evaluations / "a", other)


def test_the_comparison_is_a_section_of_the_model_report(evaluations, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(evaluations / "a"), str(evaluations / "b"), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    result = json.loads((out / "comparison.json").read_text())
    table = (out / "comparison.md").read_text()
    accuracy = result["rows"]["accuracy"]
    assert (f"| accuracy | {accuracy['a']:.3f} | {accuracy['b']:.3f} | "
            f"{accuracy['diff']:+.3f} |") in table
    report = tmp_path / "model-report.md"
    assert main(["report", str(evaluations / "run"), "--eval", str(evaluations / "b"),
                 "--compare", str(out), "--out", str(report)]) == 0
    text = report.read_text()
    assert "## Comparison with another model" in text and table.strip() in text
    page = report.with_suffix(".html").read_text()
    assert page.count("<tr>") == len(result["rows"]) + 1 and "<code>" in page
    with pytest.raises(DermlearnError, match="no comparison.json"):
        model_report(evaluations / "run", comparison=tmp_path)

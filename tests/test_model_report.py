"""dermlearn report (issue 22): the TRIPOD+AI / CLAIM items dermlearn knows, filled from the
model's files and an evaluation, the rest marked to complete; the model card reads the same."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import dermlearn
from dermlearn.cli import main
from dermlearn.errors import DermlearnError
from dermlearn.evaluation.model_facts import model_facts
from dermlearn.evaluation.model_report import TO_COMPLETE, model_report


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("model-report")
    dermlearn.train(tiny_data, root / "run", overrides=dict(
        image_size=64, batch_size=8, num_workers=0, epochs=1), progress=False)
    dermlearn.evaluate(root / "run", tiny_data, root / "ev", explain=None, embed=False,
                       n_boot=20, progress=False,
                       locked={"threshold": 0.3, "subgroups": ["sex"]})
    return root


def test_the_report_fills_what_the_files_say_and_marks_the_rest(run, capsys):
    out = run / "model-report.md"
    assert main(["report", str(run / "run"), "--eval", str(run / "ev"), "--out", str(out)]) == 0
    assert "item(s) marked to complete by hand" in capsys.readouterr().out
    text = out.read_text()
    config = json.loads((run / "run" / "model" / "config.json").read_text())
    n_train = config["training_data"]["n_images"]
    assert f"{n_train} training images" in text
    splits = pd.read_csv(run / "run" / "splits.csv")
    assert f"{len(splits)} images, {splits['lesion_id'].nunique()} lesions" in text
    metrics = json.loads((run / "ev" / "metrics.json").read_text())
    assert f"threshold {metrics['locked']['threshold']:.4f}" in text
    for group, m in metrics["locked"]["subgroups"]["sex"].items():  # a table row per group
        assert f"| sex = {group} | {m['n']} | {m['n_positive']} |" in text
    assert "Failure analysis" in text and "every case in cases.csv" in text
    assert text.count(TO_COMPLETE) >= 5  # dates, ethics, funding... are the authors' to give
    page = (run / "model-report.html").read_text()
    assert page.count("<li>") == text.count("\n- ")
    assert page.count("<tr>") == len(metrics["locked"]["subgroups"]["sex"]) + 1


def test_the_model_card_reads_the_same_facts(run):
    from dermlearn.serving.model_card import build_model_card

    facts = model_facts(run / "run")
    card = build_model_card(dermlearn.Predictor.load(run / "run"))
    assert card["intended_use"] == facts["intended_use"]
    assert card["limitations"] == facts["limitations"]
    assert card["training_data"] == facts["training_data"]
    assert card["validation"] == facts["validation"]


def test_without_an_evaluation_the_results_are_to_complete(run, tmp_path):
    text = model_report(run / "run")
    assert "give --eval EVAL_DIR" in text
    with pytest.raises(DermlearnError, match="no metrics.json"):
        model_report(run / "run", tmp_path)

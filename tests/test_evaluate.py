"""`evaluate` on a predictions CSV: ground truth from an ISIC-style CSV, outputs, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dermlearn.cli import main
from dermlearn.errors import DermlearnError
from dermlearn.evaluation.evaluate import evaluate_predictions_csv


@pytest.fixture()
def csvs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3                              # MEL, NV, BCC, 30 each
    probs = rng.dirichlet(np.ones(3), 90)
    probs[np.arange(90), y] += rng.uniform(0, 0.8, 90)  # informative but imperfect
    probs /= probs.sum(axis=1, keepdims=True)
    ids = [f"ISIC_{i:07d}" for i in range(90)]
    truth = pd.DataFrame(np.eye(3)[y], columns=["MEL", "NV", "BCC"])
    truth.insert(0, "image", ids)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    preds = pd.DataFrame(probs, columns=["mel", "nv", "bcc"])
    preds.insert(0, "image", ids)
    preds.to_csv(tmp_path / "preds.csv", index=False)
    return tmp_path, y, probs


def test_predictions_against_isic_truth_csv(csvs):
    folder, y, probs = csvs
    metrics = evaluate_predictions_csv(folder / "preds.csv", folder / "truth.csv",
                                       out=folder / "eval", n_boot=200)
    assert metrics["n"] == 90
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == y))
    binary = metrics["levels"]["malignant_vs_benign"]      # MEL and BCC are malignant
    assert binary["n_positive"] == 60
    assert binary["auc_ci"][0] <= binary["auc"] <= binary["auc_ci"][1]
    saved = json.loads((folder / "eval" / "metrics.json").read_text())
    assert saved["per_class"]["mel"]["auc"] == pytest.approx(metrics["per_class"]["mel"]["auc"])
    for name in ("report.html", "figures/roc_malignant_vs_benign.png", "figures/reliability.png",
                 "figures/confusion_normalised.png", "predictions.csv"):
        assert (folder / "eval" / name).is_file(), name


def test_cli_evaluate_predictions(csvs, capsys):
    folder, _, _ = csvs
    assert main(["evaluate", "--predictions", str(folder / "preds.csv"),
                 str(folder / "truth.csv"), "--out", str(folder / "cli"),
                 "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "evaluation (n=" in printed
    assert (folder / "cli" / "report.html").is_file()
    # classes of one's own, read as they are (a truth CSV with --taxonomy flat)
    own = {"MEL": "x", "NV": "y", "BCC": "z", "mel": "x", "nv": "y", "bcc": "z"}
    for name in ("truth.csv", "preds.csv"):
        pd.read_csv(folder / name).rename(columns=own).to_csv(folder / f"own-{name}", index=False)
    assert main(["evaluate", "--predictions", str(folder / "own-preds.csv"),
                 str(folder / "own-truth.csv"), "--out", str(folder / "own"), "--taxonomy", "flat",
                 "--bootstrap", "20"]) == 0
    assert "per-class AUC: x " in capsys.readouterr().out


def test_bad_predictions_name_the_rows(csvs):
    folder, _, _ = csvs
    preds = pd.read_csv(folder / "preds.csv")
    preds.loc[3, "mel"] = np.nan
    preds.loc[7, "nv"] = 1.7
    preds.to_csv(folder / "bad.csv", index=False)
    with pytest.raises(DermlearnError) as info:
        evaluate_predictions_csv(folder / "bad.csv", folder / "truth.csv")
    message = str(info.value)
    assert "ISIC_0000003" in message or "line 5" in message
    assert "ISIC_0000007" in message or "line 9" in message


def test_truth_csv_must_be_one_hot(csvs):
    folder, _, _ = csvs
    truth = pd.read_csv(folder / "truth.csv")
    truth.loc[0, "NV"] = 1.0                            # two classes in one row
    truth.to_csv(folder / "two.csv", index=False)
    with pytest.raises(DermlearnError, match="one-hot"):
        evaluate_predictions_csv(folder / "preds.csv", folder / "two.csv")


@pytest.mark.slow
def test_report_of_a_ph2_run_opens_in_chromium(ph2_dir, tmp_path):
    """A PH2 5-fold features-mode run, evaluated on its held-out images: every figure renders."""
    from dermlearn.evaluation.evaluate import evaluate_model
    from dermlearn.training.run import train

    from browser import BROKEN_IMAGES_JS, browser_page

    run = tmp_path / "ph2"
    train(ph2_dir, run, overrides={"mode": "features", "folds": 5, "image_size": 160},
          feature_cache=tmp_path / "cache", progress=False)
    metrics = evaluate_model(run, ph2_dir, tmp_path / "eval", n_boot=200, progress=False)
    assert metrics["n"] == 200 and metrics["cv"]["melanoma_vs_rest_auc"]["n"] == 5
    assert metrics["levels"]["melanoma_vs_rest"]["auc"] > 0.85
    with browser_page() as page:
        page.goto((tmp_path / "eval" / "report.html").as_uri())
        assert page.evaluate("document.images.length") >= 9
        assert page.evaluate(BROKEN_IMAGES_JS) == []
        page.screenshot(path=str(tmp_path / "eval" / "report.png"), full_page=True)


def test_cli_explain_and_embed(tmp_path, capsys):
    """`dermlearn explain` writes one overlay per image; `embed` the t-SNE CSV and figures."""
    from dermlearn.data.synthetic import make_synthetic_dataset

    from serving_fixtures import make_tiny_model

    model = make_tiny_model(tmp_path / "model", image_size=64)
    data = make_synthetic_dataset(tmp_path / "data", classes=("mel", "nv"), seed=0)
    images = sorted((tmp_path / "data").rglob("*.png"))[:3] or \
        sorted((tmp_path / "data").rglob("*.jpg"))[:3]
    assert main(["explain", str(model), *map(str, images), "--out", str(tmp_path / "maps"),
                 "--method", "gradcam"]) == 0
    assert len(list((tmp_path / "maps").glob("*_gradcam.png"))) == 3
    assert main(["embed", str(model), str(data), "--out", str(tmp_path / "tsne"),
                 "--quiet"]) == 0
    frame = pd.read_csv(tmp_path / "tsne" / "tsne.csv")
    assert len(frame) == len(pd.read_csv(data)) and {"x", "y", "correct"} <= set(frame.columns)
    assert (tmp_path / "tsne" / "tsne_by_class.png").stat().st_size > 5_000

"""dermlearn ensemble (issue 21): one model from runs on the same split, member weights and one
temperature fitted on their shared hold-out, used as one model by predict, evaluate and ONNX."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dermlearn
from dermlearn.cli import main
from dermlearn.errors import DermlearnError

TINY = dict(image_size=64, batch_size=8, num_workers=0, epochs=1)


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    for name, lr in (("a", 5e-4), ("b", 2e-3)):
        dermlearn.train(tiny_data, root / name, overrides={**TINY, "lr": lr}, progress=False)
    return root


def test_an_ensemble_of_runs_is_one_model(runs, tiny_data, capsys):
    out = runs / "ens"
    assert main(["ensemble", str(runs / "a"), str(runs / "b"), "--out", str(out),
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "member weights:" in said
    predictor = dermlearn.Predictor.load(out)
    weights = predictor.member_weights
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0)
    val = pd.read_csv(runs / "a" / "val_predictions.csv")
    manifest = dermlearn.load(tiny_data)
    held = manifest.select(val["image"].astype(str).tolist())
    # Its probabilities are the weighted mean of the runs' (temperature 1: under 100 images).
    mixed = sum(w * dermlearn.predict(runs / r, held).drop(columns="image").to_numpy()
                for w, r in zip(weights, "ab"))
    ours = dermlearn.predict(out, held)
    np.testing.assert_allclose(ours.drop(columns="image").to_numpy(), mixed, atol=1e-6)
    onnx = dermlearn.predict(out, held, backend="onnx")
    np.testing.assert_allclose(onnx.drop(columns="image").to_numpy(), mixed, atol=1e-4)
    # Evaluated on the runs' data, it scores only the images no member trained on.
    metrics = dermlearn.evaluate(out, tiny_data, runs / "ens-eval", explain=None, embed=False,
                                 n_boot=10, progress=False)
    assert metrics["n"] == len(val)
    assert (out / "model" / "ood.json").is_file()


def test_runs_that_cannot_be_combined_are_refused(runs, tiny_data):
    from dermlearn.training.ensemble import ensemble_runs

    dermlearn.train(tiny_data, runs / "other-split", overrides={**TINY, "seed": 3},
                    progress=False)
    with pytest.raises(DermlearnError, match="split differently"):
        ensemble_runs([runs / "a", runs / "other-split"], runs / "x")
    dermlearn.train(tiny_data, runs / "bigger", overrides={**TINY, "image_size": 80},
                    progress=False)
    with pytest.raises(DermlearnError, match="differ in their preprocess"):
        ensemble_runs([runs / "a", runs / "bigger"], runs / "y")
    with pytest.raises(DermlearnError, match="at least two runs"):
        ensemble_runs([runs / "a"], runs / "z")
    assert not (runs / "x").exists() and not (runs / "y").exists()

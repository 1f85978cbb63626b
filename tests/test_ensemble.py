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
    # Explanations (saliency and Grad-CAM) explain the weighted ensemble's own probabilities.
    from dermlearn.data.images import read_image
    from dermlearn.explain import explain_images

    image = read_image(held.table["path"].iloc[0])
    for method in ("saliency", "gradcam"):
        explained = explain_images(predictor, [image], method)[0]
        np.testing.assert_allclose(explained.probs, mixed[0], atol=1e-5)
    # Evaluated on the runs' data, it scores only the images no member trained on.
    metrics = dermlearn.evaluate(out, tiny_data, runs / "ens-eval", explain=None, embed=False,
                                 n_boot=10, progress=False)
    assert metrics["n"] == len(val)
    assert (out / "model" / "ood.json").is_file()
    # An ensemble is not a member of another: its runs are named instead.
    assert main(["ensemble", str(runs / "a"), str(out), "--out", str(runs / "nested")]) == 2
    assert "already an ensemble of runs; give its runs instead" in capsys.readouterr().err


def test_runs_that_cannot_be_combined_are_refused(runs, tiny_data):
    from dermlearn.training.ensemble import ensemble_runs

    dermlearn.train(tiny_data, runs / "other-split", overrides={**TINY, "seed": 3},
                    progress=False)
    with pytest.raises(DermlearnError, match="split differently"):
        ensemble_runs([runs / "a", runs / "other-split"], runs / "x")
    dermlearn.train(tiny_data, runs / "wide", overrides={**TINY, "image_size": [48, 96],
                                                          "crop_pct": 1.0}, progress=False)
    with pytest.raises(DermlearnError, match="cuts away"):  # neither crop holds the other
        ensemble_runs([runs / "a", runs / "wide"], runs / "y")
    dermlearn.train(tiny_data, runs / "sog", overrides={**TINY, "color_constancy": 6},
                    progress=False)
    with pytest.raises(DermlearnError, match="color_constancy"):
        ensemble_runs([runs / "a", runs / "sog"], runs / "y")
    with pytest.raises(DermlearnError, match="at least two runs"):
        ensemble_runs([runs / "a"], runs / "z")
    assert not (runs / "x").exists() and not (runs / "y").exists()


def test_the_ensemble3_recipe_trains_three_backbones_on_one_split(tiny_data, tmp_path, capsys):
    """``--recipe ensemble3``: Lite0, Lite1 and Lite2 as runs of their own on one split, then
    one ensemble; the same command again continues (members already trained are kept)."""
    out = tmp_path / "e3"
    args = ["train", str(tiny_data), "--out", str(out), "--recipe", "ensemble3", "--epochs", "1",
            "--image-size", "64", "--batch-size", "8", "--num-workers", "0", "--quiet"]
    assert main(args) == 0
    members = sorted(p.name for p in (out / "runs").iterdir())
    assert members == ["lite0", "lite1", "lite2"]
    backbones = [dermlearn.Predictor.load(out / "runs" / m).config["backbone"] for m in members]
    assert backbones == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    splits = [pd.read_csv(out / "runs" / m / "splits.csv") for m in members]
    assert all(s.equals(splits[0]) for s in splits)
    assert len(dermlearn.Predictor.load(out).members) == 3
    assert main(args) == 2  # finished: a new --out is needed
    assert "already holds a finished ensemble" in capsys.readouterr().err
    # Stopped during the last member's finish and before the ensembling: run again.
    (out / "metrics.json").unlink()
    (out / "runs" / "lite2" / "metrics.json").unlink()
    assert main(args) == 0 and (out / "metrics.json").is_file()
    assert len(dermlearn.Predictor.load(out).members) == 3


def test_members_trained_with_other_sizes_and_crops_are_one_model(runs, tiny_data, capsys):
    """Each member keeps its own preprocessing: the ensemble reads the 80 px whole frame and the
    64 px member (centre crop 0.875) takes its part of it inside the network, in PyTorch and
    in ONNX alike."""
    dermlearn.train(tiny_data, runs / "big", overrides={**TINY, "image_size": 80,
                                                         "crop_pct": 1.0}, progress=False)
    out = runs / "sizes"
    assert main(["ensemble", str(runs / "a"), str(runs / "big"), "--out", str(out),
                 "--quiet"]) == 0
    predictor = dermlearn.Predictor.load(out)
    assert predictor.input_size == (3, 80, 80) and predictor.preprocess.crop_pct == 1.0
    small, big = predictor.members
    assert small.input_resize.size_out == (64, 64) and big.input_resize is None
    assert small.input_resize.rows_span == (5, 75)  # 64 px of 73 kept, of 96: 70 px of 80
    val = pd.read_csv(runs / "a" / "val_predictions.csv")
    held = dermlearn.load(tiny_data).select(val["image"].astype(str).tolist())
    alone = [dermlearn.predict(runs / r, held).drop(columns="image").to_numpy()
             for r in ("a", "big")]
    mixed = sum(w * p for w, p in zip(predictor.member_weights, alone))
    ours = dermlearn.predict(out, held).drop(columns="image").to_numpy()
    # Not equal (the 64 px member sees the 80 px input resized, not its own resize of the
    # photograph; these one-epoch models on sharp synthetic images amplify that, see
    # test_input_resize for photographs), but nearer than the member fed 80 px unresized.
    unresized = dermlearn.Predictor.load(out)
    unresized.members[0].input_resize = None
    raw = dermlearn.predict(unresized, held).drop(columns="image").to_numpy()
    assert np.abs(ours - mixed).mean() < 0.75 * np.abs(raw - mixed).mean()
    onnx = dermlearn.predict(out, held, backend="onnx").drop(columns="image").to_numpy()
    np.testing.assert_allclose(onnx, ours, atol=1e-4)
    from dermlearn.data.images import read_image
    from dermlearn.explain import explain_images

    image = read_image(held.table["path"].iloc[0])
    for method in ("saliency", "gradcam"):
        explained = explain_images(predictor, [image], method)[0]
        np.testing.assert_allclose(explained.probs, ours[0], atol=1e-5)
        assert explained.heatmap.shape == image.size[::-1] and np.isfinite(explained.heatmap).all()
    # A member folder edited to another normalisation is refused when the ensemble loads.
    import json

    config_path = out / "model" / "members" / "0" / "config.json"
    config = json.loads(config_path.read_text())
    config["preprocess"]["mean"] = [0.485, 0.456, 0.406]
    config_path.write_text(json.dumps(config))
    with pytest.raises(DermlearnError, match="mean"):
        dermlearn.Predictor.load(out)


def test_runs_whose_trees_differ_only_in_label_aliases_combine(runs):
    """A run trained before a built-in label name was added still combines with a newer one."""
    import json
    import shutil

    from dermlearn.training.ensemble import ensemble_runs

    older = runs / "b-older"
    shutil.copytree(runs / "b", older)
    config_path = older / "model" / "config.json"
    config = json.loads(config_path.read_text())

    def drop_an_alias(node):
        if node.get("aliases"):
            node["aliases"] = node["aliases"][:-1]
            return True
        return any(drop_an_alias(child) for child in node.get("children", []))

    assert any(drop_an_alias(node) for node in config["taxonomy"]["nodes"])
    config_path.write_text(json.dumps(config))
    metrics = ensemble_runs([runs / "a", older], runs / "aliases")
    assert len(metrics["ensemble"]["weights"]) == 2
    config["classes"] = config["classes"][::-1]  # other classes are still refused
    config_path.write_text(json.dumps(config))
    with pytest.raises(DermlearnError, match="differ in their classes"):
        ensemble_runs([runs / "a", older], runs / "aliases2")

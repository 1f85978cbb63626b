"""Shades of Gray colour constancy: the maths, and the same step in training, prediction (PyTorch
and ONNX Runtime) and the model's saved preprocessing (issue 21)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlearn.models.color_constancy import ShadesOfGray, shades_of_gray
from dermlearn.models.errors import PreprocessConfigError
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform


def _scene(seed: int = 0) -> np.ndarray:
    """A textured skin-like image (64, 48, 3) in [40, 200], roughly neutral on average."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 180, size=(64, 48, 1))
    return np.clip(base + rng.normal(0, 20, size=(64, 48, 3)), 40, 200)


def _pnorm(image: np.ndarray, p: float) -> np.ndarray:
    return np.mean((np.asarray(image, float) / 255.0) ** p, axis=(0, 1)) ** (1 / p)


@pytest.mark.parametrize("p", [1.0, 6.0])
def test_a_colour_cast_is_removed(p):
    scene = _scene()
    cast = np.clip(scene * np.array([1.25, 1.0, 0.7]), 0, 255)
    out = shades_of_gray(cast, p)
    means = _pnorm(out, p)
    assert means.max() - means.min() < 0.01 * means.mean()  # the illuminant is neutral now
    assert np.abs(_pnorm(cast, p).max() - _pnorm(cast, p).min()) > 0.1 * _pnorm(cast, p).mean()


def test_the_colours_do_not_depend_on_the_illuminant():
    """Two casts of one scene give the same colours; only the overall brightness (which the
    method keeps) may differ."""
    scene = _scene(1)
    a = shades_of_gray(scene * np.array([1.2, 1.0, 0.8]), 6).astype(float)
    b = shades_of_gray(scene * np.array([0.8, 0.9, 1.1]), 6).astype(float)
    assert np.abs(a / a.mean() - b / b.mean()).mean() < 0.02
    before = scene * np.array([1.2, 1.0, 0.8]), scene * np.array([0.8, 0.9, 1.1])
    assert np.abs(before[0] / before[0].mean() - before[1] / before[1].mean()).mean() > 0.1


def test_neutral_and_black_images_are_left_as_they_are():
    grey = np.full((8, 8, 3), 120, np.uint8)
    np.testing.assert_array_equal(shades_of_gray(grey), grey)
    black = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(shades_of_gray(black), black)


def test_bad_norms_and_shapes_are_named():
    with pytest.raises(PreprocessConfigError, match="norm p must be a finite number >= 1"):
        shades_of_gray(_scene(), 0.5)
    with pytest.raises(PreprocessConfigError, match=r"\(H, W, 3\) RGB"):
        shades_of_gray(np.zeros((4, 4)))
    with pytest.raises(PreprocessConfigError, match="norm p"):
        PreprocessConfig(color_constancy="six")


def test_preprocess_config_carries_it_and_older_configs_read_without_it():
    cfg = PreprocessConfig(input_size=(3, 32, 32), color_constancy=6)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    plain = PreprocessConfig(input_size=(3, 32, 32))
    assert "color_constancy" not in plain.to_dict()  # unchanged description and model digests
    assert PreprocessConfig.from_dict(plain.to_dict()).color_constancy is None
    image = Image.fromarray(np.clip(_scene() * [1.3, 1.0, 0.7], 0, 255).astype(np.uint8))
    balanced = eval_transform(cfg)(image)
    manual = eval_transform(plain)(ShadesOfGray(6)(image))
    assert np.array_equal(balanced.numpy(), manual.numpy())


def test_a_model_trained_with_it_predicts_with_it_on_either_backend(tiny_data, tmp_path):
    from dermlearn import predict
    from dermlearn.evaluation.calibration import apply_temperature
    from dermlearn.inference.onnx_export import read_onnx_metadata
    from dermlearn.training.run import train

    run = tmp_path / "cc"
    train(tiny_data, run, overrides=dict(image_size=64, batch_size=8, num_workers=0, epochs=1,
                                         color_constancy=6), progress=False)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["preprocess"]["color_constancy"] == 6.0
    val = pd.read_csv(run / "val_predictions.csv")
    manifest = pd.read_csv(tiny_data / "manifest.csv").set_index("image_id")
    paths = [str(tiny_data / manifest.loc[i, "path"]) for i in val["image"]]
    classes = config["classes"]
    expected = apply_temperature(val[classes].to_numpy(), config.get("temperature", 1.0))
    for backend in ("torch", "onnx"):
        again = predict(run, paths, backend=backend)
        np.testing.assert_allclose(again[classes].to_numpy(), expected, atol=1e-4,
                                   err_msg=backend)
    meta = read_onnx_metadata(run / "model" / "model.onnx")
    assert json.loads(meta["preprocess"])["color_constancy"] == 6.0
    assert "Shades of Gray" in meta["input_layout"]
    # Without the step the same weights score differently: the step is really applied.
    from dermlearn.inference import Predictor

    predictor = Predictor.load(run)
    predictor.transform = eval_transform(PreprocessConfig.from_dict(
        {k: v for k, v in config["preprocess"].items() if k != "color_constancy"}))
    without = predict(predictor, paths)
    assert np.abs(without[classes].to_numpy() - expected).max() > 1e-4

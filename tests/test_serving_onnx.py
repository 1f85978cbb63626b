"""ONNX export: one opset-17 file with a dynamic batch axis and metadata, parity with PyTorch on
real images, the on-the-fly cache, and ``predict --backend onnx``."""
from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from dermlearn.cli import main
from dermlearn.data.images import read_image
from dermlearn.errors import DermlearnError
from dermlearn.inference.backends import OnnxBackend, TorchBackend, create_backend
from dermlearn.inference.onnx_export import (
    DIGEST_KEY,
    ONNX_FILE,
    ensure_onnx,
    metadata_dict,
    read_onnx_metadata,
)
from dermlearn.inference.predictor import Predictor

from serving_fixtures import HAM7, lesion_paths, make_tiny_model


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    """A 2-member ensemble with a fitted temperature, at 128 px."""
    return make_tiny_model(tmp_path_factory.mktemp("onnx") / "model", members=2,
                           temperature=1.8, image_size=128)


@pytest.fixture(scope="module")
def exported(ensemble_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "lesions.onnx"
    assert main(["export", str(ensemble_dir), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def real_images():
    paths = lesion_paths(3) + lesion_paths(3, offset=500, dataset="ham10000")
    if len(paths) < 2:
        pytest.skip("real images not found in ../shared/data/ph2 or ham10000")
    return [read_image(p) for p in paths]


def test_single_file_opset_17_with_metadata(exported, ensemble_dir):
    assert sorted(p.name for p in exported.parent.iterdir()) == [exported.name]  # no .data file
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    image = proto.graph.input[0]
    assert image.name == "image"
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128, 128]
    assert [o.name for o in proto.graph.output] == ["probabilities", "features"]
    meta = metadata_dict({p.key: p.value for p in proto.metadata_props})
    assert meta["classes"] == HAM7 and meta["input_size"] == [3, 128, 128]
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.5, 0.5, 0.5]
    assert meta["interpolation"] == "bicubic" and meta["crop_pct"] == 0.875
    assert meta["temperature"] == 1.8 and meta["ensemble_members"] == 2
    assert meta["model_id"] == ensemble_dir.parent.name  # the run's folder name
    assert str(meta["model_version"]).startswith("sha256:")
    levels = meta["taxonomy_levels"]
    assert levels["malignant_vs_benign"]["class_to_group"]["mel"] == "malignant"
    assert levels["esteva3"]["groups"] == ["benign", "malignant", "non_neoplastic"]
    assert meta["feature_layout"][0] == ["penultimate", 1280]


def test_fusion_model_export_takes_metadata(tmp_path):
    model_dir = make_tiny_model(tmp_path / "model", sites=["back", "face"], image_size=64)
    predictor = Predictor.load(model_dir)
    path = ensure_onnx(model_dir)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["image", "metadata"]
    backend = OnnxBackend(path, threads=1)
    encode = predictor.metadata_encoder.encode
    batch = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    meta = torch.from_numpy(np.stack([encode(30, "female", "face"), encode(None, None, None),
                                      encode(85, "male", "back")]))
    np.testing.assert_allclose(backend.predict_batch(batch, meta, tta=2),
                               predictor.predict_batch(batch, meta, tta=2), atol=1e-4)
    np.testing.assert_allclose(backend.infer(batch).probabilities,  # default: unknown
                               predictor.predict_batch(batch), atol=1e-4)


def test_metadata_refused_by_an_export_without_that_input(exported):
    backend = OnnxBackend(exported, threads=1)
    assert backend.metadata_input is None
    with pytest.raises(DermlearnError, match="no age/sex/site input"):
        backend.infer(np.zeros((1, 3, 128, 128), np.float32), np.zeros((1, 8), np.float32))


def test_dynamic_batch(exported):
    backend = OnnxBackend(exported, threads=1)
    for n in (1, 3):
        out = backend.infer(np.random.default_rng(n).normal(size=(n, 3, 128, 128)))
        assert out.probabilities.shape == (n, 7) and out.features.shape[0] == n
        np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_parity_with_pytorch_on_real_images(ensemble_dir, exported, real_images):
    """Same preprocessed batch through ONNX Runtime and PyTorch: max |dp| <= 1e-4."""
    predictor = Predictor.load(ensemble_dir)
    torch_backend, onnx_backend = TorchBackend(predictor), OnnxBackend(exported)
    batch = onnx_backend.preprocess_images(real_images)
    torch.testing.assert_close(batch, torch_backend.preprocess_images(real_images))
    expected = predictor.predict_batch(batch)  # ensemble mean of softmax(logits / T)
    got = onnx_backend.infer(batch)
    assert np.abs(got.probabilities - expected).max() <= 1e-4
    reference = torch_backend.infer(batch)
    assert np.abs(got.probabilities - reference.probabilities).max() <= 1e-4
    scale = np.abs(reference.features).max()
    assert np.abs(got.features - reference.features).max() <= 1e-4 * max(1.0, scale)
    # TTA views through the backend interface agree too
    np.testing.assert_allclose(onnx_backend.predict_batch(batch, tta=4),
                               predictor.predict_batch(batch, tta=4), atol=1e-4)


def test_ensure_onnx_caches_and_refreshes(tmp_path):
    model_dir = make_tiny_model(tmp_path / "model", image_size=64)
    path = ensure_onnx(model_dir)
    assert path == model_dir / ONNX_FILE
    stamp = path.stat().st_mtime_ns
    assert ensure_onnx(model_dir) == path and path.stat().st_mtime_ns == stamp  # cached
    # new weights: the digest changes and the file is exported again
    make_tiny_model(model_dir, image_size=64, seed=5)
    digest = read_onnx_metadata(path)[DIGEST_KEY]
    again = ensure_onnx(model_dir)
    assert read_onnx_metadata(again)[DIGEST_KEY] != digest
    assert isinstance(create_backend(model_dir, "onnx"), OnnxBackend)


def test_predict_cli_backends_agree(ensemble_dir, real_images, tmp_path):
    paths = lesion_paths(3)
    if not paths:
        pytest.skip("PH2 images not found")
    outs = {}
    for backend in ("torch", "onnx"):
        outs[backend] = tmp_path / f"{backend}.csv"
        assert main(["predict", str(ensemble_dir), *map(str, paths), "--out",
                     str(outs[backend]), "--backend", backend, "--threads", "1",
                     "--quiet"]) == 0
    a, b = pd.read_csv(outs["torch"]), pd.read_csv(outs["onnx"])
    assert list(a.columns) == ["image", *HAM7] and list(a["image"]) == list(b["image"])
    np.testing.assert_allclose(a[HAM7].to_numpy(), b[HAM7].to_numpy(), atol=2e-4)


def test_export_refuses_a_non_model(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not a dermlearn model directory" in capsys.readouterr().err

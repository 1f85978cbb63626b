"""The out-of-distribution screen: fitted on real lesion photos, it flags photos of other things
(a cat, an astronaut, noise, a flat colour) and passes most unseen lesion photos."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dermlearn.data.images import read_image
from dermlearn.inference.identity import feature_digest
from dermlearn.inference.ood import OOD_JSON, OOD_WEIGHTS, fit_ood, fit_ood_features, load_ood
from dermlearn.inference.predictor import Predictor

from serving_fixtures import lesion_paths, make_tiny_model, non_lesions


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model (ImageNet backbone, 96 px) with OOD statistics from 60 real lesion photos."""
    train = lesion_paths(30) + lesion_paths(30, dataset="ham10000")
    held_out = lesion_paths(15, offset=120) + lesion_paths(15, offset=4000, dataset="ham10000")
    if len(train) < 50 or len(held_out) < 20:
        pytest.skip("real images not found in ../shared/data/ph2 and ham10000")
    model_dir = make_tiny_model(tmp_path_factory.mktemp("ood") / "model")
    predictor = Predictor.load(model_dir)
    detector = fit_ood(predictor, train, groups=[p.stem for p in train])
    detector.save(model_dir)
    return model_dir, predictor, held_out


def scores(predictor, detector, images):
    batch = torch.stack([predictor.transform(im) for im in images])
    return detector.assess(predictor.run_batch(batch, outputs=("ood",))["ood"])


def test_saved_statistics_round_trip(fitted):
    model_dir, predictor, _ = fitted
    info = json.loads((model_dir / OOD_JSON).read_text())
    assert (model_dir / OOD_WEIGHTS).is_file() and info["percentile"] == 95.0
    assert [layer["name"] for layer in info["layers"]][0] == "penultimate"
    assert info["n_images"] == 60 and info["model_version"].startswith("sha256:")
    detector = load_ood(model_dir, feature_digest=info["feature_digest"])
    assert detector is not None and detector.layout == predictor.feature_layout
    assert info["feature_digest"] == feature_digest(model_dir, predictor.config)


def test_non_lesion_photos_are_flagged(fitted):
    model_dir, predictor, _ = fitted
    detector = load_ood(model_dir)
    images = non_lesions()
    results = scores(predictor, detector, list(images.values()))
    missed = [name for name, r in zip(images, results) if not r["flag"]]
    assert not missed, [(n, round(r["score"], 2), r["threshold"]) for n, r in
                        zip(images, results)]


def test_unseen_lesion_photos_mostly_pass(fitted):
    model_dir, predictor, held_out = fitted
    detector = load_ood(model_dir)
    results = scores(predictor, detector, [read_image(p) for p in held_out])
    flagged = sum(r["flag"] for r in results)
    assert flagged <= 0.2 * len(results), [round(r["score"], 2) for r in results]


def test_no_or_stale_or_corrupt_statistics(fitted, tmp_path):
    model_dir, _, _ = fitted
    assert load_ood(tmp_path) is None
    assert load_ood(model_dir, feature_digest="sha256:0000000000000000") is None
    (tmp_path / OOD_JSON).write_text("{not json")
    (tmp_path / OOD_WEIGHTS).write_bytes(b"garbage")
    assert load_ood(tmp_path) is None


def test_fit_on_features_class_conditional():
    """Two Gaussian classes: points near either class mean pass, points between or far away
    are flagged; the threshold is the 95th percentile of held-out in-distribution scores."""
    rng = np.random.default_rng(0)
    dim = 20
    a = rng.normal(0, 1, (200, dim)) + 6
    b = rng.normal(0, 1, (200, dim)) - 6
    features = np.concatenate([a, b])
    labels = ["a"] * 200 + ["b"] * 200
    detector = fit_ood_features(features, labels=labels, percentile=95)
    assert detector.groups == ["a", "b"] and len(detector.layers) == 1
    fresh = np.concatenate([rng.normal(0, 1, (100, dim)) + 6, rng.normal(0, 1, (100, dim)) - 6])
    rate = np.mean(detector.score(fresh) > detector.threshold)
    assert 0.0 <= rate <= 0.12
    far = np.stack([np.zeros(dim), np.full(dim, 30.0), rng.normal(0, 5, dim)])
    assert (detector.score(far) > detector.threshold).all()
    # classes too small for their own mean share a pooled one
    small = fit_ood_features(features[:205], labels=labels[:205], min_class_size=10)
    assert small.groups == ["a", "__pooled__"]


def test_fit_rejects_bad_input():
    from dermlearn.errors import DermlearnError

    with pytest.raises(DermlearnError):
        fit_ood_features(np.zeros((3, 4)))
    with pytest.raises(DermlearnError):
        fit_ood_features(np.ones((10, 4)), layout=[("a", 3)])
    with pytest.raises(DermlearnError):
        fit_ood_features(np.full((10, 4), np.nan))


def test_calibrating_the_temperature_keeps_the_statistics(fitted, tmp_path):
    import shutil

    from dermlearn.serving.service import LesionService, ServiceConfig

    model_dir, _, _ = fitted
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["temperature"] = 1.37
    (copy / "config.json").write_text(json.dumps(config))
    service = LesionService(ServiceConfig(str(copy)))
    assert service.ood is not None and service.predictor.temperature == 1.37
    assert service.version != json.loads((model_dir / OOD_JSON).read_text())["model_version"]

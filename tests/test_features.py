"""dermlearn.training.features: the feature cache, extraction, heads on features, cheap k-fold CV.

Tolerances: features read back from a float32 cache equal the direct
``backbone(preprocess(images))`` to atol 1e-4 / rtol 1e-4 (measured max difference ~1e-6: the
only differences are channels-last vs contiguous convolutions and batch composition); a float16
cache to rtol 2e-3 / atol 2e-3 (float16 has an 11-bit mantissa: relative step 4.9e-4).
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from dermlearn.data.images import read_image
from dermlearn.data.manifest import COLUMNS, Manifest
from dermlearn.errors import DermlearnError, ImageDecodeError
from dermlearn.models import PreprocessConfig, create_backbone, preprocess
from dermlearn.models.lesion_classifier import LesionClassifier
from dermlearn.taxonomy import Taxonomy
from dermlearn.training.features import (
    ABSENT_CLASS_BIAS,
    FeatureCache,
    FeatureCacheError,
    FeaturesError,
    build_head,
    cross_validate_features,
    extract_features,
    fit_logreg,
    fit_logreg_head,
    fit_mlp_head,
    head_config,
    head_to_classifier,
    logreg_to_linear,
    predict_proba,
)

SMALL = PreprocessConfig(input_size=(3, 64, 64))  # fast: the cache logic does not care about size
F32_TOL = dict(rtol=1e-4, atol=1e-4)
F16_TOL = dict(rtol=2e-3, atol=2e-3)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small CPU work runs fastest on one thread, and 10-40x faster when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backbone() -> nn.Module:
    return create_backbone("efficientnet_lite0", weights="bundled", num_classes=0)


class Probe(nn.Module):
    """Counts the images the backbone sees; raises after ``fail_after`` batches (a simulated kill)."""

    def __init__(self, inner: nn.Module, fail_after: int | None = None):
        super().__init__()
        self.inner = inner
        self.fail_after = fail_after
        self.batches = 0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated kill")
        self.batches += 1
        self.images += x.shape[0]
        return self.inner(x)


def _write_image(path: Path, seed: int, size=(48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = (base + 60 * np.sin(xx[..., None] / (3 + seed % 5)) + rng.normal(0, 20, (h, w, 3)))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _manifest(paths, labels=None) -> Manifest:
    labels = labels or ["a"] * len(paths)
    rows = [{"image_id": f"IMG{i:03d}", "path": str(p), "label": lab, "lesion_id": f"L{i:03d}",
             "patient_id": None, "age": None, "sex": None, "site": None, "label_source": "test",
             "label_raw": lab, "source_row": f"test:{i}"} for i, (p, lab) in enumerate(zip(paths, labels))]
    return Manifest(pd.DataFrame(rows, columns=list(COLUMNS)), taxonomy=Taxonomy.flat(sorted(set(labels))),
                    source="test", format="csv")


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    return [_write_image(folder / f"img{i:02d}.jpg", i) for i in range(10)]


def _direct(model: nn.Module, paths, cfg: PreprocessConfig) -> np.ndarray:
    with torch.inference_mode():
        return model(preprocess([read_image(p) for p in paths], cfg)).numpy()


def _extract(manifest, model, cache, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "progress": False, **kw}
    return extract_features(manifest, model, SMALL, cache=cache, **kw)


# --------------------------------------------------------------------------- cache


def test_second_extraction_computes_nothing_and_matches_direct(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    manifest = _manifest(images)
    probe = Probe(backbone)
    stats: dict = {}
    first = _extract(manifest, probe, cache, stats=stats)
    assert probe.images == 10 and stats["extracted"] == 10 and stats["cached"] == 0
    assert first.shape == (10, 1280) and first.dtype == np.float32

    probe.images = 0
    second = _extract(manifest, probe, cache, stats=stats)
    assert probe.images == 0 and stats == {**stats, "extracted": 0, "cached": 10}
    np.testing.assert_array_equal(first, second)

    direct = _direct(backbone, images, SMALL)
    assert np.abs(first - direct).max() < 1e-4
    np.testing.assert_allclose(first, direct, **F32_TOL)

    # manifest order is kept, whatever order the cache holds the rows in
    reordered = _extract(_manifest(images[::-1]), probe, cache)
    assert probe.images == 0
    np.testing.assert_array_equal(reordered, first[::-1])

    # layout: root/<model_key>/meta.json + shards/*.npz
    (key,) = cache.model_keys()
    assert key == stats["model_key"]
    meta = cache.meta(key)
    assert meta["model"]["arch"] == "efficientnet_lite0"
    assert "bundled" in meta["model"]["weights"] and meta["preprocess"] == SMALL.to_dict()
    assert len(list((tmp_path / "cache" / key / "shards").glob("*.npz"))) >= 1
    assert cache.entries(key) == 10


def test_without_cache_and_lesion_classifier(backbone, images):
    manifest = _manifest(images[:3])
    plain = _extract(manifest, backbone, None, channels_last=False)
    clf = LesionClassifier(backbone, 3)
    np.testing.assert_allclose(_extract(manifest, clf, None), plain, **F32_TOL)
    assert _extract([str(p) for p in images[:3]], backbone, None).shape == (3, 1280)  # plain paths


def test_model_mode_and_memory_format_restored(backbone, images):
    model = copy.deepcopy(backbone).train()
    model.bn1.eval()
    _extract(_manifest(images[:2]), model, None, channels_last=True)
    assert model.training and model.blocks.training and not model.bn1.training
    assert model.conv_stem.weight.is_contiguous()
    probe = Probe(backbone)  # a wrapper in training mode around a model in eval mode
    _extract(_manifest(images[:2]), probe, None)
    assert probe.training and not backbone.training


def test_float16_cache(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache", dtype="float16")
    manifest = _manifest(images[:4])
    fresh = _extract(manifest, backbone, cache)
    again = _extract(manifest, backbone, cache)
    np.testing.assert_array_equal(fresh, again)  # a fresh run already returns the stored values
    np.testing.assert_allclose(fresh, _direct(backbone, images[:4], SMALL), **F16_TOL)


def test_touched_or_replaced_image_is_reextracted_alone(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    manifest = _manifest(images)
    probe = Probe(backbone)
    before = _extract(manifest, probe, cache)

    st = images[3].stat()
    os.utime(images[3], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch
    probe.images = 0
    after_touch = _extract(manifest, probe, cache)
    assert probe.images == 1
    np.testing.assert_allclose(after_touch, before, **F32_TOL)

    _write_image(images[7], seed=1234, size=(60, 44))  # replaced by another picture
    probe.images = 0
    after_replace = _extract(manifest, probe, cache)
    assert probe.images == 1
    np.testing.assert_allclose(after_replace[7], _direct(backbone, [images[7]], SMALL)[0], **F32_TOL)
    assert not np.allclose(after_replace[7], before[7], atol=1e-2)
    others = [i for i in range(10) if i != 7]
    np.testing.assert_array_equal(after_replace[others], after_touch[others])


def test_duplicate_files_are_computed_once(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    probe = Probe(backbone)
    feats = _extract(_manifest([images[0], images[1], images[0]]), probe, cache)
    assert probe.images == 2
    np.testing.assert_array_equal(feats[0], feats[2])


def test_model_key_depends_on_preprocessing_weights_views(backbone, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = cache.model_key(backbone, SMALL)
    assert key == cache.model_key(backbone, SMALL.to_dict())  # stable, dict accepted
    assert key == cache.model_key(LesionClassifier(backbone, 3), SMALL)  # head does not matter
    rebuilt = create_backbone("efficientnet_lite0", weights="bundled", num_classes=0)
    assert key == cache.model_key(rebuilt, SMALL)  # same weights in another instance

    assert key != cache.model_key(backbone, PreprocessConfig(input_size=(3, 64, 64), crop_pct=1.0))
    assert key != cache.model_key(backbone, PreprocessConfig(input_size=(3, 64, 64),
                                                             mean=(0.485, 0.456, 0.406)))
    assert key != cache.model_key(backbone, SMALL, views=("identity", "hflip"))

    changed = copy.deepcopy(backbone)
    with torch.no_grad():
        changed.conv_head.weight[0, 0] += 0.01  # e.g. fine-tuned in memory
    assert key != cache.model_key(changed, SMALL)

    from safetensors.torch import save_file  # the same weights from a file: a content hash
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in changed.state_dict().items()}, str(weights))
    from_file = create_backbone("efficientnet_lite0", weights=str(weights), num_classes=0)
    assert cache.model_key(from_file, SMALL) == cache.model_key(changed, SMALL)
    assert cache.describe(from_file, SMALL)["model"]["weights"] == str(weights)


def test_random_weights_are_not_cached(images, tmp_path, caplog):
    random = create_backbone("efficientnet_lite0", weights="none", num_classes=0)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(FeatureCacheError, match="random") as err:
        cache.model_key(random, SMALL)
    assert isinstance(err.value, DermlearnError) and "never be read again" in str(err.value)
    with caplog.at_level("WARNING", logger="dermlearn.training.features"):
        feats = _extract(_manifest(images[:2]), random, cache)  # extracted, not cached
    assert feats.shape == (2, 1280) and "randomly initialised" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_loaded_model_is_cached_not_taken_for_random(backbone, images, tmp_path, caplog):
    from dermlearn.models.lesion_classifier import LesionClassifier, load_model, save_model
    model = LesionClassifier(copy.deepcopy(backbone), 2)
    save_model(model, tmp_path / "model", {"backbone": "efficientnet_lite0", "classes": ["a", "b"]})
    loaded, _ = load_model(tmp_path / "model")  # built with random weights, then loaded
    cache = FeatureCache(tmp_path / "cache")
    with caplog.at_level("WARNING", logger="dermlearn.training.features"):
        feats = _extract(_manifest(images[:2]), loaded, cache)
    assert "randomly initialised" not in caplog.text
    assert cache.model_key(loaded, SMALL) == cache.model_key(backbone, SMALL)  # same weights
    assert np.allclose(feats, _extract(_manifest(images[:2]), backbone, cache))


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMLEARN_FEATURE_CACHE", str(tmp_path / "here"))
    assert FeatureCache.default().root == tmp_path / "here"
    monkeypatch.delenv("DERMLEARN_FEATURE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert FeatureCache.default(dtype="float16").root == tmp_path / "xdg" / "dermlearn" / "features"


def test_killed_extraction_keeps_finished_shards(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache", shard_size=2)
    manifest = _manifest(images)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _extract(manifest, Probe(backbone, fail_after=2), cache, batch_size=2)
    (key,) = cache.model_keys()
    assert cache.entries(key) == 4  # two finished batches of 2

    # leftovers of a hard kill (a half-written temp file) and a damaged shard are ignored
    shards = sorted((tmp_path / "cache" / key / "shards").glob("*.npz"))
    (shards[0].parent / ".half-written.npz.tmp").write_bytes(b"PK\x03\x04 truncated")
    shards[0].write_bytes(shards[0].read_bytes()[:50])
    probe = Probe(backbone)
    feats = _extract(manifest, probe, cache, batch_size=2)
    assert probe.images == 8  # 10 - 4 finished + 2 from the damaged shard
    np.testing.assert_allclose(feats, _direct(backbone, images, SMALL), **F32_TOL)
    probe.images = 0
    _extract(manifest, probe, cache)
    assert probe.images == 0
    assert cache.compact(key) == 10 and cache.entries(key) == 10


def test_unreadable_image_names_the_file_and_keeps_the_rest(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache", shard_size=1000)
    images[6].write_bytes(images[6].read_bytes()[:200])  # truncated JPEG
    manifest = _manifest(images)
    with pytest.raises(ImageDecodeError, match="img06.jpg"):
        _extract(manifest, backbone, cache, batch_size=2, num_workers=2)  # worker processes
    (key,) = cache.model_keys()
    assert cache.entries(key) == 6  # batches before the bad one were kept


def test_bad_inputs(backbone, images, tmp_path):
    with pytest.raises(DermlearnError, match="classifier"):
        _extract(_manifest(images[:1]), create_backbone("efficientnet_lite0", weights="bundled",
                                                        num_classes=5), None)
    with pytest.raises(ImageDecodeError, match="not found"):
        _extract(_manifest([tmp_path / "missing.jpg"]), backbone, FeatureCache(tmp_path / "c"))
    with pytest.raises(FeaturesError, match="unknown view"):
        _extract(_manifest(images[:1]), backbone, None, views=("twirl",))


# --------------------------------------------------------------------------- heads


def _toy(n=150, d=20, classes=3, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(0, sep, size=(classes, d))
    X = centres[y] + rng.normal(0, 1.0, size=(n, d)) * rng.uniform(0.5, 4, size=d) + 5.0
    return X.astype(np.float32), y


def _logits(head: nn.Module, X) -> np.ndarray:
    with torch.no_grad():
        return head.eval()(torch.as_tensor(X)).double().numpy()


@pytest.mark.parametrize("class_weight", ["balanced", None])
def test_logreg_head_folds_scaler_exactly(class_weight):
    X, y = _toy(sep=0.7)
    scaler, clf = fit_logreg(X, y, class_weight=class_weight, C=0.5)
    Z = scaler.transform(X.astype(np.float64))
    linear = logreg_to_linear(scaler, clf, 3)
    np.testing.assert_allclose(_logits(linear, X), clf.decision_function(Z), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(predict_proba(linear, X), clf.predict_proba(Z), atol=1e-5)
    head = fit_logreg_head(X, y, 3, class_weight=class_weight, C=0.5)
    np.testing.assert_allclose(_logits(head, X), clf.decision_function(Z), atol=1e-4, rtol=1e-4)


def test_logreg_head_binary_and_absent_classes():
    X, y3 = _toy(sep=0.7)
    keep = y3 != 1
    X, y = X[keep], np.where(y3[keep] == 2, 3, 0)  # classes 0 and 3 of 5; 1, 2, 4 absent
    scaler, clf = fit_logreg(X, y)
    Z = scaler.transform(X.astype(np.float64))
    head = fit_logreg_head(X, y, 5)
    logits = _logits(head, X)
    assert logits.shape == (len(X), 5)
    np.testing.assert_allclose(logits[:, 3] - logits[:, 0], clf.decision_function(Z), atol=1e-4, rtol=1e-4)
    probs = predict_proba(head, X)
    np.testing.assert_allclose(probs[:, [0, 3]], clf.predict_proba(Z), atol=1e-5)
    assert probs[:, [1, 2, 4]].max() < 1e-30
    np.testing.assert_array_equal(head.bias.detach().numpy()[[1, 2, 4]], ABSENT_CLASS_BIAS)

    multi = fit_logreg_head(*_toy(classes=3), 4)  # 3 present of 4
    assert predict_proba(multi, _toy()[0])[:, 3].max() < 1e-30
    single = fit_logreg_head(X[:5], np.full(5, 2), 4)  # one class seen: always that class
    assert (predict_proba(single, X).argmax(1) == 2).all()


def test_mlp_head_learns_separable_problem_deterministically():
    X, y = _toy(n=300, classes=3, sep=8.0, seed=1)
    Xtest, ytest = _toy(n=90, classes=3, sep=8.0, seed=1)  # same centres (same seed)
    Xtest = Xtest + np.random.default_rng(7).normal(0, 1.0, Xtest.shape).astype(np.float32)
    state = torch.get_rng_state()
    head = fit_mlp_head(X, y, 4, epochs=60, hidden=32)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched
    assert isinstance(head, nn.Sequential) and not head.training
    assert (predict_proba(head, X).argmax(1) == y).mean() == 1.0
    assert (predict_proba(head, Xtest).argmax(1) == ytest).mean() >= 0.95
    assert predict_proba(head, X)[:, 3].max() < 1e-30  # class 3 absent
    again = fit_mlp_head(X, y, 4, epochs=60, hidden=32)
    for a, b in zip(head.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_head_to_classifier_equals_head_on_backbone(backbone, images):
    batch = preprocess([read_image(p) for p in images[:3]], SMALL)
    with torch.inference_mode():
        feats = backbone(batch)
    X, y = _toy(n=60, d=1280, classes=3)
    for head in (fit_logreg_head(X, y, 3), fit_mlp_head(X, y, 3, epochs=5, hidden=16)):
        model = head_to_classifier(backbone, head, 3)
        assert isinstance(model, LesionClassifier) and not model.training
        with torch.inference_mode():
            np.testing.assert_allclose(model(batch).numpy(), head(feats).numpy(), rtol=1e-5, atol=1e-5)
        rebuilt = build_head(json.loads(json.dumps(head_config(head))), 1280, 3)  # for load_model
        rebuilt.load_state_dict(model.head.state_dict(), strict=True)
    with pytest.raises(DermlearnError, match="1280 features"):
        head_to_classifier(backbone, nn.Linear(10, 3), 3)


def test_cross_validate_features_is_out_of_fold():
    X, y = _toy(n=120, sep=1.0)
    folds = np.array([str(i % 4) for i in range(120)], dtype=object)
    folds[:12] = "test"
    oof, heads = cross_validate_features(X, y, folds, 3, head="logreg", C=0.3)
    assert len(heads) == 4 and oof.shape == (120, 3)
    assert np.isnan(oof[:12]).all() and np.allclose(oof[12:].sum(1), 1, atol=1e-5)
    train = (folds != "2") & (folds != "test")
    expected = fit_logreg_head(X[train], y[train], 3, C=0.3)
    np.testing.assert_allclose(oof[folds == "2"], predict_proba(expected, X[folds == "2"]), atol=1e-6)
    oof_mlp, _ = cross_validate_features(X, y, folds, 3, head="mlp", epochs=5)
    assert not np.isnan(oof_mlp[12:]).any()
    with pytest.raises(FeaturesError, match="head"):
        cross_validate_features(X, y, folds, 3, head="forest")
    with pytest.raises(FeaturesError, match="outside"):
        fit_logreg_head(X, y + 5, 3)


# --------------------------------------------------------------------------- real data


def test_ph2_melanoma_auc_with_cached_features(ph2_dir, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from dermlearn.data import load
    from dermlearn.splits import make_splits

    manifest = load(ph2_dir)
    model = create_backbone("efficientnet_lite0", weights="bundled", num_classes=0)
    cfg = PreprocessConfig.from_model(model)
    cache = FeatureCache(tmp_path / "features")

    start = time.perf_counter()
    X = extract_features(manifest, model, cfg, cache=cache, progress=False, num_threads=1)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    X_again = extract_features(manifest, model, cfg, cache=cache, progress=False)
    reload_s = time.perf_counter() - start
    np.testing.assert_array_equal(X, X_again)

    classes = manifest.classes
    y = np.array([classes.index(label) for label in manifest.labels])
    mel = classes.index("mel")
    folds = make_splits(manifest, 5, seed=0)["fold"].to_numpy()
    results = {}
    for head, kw in (("logreg", {}), ("mlp", {"epochs": 50})):
        start = time.perf_counter()
        oof, heads = cross_validate_features(X, y, folds, len(classes), head=head, **kw)
        results[head] = (roc_auc_score(y == mel, oof[:, mel]), time.perf_counter() - start)
        assert len(heads) == 5
    cv_s = results["logreg"][1]
    speedup = (5 * extract_s + cv_s) / (reload_s + cv_s)  # re-extract per fold vs cached
    with capsys.disabled():
        print(f"\nPH2 5-fold lesion-grouped CV, melanoma vs rest ROC AUC: "
              f"logreg {results['logreg'][0]:.4f}, mlp {results['mlp'][0]:.4f}; extraction "
              f"{extract_s:.1f} s ({len(X) / extract_s:.1f} img/s), cached reload {reload_s:.2f} s, "
              f"5-fold CV logreg {cv_s:.2f} s / mlp {results['mlp'][1]:.2f} s; "
              f"speed-up vs re-extracting per fold {speedup:.1f}x")
    assert results["logreg"][0] >= 0.85
    assert speedup >= 4

"""The decoded-image cache of training (dermlearn.training.image_cache)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dermlearn.data.dataset import ImageDataset
from dermlearn.errors import ImageDecodeError
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.training.augment import train_transform
from dermlearn.training.image_cache import ImageCache, cache_side
from dermlearn.training.recipes import get_recipe


def _photo(path, w=300, h=200, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_miss_then_hit_resized_and_rgb(tmp_path):
    src = _photo(tmp_path / "a.jpg")
    cache = ImageCache(tmp_path / "cache", side=100)
    first = cache.get(src)
    assert (cache.misses, cache.hits) == (1, 0)
    assert first.mode == "RGB" and first.size == (150, 100)
    again = cache.get(src)
    assert (cache.misses, cache.hits) == (1, 1)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert cache.entries() == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave no temp files


def test_small_images_are_not_upscaled(tmp_path):
    src = _photo(tmp_path / "small.png", 40, 30)
    assert ImageCache(tmp_path / "c", side=100).get(src).size == (40, 30)


def test_changed_file_invalidates(tmp_path):
    src = _photo(tmp_path / "a.jpg", seed=0)
    cache = ImageCache(tmp_path / "cache", side=100)
    before = np.asarray(cache.get(src)).copy()
    _photo(src, seed=1)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = np.asarray(cache.get(src))
    assert cache.misses == 2 and not np.array_equal(before, after)


def test_damaged_entry_is_rebuilt(tmp_path):
    src = _photo(tmp_path / "a.jpg")
    cache = ImageCache(tmp_path / "cache", side=100)
    cache.get(src)
    cache.file(cache.key(src)).write_bytes(b"garbage")
    assert cache.get(src).size == (150, 100) and cache.misses == 2


def test_corrupt_or_missing_source_raises_decode_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cache = ImageCache(tmp_path / "cache", side=100)
    with pytest.raises(ImageDecodeError) as info:
        cache.get(bad)
    assert "bad.jpg" in str(info.value)
    with pytest.raises(ImageDecodeError, match="gone.jpg"):
        cache.get(tmp_path / "gone.jpg")
    assert cache.entries() == 0


def test_dataset_uses_cache_and_augments_after_it(tmp_path):
    paths = [str(_photo(tmp_path / f"{i}.jpg", seed=i)) for i in range(3)]
    cfg = PreprocessConfig(input_size=(3, 64, 64))
    cache = ImageCache(tmp_path / "cache", side=cache_side(64, cfg.crop_pct))
    ds = ImageDataset(paths, train_transform("default", cfg), targets=[0, 1, 0],
                      image_cache=cache)
    a = ds[(0, 1)].image
    b = ds[(0, 2)].image
    assert a.shape == (3, 64, 64) and not torch.equal(a, b)  # different augmentation seeds
    assert torch.equal(ds[(0, 1)][0], a)  # same seed, from the cache: same sample
    assert cache.misses == 1 and cache.hits == 2


def test_cached_source_keeps_eval_geometry_within_tolerance(tmp_path):
    """The cache is used for training images only; even so, the eval transform of a cached copy
    equals that of the original (the cached resize is the eval transform's own first step)."""
    cfg = PreprocessConfig(input_size=(3, 64, 64))
    cache = ImageCache(tmp_path / "cache", side=cache_side(64, cfg.crop_pct))
    for w, h in ((300, 200), (201, 333), (640, 480)):
        _check_eval_equal(tmp_path / f"{w}x{h}.png", w, h, cache, cfg)


def _check_eval_equal(src, w, h, cache, cfg):
    _photo(src, w, h)
    transform = eval_transform(cfg)
    direct = transform(Image.open(src).convert("RGB"))
    via_cache = transform(cache.get(src))
    assert via_cache.shape == direct.shape
    assert torch.equal(via_cache, direct)


def test_recipe_field_default_on():
    assert get_recipe("default").image_cache is True
    assert get_recipe("default", image_cache=False).image_cache is False


def test_training_with_cache_on_tiny_data(tmp_path, monkeypatch):
    from dermlearn.data.synthetic import make_synthetic_dataset
    from dermlearn.training.run import train

    monkeypatch.setenv("DERMLEARN_IMAGE_CACHE", str(tmp_path / "imgcache"))
    data = tmp_path / "data"
    make_synthetic_dataset(data, n_lesions_per_class=4, images_per_lesion=(1, 2),
                           classes=("mel", "nv"), size=96, seed=1)
    metrics = train(data, tmp_path / "run", overrides=dict(
        image_size=64, batch_size=8, num_workers=0, epochs=2, image_cache=True),
        progress=False)
    assert metrics["n_train_images"] > 0
    assert len(list((tmp_path / "imgcache").rglob("*.npy"))) > 0

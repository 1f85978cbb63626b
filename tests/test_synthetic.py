"""Tests for dermlearn.data.synthetic: determinism, layout, lesion grouping, learnability."""
from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermlearn.data.synthetic import (
    DEFAULT_CLASSES,
    MANIFEST_COLUMNS,
    SYNTHETIC_CLASSES,
    make_synthetic_dataset,
    render_lesion,
)


# --------------------------------------------------------------------------------------
# helpers: image-only features (no access to the generator's masks)
# --------------------------------------------------------------------------------------
def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    for _ in range(k):
        e = mask.copy()
        e[1:] &= mask[:-1]
        e[:-1] &= mask[1:]
        e[:, 1:] &= mask[:, :-1]
        e[:, :-1] &= mask[:, 1:]
        mask = e
    return mask


def _features(img: Image.Image) -> np.ndarray:
    """Colour/shape statistics of the lesion, found as pixels unlike the surrounding skin.

    Returns [area fraction, mean R, G, B relative to skin, dark fraction, bluish fraction,
    luminance std].
    """
    a = np.asarray(img, dtype=np.float32) / 255.0
    S = a.shape[0]
    yy, xx = np.mgrid[:S, :S]
    r = np.hypot(xx - (S - 1) / 2, yy - (S - 1) / 2) / S
    disk = r < 0.47                                   # inside the dermoscope's field of view
    skin = np.median(a[(r > 0.41) & disk], axis=0)    # the rim of the field is mostly skin
    rel = a / skin
    mask = disk & (np.abs(rel - 1.0).max(axis=2) > 0.12)
    mask = ~_erode(~_erode(mask, 2), 2)               # opening: drops thin hairs
    if mask.sum() < 20:
        mask = disk & (r < 0.1)
    px = rel[mask]
    lum = px.mean(axis=1)
    return np.array([mask.sum() / disk.sum(), *px.mean(axis=0), (lum < 0.5).mean(),
                     (px[:, 2] > px[:, 0]).mean(), lum.std()])


def _nearest_centroid_accuracy(classes, n_train: int, n_test: int, seed: int, size: int = 128) -> float:
    """Fit class centroids of standardised features on fresh lesions; score on other lesions."""
    r_train, r_test = np.random.default_rng(seed), np.random.default_rng(seed + 1)

    def feats(c, rng, n):
        return [_features(render_lesion(c, rng, size)) for _ in range(n)]

    x_train = np.array([feats(c, r_train, n_train) for c in classes])    # (C, n, F)
    x_test = np.array([feats(c, r_test, n_test) for c in classes])
    flat = x_train.reshape(-1, x_train.shape[-1])
    mu, sd = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    centroids = ((x_train - mu) / sd).mean(axis=1)                     # (C, F)
    z = (x_test - mu) / sd                                             # (C, n, F)
    dist = ((z[:, :, None, :] - centroids[None, None]) ** 2).sum(-1)   # (C, n, C)
    pred = dist.argmin(axis=-1)
    return float((pred == np.arange(len(classes))[:, None]).mean())


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


# --------------------------------------------------------------------------------------
# render_lesion
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", SYNTHETIC_CLASSES)
def test_render_is_deterministic(label):
    a = np.asarray(render_lesion(label, np.random.default_rng(7)))
    b = np.asarray(render_lesion(label, np.random.default_rng(7)))
    c = np.asarray(render_lesion(label, np.random.default_rng(8)))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 2.0


@pytest.mark.parametrize("size", [224, 97])
def test_render_shape_mode_and_vignette(size):
    rng = np.random.default_rng(0)
    for label in SYNTHETIC_CLASSES:
        img = render_lesion(label, rng, size=size)
        assert isinstance(img, Image.Image)
        assert img.mode == "RGB" and img.size == (size, size)
        a = np.asarray(img, dtype=np.float32)
        assert a.std() > 5.0                                       # not a flat image
        corners = np.stack([a[:3, :3], a[:3, -3:], a[-3:, :3], a[-3:, -3:]])
        assert corners.mean() < 40.0                               # dark dermoscope corners
        assert a[size // 3: 2 * size // 3, size // 3: 2 * size // 3].mean() > 60.0


def test_unknown_label_names_label_and_supported():
    with pytest.raises(ValueError, match=r"'melanoma'.*mel.*nv"):
        render_lesion("melanoma", np.random.default_rng(0))


# --------------------------------------------------------------------------------------
# make_synthetic_dataset
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("syn")
    return make_synthetic_dataset(dest, n_lesions_per_class=4, images_per_lesion=(1, 3), size=64, seed=3)


def test_dataset_layout_and_manifest(small_dataset):
    dest = small_dataset.parent
    assert small_dataset == dest / "manifest.csv"
    readme = (dest / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "not real patients".upper() in readme.upper()
    assert "clinical" in readme

    rows = _read_manifest(small_dataset)
    assert {r["label"] for r in rows} == set(DEFAULT_CLASSES)
    assert len({r["lesion_id"] for r in rows}) == 4 * len(DEFAULT_CLASSES)
    ids = [r["image_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for row in rows:
        assert re.fullmatch(r"SYN_\d{7}", row["image_id"])
        assert re.fullmatch(r"SYNL_\d{5}", row["lesion_id"])
        assert re.fullmatch(r"SYNP_\d{5}", row["patient_id"])
        assert row["path"] == f"images/{row['image_id']}.jpg"      # relative to the CSV's folder
        assert row["label_source"] == "synthetic"
        assert row["sex"] in ("male", "female")
        assert 5 <= int(row["age"]) <= 90 and int(row["age"]) % 5 == 0
        assert row["site"] and row["site"] == row["site"].lower()
        with Image.open(dest / row["path"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
    on_disk = sorted(p.name for p in (dest / "images").iterdir())
    assert on_disk == sorted(f"{i}.jpg" for i in ids)


def test_lesions_have_one_label_and_patients_group_one_or_two(small_dataset):
    rows = _read_manifest(small_dataset)
    by_lesion = defaultdict(list)
    for row in rows:
        by_lesion[row["lesion_id"]].append(row)
    lesions_of_patient = defaultdict(set)
    for lesion_id, group in by_lesion.items():
        assert 1 <= len(group) <= 3
        for key in ("label", "patient_id", "age", "sex", "site"):
            assert len({r[key] for r in group}) == 1, (lesion_id, key)
        lesions_of_patient[group[0]["patient_id"]].add(lesion_id)
    assert {len(v) for v in lesions_of_patient.values()} <= {1, 2}
    for patient in lesions_of_patient:
        prow = [r for r in rows if r["patient_id"] == patient]
        assert len({(r["age"], r["sex"]) for r in prow}) == 1


def test_dataset_is_byte_deterministic(tmp_path):
    kw = dict(n_lesions_per_class={"mel": 2, "bcc": 1}, classes=("mel", "bcc"), size=48)
    a = make_synthetic_dataset(tmp_path / "a", seed=11, **kw).parent
    b = make_synthetic_dataset(tmp_path / "b", seed=11, **kw).parent
    c = make_synthetic_dataset(tmp_path / "c", seed=12, **kw).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    first = _read_manifest(a / "manifest.csv")[0]["path"]
    assert (a / first).read_bytes() != (c / first).read_bytes()


def test_rerun_overwrites_manifest_and_removes_only_stale_images(tmp_path):
    make_synthetic_dataset(tmp_path, n_lesions_per_class=3, classes=("nv",), size=32, seed=0)
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "images" / "mine.jpg").write_bytes(b"not ours")
    manifest = make_synthetic_dataset(tmp_path, n_lesions_per_class=1, images_per_lesion=(1, 1),
                                      classes=("nv",), size=32, seed=0)
    rows = _read_manifest(manifest)
    assert len(rows) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["SYN_0000001.jpg", "mine.jpg"]


def test_counts_mapping_and_argument_errors(tmp_path):
    manifest = make_synthetic_dataset(tmp_path, n_lesions_per_class={"vasc": 2, "df": 0},
                                      images_per_lesion=(2, 2), classes=("vasc", "df"), size=32)
    rows = _read_manifest(manifest)
    assert [r["label"] for r in rows] == ["vasc"] * 4
    with pytest.raises(ValueError, match="df"):
        make_synthetic_dataset(tmp_path, n_lesions_per_class={"vasc": 2}, classes=("vasc", "df"))
    with pytest.raises(ValueError, match="images_per_lesion"):
        make_synthetic_dataset(tmp_path, images_per_lesion=(3, 1))
    with pytest.raises(ValueError, match="'sk'"):
        make_synthetic_dataset(tmp_path, classes=("mel", "sk"))


def test_images_of_a_lesion_resemble_each_other(tmp_path):
    manifest = make_synthetic_dataset(tmp_path, n_lesions_per_class=5, images_per_lesion=(2, 2),
                                      classes=("mel", "nv"), size=128, seed=5)
    rows = _read_manifest(manifest)
    feats = {r["image_id"]: _features(Image.open(tmp_path / r["path"]).convert("RGB")) for r in rows}
    x = np.array(list(feats.values()))
    z = {k: (v - x.mean(0)) / (x.std(0) + 1e-6) for k, v in feats.items()}
    same, other = [], []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["label"] != b["label"]:
                continue
            d = float(np.linalg.norm(z[a["image_id"]] - z[b["image_id"]]))
            (same if a["lesion_id"] == b["lesion_id"] else other).append(d)
    assert np.mean(same) < 0.6 * np.mean(other)


# --------------------------------------------------------------------------------------
# learnability: simple statistics separate the classes well above chance
# --------------------------------------------------------------------------------------
def test_default_classes_separable_by_nearest_centroid():
    acc = _nearest_centroid_accuracy(DEFAULT_CLASSES, n_train=10, n_test=8, seed=0)
    assert acc >= 0.7, f"nearest-centroid accuracy {acc:.2f} on 4 classes (chance 0.25)"


def test_all_classes_separable_by_nearest_centroid():
    acc = _nearest_centroid_accuracy(SYNTHETIC_CLASSES, n_train=7, n_test=5, seed=0)
    assert acc >= 0.45, f"nearest-centroid accuracy {acc:.2f} on 7 classes (chance 0.14)"

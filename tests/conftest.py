"""Shared fixtures: paths to the real data beside the checkout, and tiny datasets in each layout."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
BAD = Path(__file__).parent / "data" / "bad"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def ham10000_dir() -> Path:
    return _require(SHARED_DATA / "ham10000")


@pytest.fixture(scope="session")
def ph2_dir() -> Path:
    return _require(SHARED_DATA / "ph2")


@pytest.fixture()
def good_jpeg() -> bytes:
    return (BAD / "good.jpg").read_bytes()


def write_images(folder: Path, names, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(data)


@pytest.fixture()
def copy_bad(tmp_path):
    """Copy a file of the broken-input corpus into tmp_path under a given name."""
    def _copy(name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BAD / name, dest)
        return dest
    return _copy


@pytest.fixture(autouse=True, scope="session")
def _private_image_cache(tmp_path_factory):
    """Training runs in tests keep their decoded-image cache out of ~/.cache."""
    import os

    old = os.environ.get("DERMLEARN_IMAGE_CACHE")
    os.environ["DERMLEARN_IMAGE_CACHE"] = str(tmp_path_factory.mktemp("image-cache"))
    yield
    if old is None:
        os.environ.pop("DERMLEARN_IMAGE_CACHE", None)
    else:
        os.environ["DERMLEARN_IMAGE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (mel, nv, bkl; 6 lesions each, 1-2 images per lesion)."""
    from dermlearn.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_dataset(root, n_lesions_per_class=6, images_per_lesion=(1, 2),
                           classes=("mel", "nv", "bkl"), size=96, seed=1)
    return root


@pytest.fixture(scope="session")
def ood_model_dir(tmp_path_factory) -> Path:
    """A tiny 64 px model with OOD statistics fitted on synthetic lesion images (the serving
    limit and start-up tests share it)."""
    from serving_fixtures import fit_synthetic_ood, make_tiny_model

    return fit_synthetic_ood(make_tiny_model(tmp_path_factory.mktemp("ood-model") / "model",
                                             image_size=64))


@pytest.fixture(scope="session")
def corrupt_ood_dir(ood_model_dir, tmp_path_factory) -> Path:
    """The same model after ``truncate -s 1000 MODEL/ood.safetensors``."""
    from serving_fixtures import corrupt_ood_copy

    return corrupt_ood_copy(ood_model_dir, tmp_path_factory.mktemp("corrupt-ood") / "model")

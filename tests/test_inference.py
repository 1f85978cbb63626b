"""dermlearn.inference and the front door: the defects issue 20 found where the scoring copies
disagreed, each tried as a user meets it (the CLI and the Python API)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dermlearn
from dermlearn.cli import main
from dermlearn.data.synthetic import make_synthetic_dataset
from dermlearn.errors import DermlearnError, TaxonomyError

TINY = dict(image_size=64, batch_size=8, num_workers=0, epochs=1)
BAD = Path(__file__).parent / "data" / "bad"


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    """A run trained through the front door with a Manifest and a split table."""
    out = tmp_path_factory.mktemp("api") / "run"
    manifest = dermlearn.load(tiny_data)
    splits = dermlearn.make_splits(manifest, 5, group="lesion", seed=0)
    dermlearn.train(manifest, out, splits=splits, overrides=TINY, progress=False)
    return out


# -- defect 6: the Python API takes what it gives ------------------------------------------------
def test_front_door_trains_on_a_manifest_and_a_split_table(run, tiny_data):
    splits = pd.read_csv(run / "splits.csv")
    val = pd.read_csv(run / "val_predictions.csv")
    assert set(val["image"]) == set(splits.loc[splits["fold"] == 0, "image_id"])
    assert val["fold"].unique().tolist() == [0]
    # The run resumes from its own copy of the Manifest's images.
    assert (run / "data.csv").is_file()
    assert dermlearn.train(out=run, resume=True, progress=False)["n"] == len(val)


def test_front_door_refuses_what_it_cannot_use(tmp_path, tiny_data):
    with pytest.raises(DermlearnError, match="data must be a dataset path .* or a Manifest"):
        dermlearn.train({"path": str(tiny_data)}, tmp_path / "r", overrides=TINY)
    with pytest.raises(DermlearnError, match="splits must be a split CSV path or a DataFrame"):
        dermlearn.train(tiny_data, tmp_path / "r", splits=[0, 1], overrides=TINY)
    manifest = dermlearn.load(tiny_data)
    bad = dermlearn.make_splits(manifest, 3).iloc[1:]
    with pytest.raises(DermlearnError, match="have no row"):
        dermlearn.train(manifest, tmp_path / "r", splits=bad, overrides=TINY)
    assert not (tmp_path / "r" / "run.json").exists()


def test_predict_takes_a_manifest_with_its_ids(run, tiny_data):
    manifest = dermlearn.load(tiny_data)
    part = manifest.subset(np.arange(5))
    table = dermlearn.predict(run, part)
    assert table["image"].tolist() == part.image_ids
    np.testing.assert_allclose(table.drop(columns="image").sum(axis=1), 1.0, atol=1e-9)


# -- defect 2: ids stay unique -------------------------------------------------------------------
def test_predict_names_clashing_files_by_their_folders(run, tmp_path, capsys):
    photos = tmp_path / "photos"
    for patient in ("patientA", "patientB"):
        (photos / patient).mkdir(parents=True)
        shutil.copyfile(BAD / "good.jpg", photos / patient / "lesion1.jpg")
    shutil.copyfile(BAD / "good.jpg", photos / "img.jpg")
    shutil.copyfile(BAD / "good.jpg", photos / "img.jpeg")
    files = [photos / "patientA" / "lesion1.jpg", photos / "patientB" / "lesion1.jpg",
             photos / "img.jpg", photos / "img.jpeg"]
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), *map(str, files), "--out", str(out), "--quiet"]) == 0
    ids = pd.read_csv(out)["image"].tolist()
    assert ids == ["patientA/lesion1", "patientB/lesion1", "img.jpg", "img.jpeg"]
    # A class-folder dataset with the same file name under two folders: two images, two ids.
    data = tmp_path / "data"
    for label, patient in (("nv", "patientA"), ("nv", "patientB"), ("mel", "patientC")):
        (data / label / patient).mkdir(parents=True)
        shutil.copyfile(BAD / "good.jpg", data / label / patient / "lesion1.jpg")
    manifest = dermlearn.load(data)
    assert sorted(manifest.image_ids) == ["mel/patientC/lesion1", "nv/patientA/lesion1",
                                          "nv/patientB/lesion1"]


# -- defects 3 and 4: one function decides which images a model may be scored on --------------
def test_embed_on_the_training_data_shows_only_unseen_images(run, tiny_data, tmp_path, capsys):
    out = tmp_path / "tsne"
    assert main(["embed", str(run / "model"), str(tiny_data), "--out", str(out),
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    n_val = len(pd.read_csv(run / "val_predictions.csv"))
    assert len(pd.read_csv(out / "tsne.csv")) == n_val
    assert f"embedded {n_val} images: {n_val} validation" in said and "training images" in said


def test_evaluate_auto_scores_every_image_the_model_never_saw(run, tiny_data, tmp_path,
                                                              capsys):
    manifest = pd.read_csv(tiny_data / "manifest.csv")
    new = tmp_path / "new"
    make_synthetic_dataset(new, n_lesions_per_class=2, images_per_lesion=(1, 1),
                           classes=("mel", "nv"), size=96, seed=9)
    extra = pd.read_csv(new / "manifest.csv")
    extra["image_id"] = "new_" + extra["image_id"].astype(str)
    extra["lesion_id"] = "new_" + extra["lesion_id"].astype(str)
    extra["path"] = [str(new / p) for p in extra["path"]]
    manifest["path"] = [str(tiny_data / p) for p in manifest["path"]]
    both = tmp_path / "both.csv"
    pd.concat([manifest, extra]).to_csv(both, index=False)
    n_val = len(pd.read_csv(run / "val_predictions.csv"))
    assert main(["evaluate", str(run), str(both), "--out", str(tmp_path / "ev"), "--quiet",
                 "--explain", "none", "--no-embed", "--bootstrap", "10"]) == 0
    said = capsys.readouterr().out
    assert f"scored {both}" in said and f"{n_val + len(extra)} images" in said
    assert f"{len(extra)} image(s) the run never saw" in said
    scored = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert len(scored) == n_val + len(extra)
    assert main(["evaluate", str(run), str(both), "--out", str(tmp_path / "ev2"), "--part",
                 "all", "--quiet"]) == 2
    err = capsys.readouterr().err
    n_train = len(manifest) - n_val
    assert f"{n_train} of the {len(manifest) + len(extra)} images" in err
    assert "use --part auto" in err and "was trained on" not in err


# -- defect 5: labels are checked before any scoring --------------------------------------------
def test_evaluate_checks_labels_before_scoring(run, tiny_data, tmp_path, monkeypatch):
    from dermlearn.inference import Predictor

    manifest = pd.read_csv(tiny_data / "manifest.csv")
    manifest["path"] = [str(tiny_data / p) for p in manifest["path"]]
    manifest["image_id"] = "other_" + manifest["image_id"].astype(str)  # never seen by the run
    coarse = manifest.assign(label=manifest["label"].replace({"nv": "benign", "bkl": "benign"}))
    coarse.to_csv(tmp_path / "coarse.csv", index=False)
    monkeypatch.setattr(Predictor, "run_batch", lambda *a, **k: pytest.fail("scored"))
    with pytest.raises(TaxonomyError, match="'benign' .* is coarser than the training classes"):
        dermlearn.evaluate(run, tmp_path / "coarse.csv", tmp_path / "ev", progress=False)
    monkeypatch.undo()
    # A coarser label that holds one training class only names that class: it is scored.
    one = manifest.assign(label=manifest["label"].replace({"mel": "malignant_melanoma"}))
    one.to_csv(tmp_path / "one.csv", index=False)
    metrics = dermlearn.evaluate(run, tmp_path / "one.csv", tmp_path / "ev1", explain=None,
                                 embed=False, n_boot=10, progress=False)
    assert metrics["n"] == len(manifest) and metrics["per_class"]["mel"]["n"] > 0

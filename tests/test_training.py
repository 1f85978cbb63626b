"""Training end to end on tiny synthetic data: each mode and recipe, folds, resume, predict."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dermlearn.data import load
from dermlearn.data.synthetic import make_synthetic_dataset
from dermlearn.errors import DermlearnError
from dermlearn.evaluation.calibration import apply_temperature
from dermlearn.inference import Predictor, predict, score_images
from dermlearn.inference.distributed import predict_distributed
from dermlearn.models import PreprocessConfig, create_backbone
from dermlearn.taxonomy import partition
from dermlearn.training.run import RunError, train

TINY = dict(image_size=64, batch_size=8, num_workers=0, epochs=1)


def test_finetune_writes_a_complete_run(tiny_data, tmp_path):
    run = tmp_path / "run"
    metrics = train(tiny_data, run, overrides=TINY, progress=False)
    for name in ("run.json", "config.json", "splits.csv", "history.csv", "metrics.json",
                 "val_predictions.csv", "model/model.safetensors", "model/config.json"):
        assert (run / name).exists(), name
    assert 0 <= metrics["balanced_accuracy"] <= 1 and set(metrics["per_class"]) == {"nv", "bkl", "mel"}
    assert "melanoma_vs_rest" in metrics["levels"] and "auc" in metrics["levels"]["melanoma_vs_rest"]
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["classes"] == ["nv", "bkl", "mel"] and config["preprocess"]["input_size"] == [3, 64, 64]
    assert config["recipe"]["image_size"] == 64 and config["taxonomy"]["name"] == "dermatology"
    # The card's training data is what the model learned from: the validation part is not in it.
    val = pd.read_csv(run / "val_predictions.csv")
    n_all = len(pd.read_csv(tiny_data / "manifest.csv"))
    assert config["training_data"]["n_validation"] == len(val)
    assert config["training_data"]["n_images"] == n_all - len(val)
    assert sum(config["training_data"]["classes"].values()) == n_all - len(val)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0] and history["images_per_s"].iloc[0] > 0
    # Predicting the validation images again reproduces the saved validation probabilities.
    val = pd.read_csv(run / "val_predictions.csv")
    manifest = pd.read_csv(tiny_data / "manifest.csv").set_index("image_id")
    paths = [str(tiny_data / manifest.loc[i, "path"]) for i in val["image"]]
    again = predict(run / "model", paths)
    expected = apply_temperature(val[["nv", "bkl", "mel"]].to_numpy(),
                                 config.get("temperature", 1.0))
    np.testing.assert_allclose(again[["nv", "bkl", "mel"]].to_numpy(), expected, atol=1e-5)
    level = predict(run, paths[:2], level="malignant_vs_benign", tta=4)
    assert list(level.columns) == ["image", "malignant", "benign"]
    np.testing.assert_allclose(level[["malignant", "benign"]].sum(axis=1), 1.0, atol=1e-9)
    with pytest.raises(RunError, match="already holds a run"):
        train(tiny_data, run, overrides=TINY, progress=False)
    # The fine-tuned backbone is reusable as --weights RUN/model, with its preprocessing.
    backbone = create_backbone("efficientnet_lite0", weights=run / "model", num_classes=0)
    assert PreprocessConfig.from_model(backbone).input_size == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), Predictor.load(run).members[0].backbone(x),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode, extra", [("full", {}), ("progressive", {"epochs": 2}),
                                         ("finetune", {"metadata": True, "sampler": "balanced"})])
def test_modes(tiny_data, tmp_path, mode, extra):
    metrics = train(tiny_data, tmp_path / mode, overrides={**TINY, "mode": mode, **extra},
                    progress=False)
    assert metrics["mode"] == mode and np.isfinite(metrics["accuracy"])
    model = Predictor.load(tmp_path / mode)
    assert model.classes == ["nv", "bkl", "mel"]
    if extra.get("metadata"):
        # Scoring the validation images again with their age, sex and site (as `evaluate` does)
        # reproduces the run's validation probabilities; without them it does not.
        val = pd.read_csv(tmp_path / mode / "val_predictions.csv").set_index("image")
        manifest = load(tiny_data)
        sub = manifest.subset(np.flatnonzero(manifest.table["image_id"].isin(val.index)))
        paths = sub.table["path"].astype(str).tolist()
        expected = apply_temperature(val.loc[sub.image_ids, model.classes].to_numpy(),
                                     model.config.get("temperature", 1.0))
        scored = score_images(model, paths, metadata=model.encode_metadata(sub.table))
        np.testing.assert_allclose(scored.probabilities, expected, atol=1e-5)
        assert np.abs(score_images(model, paths).probabilities - expected).max() > 1e-6
        # `predict` on the dataset passes them too, with either backend (the ONNX export has
        # a metadata input).
        for backend in ("torch", "onnx"):
            table = predict(tmp_path / mode, tiny_data, backend=backend).set_index("image")
            np.testing.assert_allclose(table.loc[sub.image_ids, model.classes].to_numpy(),
                                       expected, atol=1e-4 if backend == "onnx" else 1e-5)
        spread = predict_distributed(tmp_path / mode, tiny_data, tmp_path / "spread.csv",
                                     num_workers=0).table.set_index("image")
        np.testing.assert_allclose(spread.loc[sub.image_ids, model.classes].to_numpy(), expected,
                                   atol=1e-5)


def test_non_square_whole_frame_input(tiny_data, tmp_path):
    """``image_size`` [H, W] with ``crop_pct`` 1: the model sees the whole frame, and every path
    that replays its preprocessing (predict on either backend) scores the same."""
    run = tmp_path / "wide"
    train(tiny_data, run, overrides={**TINY, "image_size": "48x64", "crop_pct": 1.0},
          progress=False)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["preprocess"]["input_size"] == [3, 48, 64]
    assert config["preprocess"]["crop_pct"] == 1.0 and config["recipe"]["image_size"] == [48, 64]
    val = pd.read_csv(run / "val_predictions.csv")
    classes = config["classes"]
    expected = apply_temperature(val[classes].to_numpy(), config.get("temperature", 1.0))
    paths = [str(p) for p in _paths(tiny_data, val["image"])]
    for backend in ("torch", "onnx"):
        again = predict(run / "model", paths, backend=backend)
        np.testing.assert_allclose(again[classes].to_numpy(), expected,
                                   atol=1e-4 if backend == "onnx" else 1e-5)
        assert len(predict(run / "model", paths, backend=backend, tta=4)) == len(paths)
        with pytest.raises(DermlearnError, match="--tta 8: .*need a square input, not 48x64"):
            predict(run / "model", paths, backend=backend, tta=8)


def test_features_mode(tiny_data, tmp_path):
    cache = tmp_path / "cache"
    metrics = train(tiny_data, tmp_path / "feat", overrides={**TINY, "mode": "features"},
                    feature_cache=cache, progress=False)
    assert metrics["mode"] == "features" and any(cache.rglob("*"))
    val = pd.read_csv(tmp_path / "feat" / "val_predictions.csv")
    again = predict(tmp_path / "feat", [str(p) for p in _paths(tiny_data, val["image"])])
    np.testing.assert_allclose(again[metrics["classes"]].to_numpy(),
                               val[metrics["classes"]].to_numpy(), atol=1e-4)


def _paths(root: Path, ids) -> list[Path]:
    manifest = pd.read_csv(root / "manifest.csv").set_index("image_id")
    return [root / manifest.loc[i, "path"] for i in ids]


def test_esteva_recipe_partitions_and_aggregates(tiny_data, tmp_path):
    metrics = train(tiny_data, tmp_path / "esteva", recipe="esteva2017",
                    overrides={**TINY, "weights": "none", "image_size": 96, "max_class_size": 12},
                    progress=False)
    manifest = load(tiny_data)
    expected = partition(manifest.taxonomy, manifest.class_counts(), 12)
    assert metrics["classes"] == expected != manifest.classes  # from the tree, not the labels
    config = json.loads((tmp_path / "esteva" / "model" / "config.json").read_text())
    assert config["backbone"] == "inception_v3" and config["recipe"]["optimizer"] == "rmsprop"
    assert "esteva3" in metrics["levels"]


def test_benedetti_recipe_second_round(tiny_data, tmp_path):
    run = tmp_path / "bene"
    train(tiny_data, run, recipe="benedetti2020",
          overrides={**TINY, "weights": "none", "image_size": 96, "class_cap": 6,
                     "early_stopping": 1, "second_round_epochs": 1, "batch_size": 6},
          progress=False)
    history = pd.read_csv(run / "history.csv")
    assert sorted(set(history["round"])) == [1, 2]
    assert (run / "checkpoints" / "fold_0" / "round2" / "last.ckpt").exists()
    assert json.loads((run / "model" / "config.json").read_text())["backbone"] == "inception_resnet_v2"


def test_folds_make_an_ensemble(tiny_data, tmp_path):
    run = tmp_path / "cv"
    metrics = train(tiny_data, run, overrides={**TINY, "folds": 2, "mode": "finetune"},
                    progress=False)
    assert set(metrics["folds"]) == {"0", "1"} and "balanced_accuracy" in metrics["cv"]
    val = pd.read_csv(run / "val_predictions.csv", dtype={"fold": str})
    assert len(val) == len(pd.read_csv(tiny_data / "manifest.csv"))  # every image out-of-fold once
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["ensemble"] == ["members/0", "members/1"]
    assert config["training_data"]["n_images"] == len(val)  # every image trains some member
    assert config["training_data"]["validation"] == "out-of-fold"
    assert len(Predictor.load(run).members) == 2


def test_ema_validates_and_keeps_the_average(tiny_data, tmp_path):
    run, plain = tmp_path / "ema", tmp_path / "plain"
    settings = {**TINY, "epochs": 2, "warmup_epochs": 1}
    train(tiny_data, run, overrides={**settings, "ema_decay": 0.5}, progress=False)
    train(tiny_data, plain, overrides={**settings, "ema_decay": 0.0}, progress=False)
    # Warm-up (no average yet) validates the live weights: the same row as without EMA.
    columns = ["val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc_macro"]
    ema_rows, plain_rows = (pd.read_csv(r / "history.csv")[columns] for r in (run, plain))
    pd.testing.assert_series_equal(ema_rows.iloc[0], plain_rows.iloc[0])
    ckpts = run / "checkpoints" / "fold_0" / "round1"
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1  # written every epoch, not only when the best improves
    average, current = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(average[k], current[k]) for k in average)
    # The saved model is the best checkpoint's average (the weights that were validated).
    best = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    saved = load_file(str(run / "model" / "model.safetensors"))
    for key, value in saved.items():
        np.testing.assert_allclose(value.numpy(), best["model." + key].numpy(), atol=1e-6,
                                   err_msg=key)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dermlearn.cli", *args]


def _kill_inside_epoch(proc: subprocess.Popen, epoch: int, after_steps: int,
                       timeout: float = 300) -> str | None:
    """Read the training's progress bar from ``proc.stdout`` until step ``after_steps`` (of
    more) of ``epoch`` has run, then kill -9 the process; returns the bar's "k/n" (None if it
    ended first)."""
    bar = re.compile(rf"Epoch {epoch}:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)".encode())
    os.set_blocking(proc.stdout.fileno(), False)
    seen, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            chunk = proc.stdout.read() or b""
            seen = (seen + chunk)[-4096:]
            for done, total in bar.findall(seen):
                if after_steps <= int(done) < int(total):
                    os.kill(proc.pid, signal.SIGKILL)
                    return f"{int(done)}/{int(total)}"
            time.sleep(0.005)
        return None
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("workers, extra", [
    ("0", ["--set", "ema_decay=0", "--set", "mixup_alpha=0.4", "--set", "cutmix_alpha=1.0",
           "--set", "class_weights=false", "--set", "logit_adjustment=1.0"]),
    ("0", []),
    # Issue 20, defect 1: with DataLoader worker processes, a resumed run drew other dropout
    # masks than an uninterrupted one (starting the workers drew their base seed from the
    # global generator after the epoch's seed was set); every loader now has its own.
    ("2", [])], ids=["no-ema-mixed-logit-adjusted", "default", "workers"])
def test_resume_after_kill_matches_uninterrupted_run(tiny_data, tmp_path, workers, extra):
    args = ["--epochs", "4", "--image-size", "64", "--batch-size", "2", "--num-workers", workers,
            "--seed", "7", *extra]
    full = tmp_path / "full"
    subprocess.run(_cli("train", str(tiny_data), "--out", str(full), "--quiet", *args),
                   check=True, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    # The progress bar (stdout) says which step of which epoch runs: kill -9 inside epoch 1,
    # after some of its steps (and, with workers, after its loader started them).
    proc = subprocess.Popen(_cli("train", str(tiny_data), "--out", str(killed), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    step = _kill_inside_epoch(proc, epoch=1, after_steps=3)
    assert step is not None, "the run finished before it could be killed inside epoch 1"
    assert not (killed / "metrics.json").exists()
    history = pd.read_csv(killed / "history.csv")
    assert list(history["epoch"]) == [0], f"killed at {step}, not inside epoch 1"
    result = subprocess.run(_cli("train", "--resume", str(killed), "--quiet"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6, err_msg=key)
    ma = json.loads((full / "metrics.json").read_text())
    mb = json.loads((killed / "metrics.json").read_text())
    assert ma["balanced_accuracy"] == pytest.approx(mb["balanced_accuracy"])
    assert pd.read_csv(killed / "history.csv")["train_loss"].tolist() == pytest.approx(
        pd.read_csv(full / "history.csv")["train_loss"].tolist(), abs=1e-6)
    assert len(pd.read_csv(killed / "history.csv")) == 4


@pytest.mark.slow
def test_finetune_on_ph2_learns_melanoma(ph2_dir, tmp_path):
    """Real data: 3 epochs of the default recipe on PH2 (one lesion-grouped 20% hold-out)."""
    metrics = train(ph2_dir, tmp_path / "ph2", overrides={"epochs": 3, "image_size": 160},
                    progress=False)
    assert metrics["levels"]["melanoma_vs_rest"]["auc"] >= 0.8
    assert metrics["n"] == 40 and metrics["balanced_accuracy"] > 1 / 3


# -- run bookkeeping: run.json, --out, --resume (no training: it is stopped at the first fold) --
class _Stopped(Exception):
    """Raised in place of a fold's training: the run's bookkeeping is done by then."""


@pytest.fixture
def stop_at_training(monkeypatch) -> list:
    """Replace fold training by a stop; records each call's validation image ids."""
    import dermlearn.training.fit as fit_module

    calls = []

    def stop(setup, fold, *args, **kwargs):
        calls.append(sorted(setup.manifest.table["image_id"].to_numpy()[fold.val_rows]))
        raise _Stopped

    monkeypatch.setattr(fit_module, "fit_fold", stop)
    return calls


def test_run_json_records_absolute_data_and_resumes_from_anywhere(tiny_data, tmp_path,
                                                                 monkeypatch, stop_at_training):
    from dermlearn.inference.unseen import unseen_images

    monkeypatch.chdir(tiny_data.parent)
    with pytest.raises(_Stopped):
        train(tiny_data.name, "run", overrides=TINY, progress=False)  # relative paths
    run = tiny_data.parent / "run"
    state = json.loads((run / "run.json").read_text())
    assert state["data"] == str(tiny_data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(_Stopped):  # the data loads from another folder
        train(out=run, resume=True, progress=False)
    assert stop_at_training[0] == stop_at_training[1]
    # Evaluating the run's own data from another folder is seen as the same data.
    with pytest.raises(DermlearnError, match="trained .* use --part auto"):
        unseen_images(run / "model", load(tiny_data), "all")
    # So is a copy of it elsewhere (or a path an older run.json kept relative): same images.
    shutil.copytree(tiny_data, tmp_path / "copy")
    with pytest.raises(DermlearnError, match="trained .* use --part auto"):
        unseen_images(run / "model", load(tmp_path / "copy"), "all")
    # A FORMAT: prefix is kept; the path after it is made absolute.
    monkeypatch.chdir(tiny_data.parent)
    with pytest.raises(_Stopped):
        train(f"csv:{tiny_data.name}/manifest.csv", tmp_path / "prefixed", overrides=TINY,
              progress=False)
    state = json.loads((tmp_path / "prefixed" / "run.json").read_text())
    assert state["data"] == f"csv:{tiny_data.resolve() / 'manifest.csv'}"


def test_resume_of_an_older_run_json_with_a_relative_path(tiny_data, tmp_path, monkeypatch,
                                                          stop_at_training):
    with pytest.raises(_Stopped):
        train(tiny_data, tmp_path / "run", overrides=TINY, progress=False)
    run_file = tmp_path / "run" / "run.json"
    state = json.loads(run_file.read_text())
    del state["splits"]  # as an older dermlearn wrote it
    state["data"] = tiny_data.name
    run_file.write_text(json.dumps(state))
    monkeypatch.chdir(tiny_data.parent)  # the folder it was started in: still loads
    with pytest.raises(_Stopped):
        train(out=tmp_path / "run", resume=True, progress=False)
    monkeypatch.chdir(tmp_path)  # elsewhere: a clear error naming run.json
    with pytest.raises(RunError, match=f"run.json.*{tiny_data.name}.*relative"):
        train(out=tmp_path / "run", resume=True, progress=False)


def test_bad_splits_leave_no_run_and_resume_keeps_the_splits(tiny_data, tmp_path,
                                                             stop_at_training):
    from dermlearn.errors import DataError
    from dermlearn.splits import make_splits, save_splits

    run = tmp_path / "run"
    with pytest.raises(DataError, match="nosuch.csv"):
        train(tiny_data, run, overrides=TINY, splits=tmp_path / "nosuch.csv", progress=False)
    assert not (run / "run.json").exists()
    with pytest.raises(RunError, match="nothing to resume"):
        train(out=run, resume=True, progress=False)
    # The corrected command is not refused, and run.json records the split file.
    custom = make_splits(load(tiny_data), 2, group="lesion", seed=123)
    save_splits(custom, tmp_path / "mine.csv")
    with pytest.raises(_Stopped):
        train(tiny_data, run, overrides=TINY, splits=tmp_path / "mine.csv", progress=False)
    assert json.loads((run / "run.json").read_text())["splits"] == str(tmp_path / "mine.csv")
    wanted = sorted(custom.loc[custom["fold"].astype(str) == "0", "image_id"])
    assert stop_at_training[-1] == wanted
    (run / "splits.csv").unlink()  # even without its copy, --resume uses the same splits
    with pytest.raises(_Stopped):
        train(out=run, resume=True, progress=False)
    assert stop_at_training[-1] == wanted
    with pytest.raises(_Stopped):  # (automatic splits differ: the test means something)
        train(tiny_data, tmp_path / "auto", overrides=TINY, progress=False)
    assert stop_at_training[-1] != wanted
    # An older run.json, written before its splits failed, records no split file: refused.
    state = json.loads((run / "run.json").read_text())
    del state["splits"]
    (run / "run.json").write_text(json.dumps(state))
    (run / "splits.csv").unlink()
    with pytest.raises(RunError, match="stopped before its splits were made"):
        train(out=run, resume=True, progress=False)


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    from dermlearn.atomic import OutputPathError

    afile = tmp_path / "afile"
    afile.write_text("keep me")
    missing = tmp_path / "no-such-data"  # not even read: --out is checked first
    with pytest.raises(OutputPathError, match=re.escape(f"{afile}: is a file")):
        train(missing, afile, overrides=TINY, progress=False)
    with pytest.raises(OutputPathError, match=re.escape(f"{afile} is a file")):
        train(missing, afile / "run", overrides=TINY, progress=False)
    with pytest.raises(OutputPathError, match=re.escape(f"{afile}: is a file")):
        train(out=afile, resume=True, progress=False)
    assert afile.read_text() == "keep me"


def test_splits_and_classes_a_run_cannot_train_on_are_named(tiny_data, tmp_path):
    with pytest.raises(RunError, match=r"val_fraction 0.01 \(1 part in 100\) needs at least 100 "
                                       r"lesions"):
        train(tiny_data, tmp_path / "thin", overrides={**TINY, "val_fraction": 0.01},
              progress=False)
    one = tmp_path / "one-class"
    make_synthetic_dataset(one, n_lesions_per_class=10, images_per_lesion=(1, 1),
                           classes=("nv",), size=32, seed=0)
    with pytest.raises(RunError, match=r"1 class\(es\) \(nv\); a classifier needs at least two"):
        train(one, tmp_path / "one", overrides=TINY, progress=False)
    assert not (tmp_path / "thin").exists() and not (tmp_path / "one" / "run.json").exists()


def test_weight_ema_pickles_with_the_same_update():
    import pickle

    from torch.optim.swa_utils import get_ema_avg_fn

    from dermlearn.training.callbacks import WeightEMA

    callback = pickle.loads(pickle.dumps(WeightEMA(decay=0.9, update_starting_at_step=3)))
    assert callback.update_starting_at_step == 3
    avg_fn = callback._kwargs["avg_fn"]
    ema, current = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(avg_fn(ema, current, torch.tensor(2)),
                               get_ema_avg_fn(0.9)(ema, current, torch.tensor(2)), rtol=0, atol=0)


def test_custom_taxonomy_is_trained_saved_resumed_and_evaluated(tiny_data, tmp_path, capsys):
    """Labels outside the built-in tree train with ``taxonomy=`` (a YAML tree here); the tree
    goes into run.json and the model, evaluation reads the data with the model's tree, and its
    levels are scored by PA."""
    from dermlearn.cli import main
    from dermlearn.errors import DataError
    from dermlearn.evaluation.evaluate import evaluate_model

    names = {"mel": "dark_spot", "nv": "brown_spot", "bkl": "waxy_spot"}
    table = pd.read_csv(tiny_data / "manifest.csv")
    table["path"] = [str(tiny_data / p) for p in table["path"]]
    table["label"] = table["label"].map(names)
    data = tmp_path / "spots.csv"
    table.to_csv(data, index=False)
    tree = tmp_path / "spots.yaml"
    tree.write_text("name: spots\nroot: spot\nnodes:\n"
                    "  - {id: dark_spot}\n  - {id: pale, children: [{id: brown_spot}, "
                    "{id: waxy_spot}]}\n"
                    "levels:\n  worry: {dark: [dark_spot], other: [pale]}\n")
    features = {**TINY, "mode": "features"}
    with pytest.raises(DataError, match="dark_spot"):
        train(data, tmp_path / "plain", overrides=features, progress=False)
    assert not (tmp_path / "plain" / "run.json").exists()

    run = tmp_path / "run"
    metrics = train(data, run, overrides=features, taxonomy=tree, progress=False)
    assert set(metrics["classes"]) == set(names.values())
    assert set(metrics["levels"]["worry"]["per_class"]) == {"dark", "other"}
    assert json.loads((run / "run.json").read_text())["taxonomy"]["name"] == "spots"
    assert json.loads((run / "model" / "config.json").read_text())["taxonomy"]["name"] == "spots"
    # the run reads its data with its own tree when resumed (nothing is left to train here)
    assert train(out=run, resume=True, progress=False)["classes"] == metrics["classes"]
    with pytest.raises(RunError, match="drop data, taxonomy"):  # nothing is silently ignored
        train(data, run, resume=True, taxonomy="flat", progress=False)

    report = evaluate_model(run, data, tmp_path / "eval", n_boot=20, explain=None, embed=False,
                            progress=False)
    assert report["n"] == len(pd.read_csv(run / "val_predictions.csv"))
    assert "worry" in report["levels"]
    # the CLI: --taxonomy flat reads the labels as they are
    assert main(["train", f"csv:{data}", "--out", str(tmp_path / "flat"), "--taxonomy", "flat",
                 "--mode", "features", "--epochs", "1", "--image-size", "64",
                 "--num-workers", "0", "--quiet"]) == 0
    flat = json.loads((tmp_path / "flat" / "model" / "config.json").read_text())
    assert flat["taxonomy"]["name"] == "flat" and set(flat["classes"]) == set(names.values())
    assert main(["evaluate", str(run), str(data), "--out", str(tmp_path / "e2"),
                 "--taxonomy", "flat"]) != 0
    assert "--taxonomy is for --predictions" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_training_saves_the_same_model_layout(tiny_data, tmp_path):
    """``compile=true`` (torch.compile, in place) trains and saves a model with the parameter
    names of an uncompiled one, which predicts as usual (slow: compiling takes minutes on a CPU)."""
    overrides = {**TINY, "epochs": 1}
    train(tiny_data, tmp_path / "eager", overrides=overrides, progress=False)
    train(tiny_data, tmp_path / "compiled", overrides={**overrides, "compile": True},
          progress=False)
    eager = load_file(str(tmp_path / "eager" / "model" / "model.safetensors"))
    compiled = load_file(str(tmp_path / "compiled" / "model" / "model.safetensors"))
    assert sorted(eager) == sorted(compiled)
    table = predict(tmp_path / "compiled", tiny_data)
    np.testing.assert_allclose(table.drop(columns="image").sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"folds": 2}, {"mode": "features"}],
                         ids=["hold-out", "folds", "features"])
def test_refit_trains_the_final_model_on_every_training_image(tiny_data, tmp_path, extra):
    """Issue 21: --refit keeps the selection model(s) and their validation figures, and trains
    the final model on every training image for the epochs they chose."""
    from dermlearn.inference.unseen import unseen_images
    from dermlearn.models.lesion_classifier import read_config

    run = tmp_path / "refit"
    metrics = train(tiny_data, run, overrides={**TINY, "epochs": 2, "refit": True, **extra},
                    progress=False)
    n_all = len(pd.read_csv(tiny_data / "manifest.csv"))
    final = read_config(run / "model")
    assert final["training_data"]["n_images"] == n_all and final["training_data"][
        "n_validation"] == 0
    selection = read_config(run / "selection")
    assert metrics["refit"]["n_images"] == n_all
    if extra.get("mode") != "features":
        chosen = ([read_config(run / "selection" / "members" / str(k))["selected_epochs"]
                   for k in range(2)] if extra.get("folds") else [selection["selected_epochs"]])
        assert metrics["refit"]["epochs"] == int(np.floor(np.median(chosen) + 0.5))
        history = pd.read_csv(run / "history.csv", dtype={"fold": str})
        assert (history["fold"] == "refit").sum() == metrics["refit"]["epochs"]
    if extra.get("folds"):
        assert len(selection["ensemble"]) == 2 and "ensemble" not in final
    # The validation figures are the selection's; the refit model has no unseen run image.
    val = pd.read_csv(run / "val_predictions.csv")
    assert metrics["n"] == len(val)
    with pytest.raises(DermlearnError, match="a refit model"):
        unseen_images(run / "model", load(tiny_data))
    table = predict(run, tiny_data)
    assert len(table) == n_all and (run / "model" / "ood.json").is_file()


def test_a_features_mode_fold_ensemble_stores_its_frozen_backbone_once(tiny_data, tmp_path):
    """Issue 22: the members of a features-mode fold ensemble share one frozen backbone, which
    is saved once (model/shared.safetensors); they load and predict as before."""
    from dermlearn.models.lesion_classifier import SHARED_FILE, load_model, read_config

    run = tmp_path / "feat"
    train(tiny_data, run, overrides={**TINY, "mode": "features", "folds": 3}, progress=False)
    model = run / "model"
    members = read_config(model)["ensemble"]
    assert (model / SHARED_FILE).is_file()
    sizes = [(model / m / "model.safetensors").stat().st_size for m in members]
    assert max(sizes) < (model / SHARED_FILE).stat().st_size / 50  # a head, not a backbone
    loaded = [load_model(model / m)[0] for m in members]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = [m.features(x) for m in loaded]
        assert all(torch.equal(features[0], f) for f in features[1:])
    # Out-of-fold images scored again by their member give the run's validation predictions.
    from dermlearn.evaluation.evaluate import evaluate_model

    evaluate_model(run, tiny_data, tmp_path / "ev", explain=None, embed=False, n_boot=10,
                   progress=False)
    val = pd.read_csv(run / "val_predictions.csv").set_index("image")
    again = pd.read_csv(tmp_path / "ev" / "predictions.csv").set_index("image").loc[val.index]
    classes = read_config(model)["classes"]
    expected = apply_temperature(val[classes].to_numpy(), read_config(model)["temperature"])
    np.testing.assert_allclose(again[classes].to_numpy(), expected, atol=1e-5)
    # Its model report says how the folds used the images.
    from dermlearn.evaluation.model_report import model_report

    n = len(pd.read_csv(run / "splits.csv"))
    assert f"{n} images of" in model_report(run, tmp_path / "ev")
    assert "3-fold cross-validation: each image trained 2 of the 3 members" in model_report(run)

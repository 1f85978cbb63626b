"""Data parallelism on 2 CPU processes (Lightning DDP, gloo) against one process, tiny data.

Training: the recipe's batch is global and each process's sampler takes every 2nd position of
the same seeded order, so with 2 processes every optimiser step sees the same 8 images (each
with the same augmentation seed) as with one, and DDP's gradient average equals the
single-process gradient. The runs then agree to float rounding (~1e-6 measured). Two things
are per process by design and are switched off here so that the comparison can be exact:
dropout masks (``drop_rate=0``) and, on CPU where PyTorch has no SyncBatchNorm, the batch
statistics of BatchNorm layers in training mode (``--unfreeze 0``: the backbone is frozen, in
eval mode; on GPU ``sync_batchnorm`` is on). SGD rather than AdamW, because Adam's update is
nearly invariant to the scale of the gradient and would hide a mis-scaled loss.

Prediction: a job resumed from a part file of an earlier (killed) job scores only the missing
images, each once, split over both processes, and merges everything in input order.
Both DDP runs go through the command line (Lightning re-runs it per process).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from dermlearn.data.synthetic import make_synthetic_dataset
from dermlearn.inference import predict
from dermlearn.inference.distributed import parts_dir, predict_distributed, read_parts
from dermlearn.training.run import train
from dermlearn.training.sampler import EpochSampler

CLASSES = ["nv", "bkl", "mel"]
RECIPE = dict(epochs=2, image_size=64, batch_size=8, num_workers=0, drop_rate=0.0, unfreeze=0,
              optimizer="sgd", lr=0.01, seed=3)


def _cli(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dermlearn.cli", *args], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_ddp")
    make_synthetic_dataset(root, n_lesions_per_class=6, images_per_lesion=(1, 2),
                           classes=tuple(CLASSES[::-1]), size=96, seed=1)
    return root


@pytest.fixture(scope="module")
def single_run(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    train(tiny, run, overrides=RECIPE, progress=False)
    return run


def test_sampler_shards_are_the_global_batches():
    targets = np.random.default_rng(0).integers(0, 3, 30)
    whole = list(EpochSampler(targets, seed=3))
    shards = [list(EpochSampler(targets, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 15
    for step in range(3):  # global batch 8 = 4 per process
        assert sorted(whole[8 * step: 8 * step + 8]) == sorted(
            shards[0][4 * step: 4 * step + 4] + shards[1][4 * step: 4 * step + 4])
    odd = [EpochSampler(targets[:7], shuffle=False, num_replicas=2, rank=r) for r in range(2)]
    gathered = np.array([[row for row, _ in s] for s in odd])  # (2, 4): one padded sample
    np.testing.assert_array_equal(odd[0].merge_shards(gathered), np.arange(7))


def test_two_process_training_matches_one(tiny, single_run, tmp_path):
    ddp = tmp_path / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RECIPE.items()
             if k in ("epochs", "image_size", "batch_size", "num_workers", "unfreeze", "lr",
                      "seed")]
    _cli("train", str(tiny), "--out", str(ddp), *flags, "--set", "drop_rate=0", "--set",
         "optimizer=sgd", "--devices", "2", "--quiet")
    assert json.loads((ddp / "run.json").read_text())["recipe"]["devices"] == 2
    # Validation metrics were computed on the whole validation set once (gathered), and only
    # rank 0 wrote: one history row per epoch, the same numbers.
    h1, h2 = pd.read_csv(single_run / "history.csv"), pd.read_csv(ddp / "history.csv")
    assert list(h2["epoch"]) == [0, 1]
    cols = ["train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc_macro"]
    np.testing.assert_allclose(h2[cols].to_numpy(float), h1[cols].to_numpy(float), atol=2e-5)
    v1, v2 = pd.read_csv(single_run / "val_predictions.csv"), pd.read_csv(ddp / "val_predictions.csv")
    assert list(v1["image"]) == list(v2["image"])
    np.testing.assert_allclose(v2[CLASSES].to_numpy(), v1[CLASSES].to_numpy(), atol=1e-4)
    w1 = load_file(str(single_run / "model" / "model.safetensors"))
    w2 = load_file(str(ddp / "model" / "model.safetensors"))
    for key in w1:
        np.testing.assert_allclose(w2[key].numpy(), w1[key].numpy(), atol=1e-4, err_msg=key)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (single_run, ddp))
    assert m2["balanced_accuracy"] == pytest.approx(m1["balanced_accuracy"])
    assert m2["n"] == m1["n"] == len(v1)


def test_distributed_prediction_resumes_and_merges(tiny, single_run, tmp_path):
    expected = predict(single_run / "model", tiny)
    n = len(expected)
    out = tmp_path / "preds.csv"
    parts = parts_dir(out)
    parts.mkdir()
    # An earlier job (another process count) was killed: it had scored the first half, and its
    # last row is torn. Only the other half may be scored now, by the 2 processes.
    seeded = expected.iloc[: n // 2]
    lines = ["index,image," + ",".join(CLASSES)] + [
        f"{i},{row.image}," + ",".join(f"{getattr(row, c):.9g}" for c in CLASSES)
        for i, row in enumerate(seeded.itertuples())]
    (parts / "rank-5.csv").write_text("\n".join(lines) + "\n" + lines[-1][:12])
    assert len(read_parts(parts, 3)) == n // 2
    printed = _cli("predict", str(single_run / "model"), str(tiny), "--out", str(out),
                   "--devices", "2", "--batch-size", "4", "--num-workers", "0", "--quiet").stdout
    assert f"({n - n // 2} scored now, {n // 2} from" in printed
    new_rows = [pd.read_csv(parts / f"rank-{r}.csv") for r in (0, 1)]
    assert all(len(rows) > 0 for rows in new_rows)  # both processes took a share
    scored = sorted(pd.concat(new_rows)["index"])
    assert scored == list(range(n // 2, n))  # each missing image exactly once, nothing twice
    merged = pd.read_csv(out)
    assert list(merged.columns) == ["image", *CLASSES]
    assert list(merged["image"]) == list(expected["image"])  # input order, each image once
    np.testing.assert_allclose(merged[CLASSES].to_numpy(), expected[CLASSES].to_numpy(),
                               atol=1e-5)
    # Nothing left: a rerun scores nothing and rewrites the same table without any process.
    again = predict_distributed(single_run / "model", tiny, out, devices=2)
    assert (again.n_scored, again.n_reused) == (0, n)
    pd.testing.assert_frame_equal(pd.read_csv(out), merged)


def test_ddp_spawn_with_the_default_recipe_ema(tiny, tmp_path):
    """--strategy ddp_spawn pickles the callbacks into its processes; the default recipe's
    weight EMA among them (its averaging function was a local closure)."""
    run = tmp_path / "spawn"
    _cli("train", str(tiny), "--out", str(run), "--epochs", "1", "--image-size", "32",
         "--batch-size", "8", "--num-workers", "0", "--unfreeze", "0", "--devices", "2",
         "--strategy", "ddp_spawn", "--quiet")
    recipe = json.loads((run / "run.json").read_text())["recipe"]
    assert recipe["strategy"] == "ddp_spawn" and recipe["ema_decay"] > 0
    assert (run / "model" / "model.safetensors").is_file()
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [0]


def test_distributed_prediction_scores_around_an_unreadable_image(tiny, single_run, tmp_path):
    """As in one process: every readable image is written, the unreadable file is named and
    the exit code is 1; once the file is replaced, the same command scores just that image
    (one image left for two processes: one of them has nothing to do)."""
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    sources = sorted(tiny.rglob("*.jpg"))[:5]
    for i, src in enumerate(sources):
        shutil.copy(src, photos / f"p{i}.jpg")
    (photos / "p5.jpg").write_bytes(b"\xff\xd8\xff\xe0 a truncated jpeg")
    out = tmp_path / "preds.csv"
    args = [sys.executable, "-m", "dermlearn.cli", "predict", str(single_run / "model"),
            str(photos), "--out", str(out), "--devices", "2", "--batch-size", "2",
            "--num-workers", "0", "--quiet"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "1 of 6 images could not be read" in first.stderr and "p5.jpg" in first.stderr
    expected = predict(single_run / "model", [str(photos / f"p{i}.jpg") for i in range(5)])
    written = pd.read_csv(out)
    assert list(written["image"]) == [f"p{i}" for i in range(5)]
    np.testing.assert_allclose(written[CLASSES].to_numpy(), expected[CLASSES].to_numpy(),
                               atol=1e-5)
    shutil.copy(sources[0], photos / "p5.jpg")
    again = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(1 scored now, 5 from" in again.stdout
    assert list(pd.read_csv(out)["image"]) == [f"p{i}" for i in range(6)]

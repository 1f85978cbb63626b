"""benchmarks/baseline.py: the plain fine-tune of issue 21 trains on a run's training images,
scores the run's held-out images and compares the two, paired (smoke test on tiny data)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from dermlearn.training.run import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline.py"


def test_baseline_scores_the_runs_held_out_images_and_compares(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_data, run, overrides=dict(image_size=64, batch_size=8, num_workers=0, epochs=1),
          progress=False)
    out = tmp_path / "baseline"
    result = subprocess.run([sys.executable, str(SCRIPT), str(tiny_data), "--run", str(run),
                             "--out", str(out), "--epochs", "1", "--size", "64x64",
                             "--workers", "0", "--bootstrap", "50"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    held = pd.read_csv(run / "val_predictions.csv")
    scored = pd.read_csv(out / "predictions.csv")
    assert sorted(scored["image"]) == sorted(held["image"])
    report = json.loads((out / "comparison.json").read_text())
    assert report["n_test"] == len(held) and report["n_train"] + len(held) == len(
        pd.read_csv(tiny_data / "manifest.csv"))
    rows = report["comparison"]
    assert {"accuracy", "balanced_accuracy", "auc"} <= set(rows)
    assert rows["accuracy"]["b"] == rows["accuracy"]["a"] + rows["accuracy"]["diff"]
    assert "balanced_accuracy" in result.stdout and "95% CI" in result.stdout

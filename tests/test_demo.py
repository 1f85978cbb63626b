"""`dermlearn demo`: the main job end to end on the generated synthetic set."""
from __future__ import annotations

import json

import pandas as pd

from dermlearn.demo import run_demo


def test_demo_runs_end_to_end(tmp_path):
    result = run_demo(tmp_path / "demo", seed=0, training={"epochs": 1, "image_size": 64,
                                                            "num_workers": 0}, verbose=False)
    out = tmp_path / "demo"
    for name in ("inspect.json", "taxonomy.txt", "splits.csv", "splits_summary.csv", "demo.json",
                 "predictions.csv", "run/model/model.safetensors", "run/metrics.json",
                 "synthetic/README.txt"):
        assert (out / name).exists(), name
    assert "synthetic" in (out / "synthetic" / "README.txt").read_text().lower()
    summary = json.loads((out / "inspect.json").read_text())
    assert summary["n_images"] == result["n_images"] > 40 and not summary["problems"]
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert splits.groupby("lesion_id")["fold"].nunique().max() == 1
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns[:1]) == ["image"] and len(predictions) == (splits["fold"] == "0").sum()
    assert 0 <= result["validation"]["balanced_accuracy"] <= 1

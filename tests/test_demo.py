"""`dermlearn demo`: the main job end to end on the generated synthetic set."""
from __future__ import annotations

import json

import pandas as pd

from dermlearn.demo import run_demo

from browser import BROKEN_IMAGES_JS, browser_page


def test_demo_runs_end_to_end(tmp_path):
    result = run_demo(tmp_path / "demo", seed=0, training={"epochs": 1, "image_size": 64,
                                                            "num_workers": 0}, verbose=False)
    out = tmp_path / "demo"
    for name in ("inspect.json", "taxonomy.txt", "splits.csv", "splits_summary.csv", "demo.json",
                 "predictions.csv", "run/model/model.safetensors", "run/metrics.json",
                 "synthetic/README.txt", "report/report.html", "report/metrics.json",
                 "report/figures/confusion.png", "report/figures/reliability.png",
                 "report/tsne_by_class.png", "report/figures/saliency_grid.png"):
        assert (out / name).exists(), name
    assert "synthetic" in (out / "synthetic" / "README.txt").read_text().lower()
    summary = json.loads((out / "inspect.json").read_text())
    assert summary["n_images"] == result["n_images"] > 40 and not summary["problems"]
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert splits.groupby("lesion_id")["fold"].nunique().max() == 1
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns[:1]) == ["image"] and len(predictions) == (splits["fold"] == "0").sum()
    assert 0 <= result["validation"]["balanced_accuracy"] <= 1

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "auc_macro", "per_class", "levels", "ece"):
        assert key in metrics, key
    for values in metrics["per_class"].values():
        assert {"sensitivity", "specificity", "auc", "auc_sens_80", "ap"} <= set(values)
    binary = metrics["levels"]["malignant_vs_benign"]
    assert binary["auc_ci"][0] <= binary["auc"] <= binary["auc_ci"][1]

    # the report opens in headless Chromium with every figure embedded and decoded
    report = out / "report" / "report.html"
    assert "http://" not in report.read_text() and "https://" not in report.read_text()
    with browser_page() as page:
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        assert page.evaluate("document.images.length") >= 6
        assert page.evaluate(BROKEN_IMAGES_JS) == []
        assert "balanced accuracy" in page.inner_text("body").lower()
        page.screenshot(path=str(out / "report" / "report.png"), full_page=True)
    assert (out / "report" / "report.png").stat().st_size > 10_000

    # the model the demo trained is served, web page included, with its OOD screen
    from fastapi.testclient import TestClient

    from dermlearn.serving.app import create_app

    assert (out / "run" / "model" / "ood.json").is_file()
    image = next((out / "synthetic").rglob("*.png"), None) or next((out / "synthetic").rglob("*.jpg"))
    with TestClient(create_app(out / "run" / "model")) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        answer = client.post("/v1/predict?explain=saliency",
                             files={"image": (image.name, image.read_bytes())})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        classes = json.loads((out / "run" / "model" / "config.json").read_text())["classes"]
        assert classes == result["training_classes"]
        assert set(body["probabilities"]) == set(classes)
        assert "ood" in body and body.get("explanation")


def test_demo_again_moves_the_earlier_run_aside(tmp_path, monkeypatch):
    """`make demo` twice: the earlier run/ is kept as run.old-N, never deleted."""
    import pytest

    import dermlearn.training.run as run_module
    from dermlearn.data.synthetic import make_synthetic_dataset

    class Stopped(Exception):
        pass

    def stop(data, out, **kwargs):  # the demo's training, here only where it would write
        raise Stopped(str(out))

    monkeypatch.setattr(run_module, "train", stop)
    data = make_synthetic_dataset(tmp_path / "data", n_lesions_per_class=4,
                                  images_per_lesion=(1, 1), classes=("mel", "nv"), size=48, seed=0)
    out = tmp_path / "demo"
    for n in (1, 2):
        (out / "run").mkdir(parents=True)
        (out / "run" / "run.json").write_text(f'{{"n": {n}}}')
        with pytest.raises(Stopped, match="run$"):
            run_demo(out, data=data, folds=2, verbose=False)
        assert not (out / "run").exists()
        assert json.loads((out / f"run.old-{n}" / "run.json").read_text()) == {"n": n}
    assert json.loads((out / "run.old-1" / "run.json").read_text()) == {"n": 1}  # still there
    from dermlearn.demo import set_aside

    (out / "run").mkdir()  # an empty folder holds nothing to keep
    assert set_aside(out / "run") is None and not (out / "run").exists()


def test_demo_trains_the_classes_it_shows(tmp_path, monkeypatch):
    """The training classes printed in taxonomy.txt are the ones handed to training: one per
    diagnosis by default, Esteva's partitioning with ``max_class_size``."""
    import pytest

    import dermlearn.training.run as run_module
    from dermlearn.data import load
    from dermlearn.data.synthetic import make_synthetic_dataset
    from dermlearn.taxonomy import partition

    class Stopped(Exception):
        pass

    handed = {}

    def stop(data, out, *, overrides, **kwargs):
        handed.update(overrides)
        raise Stopped

    monkeypatch.setattr(run_module, "train", stop)
    data = make_synthetic_dataset(tmp_path / "data", n_lesions_per_class=4,
                                  images_per_lesion=(1, 1), classes=("mel", "nv", "bkl", "bcc"),
                                  size=48, seed=0)
    manifest = load(data)
    for size in (None, 9):
        with pytest.raises(Stopped):
            run_demo(tmp_path / f"demo-{size}", data=data, folds=2, max_class_size=size,
                     verbose=False)
        assert handed["max_class_size"] == size
        expected = (partition(manifest.taxonomy, manifest.class_counts(), size) if size
                    else [c for c in manifest.classes])
        shown = (tmp_path / f"demo-{size}" / "taxonomy.txt").read_text().splitlines()[-1]
        assert shown.split(": ", 1)[1] == ", ".join(expected)
        targets = set(pd.read_csv(tmp_path / f"demo-{size}" / "splits.csv")["target"])
        assert targets == set(expected)
    assert len(expected) < 4  # the partitioning merged diagnoses: not the default's classes

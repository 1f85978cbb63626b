"""The evaluation report's three defects of issue 22: a readable explanation grid that names its
images, an ROC figure with the bootstrap band its caption promises and the model's operating
points, and a warning where the ECE is measured on the images the temperature was fitted on."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from PIL import Image

import dermlearn
from dermlearn.evaluation.binary import binary_report
from dermlearn.evaluation.plots import roc_figure
from dermlearn.models.lesion_classifier import update_config


@pytest.fixture(scope="module")
def report(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    dermlearn.train(tiny_data, root / "run", overrides=dict(
        image_size=64, batch_size=8, num_workers=0, epochs=1), progress=False)
    update_config(root / "run" / "model", temperature=1.7)  # as a run of >= 100 images has
    dermlearn.evaluate(root / "run", tiny_data, root / "ev", n_boot=50, examples_per_class=1,
                       embed=False, progress=False)
    return root / "ev"


def test_the_explanation_grid_is_full_width_readable_and_names_its_images(report):
    html = (report / "report.html").read_text()
    caption = re.search(r'<figure class="wide"><img alt="saliency examples[^"]*"[^>]*>'
                        r"<figcaption>([^<]*)</figcaption>", html)
    assert caption, "the explanation grid is not shown at the page's full width"
    ids = set(pd.read_csv(report / "predictions.csv")["image"].astype(str))
    named = [i.strip() for i in caption.group(1).split("images", 1)[1].split(",")]
    assert named and set(named) <= ids
    with Image.open(report / "figures" / "saliency_grid.png") as grid:
        assert grid.width >= 1000  # 3.4 in per panel at 150 dpi (it was 2.3 in)


def test_the_roc_has_its_bootstrap_band_and_the_models_operating_points(report):
    metrics = json.loads((report / "metrics.json").read_text())
    level = metrics["levels"]["melanoma_vs_rest"]
    band = level["roc"]["band"]
    assert len(band["fpr"]) == 101 and all(lo <= hi for lo, hi in zip(band["low"], band["high"]))
    html = (report / "report.html").read_text()
    assert "ROC with its 95% bootstrap band; the model&#x27;s operating points marked" in html
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    summary = binary_report(y, np.clip(rng.normal(0.4 + 0.3 * y, 0.2), 0, 1), n_boot=100)
    fig = roc_figure([{"name": "mel", **summary["roc"], "auc": summary["auc"]}],
                     points=[{"name": "threshold 0.5", **summary["at_half"]}])
    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the band
    assert any(isinstance(c, PathCollection) for c in ax.collections)  # the point
    assert "threshold 0.5" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_ece_says_when_the_temperature_was_fitted_on_these_images(report):
    metrics = json.loads((report / "metrics.json").read_text())
    n = metrics["calibration"]["temperature_fitted_on_these"]
    assert n == metrics["n"] > 0  # the run's own validation images, the temperature's
    html = (report / "report.html").read_text()
    assert f"fitted on {n} of these {n} images" in html and "optimistic" in html


def test_case_review_lists_every_image_the_worst_errors_first(report):
    from dermlearn.evaluation.cases import case_table
    from dermlearn.taxonomy import load_taxonomy

    cases = pd.read_csv(report / "cases.csv")
    predictions = pd.read_csv(report / "predictions.csv")
    assert sorted(cases["image"]) == sorted(predictions["image"])
    kinds = cases["kind"].tolist()
    order = ["missed malignant", "false malignant", "wrong class", "right"]
    assert [order.index(k) for k in kinds] == sorted(order.index(k) for k in kinds)
    missed = cases[cases["kind"] == "missed malignant"]["p_malignant"].to_numpy()
    assert (np.diff(missed) >= 0).all()  # the most confidently missed first
    row = cases.iloc[0]
    line = predictions.iloc[row["predictions_row"] - 2]
    assert line["image"] == row["image"]
    html = (report / "report.html").read_text()
    assert "Case review" in html and "cases.csv" in html
    # A handmade case: a melanoma called a nevus comes first, a nevus called melanoma next.
    tree = load_taxonomy("dermatology")
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    table = case_table(["a", "b", "c", "d"], ["nv", "nv", "mel", "mel"], probs, ["nv", "mel"],
                       tree)
    assert table["image"].tolist() == ["c", "b", "a", "d"]
    assert table["kind"].tolist() == ["missed malignant", "false malignant", "right", "right"]
    assert table["missed_melanoma"].tolist() == [True, False, False, False]

"""The evaluation report's figures: confusion matrices, ROC curves (with their bootstrap band and
the model's operating points), the reliability diagram and the explanation examples."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.data import Manifest
from dermlearn.evaluation import plots
from dermlearn.taxonomy import assign_classes

__all__ = ["case_figures", "case_summary", "explanation_figures", "make_figures", "model_points"]


def make_figures(out: Path, metrics: Mapping[str, Any]) -> dict[str, list[tuple[Path, str]]]:
    """Confusion matrices, ROC curves (per class, per binary task) and the reliability diagram."""
    fig_dir = out / "figures"
    labels = list(metrics["per_class"])
    counts = np.asarray(metrics["confusion_matrix"]["matrix"])
    if not counts[:, -1].any():  # no tied maxima: drop the 'undecided' column
        counts = counts[:, :-1]
    figures: dict[str, list[tuple[Path, str]]] = {"confusion": [
        (plots.save_figure(plots.confusion_figure(counts, labels), fig_dir / "confusion.png"),
         "confusion matrix, counts"),
        (plots.save_figure(plots.confusion_figure(counts, labels, normalise=True),
                           fig_dir / "confusion_normalised.png"),
         "confusion matrix, row-normalised (recall on the diagonal)")]}
    curves = [{"name": c, **v["roc"], "auc": v["auc"]}
              for c, v in metrics["per_class"].items() if v.get("roc") and v.get("auc")]
    figures["roc"] = []
    if curves:
        figures["roc"].append((plots.save_figure(
            plots.roc_figure(curves, title="ROC per class (one vs rest)"),
            fig_dir / "roc_per_class.png"), "ROC per class, one vs rest"))
    for level, m in metrics["levels"].items():
        if "roc" in m:
            fig = plots.roc_figure([{"name": m.get("positive", level), **m["roc"],
                                     "auc": m["auc"], "auc_ci": m.get("auc_ci")}],
                                   readers=m.get("readers", {}).get("points"),
                                   points=model_points(m, metrics.get("locked"), level),
                                   title=level.replace("_", " "))
            band = "with its 95% bootstrap band" if m["roc"].get("band") else "(no band: " \
                "--bootstrap 0)"
            figures["roc"].append((plots.save_figure(fig, fig_dir / f"roc_{level}.png"),
                                   f"{level}: ROC {band}; the model's operating points "
                                   f"marked"))
    bins = metrics["calibration"]["bins"]
    figures["calibration"] = [(plots.save_figure(
        plots.reliability_figure(bins, metrics["ece"]), fig_dir / "reliability.png"),
        "reliability diagram (top-class confidence)")]
    return figures


def model_points(level: Mapping[str, Any], locked: Mapping[str, Any] | None,
                 task: str) -> list[dict[str, Any]]:
    """The operating points marked on a binary task's ROC: probability >= 0.5, sensitivity
    at 90% specificity, specificity at 90% sensitivity and, for the locked test's task (per
    image), its locked threshold."""
    points = []
    if level.get("at_half"):
        points.append({"name": "threshold 0.5", **level["at_half"]})
    for point in level.get("operating_points", []):
        if point["at"] == 0.9:
            points.append({"name": f"{point['fixed']} {point['at']:.0%} (threshold "
                                    f"{point['threshold']:.3f})" if point["threshold"] is not None
                           else f"{point['fixed']} {point['at']:.0%}",
                           "sensitivity": point["sensitivity"],
                           "specificity": point["specificity"]})
    if locked and locked.get("task") == task and locked.get("unit") == "image" and \
            locked["sensitivity"]["value"] is not None and locked["specificity"]["value"] is not None:
        points.append({"name": f"locked threshold {locked['threshold']:.3f}",
                       "sensitivity": locked["sensitivity"]["value"],
                       "specificity": locked["specificity"]["value"]})
    return points


def explanation_figures(out: Path, predictor: Any, manifest: Manifest, frame: pd.DataFrame,
                        method: str, per_class: int, metrics: dict[str, Any]
                        ) -> dict[str, list[tuple[Path, str]]]:
    """Saliency examples per class, right and wrong, and (with lesion masks) focus scores."""
    from dermlearn.data.images import read_image
    from dermlearn.explain import explain_images, overlay

    classes = predictor.classes
    probs = frame[classes].to_numpy()
    targets = np.array([classes.index(c) for c in
                        assign_classes(predictor.taxonomy, manifest.labels, classes)])
    predicted = probs.argmax(axis=1)
    rng = np.random.default_rng(0)
    panels, shown = [], []
    for c, name in enumerate(classes):
        for correct in (True, False):
            rows = np.flatnonzero((targets == c) & ((predicted == c) == correct))
            for i in rng.permutation(rows)[:per_class]:
                image = read_image(manifest.table["path"].iloc[i])
                exp = explain_images(predictor, [image], method)[0]
                image_id = str(manifest.table["image_id"].iloc[i])
                shown.append(image_id)
                panels.append({"image": overlay(image, exp.heatmap),
                               "caption": f"{image_id} ({'right' if correct else 'WRONG'})"
                                          f"\ntrue {name}\npred {classes[predicted[i]]} "
                                          f"({probs[i, predicted[i]]:.2f})"})
    figures: dict[str, list[tuple[Path, str]]] = {}
    if panels:
        fig = plots.example_grid_figure(panels, columns=per_class * 2,
                                        title=f"{method} maps: per class, right then wrong")
        figures["explain"] = [(plots.save_figure(fig, out / "figures" / f"{method}_grid.png"),
                               f"{method} examples per class (rows), right then wrong; "
                               f"images {', '.join(shown)}")]
    if "mask_path" in manifest.table and manifest.table["mask_path"].notna().any():
        from dermlearn.explain import lesion_focus_scores, summarise_focus

        masked = manifest.subset(np.flatnonzero(manifest.table["mask_path"].notna().to_numpy()))
        scores = lesion_focus_scores(predictor, masked, method=method, limit_per_class=10)
        scores.to_csv(out / "lesion_focus.csv", index=False)
        summary = summarise_focus(scores)
        metrics["lesion_focus"] = {"method": method,
                                   "per_class": json.loads(summary.to_json(orient="index"))}
    return figures


def case_summary(cases: pd.DataFrame) -> dict[str, Any]:
    """Counts of each kind of case, and the worst errors' rows (for the report and
    metrics.json)."""
    from dermlearn.evaluation.cases import KINDS, REVIEWED

    errors = cases[cases["kind"] != "right"].head(REVIEWED)
    columns = ["rank", "image", "truth", "predicted", "p_predicted", "p_malignant", "p_melanoma",
               "kind", "predictions_row"]
    return {"counts": {k: int((cases["kind"] == k).sum()) for k in KINDS},
            "missed_melanoma": int(cases["missed_melanoma"].sum()),
            "worst": json.loads(errors[columns].to_json(orient="records"))}


def case_figures(out: Path, cases: pd.DataFrame, manifest: Manifest, predictor: Any | None,
                 method: str | None) -> list[tuple[Path, str]]:
    """The worst errors' photographs (with the model's heatmap when a model and a method are
    given), each captioned with its rank, id, truth, prediction and malignancy probability."""
    from dermlearn.data.images import read_image
    from dermlearn.evaluation.cases import REVIEWED

    worst = cases[cases["kind"] != "right"].head(REVIEWED)
    if worst.empty or "path" not in manifest.table or manifest.table["path"].isna().any():
        return []
    paths = manifest.table.set_index("image_id")["path"]
    panels = []
    for row in worst.itertuples(index=False):
        image = read_image(paths.loc[row.image])
        if predictor is not None and method:
            from dermlearn.explain import explain_images, overlay

            image = overlay(image, explain_images(predictor, [image], method)[0].heatmap)
        risk = "" if np.isnan(row.p_malignant) else f"\nP(malignant) {row.p_malignant:.2f}"
        panels.append({"image": image, "caption": f"#{row.rank} {row.image} ({row.kind})\n"
                                                  f"true {row.truth}\npred {row.predicted} "
                                                  f"({row.p_predicted:.2f}){risk}"})
    fig = plots.example_grid_figure(panels, columns=4, title="the worst errors first")
    shown = "photographs with the model's " + method + " map" if predictor is not None and \
        method else "photographs"
    return [(plots.save_figure(fig, out / "figures" / "cases.png"),
             f"case review: the {len(panels)} worst errors ({shown}); every image in cases.csv")]

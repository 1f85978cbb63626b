"""``dermlearn ensemble RUN RUN ... --out OUT``: one model from several runs (other backbones,
seeds or recipes) trained on the same lesion-grouped split.

Each run's validation images were held out by every run, so the member weights (maximum
likelihood, :func:`~dermlearn.evaluation.mixture.mixture_weights`) and the one temperature
(:func:`~dermlearn.evaluation.mixture.fit_mixture_temperature`) are fitted there and never on
an image a member trained on. ``OUT`` is laid out as a run (``model/`` with ``members/K``,
``splits.csv``, ``val_predictions.csv``, ``metrics.json``, ``run.json``), so predict, evaluate
(which then scores only the images no member trained on), explain, serve and ONNX export treat
the ensemble as one model. Its out-of-distribution screen is fitted again on the runs' training
images.

Each member keeps its own preprocessing: the ensemble reads every image once, with a
preprocessing that keeps every part of the photograph its members keep at the finest of their
resolutions (:func:`~dermlearn.models.input_resize.ensemble_input`), and every member crops
and resizes that batch to its own input inside the network
(:class:`~dermlearn.models.input_resize.InputResize`), in PyTorch and in the exported ONNX
graph alike. Where the members' crops differ in shape (a square centre crop against the whole
4:3 frame) the part a member keeps is computed for the median size of the runs' validation
photographs (``reference_photo`` in the config) and is exact for photographs of that aspect
ratio. The member weights are fitted on each run's own validation predictions (its own
preprocessing). Runs whose normalisation or colour constancy differ are refused with the
reason.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn import __version__
from dermlearn.atomic import atomic_write, atomic_write_json, check_output_dir
from dermlearn.data import load
from dermlearn.data.images import read_image
from dermlearn.evaluation.calibration import apply_temperature
from dermlearn.evaluation.mixture import fit_mixture_temperature, mixture_weights
from dermlearn.models.errors import ModelError
from dermlearn.models.input_resize import ensemble_input
from dermlearn.models.lesion_classifier import read_config
from dermlearn.models.preprocessing import PreprocessConfig
from dermlearn.splits import TEST, fold_ids
from dermlearn.taxonomy import Taxonomy, assign_classes
from dermlearn.training.finish import MIN_CALIBRATION_IMAGES, OOD_FIT_IMAGES, evaluate_predictions
from dermlearn.training.runs import RunError

__all__ = ["ensemble_runs"]

#: Config fields every member must share (preprocessing: see :func:`_input_preprocess`).
SHARED = ("classes", "taxonomy")


def _read_run(run: Path) -> dict[str, Any]:
    """A run's model config, splits and validation predictions, checked to be combinable."""
    model = run / "model"
    for needed in (run / "run.json", run / "splits.csv", run / "val_predictions.csv",
                   model / "config.json"):
        if not needed.is_file():
            raise RunError(f"{run}: not a finished dermlearn run (no {needed.name})")
    config = read_config(model)
    if config.get("ensemble_of_runs"):
        raise RunError(f"{run} is already an ensemble of runs; give its runs instead: "
                       f"{' '.join(config['ensemble_of_runs'])}")
    if config.get("ensemble"):
        raise RunError(f"{run}: a fold ensemble's images are each held out by one member only; "
                       f"combine hold-out runs (trained without --folds)")
    if config.get("refit"):
        raise RunError(f"{run}: a refit model trained on its validation part; combine the "
                       f"selection models or runs without --refit")
    if config.get("metadata"):
        raise RunError(f"{run}: models that fuse age, sex and site are not combined yet")
    val = pd.read_csv(run / "val_predictions.csv", dtype={"image": str}).set_index("image")
    return {"run": run, "config": config, "state": json.loads((run / "run.json").read_text()),
            "splits": pd.read_csv(run / "splits.csv", dtype={"image_id": str}), "val": val}


def _check_compatible(runs: list[dict[str, Any]]) -> None:
    first = runs[0]
    order = first["splits"].set_index("image_id")["fold"].sort_index()
    for other in runs[1:]:
        name = other["run"]
        if not order.equals(other["splits"].set_index("image_id")["fold"].sort_index()):
            raise RunError(f"{name} was split differently from {first['run']}: an ensemble "
                           f"needs every run trained on the same split (train them with the "
                           f"same --splits FILE, or the same --seed)")
        if set(other["val"].index) != set(first["val"].index):
            raise RunError(f"{name} and {first['run']} hold out different validation images")
        for field in SHARED:
            if _without_aliases(other["config"].get(field)) != \
                    _without_aliases(first["config"].get(field)):
                raise RunError(f"{name} and {first['run']} differ in their {field}")


def _without_aliases(value: Any) -> Any:
    """A config value with every ``aliases`` list left out: runs whose trees differ only in
    the names that read labels (e.g. built-in names added by a later version) combine."""
    if isinstance(value, dict):
        return {k: _without_aliases(v) for k, v in value.items() if k != "aliases"}
    if isinstance(value, list):
        return [_without_aliases(v) for v in value]
    return value


def _input_preprocess(runs: list[dict[str, Any]], photo_hw: list[float]) -> dict[str, Any]:
    """The preprocessing the ensemble reads images with (see the module docstring); runs whose
    preprocessing cannot be made from it are refused with the reason."""
    try:
        return ensemble_input([PreprocessConfig.from_dict(r["config"]["preprocess"])
                               for r in runs], photo_hw).to_dict()
    except ModelError as exc:
        raise RunError(f"{', '.join(str(r['run']) for r in runs)}: {exc}; members may differ "
                       f"in size and crop, not in normalisation or --color-constancy") from None


def _reference_photo(manifest, images: list[str], n: int = 100) -> list[float]:
    """Median (H, W) in pixels of up to ``n`` of ``images`` (seeded choice)."""
    table = manifest.table.set_index(manifest.table["image_id"].astype(str))
    chosen = np.random.default_rng(0).permutation(images)[:n]
    sizes = [read_image(table.loc[i, "path"]).size[::-1] for i in chosen]
    return [float(v) for v in np.median(np.array(sizes, dtype=float), axis=0)]


def ensemble_runs(runs: list[str | Path], out: str | Path, *, progress: bool = False
                  ) -> dict[str, Any]:
    """Combine ``runs`` into the run-like folder ``out`` (see the module docstring); returns
    its ``metrics.json`` (validation figures of the weighted, calibrated ensemble)."""
    if len(runs) < 2:
        raise RunError("an ensemble needs at least two runs")
    out = check_output_dir(Path(out))
    if (out / "model").exists():
        raise RunError(f"{out} already holds a model; choose another --out")
    members = [_read_run(Path(r)) for r in runs]
    _check_compatible(members)
    first = members[0]
    manifest = load(first["state"]["data"], taxonomy=first["config"]["taxonomy"],
                    **{k: v for k, v in first["state"].get("data_options", {}).items()
                       if k != "aliases"})  # the tree holds the aliases
    photo = _reference_photo(manifest, list(first["val"].index))
    preprocess = _input_preprocess(members, photo)
    classes = list(first["config"]["classes"])
    taxonomy = Taxonomy.from_dict(first["config"]["taxonomy"])
    images = list(first["val"].index)
    labels = first["val"]["label"].tolist()
    targets = np.array([classes.index(c) for c in assign_classes(taxonomy, labels, classes)])
    probs = [m["val"].loc[images, classes].to_numpy(float) for m in members]
    weights = mixture_weights(probs, targets)
    temperature, skipped = 1.0, None
    if len(images) >= MIN_CALIBRATION_IMAGES:
        temperature = fit_mixture_temperature(probs, weights, targets)
    else:
        skipped = f"{len(images)} validation images < {MIN_CALIBRATION_IMAGES}"

    model_dir = out / "model"
    names = []
    for k, member in enumerate(members):
        shutil.copytree(member["run"] / "model", model_dir / "members" / str(k),
                        ignore=shutil.ignore_patterns("ood.*", "model.onnx"))
        names.append(f"members/{k}")
    config = {k: v for k, v in first["config"].items()
              if k not in ("validation", "recipe", "selected_epochs")}
    config.update({"dermlearn_version": __version__, "ensemble": names,
                   "ensemble_weights": [float(w) for w in weights], "temperature": temperature,
                   "backbone": "+".join(m["config"]["backbone"] for m in members),
                   "preprocess": preprocess, "reference_photo": photo,
                   "ensemble_of_runs": [str(Path(m["run"]).resolve()) for m in members]})
    atomic_write_json(model_dir / "config.json", config)
    shutil.copyfile(first["run"] / "splits.csv", out / "splits.csv")

    mixed = sum(w * apply_temperature(p, temperature) for w, p in zip(weights, probs))
    frame = pd.DataFrame(mixed, columns=classes)
    frame.insert(0, "image", images)
    frame["label"] = labels
    frame["fold"] = first["val"]["fold"].to_numpy()
    atomic_write(out / "val_predictions.csv", lambda tmp: frame.to_csv(tmp, index=False))
    metrics = evaluate_predictions(frame, classes, manifest)
    metrics.update({
        "classes": classes, "validation": "lesion-grouped hold-out (shared by every member)",
        "ensemble": {"runs": [str(m["run"]) for m in members],
                     "weights": [float(w) for w in weights],
                     "members_alone": [evaluate_predictions(m["val"].loc[images].reset_index(),
                                                            classes, manifest)["balanced_accuracy"]
                                       for m in members]},
        "calibration": {"temperature": temperature, **({"skipped": skipped} if skipped else {})},
        "ood": _fit_ood(model_dir, manifest, first["splits"], images, progress)})
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "run.json", {
        "data": first["state"]["data"], "splits": str((out / "splits.csv").resolve()),
        "ensemble_of": config["ensemble_of_runs"], "taxonomy": first["config"]["taxonomy"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return metrics


def _fit_ood(model_dir: Path, manifest, splits: pd.DataFrame, held_out: list[str],
             progress: bool) -> dict[str, Any]:
    """The ensemble's out-of-distribution screen, fitted on up to OOD_FIT_IMAGES training
    images of the runs (seeded choice, lesion-grouped thresholds)."""
    from dermlearn.inference import Predictor
    from dermlearn.inference.ood import fit_ood

    fold = pd.Series(fold_ids(splits["fold"]), index=splits["image_id"].astype(str)
                     ).reindex(manifest.table["image_id"].astype(str)).to_numpy()
    training = ~manifest.table["image_id"].isin(held_out).to_numpy() & (fold != TEST)
    rows = np.flatnonzero(training)
    chosen = np.sort(np.random.default_rng(0).permutation(rows)[:OOD_FIT_IMAGES])
    table = manifest.table.iloc[chosen]
    detector = fit_ood(Predictor.load(model_dir), table["path"].astype(str).tolist(),
                       labels=table["label"].astype(str).tolist(),
                       groups=table["lesion_id"].astype(str).tolist(), progress=progress)
    detector.save(model_dir)
    return {"n_images": int(len(chosen)), "percentile": 95.0}

"""Which images a model may be scored on: never its training images, every image it never saw.

Evaluation, t-SNE embeddings, explanations and the report all call :func:`unseen_images`,
which reads the run's ``splits.csv`` beside the model (the images each model of the run trained
on) and says what it chose. Images are matched by id, so a copy of the data, a CSV that lists
the run's images among new ones, or a dataset read from another folder are all recognised.

* ``auto``: every image the model never trained on -- images the run never saw and, for a
  single model, its validation images; for a fold ensemble, each run image is scored by the
  one member that held it out. The run's test part is left out (it is scored once, on
  purpose, with ``test``); the description says how many images were left out and why.
* ``val``: the run's validation (hold-out, or out-of-fold) images only;
* ``test``: the run's test-part images only;
* ``all``: every image; refused when any of them trained the model.

>>> scope = unseen_images("runs/ham/model", manifest)
>>> scope.description      # "120 images the model never trained on: 100 ... + 20 ..."
>>> probs = score_unseen(predictor, manifest, scope, tta=8)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermlearn.data.manifest import Manifest
from dermlearn.errors import DermlearnError
from dermlearn.inference.predictor import Predictor, model_directory
from dermlearn.inference.scoring import score_images
from dermlearn.models.views import first_views
from dermlearn.splits import TEST, load_splits

__all__ = ["PARTS", "Scope", "score_unseen", "unseen_images"]

#: What ``--part`` may ask for.
PARTS = ("auto", "val", "test", "all")
#: ``Scope.member`` of an image scored by the whole model.
WHOLE_MODEL = -1


@dataclass
class Scope:
    """The rows of a Manifest to score and who scores each.

    ``rows`` (K,) into the manifest; ``member`` (K,): the ensemble member that held each image
    out (its index in the model's ``ensemble`` list), or :data:`WHOLE_MODEL`; ``fold`` (K,):
    the run's fold of each image (None for images the run never saw); ``part``: the part
    resolved; ``description``: what was chosen, for the user and the report.
    """

    rows: np.ndarray
    member: np.ndarray
    fold: list
    part: str
    description: str


def _run_folds(model_dir: Path) -> pd.Series | None:
    """image_id -> fold of the run that made ``model_dir`` (None: no run recorded)."""
    path = model_dir.parent / "splits.csv"
    if model_dir.name != "model" or not path.is_file():
        return None
    return load_splits(path).set_index("image_id")["fold"]


def _validation_folds(model_dir: Path, config: dict, folds: pd.Series) -> dict[int, int]:
    """Fold -> the member that held it out: every member of a fold ensemble (members/K holds
    out fold K), or the single model's validation fold (the run's first fold); none for a
    refit model."""
    if config.get("refit"):  # trained on every image of the run but its test part
        return {}
    if config.get("ensemble_of_runs"):  # runs sharing one hold-out: all its members held it
        return {int(config["fold"]): WHOLE_MODEL} if config.get("fold") is not None else {}
    members = list(config.get("ensemble") or [])
    if members:
        return {int(Path(name).name): i for i, name in enumerate(members)}
    fold = config.get("fold")
    if fold is None:
        parts = sorted(set(folds.to_numpy().tolist()) - {TEST})
        fold = parts[0] if parts else None
    return {} if fold is None else {int(fold): WHOLE_MODEL}


def unseen_images(model: str | Path | Predictor, images: Manifest | Sequence[str],
                  part: str = "auto", *, source: str | None = None) -> Scope:
    """The images (a Manifest, or image ids from ``source``) that ``model`` may be scored on
    (see the module docstring); ``Scope.rows`` index them."""
    if part not in PARTS:
        raise DermlearnError(f"part must be one of {', '.join(PARTS)}, not {part!r}")
    predictor = model if isinstance(model, Predictor) else None
    model_dir = model_directory(predictor.directory if predictor else model)
    config = predictor.config if predictor else _read_config(model_dir)
    if isinstance(images, Manifest):
        ids, source = images.table["image_id"].astype(str), source or images.source
    else:
        ids, source = pd.Series([str(i) for i in images], dtype=object), source or "the images"
    ids = ids.reset_index(drop=True)
    run_folds = _run_folds(model_dir)
    n = len(ids)
    if run_folds is None:  # a model with no run beside it: nothing is known to be training data
        if part in ("val", "test"):
            raise DermlearnError(f"--part {part} needs the run's splits.csv next to {model_dir}")
        return Scope(np.arange(n), np.full(n, WHOLE_MODEL), [None] * n, "all",
                     f"all {n} images (no run record beside {model_dir}: none is known to "
                     f"have trained it)")
    fold = ids.map(run_folds)
    in_run = fold.notna().to_numpy()
    fold_values = fold.fillna(TEST - 1).astype(np.int64).to_numpy()  # TEST - 1: not in the run
    held_out_by = _validation_folds(model_dir, config, run_folds)
    validation = np.isin(fold_values, list(held_out_by))
    test = in_run & (fold_values == TEST)
    new = ~in_run
    trained = in_run & ~validation & ~test
    if part == "all" and trained.any():
        example = ids[trained].iloc[0]
        raise DermlearnError(
            f"{int(trained.sum())} of the {n} images of {source} trained {model_dir} "
            f"(e.g. {example}); scoring them would overstate it; use --part auto to score the "
            f"{n - int(trained.sum())} it never trained on")
    chosen = {"all": np.ones(n, bool), "val": validation, "test": test,
              "auto": validation | new}[part]
    rows = np.flatnonzero(chosen)
    if not len(rows):
        if part != "auto":
            raise DermlearnError(f"no {'validation' if part == 'val' else 'test-part'} images "
                                 f"of {model_dir.parent} are in {source}")
        reasons = [f"{int(trained.sum())} trained {model_dir} (e.g. {ids[trained].iloc[0]})"
                   ] if trained.any() else []
        if test.any():
            reasons.append(f"{int(test.sum())} are the run's test part (score them once, on "
                           f"purpose, with --part test)")
        refit = (f" (a refit model: {model_dir.parent / 'metrics.json'} holds the run's "
                 f"validation figures)" if config.get("refit") else "")
        raise DermlearnError(f"none of the {n} images of {source} is one {model_dir} never "
                             f"trained on: {'; '.join(reasons)}; give images it has not "
                             f"seen{refit}")
    member = np.array([held_out_by.get(int(f), WHOLE_MODEL) if v else WHOLE_MODEL
                       for f, v in zip(fold_values[rows], validation[rows])])
    described = _describe(part, int(validation[rows].sum()), int(new[rows].sum()),
                          int(test[rows].sum()), int(trained.sum()), int(test.sum()),
                          ensemble=bool(config.get("ensemble")))
    return Scope(rows, member, [int(f) if i else None for f, i in
                                zip(fold_values[rows], in_run[rows])], part, described)


def _describe(part: str, n_val: int, n_new: int, n_test: int, n_trained: int, n_test_all: int,
              *, ensemble: bool) -> str:
    held = ("out-of-fold images of the run, each scored by the member that held it out"
            if ensemble else "validation (lesion-grouped hold-out) images of the run")
    pieces = []
    if n_val:
        pieces.append(f"{n_val} {held}")
    if n_new:
        pieces.append(f"{n_new} image(s) the run never saw")
    if n_test:
        pieces.append(f"{n_test} test-part images of the run")
    total = n_val + n_new + n_test
    text = f"{total} images: " + " + ".join(pieces) if pieces else f"{total} images"
    left = []
    if n_trained and part != "all":
        left.append(f"{n_trained} training images")
    if part == "auto" and n_test_all:
        left.append(f"{n_test_all} test-part images (score them once with --part test)")
    return text + (f"; left out: {', '.join(left)}" if left else "")


def _read_config(model_dir: Path) -> dict:
    """The model's config; {} while the run has not saved one yet (its splits still say which
    images it trains on)."""
    from dermlearn.models.lesion_classifier import read_config

    return read_config(model_dir) if (model_dir / "config.json").is_file() else {}


def score_unseen(predictor: Predictor, manifest: Manifest, scope: Scope, *, tta: int = 1,
                 batch_size: int = 32, num_workers: int = 0, progress: bool = False
                 ) -> np.ndarray:
    """Probabilities (K, C) of ``scope``'s rows: each by the member that held it out, the
    others by the whole model. An unreadable image is an ImageDecodeError naming it."""
    table = manifest.table.iloc[scope.rows].reset_index(drop=True)
    probs = np.zeros((len(scope.rows), len(predictor.classes)))
    for member in sorted(set(scope.member.tolist())):
        at = np.flatnonzero(scope.member == member)
        runner = predictor if member == WHOLE_MODEL else predictor.member(member)
        part = table.iloc[at]
        probs[at] = score_images(
            runner, part["path"].astype(str).tolist(),
            metadata=predictor.encode_metadata(part), views=first_views(tta),
            batch_size=batch_size, num_workers=num_workers, skip_unreadable=False,
            progress=progress, desc="scoring").probabilities
    return probs

"""The locked-threshold test of ``dermlearn evaluate``: an operating point chosen beforehand
(``--threshold T``, or ``--threshold-from RUN_OR_CSV --target sensitivity=0.95`` on validation
data), applied unchanged to the evaluated images of one binary task (``--task``), per image or
aggregated per lesion or patient (``--aggregate``), overall and per ``--subgroup`` column.

The source of a threshold must not share an image with the test: a threshold tuned on the
images it is then judged on would be optimistic, and is refused.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlearn.data.manifest import Manifest
from dermlearn.errors import DataError, DermlearnError
from dermlearn.evaluation.calibration import apply_temperature
from dermlearn.evaluation.levels import binary_scores
from dermlearn.evaluation.operating_point import (
    aggregate_cases,
    parse_target,
    rates_at,
    subgroups_at,
    threshold_for,
)
from dermlearn.taxonomy import Taxonomy

__all__ = ["AGGREGATES", "LockedTest", "locked_test", "resolve_locked", "subgroup_column",
           "threshold_from"]

#: How images are grouped into the unit a clinic decides on.
AGGREGATES = {"lesion": "lesion_id", "patient": "patient_id"}
#: Source column names (as datasets spell them) -> the Manifest column that holds them.
SUBGROUP_ALIASES = {"localization": "site", "anatom_site_general": "site",
                    "anatom_site_general_challenge": "site", "dx_type": "label_source",
                    "diagnosis_confirm_type": "label_source", "gender": "sex",
                    "age_approx": "age"}


class LockedTest(DermlearnError):
    """A locked-threshold option that cannot be applied (named with its reason)."""


def threshold_from(source: str | Path, target: str, task: str, taxonomy: Taxonomy,
                   test_ids: Sequence[str]) -> tuple[float, str]:
    """(threshold, where it came from): meeting ``target`` on ``source``'s images, a run's
    validation predictions (at its model's temperature, as it predicts) or a predictions CSV
    with a ``label`` column (e.g. an evaluate output's). Refused when they share an image with
    the test."""
    try:
        kind, value = parse_target(target)
    except ValueError as exc:
        raise LockedTest(f"--target: {exc}") from None
    source = Path(source)
    temperature = 1.0
    if source.is_dir():
        from dermlearn.models.lesion_classifier import read_config

        run = source.parent if source.name == "model" else source
        path = run / "val_predictions.csv"
        if not path.is_file():
            raise LockedTest(f"--threshold-from {source}: no val_predictions.csv (give a run "
                             f"folder or a predictions CSV with a label column)")
        temperature = float(read_config(run / "model").get("temperature", 1.0))
    else:
        path = source
    if not path.is_file():
        raise LockedTest(f"--threshold-from {source}: no such file or folder")
    frame = pd.read_csv(path, dtype={"image": str, "label": str})
    if "label" not in frame or "image" not in frame:
        raise LockedTest(f"{path}: needs image and label columns to choose a threshold on")
    shared = sorted(set(frame["image"]) & set(map(str, test_ids)))
    if shared:
        raise LockedTest(f"--threshold-from {source}: {len(shared)} of its images are also "
                         f"being evaluated (e.g. {shared[0]}); a threshold must be chosen on "
                         f"other images than the test's (a validation part)")
    classes = [c for c in frame.columns if c not in ("image", "label", "fold", "lesion_id")]
    probs = apply_temperature(frame[classes].to_numpy(float), temperature)
    y, score = binary_scores(probs, frame["label"].tolist(), classes, taxonomy, task)
    try:
        threshold = threshold_for(y, score, kind, value)
    except ValueError as exc:
        raise LockedTest(f"--threshold-from {source}: {exc}") from None
    where = (f"{kind} >= {value:g} on {len(frame)} images of {path}"
             + (f" (temperature {temperature:.3g})" if temperature != 1.0 else ""))
    return threshold, where


def subgroup_column(table: pd.DataFrame, name: str) -> str:
    """The manifest column for ``--subgroup NAME`` (also a dataset's own spelling, e.g.
    ``localization`` or ``dx_type``); a DataError naming the columns there are otherwise."""
    if name in table.columns:
        return name
    alias = SUBGROUP_ALIASES.get(name.lower())
    if alias in table.columns:
        return alias
    known = sorted(set(table.columns) - {"path", "source_row", "mask_path", "label_raw"})
    raise DataError(f"--subgroup {name}: no such column; the data has {', '.join(known)} "
                    f"(and {', '.join(sorted(SUBGROUP_ALIASES))} for theirs)")


def locked_test(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                taxonomy: Taxonomy, manifest: Manifest, *, task: str, threshold: float,
                source: str, aggregate: str | None = None, aggregate_by: str = "max",
                subgroups: Sequence[str] = (), n_boot: int = 1000, seed: int = 0
                ) -> dict[str, Any]:
    """The locked test's figures for ``metrics.json`` (``manifest``: the evaluated images, in
    the order of ``probs``; ``n_boot``, ``seed``: the AUCs' bootstrap intervals, resampling
    the cases: images, or lesions / patients when aggregated)."""
    y, score = binary_scores(np.asarray(probs, float), list(labels), list(classes), taxonomy,
                             task)
    table = manifest.table.reset_index(drop=True)
    unit, values = "image", {name: table[subgroup_column(table, name)] for name in subgroups}
    if aggregate:  # checked by resolve_locked
        ids = table[AGGREGATES[aggregate]]
        y, score, groups = aggregate_cases(y, score, ids.astype(str), aggregate_by)
        first = table.assign(_g=ids.astype(str)).drop_duplicates("_g").set_index("_g")
        values = {name: first.loc[groups, col.name].reset_index(drop=True)
                  for name, col in values.items()}
        unit = f"{aggregate} ({aggregate_by} of its images' scores)"
    return {"task": task, "threshold": float(threshold), "source": source, "unit": unit,
            **rates_at(y, score, threshold, n_boot=n_boot, seed=seed),
            "subgroups": {name: subgroups_at(y, score, threshold, v, n_boot=n_boot, seed=seed)
                          for name, v in values.items()}}


def resolve_locked(options: Mapping[str, Any] | None, taxonomy: Taxonomy,
                   manifest: Manifest) -> dict[str, Any] | None:
    """The locked test's settings, checked before any scoring (``manifest``: the images to be
    evaluated): the threshold (fixed, or chosen now on its source), the subgroup columns and
    the aggregation ids. None when no threshold is asked for. Keyword arguments of
    :func:`locked_test`. Options: those of :func:`~dermlearn.evaluation.evaluate.evaluate_model`."""
    options = dict(options or {})
    if options.get("threshold") is None and not options.get("threshold_from"):
        if options.get("subgroups") or options.get("aggregate"):
            raise LockedTest("--subgroup and --aggregate report figures at a locked threshold: "
                             "give --threshold T or --threshold-from RUN_OR_CSV --target "
                             "sensitivity=0.95")
        return None
    task = options.get("task") or "melanoma_vs_rest"
    if options.get("threshold") is not None:
        if options.get("threshold_from"):
            raise LockedTest("give --threshold or --threshold-from, not both")
        threshold, source = float(options["threshold"]), "fixed beforehand (--threshold)"
    else:
        if not options.get("target"):
            raise LockedTest("--threshold-from needs --target, e.g. sensitivity=0.95")
        threshold, source = threshold_from(options["threshold_from"], options["target"], task,
                                           taxonomy, manifest.image_ids)
    table = manifest.table
    subgroups = [subgroup_column(table, name) and name for name in options.get("subgroups") or ()]
    aggregate = options.get("aggregate")
    if aggregate:
        column = AGGREGATES.get(aggregate)
        if column is None:
            raise LockedTest(f"--aggregate must be one of {', '.join(AGGREGATES)}, not "
                             f"{aggregate!r}")
        missing = int((table[column].isna() | (table[column].astype(str).str.strip() == "")
                       ).sum())
        if missing:
            raise LockedTest(f"--aggregate {aggregate}: {missing} of the {len(table)} images "
                             f"have no {column} in {manifest.source}")
    return {"task": task, "threshold": threshold, "source": source, "aggregate": aggregate,
            "aggregate_by": options.get("aggregate_by") or "max", "subgroups": subgroups}

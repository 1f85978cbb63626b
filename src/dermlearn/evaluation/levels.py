"""Metrics at every taxonomy level via PA: leaf classes, Esteva's 3-/9-way, binary views."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dermlearn.errors import TaxonomyError
from dermlearn.evaluation.metrics import classification_metrics
from dermlearn.taxonomy import Taxonomy, aggregate, level_labels

#: For binary levels, the group whose probability is the score (positive class).
POSITIVE_GROUP = {"melanoma_vs_rest": "melanoma", "malignant_vs_benign": "malignant"}


def level_metrics(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                  taxonomy: Taxonomy, levels: Sequence[str] | None = None) -> dict[str, dict]:
    """``{level: metrics}`` for each level the training classes can be summed to.

    ``probs`` (N, C) over ``classes``; ``labels`` are the true taxonomy labels (N,). Levels
    the classes are too coarse for, or where the truth has a single group, are skipped.
    Binary levels also carry ``auc`` of the positive group's probability.
    """
    out: dict[str, dict] = {}
    for level in levels if levels is not None else taxonomy.levels:
        try:
            p, groups = aggregate(probs, classes, taxonomy, level)
            truth = level_labels(labels, taxonomy, level)
        except TaxonomyError:
            continue
        index = {g: i for i, g in enumerate(groups)}
        y = np.array([index[t] for t in truth])
        present = [g for g in groups if g in set(truth)]
        if len(present) < 2:
            continue
        metrics = classification_metrics(y, p, groups)
        metrics["per_class"] = {g: v for g, v in metrics["per_class"].items() if v["n"]}
        positive = POSITIVE_GROUP.get(level)
        if positive in index:
            metrics["auc"] = metrics["per_class"][positive]["auc"]
            metrics["positive"] = positive
        out[level] = metrics
    return out


def binary_scores(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                  taxonomy: Taxonomy, level: str) -> tuple[np.ndarray, np.ndarray]:
    """(y (N,) bool, score (N,)) for a binary level: the positive group's summed probability."""
    grouped, groups = aggregate(probs, classes, taxonomy, level)
    positive = POSITIVE_GROUP[level]
    truth = np.array(level_labels(labels, taxonomy, level)) == positive
    return truth, grouped[:, groups.index(positive)]

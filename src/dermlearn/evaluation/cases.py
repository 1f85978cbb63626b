"""Case review: every scored image with its truth, prediction and risk, the worst errors first.

Order: missed malignancies (truth malignant, the predicted class benign), the most confidently
missed first (lowest malignancy probability); then benign lesions called malignant, the most
confident first; then the other errors (wrong class within the same group), by the wrong
class's probability; then the correct ones. Melanoma is flagged on its own (``missed_melanoma``).
Probabilities of the malignant group and of melanoma are summed up the taxonomy (PA) where the
classes reach those levels.

``cases.csv`` holds every row; the report shows the worst :data:`REVIEWED` with thumbnails and
heatmaps.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dermlearn.errors import TaxonomyError
from dermlearn.evaluation.levels import binary_scores
from dermlearn.taxonomy import Taxonomy, aggregate, assign_classes

__all__ = ["REVIEWED", "case_table"]

#: Errors the report shows with their images.
REVIEWED = 12

KINDS = ("missed malignant", "false malignant", "wrong class", "right")


def _group_of_prediction(probs: np.ndarray, classes: Sequence[str], taxonomy: Taxonomy,
                         level: str, positive: str) -> np.ndarray | None:
    """Whether each image's predicted (argmax) class lies in ``level``'s ``positive`` group."""
    try:
        onehot, groups = aggregate(np.eye(len(classes)), list(classes), taxonomy, level)
    except TaxonomyError:
        return None
    in_group = onehot[:, groups.index(positive)] > 0.5
    return in_group[np.asarray(probs).argmax(axis=1)]


def case_table(ids: Sequence[str], labels: Sequence[str], probs: np.ndarray,
               classes: Sequence[str], taxonomy: Taxonomy,
               lesion_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per image (see the module docstring for the order): ``rank``, ``image``,
    ``lesion_id``, ``truth``, ``truth_class``, ``predicted``, ``p_predicted``,
    ``p_malignant``, ``p_melanoma``, ``kind``, ``missed_malignant``, ``missed_melanoma``,
    ``predictions_row`` (its line in predictions.csv, 2 = the first row) and one column per
    class probability."""
    probs = np.asarray(probs, dtype=float)
    classes = list(classes)
    labels = list(labels)
    truth_class = assign_classes(taxonomy, labels, classes)
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame({"image": list(map(str, ids)),
                          "lesion_id": list(lesion_ids) if lesion_ids is not None else None,
                          "truth": labels, "truth_class": truth_class,
                          "predicted": [classes[i] for i in predicted],
                          "p_predicted": probs[np.arange(len(probs)), predicted],
                          "predictions_row": np.arange(len(probs)) + 2})
    right = frame["truth_class"].to_numpy() == frame["predicted"].to_numpy()
    risk = {}
    for level, positive, column in (("malignant_vs_benign", "malignant", "malignant"),
                                    ("melanoma_vs_rest", "melanoma", "melanoma")):
        try:
            truth, score = binary_scores(probs, labels, classes, taxonomy, level)
        except TaxonomyError:
            frame[f"p_{column}"], frame[f"missed_{column}"] = np.nan, False
            continue
        called = _group_of_prediction(probs, classes, taxonomy, level, positive)
        frame[f"p_{column}"] = score
        frame[f"missed_{column}"] = truth & ~called
        risk[column] = (truth, called, score)
    kind = np.where(right, "right", "wrong class").astype(object)
    order_key = np.where(right, 3.0, 2.0) * 10 - frame["p_predicted"].to_numpy()
    if "malignant" in risk:
        truth, called, score = risk["malignant"]
        missed, false = truth & ~called, ~truth & called
        kind[false], kind[missed] = "false malignant", "missed malignant"
        order_key = np.where(missed, 0.0 + score, np.where(false, 10.0 - score, order_key))
    frame["kind"] = kind
    for c, name in enumerate(classes):
        frame[name] = probs[:, c]
    frame = frame.iloc[np.argsort(order_key, kind="stable")].reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame

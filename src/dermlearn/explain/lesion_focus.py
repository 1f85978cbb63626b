"""Does the model look at the lesion? Explanation heatmaps scored against segmentation masks.

Two scores per photograph, both on the photograph's own pixel grid:

* ``mass_in_mask``: the share of the heatmap's total mass that lies inside the lesion mask;
  a heatmap spread uniformly over what the network sees scores ``mask_fraction`` (the mask's
  share of the network's centre crop, given as the baseline);
* ``pointing_hit``: the pointing game (Zhang et al., ECCV 2016): the heatmap's maximum lies
  inside the mask (optionally dilated by a tolerance).

HAM10000 masks (Tschandl et al. 2020) are the ``mask_path`` column of a HAM10000 manifest read
from a folder with ``masks/``; a pixel over 127 is lesion.

>>> frame = lesion_focus_scores(predictor, load("../shared/data/ham10000"), limit_per_class=20)
>>> summarise_focus(frame)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from dermlearn.errors import DermlearnError
from dermlearn.explain.explanations import check_method, explain_images
from dermlearn.explain.geometry import visible_region

if TYPE_CHECKING:
    from dermlearn.data.manifest import Manifest
    from dermlearn.inference.predictor import Predictor

__all__ = [
    "lesion_focus_scores",
    "pointing_game_hit",
    "read_mask",
    "saliency_in_mask",
    "summarise_focus",
    "true_classes",
]

FOCUS_COLUMNS = ("image_id", "label", "predicted", "correct", "mass_in_mask", "pointing_hit",
                 "mask_fraction")


def _check_pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if heatmap.ndim != 2 or heatmap.shape != mask.shape:
        raise DermlearnError(f"heatmap {heatmap.shape} and mask {mask.shape} must be 2-D arrays "
                             f"of the same shape")
    return heatmap, mask


def saliency_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's mass inside ``mask``: sum(heatmap * mask) / sum(heatmap), in [0, 1].

    ``heatmap`` (H, W) non-negative, ``mask`` (H, W) bool. NaN when the heatmap is all zero.
    """
    heatmap, mask = _check_pair(heatmap, mask)
    heatmap = np.clip(np.nan_to_num(heatmap, nan=0.0), 0.0, None)
    total = float(heatmap.sum())
    return float(heatmap[mask].sum() / total) if total > 0 else float("nan")


def pointing_game_hit(heatmap: np.ndarray, mask: np.ndarray, tolerance_px: int = 0) -> bool:
    """Whether the heatmap's maximum lies in ``mask`` dilated by ``tolerance_px`` (Euclidean).

    When several pixels share the maximum (a percentile-normalised saliency map saturates its
    top 1% at 1.0) the hit needs most of them (over half) inside; a constant heatmap points
    nowhere and misses.
    """
    heatmap, mask = _check_pair(heatmap, mask)
    if tolerance_px < 0:
        raise DermlearnError(f"tolerance_px must be >= 0, not {tolerance_px}")
    heatmap = np.nan_to_num(heatmap, nan=-np.inf)
    if not mask.any() or heatmap.max() <= heatmap.min():
        return False
    if tolerance_px > 0:
        from scipy.ndimage import distance_transform_edt

        mask = distance_transform_edt(~mask) <= tolerance_px
    peaks = heatmap == heatmap.max()
    return bool(mask[peaks].sum() * 2 > peaks.sum())


def read_mask(path: Any, size: tuple[int, int] | None = None, *, image_id: str = "") -> np.ndarray:
    """A lesion mask as bool (height, width): pixels over 127 of the L image; resized with
    nearest-neighbour to ``size`` = (width, height) when that differs."""
    from dermlearn.data.images import read_image

    about = f" for image {image_id}" if image_id else ""
    if path is None or (isinstance(path, float) and np.isnan(path)) or str(path) == "":
        raise DermlearnError(f"no lesion mask{about} (its mask_path is empty)")
    if not Path(str(path)).is_file():
        raise DermlearnError(f"lesion mask not found{about}: {path}")
    mask = read_image(str(path)).convert("L")
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.NEAREST)
    return np.asarray(mask) > 127


def true_classes(predictor: Predictor, labels: Any) -> list[str | None]:
    """The training class of each label (its deepest class ancestor-or-self), None where the
    label lies outside, or above, the model's classes."""
    from dermlearn.taxonomy import assign_classes

    classes = list(predictor.classes)
    cache: dict[Any, str | None] = {}
    out = []
    for label in labels:
        if label not in cache:
            if label in classes:
                cache[label] = label
            else:
                try:
                    cache[label] = assign_classes(predictor.taxonomy, [label], classes)[0]
                except DermlearnError:
                    cache[label] = None
        out.append(cache[label])
    return out


def _table(data: Manifest | pd.DataFrame) -> pd.DataFrame:
    table = getattr(data, "table", data)
    if not isinstance(table, pd.DataFrame):
        raise DermlearnError("lesion focus needs a Manifest or a table with path, label and "
                             "mask_path columns")
    if "mask_path" not in table.columns:
        raise DermlearnError("no mask_path column: lesion masks come with HAM10000 read from a "
                             "folder holding masks/ (*_segmentation.png)")
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DermlearnError(f"the table lacks columns {missing}")
    table = table.reset_index(drop=True)
    if "image_id" not in table.columns:
        table = table.assign(image_id=[Path(str(p)).stem for p in table["path"]])
    return table


def lesion_focus_scores(predictor: Predictor, data: Manifest | pd.DataFrame,
                        method: str = "saliency", limit_per_class: int | None = None,
                        progress: bool = False, *, tolerance_px: int = 0,
                        batch_size: int = 16) -> pd.DataFrame:
    """One row per photograph: image_id, label, predicted, correct, mass_in_mask,
    pointing_hit, mask_fraction (see the module docstring).

    ``data``: a Manifest or table with ``path``, ``label`` and ``mask_path`` (``image_id``
    optional). The predicted class is explained. ``limit_per_class``: the first N rows of each
    label, in table order. ``correct`` compares the label's training class (via the taxonomy)
    with the prediction; it is None where the label maps to no single class. Every mask is
    checked before any model work: a missing one raises, naming the file.
    """
    from tqdm.auto import tqdm

    check_method(method)
    table = _table(data)
    if limit_per_class is not None:
        if limit_per_class < 1:
            raise DermlearnError(f"limit_per_class must be >= 1, not {limit_per_class}")
        table = table.groupby("label", sort=False).head(limit_per_class).reset_index(drop=True)
    for image_id, mask_path in zip(table["image_id"], table["mask_path"]):
        if mask_path is None or (isinstance(mask_path, float) and np.isnan(mask_path)) \
                or not Path(str(mask_path)).is_file():
            read_mask(mask_path, image_id=str(image_id))  # raises, naming the file
    truth = true_classes(predictor, table["label"])
    rows = []
    step = max(1, batch_size)
    from dermlearn.data.images import read_image

    with tqdm(total=len(table), unit="img", desc=f"lesion focus ({method})",
              disable=not progress) as bar:
        for start in range(0, len(table), step):
            part = table.iloc[start:start + step]
            images = [read_image(p) for p in part["path"]]
            explanations = explain_images(predictor, images, method, batch_size=step)
            for (_, row), image, e, true in zip(part.iterrows(), images, explanations,
                                                truth[start:start + step]):
                mask = read_mask(row["mask_path"], image.size, image_id=str(row["image_id"]))
                visible = visible_region(image.size, predictor.preprocess)
                rows.append({
                    "image_id": row["image_id"],
                    "label": row["label"],
                    "predicted": predictor.classes[e.predicted],
                    "correct": None if true is None else bool(true == predictor.classes[e.predicted]),
                    "mass_in_mask": saliency_in_mask(e.heatmap, mask),
                    "pointing_hit": pointing_game_hit(e.heatmap, mask, tolerance_px),
                    "mask_fraction": float(mask[visible].mean()) if visible.any() else float("nan"),
                })
            bar.update(len(part))
    return pd.DataFrame(rows, columns=list(FOCUS_COLUMNS))


def summarise_focus(frame: pd.DataFrame, *, overall: bool = True) -> pd.DataFrame:
    """Per label: n, mean mass_in_mask, mean mask_fraction, their ratio ``lift`` (> 1: the
    heatmap concentrates on the lesion more than a uniform one would), and the pointing-game
    hit rate; with ``overall`` a last row ``all`` over every photograph. Indexed by label."""
    def stats(part: pd.DataFrame) -> dict[str, float]:
        mass = float(part["mass_in_mask"].mean())
        base = float(part["mask_fraction"].mean())
        return {"n": len(part), "mass_in_mask": mass, "mask_fraction": base,
                "lift": mass / base if base > 0 else float("nan"),
                "pointing_hit_rate": float(part["pointing_hit"].astype(float).mean())}

    rows = {label: stats(part) for label, part in frame.groupby("label", sort=False)}
    if overall and len(frame):
        rows["all"] = stats(frame)
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["n", "mass_in_mask", "mask_fraction", "lift",
                                          "pointing_hit_rate"])
    out.index.name = "label"
    return out

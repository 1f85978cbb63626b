"""Explanations of a saved model's predictions on photographs, at the photographs' own size.

>>> predictor = Predictor.load("runs/ham/model")
>>> [e] = explain_images(predictor, [read_image("lesion.jpg")], method="gradcam")
>>> e.label, e.probs.max(), e.heatmap.shape          # ('mel', 0.83, (450, 600))
>>> explain_to_dir(predictor, ["lesion.jpg"], "explained/")   # explained/lesion_saliency.png
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from dermlearn.atomic import check_output_dir
from dermlearn.errors import DermlearnError
from dermlearn.explain._common import normalise_maps
from dermlearn.explain.geometry import to_original
from dermlearn.explain.gradcam import class_activation
from dermlearn.explain.overlay import overlay, save_panel
from dermlearn.explain.saliency import input_gradients

if TYPE_CHECKING:
    from dermlearn.inference.predictor import Predictor

__all__ = ["METHODS", "Explanation", "explain_images", "explain_to_dir", "network_maps"]

#: Explanation methods: Esteva et al.'s gradient saliency and Grad-CAM.
METHODS: tuple[str, ...] = ("saliency", "gradcam")


@dataclass
class Explanation:
    """One photograph's explanation.

    ``heatmap``: (height, width) float32 in [0, 1] at the photograph's own size (pixels outside
    the network's centre crop are 0, see :mod:`dermlearn.explain.geometry`); ``target``: index of
    the explained class in ``predictor.classes``; ``label``: its name; ``probs``: (C,) the
    predictor's probabilities (ensemble mean, temperature-scaled); ``method``: one of
    :data:`METHODS`.
    """

    heatmap: np.ndarray
    target: int
    label: str
    probs: np.ndarray
    method: str

    @property
    def predicted(self) -> int:
        """Index of the most probable class."""
        return int(np.argmax(self.probs))


def check_method(method: str) -> str:
    if method not in METHODS:
        raise DermlearnError(f"unknown explanation method {method!r}: choose one of "
                             f"{', '.join(METHODS)}")
    return method


def _target_index(predictor: Predictor, target: int | str | None) -> int | None:
    """A class index from an index, a class name, or None (each image's predicted class)."""
    if target is None:
        return None
    classes = list(predictor.classes)
    if isinstance(target, str):
        if target not in classes:
            raise DermlearnError(f"unknown class {target!r}: the model's classes are "
                                 f"{', '.join(classes)}")
        return classes.index(target)
    index = int(target)
    if not 0 <= index < len(classes):
        raise DermlearnError(f"target class {index} is out of range: the model has "
                             f"{len(classes)} classes (0..{len(classes) - 1})")
    return index


def network_maps(predictor: Predictor, batch: torch.Tensor, method: str = "saliency",
                 target: int | str | None = None, metadata: torch.Tensor | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(maps (N, H, W) in [0, 1], probs (N, C), targets (N,))`` on preprocessed ``batch``.

    Saliency is taken with respect to pixel intensities in [0, 1] (the gradient divided by the
    preprocessing's std) and normalised by its 99th percentile; Grad-CAM by its maximum.
    """
    check_method(method)
    index = _target_index(predictor, target)
    if metadata is None:
        metadata = predictor.missing_metadata(len(batch))
    temperature = float(getattr(predictor, "temperature", 1.0))
    weights = getattr(predictor, "member_weights", None)
    if method == "saliency":
        grad, probs, targets = input_gradients(predictor.members, batch, index, metadata,
                                               temperature=temperature,
                                               weights=weights)
        std = torch.as_tensor(predictor.preprocess.std, dtype=grad.dtype, device=grad.device)
        raw = (grad / std.reshape(1, -1, 1, 1)).abs().sum(dim=1).float().cpu().numpy()
        maps = normalise_maps(raw)
    else:
        maps, probs, targets = class_activation(predictor.members, batch, index, metadata,
                                                temperature=temperature,
                                                weights=weights)
    return maps, probs.double().cpu().numpy(), targets.cpu().numpy()


def explain_images(predictor: Predictor, images: Sequence[Image.Image],
                   method: str = "saliency", target: int | str | None = None, *,
                   metadata: torch.Tensor | None = None,
                   batch_size: int = 16) -> list[Explanation]:
    """Explain ``predictor``'s decision on each decoded RGB photograph.

    ``method``: ``"saliency"`` (Esteva et al.'s input-gradient map) or ``"gradcam"``.
    ``target``: class index or name to explain, or None for each photograph's predicted class.
    The heatmap is computed on the network input (eval transform: resize, centre crop) and
    carried back to the photograph's size (see :func:`dermlearn.explain.geometry.to_original`).
    Photographs are processed ``batch_size`` at a time. ``metadata`` (N, M): the age/sex/site
    encoding for a model that fuses them (default: unknown).
    """
    check_method(method)
    images = list(images)
    out: list[Explanation] = []
    for start in range(0, len(images), max(1, batch_size)):
        chunk = images[start:start + max(1, batch_size)]
        for i, image in enumerate(chunk):
            if not isinstance(image, Image.Image):
                raise DermlearnError(f"explain_images expects PIL images; item {start + i} is "
                                     f"{type(image).__name__}")
        batch = torch.stack([predictor.transform(image) for image in chunk])
        maps, probs, targets = network_maps(
            predictor, batch, method, target,
            None if metadata is None else metadata[start:start + len(chunk)])
        for image, heat, p, t in zip(chunk, maps, probs, targets):
            out.append(Explanation(heatmap=to_original(heat, image.size, predictor.preprocess),
                                   target=int(t), label=predictor.classes[int(t)], probs=p,
                                   method=method))
    return out


def _unique_stems(paths: Sequence[str | Path]) -> list[str]:
    """File stems, with ``-2``, ``-3``... appended to repeats so that no output overwrites another."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def explain_to_dir(predictor: Predictor, paths: Sequence[str | Path], out_dir: str | Path,
                   method: str = "saliency", target: int | str | None = None, *,
                   panels: bool = True, alpha: float = 0.5, cmap: str = "jet",
                   batch_size: int = 16) -> list[Path]:
    """Write ``<stem>_<method>.png`` (the photograph with its heatmap overlaid, same size) for
    each image file into ``out_dir``, and with ``panels`` also ``<stem>_<method>_panel.png``
    (original | overlay, titled with the explained and predicted classes). Returns the overlay
    paths, one per input, in order. Repeated stems get ``-2``, ``-3``... suffixes.
    """
    from dermlearn.data.images import read_image

    check_method(method)
    out_dir = check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in paths]
    stems = _unique_stems(paths)
    written: list[Path] = []
    step = max(1, batch_size)
    for start in range(0, len(paths), step):
        images = [read_image(p) for p in paths[start:start + step]]
        explanations = explain_images(predictor, images, method, target, batch_size=step)
        for image, e, stem in zip(images, explanations, stems[start:start + step]):
            path = out_dir / f"{stem}_{method}.png"
            overlay(image, e.heatmap, alpha=alpha, cmap=cmap).save(path)
            written.append(path)
            if panels:
                title = f"{method} for {e.label} (p={e.probs[e.target]:.2f})"
                if e.target == e.predicted:
                    title += ", the predicted class"
                else:
                    title += (f"; predicted {predictor.classes[e.predicted]} "
                              f"(p={e.probs[e.predicted]:.2f})")
                save_panel(image, e.heatmap, out_dir / f"{stem}_{method}_panel.png",
                           title=title, alpha=alpha, cmap=cmap)
    return written

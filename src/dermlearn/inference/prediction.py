"""``predict()``: a saved model's probabilities for images, as an ISIC-format table.

>>> table = predict("runs/ham/model", "photos/", level="malignant_vs_benign", tta=8)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermlearn.errors import DermlearnError
from dermlearn.inference.inputs import Inputs, resolve_inputs
from dermlearn.inference.predictor import Predictor
from dermlearn.inference.scoring import check_batch_size, score_images
from dermlearn.models.views import check_views, first_views
from dermlearn.parallel import check_threads

__all__ = ["checked_views", "predict", "prediction_table"]


def checked_views(predictor: Predictor, tta: int) -> tuple[str, ...]:
    """The first ``tta`` views, checked against the model's input before any decoding: a
    non-square model takes at most 4 views."""
    try:
        return check_views(first_views(tta), predictor.preprocess.image_size)
    except DermlearnError as exc:
        raise DermlearnError(f"--tta {tta}: {exc} (a non-square model takes at most 4 "
                             f"views)") from None


def prediction_table(predictor: Predictor, ids: list[str], probs: np.ndarray,
                     level: str | None = None) -> pd.DataFrame:
    """ISIC format: ``image`` then one column per class, or per ``level`` group (PA)."""
    columns = predictor.classes
    if level:
        probs, columns = predictor.to_level(probs, level)
    table = pd.DataFrame(probs, columns=columns)
    table.insert(0, "image", ids)
    return table


def predict(model: str | Path | Predictor, inputs: Inputs, *, level: str | None = None,
            tta: int = 1, batch_size: int = 32, num_workers: int = 2, progress: bool = False,
            backend: str = "torch", threads: int | None = None) -> pd.DataFrame:
    """ISIC-format table: ``image`` then one probability column per class (or per ``level``
    group, summed up the taxonomy by PA).

    ``model``: a model or run folder, or a loaded :class:`Predictor`. ``inputs``: image files,
    a folder of images, a dataset spec or a :class:`~dermlearn.data.Manifest` (a dataset's age,
    sex and site reach a metadata-fusion model, with either backend).

    ``backend="onnx"`` runs ONNX Runtime on the model's ONNX export (made and cached on the
    fly); ``backend="auto"`` (the CLI's default) picks ONNX Runtime when it is installed, else
    PyTorch -- about 2-3x faster on CPU, probabilities within 1e-4 (``benchmarks/bench.py``);
    the default ``torch`` reproduces training's validation probabilities bit for bit.
    ``threads`` sets the backend's intra-op threads (or PyTorch's).

    Images that cannot be decoded do not stop the others: every readable image is scored, then
    :class:`~dermlearn.inference.scoring.UnreadableImagesError` names each unreadable file and
    carries the readable images' table as ``.table``.
    """
    batch_size = check_batch_size(batch_size)
    threads = check_threads(threads)
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    predictor.check_level(level)  # an unknown level fails now, not after scoring every image
    views = checked_views(predictor, tta)
    resolved = resolve_inputs(inputs)
    runner = predictor
    if backend != "torch":
        from dermlearn.inference.backends import create_backend

        runner = create_backend(predictor.directory, backend, predictor=predictor,
                                threads=threads)
        if runner.name == "torch":
            runner = predictor
    elif threads:
        torch.set_num_threads(threads)
    scores = score_images(runner, resolved.paths, metadata=predictor.encode_metadata(
        resolved.metadata), views=views, batch_size=batch_size, num_workers=num_workers,
        progress=progress, desc="predicting")
    table = prediction_table(predictor, resolved.ids, scores.probabilities, level)
    if scores.unreadable:
        raise scores.error(table[scores.readable].reset_index(drop=True))
    return table

"""The one scoring loop: image files -> decoded images -> views -> forward -> outputs.

Every path that runs a model over image files calls :func:`score_images`: ``predict`` (with
PyTorch or ONNX Runtime), distributed prediction, evaluation, t-SNE embeddings, explanations'
examples, the out-of-distribution screen's fit, features-mode extraction and the validation
predictions at the end of training. What differs between them is only the *runner*, an object
with

    run_batch(images (B, 3, H, W), metadata (B, M) | None, *, views, outputs) -> {name: (B, ...)}

(:class:`~dermlearn.inference.predictor.Predictor`, the backends of
:mod:`dermlearn.inference.backends`, or a frozen backbone), and which ``outputs`` it asks for:
``probabilities`` (B, C), ``embedding`` (B, D: penultimate features), ``ood`` (B, D': the
out-of-distribution screen's vector) or a runner's own (``features``).

>>> scores = score_images(predictor, paths, views=first_views(8))
>>> scores.probabilities          # (N, C); NaN rows for the files named in scores.unreadable
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from dermlearn.data.dataset import ImageDataset, make_loader
from dermlearn.errors import DataError, DermlearnError, ImageDecodeError

__all__ = ["Runner", "Scores", "UnreadableImagesError", "check_batch_size", "score_images"]


class Runner(Protocol):
    """What :func:`score_images` needs from a model."""

    transform: Callable
    input_size: tuple[int, int, int]

    def run_batch(self, images: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  views: Sequence[str] = ("identity",),
                  outputs: Sequence[str] = ("probabilities",)) -> dict[str, np.ndarray]: ...

    def output_widths(self, outputs: Sequence[str]) -> dict[str, int]: ...


class UnreadableImagesError(DataError):
    """Some input images could not be decoded; every other image was scored.

    ``table`` holds the readable images' rows (what :func:`~dermlearn.inference.predict`
    would have returned without them) and ``unreadable`` the ``(path, reason)`` of each image
    that was skipped.
    """

    def __init__(self, unreadable: Sequence[tuple[str, str]], n_images: int,
                 table=None):
        self.unreadable = list(unreadable)
        self.table = table
        n = len(self.unreadable)
        super().__init__(f"{n} of {n_images} images could not be read and have no row "
                         f"(the other {n_images - n} were scored):",
                         [f"{path}: {reason}" for path, reason in self.unreadable])


@dataclass
class Scores:
    """What :func:`score_images` returns, one row per input in input order.

    ``outputs``: name -> array (N, ...) (NaN rows for unreadable images); ``unreadable``:
    ``(index, path, reason)`` of each image that could not be decoded.
    """

    outputs: dict[str, np.ndarray]
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def probabilities(self) -> np.ndarray:
        return self.outputs["probabilities"]

    @property
    def readable(self) -> np.ndarray:
        """(N,) bool: the rows that were scored."""
        n = len(next(iter(self.outputs.values()))) if self.outputs else 0
        mask = np.ones(n, dtype=bool)
        mask[[i for i, _, _ in self.unreadable]] = False
        return mask

    def error(self, table=None) -> UnreadableImagesError:
        """The error naming every unreadable image (``table``: the readable rows' result)."""
        return UnreadableImagesError([(p, r) for _, p, r in self.unreadable],
                                     len(self.readable), table)


def check_batch_size(batch_size: int, what: str = "batch size") -> int:
    """``batch_size`` as an int >= 1, else a DermlearnError naming it as ``what``."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DermlearnError(f"{what} must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def score_images(runner: Runner, paths: Sequence[str], *, metadata: np.ndarray | None = None,
                 views: Sequence[str] = ("identity",),
                 outputs: Sequence[str] = ("probabilities",), batch_size: int = 32,
                 num_workers: int = 0, skip_unreadable: bool = True, progress: bool = False,
                 desc: str = "scoring", device: str | torch.device = "cpu",
                 on_batch: Callable[[np.ndarray, dict[str, np.ndarray], list], None] | None
                 = None) -> Scores:
    """Run ``runner`` over image files, decoded and preprocessed (``runner.transform``) in
    ``num_workers`` streaming worker processes.

    ``metadata`` (N, M): the encoded age/sex/site of each image for a model that fuses them
    (None: "unknown" for every image). ``views``: test-time views averaged by the runner.
    An image that cannot be decoded is skipped and named in ``Scores.unreadable`` (its rows are
    NaN), or, with ``skip_unreadable=False``, stops the loop with
    :class:`~dermlearn.errors.ImageDecodeError` naming the file. ``on_batch(indices (B,),
    outputs, unreadable)`` is called after every batch (e.g. to write rows as they come).
    """
    from tqdm.auto import tqdm

    batch_size = check_batch_size(batch_size)
    paths = [str(p) for p in paths]
    if metadata is not None and len(metadata) != len(paths):
        raise DermlearnError(f"metadata has {len(metadata)} rows for {len(paths)} images")
    dataset = ImageDataset(paths, runner.transform, metadata=metadata, on_error="skip",
                           input_size=runner.input_size)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers,
                         pin_memory=torch.device(device).type == "cuda")
    fuse = metadata is not None
    collected: dict[str, np.ndarray] = {}
    unreadable: list[tuple[int, str, str]] = []
    with tqdm(total=len(paths), unit="img", desc=desc, disable=not progress) as bar:
        for batch in loader:
            index = batch.index.numpy()
            ok = np.array([not r for r in batch.reason], dtype=bool)
            bad = [(int(index[i]), paths[index[i]], batch.reason[i]) for i in np.flatnonzero(~ok)]
            if bad and not skip_unreadable:
                _, path, reason = bad[0]
                raise ImageDecodeError(path, reason)
            unreadable.extend(bad)
            result = _run_readable(runner, batch.image, batch.metadata if fuse else None, ok,
                                   views, outputs)
            for name, values in result.items():
                if name not in collected:
                    collected[name] = np.full((len(paths), *values.shape[1:]), np.nan,
                                              dtype=values.dtype if values.dtype.kind == "f"
                                              else np.float64)
                collected[name][index] = values
            if on_batch is not None:
                on_batch(index, result, bad)
            bar.update(len(index))
    if not collected:  # no image at all, or none readable: empty outputs of the right width
        collected = {name: np.full((len(paths), width), np.nan)
                     for name, width in runner.output_widths(outputs).items()}
    return Scores(collected, unreadable)


def _run_readable(runner: Runner, images: torch.Tensor, metadata: torch.Tensor | None,
                  ok: np.ndarray, views: Sequence[str], outputs: Sequence[str]
                  ) -> dict[str, np.ndarray]:
    """The runner's outputs for a batch, NaN rows for the images marked unreadable in ``ok``."""
    if ok.all():
        return runner.run_batch(images, metadata, views=views, outputs=outputs)
    result = {name: np.full((len(images), width), np.nan)
              for name, width in runner.output_widths(outputs).items()}
    if ok.any():
        keep = torch.from_numpy(ok)
        part = runner.run_batch(images[keep], None if metadata is None else metadata[keep],
                                views=views, outputs=outputs)
        for name, values in part.items():
            result[name][ok] = values
    return result

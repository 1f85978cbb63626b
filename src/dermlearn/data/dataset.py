"""The one image Dataset and the one DataLoader factory, shared by training and inference.

Images are decoded lazily in DataLoader worker processes. A training sample's augmentation is
seeded from (run seed, epoch, position in the epoch) by the sampler, which hands out
``(row, sample_seed)`` pairs, so augmentations never depend on which worker decodes an image,
on how many workers there are, or on where a run was interrupted and resumed. Every loader has
its own ``torch.Generator``: creating workers never draws from (and so never shifts) the global
random state that the training step's dropout uses.

>>> images = ImageDataset(paths, transform, on_error="skip")
>>> for batch in make_loader(images, batch_size=32, num_workers=2):
...     batch.image, batch.index, batch.reason        # (B, 3, H, W), (B,), B strings
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dermlearn.data.images import read_image
from dermlearn.errors import DermlearnError, ImageDecodeError

#: What an item holds when its image cannot be decoded with ``on_error="skip"``.
ON_ERROR = ("raise", "skip")


class ImageItem(NamedTuple):
    """One sample (or, collated, one batch: each field gains a leading batch axis).

    ``image`` (3, H, W) float32 after the transform (zeros for an unreadable image);
    ``metadata`` (M,) float32 (M = 0 when there is none); ``target`` the class index (-1 when
    unknown); ``index`` the row in the dataset; ``reason`` why the image could not be decoded
    ("" when it was).
    """

    image: torch.Tensor
    metadata: torch.Tensor
    target: int
    index: int
    reason: str


class ImageDataset(Dataset):
    """Image files with optional targets and encoded metadata, decoded on access.

    Indexed by a row (int) or a ``(row, sample_seed)`` pair: the seed re-seeds Python's and
    PyTorch's generators before the transform (training augmentation).

    ``on_error``: ``"raise"`` lets :class:`~dermlearn.errors.ImageDecodeError` propagate;
    ``"skip"`` returns a zero image of ``input_size`` (C, H, W) and the reason instead, so that
    one bad file does not stop the others. ``image_cache`` (training images only): an object
    whose ``get(path)`` returns the decoded, resized image, instead of decoding the source.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, *,
                 targets: Sequence[int] | None = None, metadata: np.ndarray | None = None,
                 on_error: str = "raise", input_size: Sequence[int] | None = None,
                 image_cache=None):
        if on_error not in ON_ERROR:
            raise DermlearnError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        if on_error == "skip" and input_size is None:
            raise DermlearnError("on_error='skip' needs the input_size (C, H, W) of a placeholder")
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.targets = (np.asarray(targets, dtype=np.int64) if targets is not None
                        else np.full(len(self.paths), -1, dtype=np.int64))
        self.metadata = (np.asarray(metadata, dtype=np.float32) if metadata is not None
                         else np.zeros((len(self.paths), 0), np.float32))
        if len(self.targets) != len(self.paths) or len(self.metadata) != len(self.paths):
            raise DermlearnError(f"{len(self.paths)} images but {len(self.targets)} targets and "
                                 f"{len(self.metadata)} metadata rows")
        self.on_error = on_error
        self.input_size = tuple(input_size) if input_size is not None else None
        self.image_cache = image_cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item) -> ImageItem:
        row, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            random.seed(seed)
            torch.manual_seed(seed)
        path = self.paths[row]
        reason = ""
        try:
            decoded = (self.image_cache.get(path) if self.image_cache is not None
                       else read_image(path))
            image = self.transform(decoded)
        except ImageDecodeError as exc:
            if self.on_error == "raise":
                raise
            image, reason = torch.zeros(self.input_size), exc.reason or str(exc)
        return ImageItem(image, torch.from_numpy(self.metadata[row]), int(self.targets[row]),
                         int(row), reason)


class SeededGenerator(torch.Generator):
    """A CPU ``torch.Generator`` seeded with ``seed`` that pickles as its seed.

    A loader travels to ``ddp_spawn`` processes pickled; a plain Generator pickles its state
    as a tensor in shared memory, whose file descriptor is gone by the time the process starts
    ("bad value(s) in fds_to_keep"). A loader is pickled before it draws, so the seed is all
    of its state that matters.
    """

    def __new__(cls, seed: int = 0):
        generator = super().__new__(cls, "cpu")
        generator.seed_value = int(seed)
        generator.manual_seed(generator.seed_value)
        return generator

    def __init__(self, seed: int = 0):  # the state is set in __new__ (a C type's constructor)
        pass

    def __reduce__(self):
        return type(self), (self.seed_value,)


def _seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's generators in a worker from its PyTorch seed (which the
    loader's own generator set): each worker differs, and the run is repeatable."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, *, batch_size: int, sampler: Sampler | None = None,
                num_workers: int = 0, seed: int = 0, persistent_workers: bool = False,
                pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` in order (or ``sampler``'s order) with its own generator.

    The generator (seeded with ``seed``) gives the workers their base seed, so building a
    loader or starting its workers never consumes the global PyTorch random state: a run
    resumed from a checkpoint draws the same dropout masks as one that was never interrupted.
    ``num_workers`` is capped below the number of batches (a single batch is decoded in this
    process; no idle worker processes).
    """
    n_batches = max(1, -(-len(sampler if sampler is not None else dataset) // max(1, batch_size)))
    workers = max(0, min(int(num_workers), n_batches - 1))  # one batch: decode it here
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=persistent_workers and workers > 0,
                      pin_memory=pin_memory, drop_last=drop_last,
                      generator=SeededGenerator(seed),
                      worker_init_fn=_seed_worker if workers else None)

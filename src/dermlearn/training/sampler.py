"""Samplers and loss weights of a training epoch: the seeded epoch order (shuffle, class cap,
balanced resampling), sharded over data-parallel processes, and class weights.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Yields ``(row, sample_seed)``; the order (and, with ``class_cap`` or ``balanced``, the
    resampling) is a pure function of (seed, epoch), set by Lightning via ``set_epoch``.

    * ``shuffle``: a permutation of all rows each epoch;
    * ``class_cap``: each class contributes exactly ``class_cap`` rows per epoch
      (undersampled when larger, oversampled with replacement when smaller; Benedetti);
    * ``balanced``: rows drawn with replacement with probability inversely proportional to their
      class frequency (as many as the dataset holds).

    Data-parallel runs (DistributedSampler semantics): every process draws the same seeded
    epoch order, pads it by repeating its start to a multiple of the number of processes, and
    keeps positions ``rank, rank + W, rank + 2W, ...``. With a per-process batch of B / W, step
    k of process r therefore holds exactly the images of step k of a single-process run with
    batch B, each with the same per-sample augmentation seed. ``num_replicas``/``rank`` default
    to the default process group *when iterated* (it does not exist yet when the loaders are
    built); pass ``num_replicas=1`` for an unsharded sampler inside a DDP process.
    """

    def __init__(self, targets: Sequence[int], *, seed: int = 0, shuffle: bool = True,
                 class_cap: int | None = None, balanced: bool = False,
                 num_replicas: int | None = None, rank: int | None = None):
        self.targets = np.asarray(targets)
        self.seed, self.shuffle = seed, shuffle
        self.class_cap, self.balanced = class_cap, balanced
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def shard(self) -> tuple[int, int]:
        """(rank, number of processes) this sampler serves now."""
        if self.num_replicas is not None:
            return (self.rank or 0), self.num_replicas
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    @property
    def epoch_size(self) -> int:
        """Samples per epoch over all processes (before padding)."""
        if self.class_cap:
            return int(self.class_cap * len(np.unique(self.targets)))
        return len(self.targets)

    def class_prior(self, num_classes: int) -> np.ndarray:
        """Expected fraction of each class (0..num_classes-1) in an epoch's draw, shape (C,):
        the label frequencies, or uniform over the present classes with a cap or balancing."""
        counts = np.bincount(self.targets, minlength=num_classes).astype(np.float64)
        if self.class_cap or self.balanced:
            counts = (counts > 0).astype(np.float64)
        return counts / counts.sum()

    def steps(self, batch_size: int, processes: int, drop_last: bool) -> int:
        """Batches per epoch in each of ``processes`` processes taking ``batch_size`` from its
        shard: the optimiser steps per epoch, known before the process group is up."""
        per_process = -(-self.epoch_size // processes)
        return per_process // batch_size if drop_last else -(-per_process // batch_size)

    def merge_shards(self, gathered: np.ndarray) -> np.ndarray:
        """Per-sample outputs gathered from every process, shape (W, n_per_process, ...), back
        in the unsharded epoch order (padding dropped): the inverse of the sharding."""
        gathered = np.asarray(gathered)
        flat = np.swapaxes(gathered, 0, 1).reshape(-1, *gathered.shape[2:])
        return flat[: self.epoch_size]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rows(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.class_cap:
            parts = []
            for c in np.unique(self.targets):
                members = np.flatnonzero(self.targets == c)
                replace = len(members) < self.class_cap
                parts.append(rng.choice(members, self.class_cap, replace=replace))
            rows = np.concatenate(parts)
            return rng.permutation(rows)
        if self.balanced:
            counts = np.bincount(self.targets)
            weights = 1.0 / counts[self.targets]
            return rng.choice(len(self.targets), len(self.targets), p=weights / weights.sum())
        return rng.permutation(len(self.targets)) if self.shuffle else np.arange(len(self.targets))

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        rows = self.rows()
        base = int(np.random.default_rng([self.seed, self.epoch, 1]).integers(2**31))
        rank, world = self.shard()
        positions = np.arange(len(self), dtype=np.int64) * world + rank
        positions %= max(1, len(rows))  # padding: wrap around to the start
        for position in positions:
            yield int(rows[position]), (base + int(position)) % (2**31) if self.shuffle else None

    def __len__(self) -> int:
        """Samples this process yields per epoch: ceil(epoch_size / processes)."""
        world = self.shard()[1]
        return -(-self.epoch_size // world)


def class_weights(targets: Sequence[int], num_classes: int, power: float = 1.0) -> np.ndarray:
    """Loss weights ``(n / (C * n_c)) ** power`` per class, shape (C,): power 1 is scikit-learn's
    'balanced', 0.5 its square root (milder); absent classes get weight 0."""
    counts = np.bincount(np.asarray(targets), minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = (counts.sum() / (present.sum() * counts[present])) ** power
    return weights

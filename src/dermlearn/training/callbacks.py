"""Lightning pieces dermlearn adds: atomic checkpoints, a history file, images/s in the bar,
torch threads per data-parallel process, the recipe's average of the weights."""
from __future__ import annotations

import csv
import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import EMAWeightAveraging, TQDMProgressBar

from dermlearn.atomic import atomic_write

if TYPE_CHECKING:
    from dermlearn.training.recipes import Recipe


#: The most weight an exponential moving average of the weights may keep, at the end of a
#: round, on the weights it started from (see :func:`ema_schedule`).
EMA_START_WEIGHT = 1 / 16


def ema_schedule(decay: float, epochs: int, warmup_epochs: int,
                 steps_per_epoch: int) -> tuple[int, float]:
    """(first averaged optimiser step, per-step decay) of an EMA over a round of ``epochs``.

    The average starts after the warm-up epochs (at the last epoch when none follows them), and
    the decay is capped so that ``decay ** averaged_steps <= EMA_START_WEIGHT``: a round of few
    steps (a small dataset) still forgets where its average started.
    """
    start_epoch = max(0, min(warmup_epochs, epochs - 1))
    averaged_steps = max(1, (epochs - start_epoch) * steps_per_epoch)
    return start_epoch * steps_per_epoch, min(decay, EMA_START_WEIGHT ** (1 / averaged_steps))


class EMAUpdate:
    """``decay * average + (1 - decay) * current``: the update of
    :func:`torch.optim.swa_utils.get_ema_avg_fn`, as a picklable object (that function returns
    a local closure, which ``ddp_spawn`` cannot send to its processes)."""

    def __init__(self, decay: float = 0.999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in "
                             f"[0,1] range.")
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema_param: torch.Tensor, current_param: torch.Tensor,
                 num_averaged: Any) -> torch.Tensor:
        return self.decay * ema_param + (1 - self.decay) * current_param

    def __repr__(self) -> str:
        return f"EMAUpdate(decay={self.decay})"


class WeightEMA(EMAWeightAveraging):
    """Lightning's EMA of the weights, which validation, checkpoints and the final model use;
    until its first update (the warm-up epochs) the average follows the live weights, so the
    warm-up's validation rows and checkpoints are the live model's, not the initial weights'.
    The first update copies the live weights either way, so the average itself is unchanged.
    Its averaging function is an :class:`EMAUpdate`, so the callback pickles (``ddp_spawn``)."""

    def __init__(self, decay: float = 0.999, **kwargs: Any):
        super().__init__(decay=decay, **kwargs)
        self._kwargs["avg_fn"] = EMAUpdate(decay)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        average = self._average_model
        if average is not None and int(average.n_averaged) == 0:
            pairs = zip(itertools.chain(average.module.parameters(), average.module.buffers()),
                        itertools.chain(pl_module.parameters(), pl_module.buffers()))
            for average_value, live_value in pairs:
                average_value.data.copy_(live_value.data)
        super().on_validation_epoch_start(trainer, pl_module)


def weight_ema(recipe: Recipe, epochs: int, steps_per_epoch: int) -> WeightEMA | None:
    """The recipe's (``ema_decay``, ``warmup_epochs``) average of the weights over a round of
    ``epochs`` epochs of ``steps_per_epoch`` optimiser steps; None when ``ema_decay`` is 0."""
    if not recipe.ema_decay:
        return None
    start, decay = ema_schedule(recipe.ema_decay, epochs, recipe.warmup_epochs, steps_per_epoch)
    return WeightEMA(decay=decay, update_starting_at_step=start)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so a kill -9
    leaves either the previous checkpoint or the new one, never a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class HistoryWriter(L.Callback):
    """Appends one row per epoch to ``history.csv`` (epoch, losses, validation metrics, lr,
    images/s, seconds); on resume, rows from epochs that are re-run are dropped first.

    Under DDP only the global-rank-0 process writes; its train loss is the global batch's and
    images/s counts all processes (its own images times the number of processes)."""

    FIELDS = ["fold", "round", "epoch", "train_loss", "val_loss", "val_accuracy",
              "val_balanced_accuracy", "val_auc_macro", "lr", "images_per_s", "seconds"]

    def __init__(self, path: Path, fold: str, round_: int = 1):
        self.path, self.fold, self.round = Path(path), str(fold), round_
        self._start = 0.0
        self._images = 0

    def on_train_start(self, trainer, pl_module) -> None:
        # Not on_fit_start: Lightning restores the loop state (current_epoch) of a resumed run
        # only after on_fit_start, so there every row of the round would be dropped.
        if not trainer.is_global_zero or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if not (r["fold"] == self.fold and int(r["round"]) == self.round
                                         and int(r["epoch"]) >= trainer.current_epoch)]
        if len(kept) != len(rows):
            self._write(kept, mode="w")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._images, self._losses = time.perf_counter(), 0, []
        self._train_seconds = 0.0
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[0]) * trainer.world_size
        self._losses.append(float(outputs.get("batch_loss", outputs["loss"])
                                  if isinstance(outputs, dict) else outputs))
        self._train_seconds = time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._images or not trainer.is_global_zero:
            return
        m = pl_module.last_val_metrics
        row = {"fold": self.fold, "round": self.round, "epoch": trainer.current_epoch,
               "train_loss": _item(sum(self._losses) / len(self._losses)),
               "val_loss": _item(pl_module.last_val_loss),
               "val_accuracy": _item(m.get("accuracy")),
               "val_balanced_accuracy": _item(m.get("balanced_accuracy")),
               "val_auc_macro": _item(m.get("auc_macro")),
               "lr": self._lr,
               "images_per_s": round(self._images / max(self._train_seconds, 1e-9), 2),
               "seconds": round(time.perf_counter() - self._start, 1)}
        self._write([row], mode="a")

    def _write(self, rows: list[dict], mode: str) -> None:
        """Write ``rows`` (``mode`` "w": instead of the file's rows; "a": after them) as a whole
        new file, atomically: a kill leaves the history of the last finished epoch."""
        kept = []
        if mode == "a" and self.path.exists():
            with open(self.path, newline="") as f:
                kept = list(csv.DictReader(f))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.FIELDS)
                writer.writeheader()
                writer.writerows(kept + rows)

        atomic_write(self.path, write)


def _item(value) -> float | None:
    return None if value is None else round(float(value), 5)


class ImagesPerSecondBar(TQDMProgressBar):
    """Lightning's tqdm bar (with ETA) plus a live images/s figure."""

    def __init__(self, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self._t0 = None
        self._seen = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._t0, self._seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += len(batch[0]) * trainer.world_size
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if self._t0 is not None and self._seen:
            metrics["img/s"] = f"{self._seen / max(time.perf_counter() - self._t0, 1e-9):.1f}"
        return metrics


class ThreadsPerProcess(L.Callback):
    """Sets ``torch.set_num_threads`` to cores / local processes in every DDP process for the
    duration of a fit or predict (restored at teardown); does nothing with one process."""

    def __init__(self) -> None:
        self._previous: int | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        from dermlearn.parallel import threads_per_process

        if trainer.world_size > 1:
            self._previous = torch.get_num_threads()
            torch.set_num_threads(threads_per_process(trainer.num_devices))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None

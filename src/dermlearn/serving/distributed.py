"""Distributed, resumable batch prediction over a large image set (Lightning ``Trainer.predict``).

>>> result = predict_distributed("runs/ham/model", "photos/", "preds.csv", devices=4)
>>> result.n_scored, result.n_reused      # images scored now, images taken from earlier parts

Every process scores a disjoint share of the images not yet scored (every world-th one, from
its global rank on) and appends its rows to ``OUT.parts/rank-K.csv`` after every
batch (``index`` = position in the input order, ``image``, one probability per class). When all
processes are done, global rank 0 merges the parts into ``OUT``: ISIC format (``image`` then one
column per class, or per ``level`` group via PA) in the input order, each image exactly once.

An image that cannot be decoded does not stop the job: its process records it in
``OUT.parts/unreadable-rank-K.csv`` (``index``, ``image``, ``reason``) and scores the rest; the
merge writes every readable image's row and then raises :class:`UnreadableImagesError` naming
each unreadable file, as single-process :func:`~dermlearn.serving.predict` does. Unreadable
images are tried again by the next run (a replaced file is scored then).

Resuming: a killed job is started again with the same command. Rows already in any part file
(whatever number of processes wrote them) are kept and only the missing images are scored; a
row torn by the kill (the bytes after the last newline) is dropped. ``OUT.parts/meta.json``
records the model, ``tta`` and a digest of the input list, and a resume with other ones is
refused. Probabilities in part files keep 9 significant digits.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from dermlearn.atomic import atomic_write, check_output_dir, check_output_file
from dermlearn.data.images import read_image
from dermlearn.errors import DermlearnError, ImageDecodeError
from dermlearn.serving.predictor import (Predictor, UnreadableImagesError, resolve_inputs,
                                         score_readable)
from dermlearn.training.distributed import env_rank, world_size


class DistributedPredictionError(DermlearnError):
    """Part files that do not belong to this job, or images left unscored."""


@dataclass
class DistributedPrediction:
    """What :func:`predict_distributed` returns in global rank 0."""

    table: pd.DataFrame      # the merged ISIC-format table (also written to ``out``)
    out: Path
    parts: Path              # the part-file folder (kept; delete it to start over)
    n_images: int
    n_scored: int            # images scored by this call
    n_reused: int            # images found already scored in the part files


def parts_dir(out: str | Path) -> Path:
    """The folder of per-process part files for output CSV ``out``: ``OUT.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


class _IndexedImages(Dataset):
    """Items ``(image (3, H, W), metadata (M,), index in the input list, reason)`` for the given
    input positions; ``metadata`` (N, M) is the encoded age/sex/site per input (M = 0: none).
    An undecodable image comes back as zeros of ``input_size`` with the reason (else "")."""

    def __init__(self, paths: Sequence[str], indices: Sequence[int], transform,
                 input_size: Sequence[int], metadata: np.ndarray | None = None):
        self.paths, self.indices, self.transform = list(paths), list(indices), transform
        self.input_size = tuple(input_size)
        self.metadata = torch.from_numpy(metadata if metadata is not None
                                         else np.zeros((len(self.paths), 0), np.float32))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        index = self.indices[item]
        try:
            image, reason = self.transform(read_image(self.paths[index])), ""
        except ImageDecodeError as exc:
            image, reason = torch.zeros(self.input_size), exc.reason or str(exc)
        return image, self.metadata[index], index, reason


def _complete_lines(path: Path) -> str:
    """``path``'s text up to its last newline: a line torn by a kill is left out."""
    text = path.read_text(encoding="utf-8")
    return text[: text.rfind("\n") + 1]


def read_unreadable(directory: str | Path) -> dict[int, str]:
    """Images recorded as undecodable in ``directory``'s ``unreadable-rank-*.csv``: input
    index -> reason (complete lines only; the last record of an index wins)."""
    found: dict[int, str] = {}
    for path in sorted(Path(directory).glob("unreadable-rank-*.csv")):
        for row in csv.DictReader(io.StringIO(_complete_lines(path))):
            if (row.get("index") or "").isdigit():
                found[int(row["index"])] = row.get("reason") or "unreadable"
    return found


def read_parts(directory: str | Path, n_columns: int) -> dict[int, np.ndarray]:
    """Scored rows of every ``rank-*.csv`` in ``directory``: input index -> probabilities.

    Only complete lines count (up to the file's last newline); rows with a wrong number of
    fields or non-finite values are skipped; a repeated index keeps its first row.
    """
    done: dict[int, np.ndarray] = {}
    for path in sorted(Path(directory).glob("rank-*.csv")):
        text = _complete_lines(path)
        if not text:
            continue
        frame = pd.read_csv(io.StringIO(text), dtype={"image": str}, on_bad_lines="skip",
                            keep_default_na=False, na_values=[""])
        if frame.shape[1] != 2 + n_columns or "index" not in frame.columns:
            raise DistributedPredictionError(f"{path}: expected index, image and {n_columns} "
                                             f"probability columns")
        values = frame.iloc[:, 2:].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        index = pd.to_numeric(frame["index"], errors="coerce").to_numpy()
        ok = np.isfinite(values).all(axis=1) & np.isfinite(index)
        for i, row in zip(index[ok].astype(np.int64), values[ok]):
            done.setdefault(int(i), row)
    return done


def _append_rows(path: Path, header: list[str], rows: list[list]) -> None:
    """Append whole CSV lines to ``path`` (header first when new), dropping a torn tail line
    first, and flush them to disk, so a kill leaves only complete rows behind."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writerow(header)
    else:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # torn by a kill: cut back to the last complete line
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
    writer.writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())


class PredictModule(L.LightningModule):
    """A Predictor loaded from ``model_dir`` in each process (at ``setup``, so nothing large is
    pickled to spawned processes), its members registered so that Lightning places them on the
    process's device; a step returns (input indices, probabilities (N, C)) from
    :meth:`Predictor.predict_batch`, the computation of the single-process path."""

    def __init__(self, model_dir: str | Path, tta: int = 1):
        super().__init__()
        self.model_dir, self.tta = str(model_dir), tta
        self.predictor: Predictor | None = None

    def setup(self, stage: str) -> None:
        if self.predictor is None:
            self.predictor = Predictor.load(self.model_dir)
            self.members = torch.nn.ModuleList(self.predictor.members)

    def on_predict_start(self) -> None:
        self.predictor.device = self.device

    def predict_step(self, batch, batch_idx):
        """(indices (N,), probabilities (N, C) with NaN rows for unreadable images, reasons)."""
        images, metadata, index, reasons = batch
        probs = score_readable(self.predictor, images,
                               metadata.cpu() if metadata.shape[1] else None,
                               np.array([not r for r in reasons]),
                               len(self.predictor.classes), self.tta)
        return index.cpu().numpy(), probs, list(reasons)


class PartWriter(BasePredictionWriter):
    """Appends each batch's rows to ``rank-K.csv`` in ``directory`` (K: the global rank), and
    its unreadable images to ``unreadable-rank-K.csv``; with ``write=False`` (a process that
    only pads) nothing."""

    def __init__(self, directory: Path, ids: Sequence[str], classes: Sequence[str],
                 write: bool = True):
        super().__init__(write_interval="batch")
        self.directory, self.ids, self.classes = Path(directory), list(ids), list(classes)
        self.write = write

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        if not self.write:
            return
        index, probs, reasons = prediction
        rows = [[int(i), self.ids[int(i)], *(f"{p:.9g}" for p in row)]
                for i, row, reason in zip(index, probs, reasons) if not reason]
        if rows:
            _append_rows(self.directory / f"rank-{trainer.global_rank}.csv",
                         ["index", "image", *self.classes], rows)
        bad = [[int(i), self.ids[int(i)], reason] for i, reason in zip(index, reasons) if reason]
        if bad:
            _append_rows(self.directory / f"unreadable-rank-{trainer.global_rank}.csv",
                         ["index", "image", "reason"], bad)


def _check_meta(directory: Path, meta: dict, write: bool) -> None:
    path = directory / "meta.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in meta if old.get(k) != meta[k]]
        if changed:
            raise DistributedPredictionError(
                f"{directory} holds parts of another job (different {', '.join(changed)}); "
                f"delete it to start over or choose another --out")
    elif write:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))


def _digest(paths: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(paths).encode("utf-8")).hexdigest()


def predict_distributed(model_dir: str | Path, inputs: str | Path | Sequence[str | Path],
                        out: str | Path, *, devices: int = 1, num_nodes: int = 1,
                        strategy: str = "auto", device: str = "auto", level: str | None = None,
                        tta: int = 1, batch_size: int = 32, num_workers: int = 2,
                        float_format: str = "%.6f",
                        progress: bool = False) -> DistributedPrediction | None:
    """Score ``inputs`` with ``devices x num_nodes`` processes, resumably; write ``out``.

    ``inputs``: image files, a folder of images or a dataset spec (as :func:`predict`; a
    dataset's age/sex/site reach a metadata-fusion model);
    ``batch_size``: images per process and step; ``num_workers``: decoding workers per process;
    ``strategy``/launch as for training (:mod:`dermlearn.training.distributed`): from the CLI,
    torchrun or SLURM each process runs this function; from Python, Lightning spawns them.
    Returns the merged result in global rank 0 and None in the other processes.
    """
    from dermlearn.training.callbacks import ThreadsPerProcess
    from dermlearn.training.distributed import accelerator, lightning_strategy
    from dermlearn.training.run import _resolve_device

    world = world_size(devices, num_nodes)
    rank = env_rank(devices)
    device = _resolve_device(device)
    out = check_output_file(out)
    parts = check_output_dir(parts_dir(out))
    parts.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(model_dir)
    ids, paths, metadata = resolve_inputs(inputs)
    encoder = predictor.metadata_encoder
    encoded = (encoder.encode_table(metadata) if encoder is not None and metadata is not None
               else None)
    if level:  # an unknown level fails now, not after scoring every image
        predictor.to_level(np.full((1, len(predictor.classes)), 1 / len(predictor.classes)),
                           level)
    _check_meta(parts, {"model": str(Path(predictor.directory or model_dir).resolve()),
                        "tta": tta, "classes": predictor.classes, "n_images": len(paths),
                        "inputs_sha1": _digest(paths)}, write=rank == 0)
    done = read_parts(parts, len(predictor.classes))
    remaining = [i for i in range(len(paths)) if i not in done]
    if remaining:
        # Each process takes every world-th missing image: disjoint shares. With fewer images
        # left than processes, one without a share scores a copy of the first and writes
        # nothing (Lightning needs a batch in every process).
        share = remaining[rank::world]
        loader = DataLoader(_IndexedImages(paths, share or remaining[:1], predictor.transform,
                                           predictor.preprocess.input_size, encoded),
                            batch_size=batch_size, num_workers=num_workers,
                            persistent_workers=False, pin_memory=device == "cuda")
        trainer = L.Trainer(
            accelerator=accelerator(device), devices=devices, num_nodes=num_nodes,
            strategy=lightning_strategy(strategy, world, device), logger=False,
            callbacks=[PartWriter(parts, ids, predictor.classes, write=bool(share)),
                       ThreadsPerProcess()],
            enable_progress_bar=progress, enable_model_summary=False,
            use_distributed_sampler=False, default_root_dir=str(parts))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            module = PredictModule(predictor.directory or model_dir, tta)
            trainer.predict(module, dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier("dermlearn.predict")  # every part written before the merge
        if not trainer.is_global_zero:
            return None
    elif rank != 0:
        return None
    return _merge(predictor, ids, paths, parts, out, level, float_format,
                  n_scored=len(remaining))


def _merge(predictor: Predictor, ids: list[str], paths: list[str], parts: Path, out: Path,
           level: str | None, float_format: str, n_scored: int) -> DistributedPrediction:
    """Write ``out`` from the part files (input order); raises UnreadableImagesError, after
    writing, when some images could not be decoded."""
    done = read_parts(parts, len(predictor.classes))
    unreadable = {i: reason for i, reason in read_unreadable(parts).items() if i not in done}
    missing = [i for i in range(len(ids)) if i not in done and i not in unreadable]
    if missing:
        raise DistributedPredictionError(f"{len(missing)} of {len(ids)} images have no row in "
                                         f"{parts} (e.g. {ids[missing[0]]}); run again to "
                                         f"score them")
    scored = [i for i in range(len(ids)) if i in done]
    probs = np.stack([done[i] for i in scored]) if scored \
        else np.zeros((0, len(predictor.classes)))
    columns = list(predictor.classes)
    if level:
        probs, columns = predictor.to_level(probs, level)
    table = pd.DataFrame(probs, columns=columns)
    table.insert(0, "image", [ids[i] for i in scored])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False, float_format=float_format))
    if unreadable:
        raise UnreadableImagesError([(paths[i], unreadable[i]) for i in sorted(unreadable)],
                                    len(ids), table)
    return DistributedPrediction(table, out, parts, len(ids), n_scored, len(ids) - n_scored)

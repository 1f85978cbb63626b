"""Distributed, resumable batch prediction over a large image set (processes launched by
Lightning Fabric; each scores its share with the one scoring loop).

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
each unreadable file, as single-process :func:`~dermlearn.inference.predict` does. Unreadable
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermlearn.atomic import atomic_write, check_output_dir, check_output_file
from dermlearn.errors import DermlearnError
from dermlearn.inference.inputs import Inputs, resolve_inputs
from dermlearn.inference.prediction import checked_views, prediction_table
from dermlearn.inference.predictor import Predictor
from dermlearn.inference.scoring import UnreadableImagesError, check_batch_size, score_images
from dermlearn.parallel import (
    accelerator,
    env_rank,
    lightning_strategy,
    resolve_device,
    threads_per_process,
    world_size,
)


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


class PartWriter:
    """``on_batch`` of :func:`score_images` in one process: appends each batch's rows to
    ``rank-K.csv`` in ``directory`` (K: the global rank), and its unreadable images to
    ``unreadable-rank-K.csv``. ``share`` maps the batch's positions to input indices."""

    def __init__(self, directory: Path, rank: int, ids: Sequence[str], classes: Sequence[str],
                 share: Sequence[int]):
        self.rows = Path(directory) / f"rank-{rank}.csv"
        self.unreadable = Path(directory) / f"unreadable-rank-{rank}.csv"
        self.ids, self.classes, self.share = list(ids), list(classes), list(share)

    def __call__(self, positions: np.ndarray, outputs: dict[str, np.ndarray],
                 unreadable: list[tuple[int, str, str]]) -> None:
        bad = {position for position, _, _ in unreadable}
        rows = [[self.share[p], self.ids[self.share[p]], *(f"{v:.9g}" for v in probs)]
                for p, probs in zip(positions.tolist(), outputs["probabilities"]) if p not in bad]
        if rows:
            _append_rows(self.rows, ["index", "image", *self.classes], rows)
        if unreadable:
            _append_rows(self.unreadable, ["index", "image", "reason"],
                         [[self.share[p], self.ids[self.share[p]], reason]
                          for p, _, reason in unreadable])


def _score_share(fabric, model_dir: str, paths: list[str], ids: list[str],
                 metadata: np.ndarray | None, remaining: list[int], parts: Path,
                 views: tuple[str, ...], batch_size: int, num_workers: int, progress: bool,
                 local_processes: int) -> None:
    """What each process runs: score every world-th remaining image (from its global rank
    on) with :func:`score_images`, writing rows as they come; then wait for the others."""
    if fabric.world_size > 1:
        torch.set_num_threads(threads_per_process(local_processes))
    share = remaining[fabric.global_rank::fabric.world_size]
    if share:
        predictor = Predictor.load(model_dir, device=str(fabric.device))
        score_images(predictor, [paths[i] for i in share],
                     metadata=None if metadata is None else metadata[share], views=views,
                     batch_size=batch_size, num_workers=num_workers, device=fabric.device,
                     progress=progress and fabric.is_global_zero, desc="predicting",
                     on_batch=PartWriter(parts, fabric.global_rank, ids, predictor.classes,
                                         share))
    fabric.barrier("dermlearn.predict")  # every part written before rank 0 merges


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


def predict_distributed(model_dir: str | Path, inputs: Inputs, out: str | Path, *,
                        devices: int = 1, num_nodes: int = 1, strategy: str = "auto",
                        device: str = "auto", level: str | None = None, tta: int = 1,
                        batch_size: int = 32, num_workers: int = 2, float_format: str = "%.6f",
                        progress: bool = False) -> DistributedPrediction | None:
    """Score ``inputs`` with ``devices x num_nodes`` processes, resumably; write ``out``.

    ``inputs``: image files, a folder of images, a dataset spec or a Manifest (as
    :func:`~dermlearn.inference.predict`; a dataset's age/sex/site reach a metadata-fusion
    model); ``batch_size``: images per process and step; ``num_workers``: decoding workers per
    process; ``strategy``/launch as for training (:mod:`dermlearn.parallel`): from the CLI,
    torchrun or SLURM each process runs this function; from Python, Lightning spawns them.
    Returns the merged result in global rank 0 and None in the other processes.
    """
    from lightning.fabric import Fabric

    world = world_size(devices, num_nodes)
    rank = env_rank(devices)
    device = resolve_device(device)
    batch_size = check_batch_size(batch_size)
    out = check_output_file(out)
    parts = check_output_dir(parts_dir(out))
    parts.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(model_dir)
    predictor.check_level(level)  # an unknown level fails now, not after scoring every image
    views = checked_views(predictor, tta)
    ids, paths, metadata = resolve_inputs(inputs)
    _check_meta(parts, {"model": str(Path(predictor.directory or model_dir).resolve()),
                        "tta": tta, "classes": predictor.classes, "n_images": len(paths),
                        "inputs_sha1": _digest(paths)}, write=rank == 0)
    done = read_parts(parts, len(predictor.classes))
    remaining = [i for i in range(len(paths)) if i not in done]
    if remaining:
        fabric = Fabric(accelerator=accelerator(device), devices=devices, num_nodes=num_nodes,
                        strategy=lightning_strategy(strategy, world, device, fabric=True))
        fabric.launch(_score_share, str(predictor.directory), paths, ids,
                      predictor.encode_metadata(metadata), remaining, parts, views, batch_size,
                      num_workers, progress, devices)
    if rank != 0:
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
    table = prediction_table(predictor, [ids[i] for i in scored], probs, level)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False, float_format=float_format))
    if unreadable:
        raise UnreadableImagesError([(paths[i], unreadable[i]) for i in sorted(unreadable)],
                                    len(ids), table)
    return DistributedPrediction(table, out, parts, len(ids), n_scored, len(ids) - n_scored)

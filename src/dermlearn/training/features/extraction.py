"""Frozen-backbone feature extraction for features mode, through the one scoring loop, with the
feature cache: only images it does not hold yet are decoded and run.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dermlearn.inference.scoring import score_images
from dermlearn.models.errors import ModelError
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.models.views import apply_view
from dermlearn.training.features.cache import (
    FeatureCache,
    _arch,
    _as_cfg,
    _check_views,
    _refusal,
    feature_extractor,
    image_key,
)
from dermlearn.training.features.errors import FeatureCacheError, FeaturesError
from dermlearn.training.features.heads import torch_threads

__all__ = ["BackboneRunner", "extract_features"]

log = logging.getLogger("dermlearn.training.features")


def _paths_of(manifest) -> list[str]:
    table = getattr(manifest, "table", None)
    if table is not None:
        return [str(p) for p in table["path"]]
    return [os.fspath(p) for p in manifest]


def _is_channels_last(model: nn.Module) -> bool:
    return any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in model.parameters())


class BackboneRunner:
    """A frozen feature extractor as a runner of :func:`score_images`: output ``features``
    (N, D) float32, the pooled penultimate features averaged over the views."""

    def __init__(self, extractor: nn.Module, cfg: PreprocessConfig, *, channels_last: bool = True):
        self.extractor = extractor
        self.transform = eval_transform(cfg)
        self.input_size = tuple(cfg.input_size)
        self.channels_last = channels_last
        try:
            self.device = next(extractor.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")

    @torch.inference_mode()
    def run_batch(self, images: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  views: Sequence[str] = ("identity",),
                  outputs: Sequence[str] = ("features",)) -> dict[str, np.ndarray]:
        x = images.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        total = None
        for view in views:
            out = self.extractor(apply_view(x, view))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelError(f"{_arch(self.extractor)} returned {shape} for a batch of "
                                 f"{x.shape[0]}: expected (N, D) pooled features (build it "
                                 f"with num_classes=0)")
            out = out.float()
            total = out if total is None else total + out
        return {"features": (total / len(views)).cpu().numpy()}

    def output_widths(self, outputs: Sequence[str]) -> dict[str, int]:
        from dermlearn.models.backbones import feature_dim

        return {"features": int(feature_dim(self.extractor))}


def extract_features(manifest, model: nn.Module, preprocess_cfg: PreprocessConfig, *,
                     cache: FeatureCache | None = None, batch_size: int = 32,
                     num_workers: int = 2, progress: bool = True, channels_last: bool = True,
                     views: Sequence[str] = ("identity",), num_threads: int | None = None,
                     stats: dict | None = None) -> np.ndarray:
    """Penultimate features (N, D) float32 of every image of ``manifest``, in manifest order.

    ``model`` is a backbone built with ``num_classes=0`` or a LesionClassifier (its backbone is
    used). Images are decoded with :func:`~dermlearn.data.images.read_image` in a streaming
    DataLoader (``num_workers`` processes; :func:`~dermlearn.inference.scoring.score_images`),
    prepared with ``eval_transform(preprocess_cfg)`` and run in eval mode under
    ``torch.inference_mode`` (channels-last memory when asked; the model's mode and memory
    format are restored afterwards). With ``cache``, images already cached for this
    model/preprocessing/views are read back and only the rest are computed; finished batches
    are written even when extraction fails half way. Features of randomly initialised weights
    are never cached: the cache is skipped with a warning saying why. ``views``: test-time
    views averaged per image (see :data:`dermlearn.models.views.VIEWS`). ``num_threads``: torch
    threads for the forward passes (None: leave torch's setting; 1 is much faster on a machine
    whose cores are busy with other work, where spinning OpenMP threads wait on each other).
    ``manifest`` may also be a list of paths. If ``stats`` is a dict it receives ``cached``,
    ``extracted``, ``seconds`` and ``model_key``. An unreadable image raises
    :class:`~dermlearn.errors.ImageDecodeError` naming it.
    """
    started = time.perf_counter()
    cfg = _as_cfg(preprocess_cfg)
    views = _check_views(views, cfg)
    extractor = feature_extractor(model)
    if batch_size < 1:
        raise FeaturesError(f"batch_size must be >= 1, not {batch_size}")
    paths = _paths_of(manifest)
    n = len(paths)

    key = None
    out: np.ndarray | None = None
    if cache is not None and (refusal := _refusal(extractor)):
        log.warning("%s; extracting without the cache", refusal)
        cache = None
    if cache is not None:
        key = cache.prepare(extractor, cfg, views)
        keys = [image_key(p) for p in paths]
        out, found = cache.get(key, keys)
        # one computation per distinct image file, even if the manifest lists it twice
        first: dict[str, int] = {}
        for i in np.flatnonzero(~found):
            first.setdefault(keys[i], int(i))
        todo = list(first.values())
    else:
        keys = None
        found = np.zeros(n, dtype=bool)
        todo = list(range(n))

    if out is None and not todo:  # empty manifest
        from dermlearn.models.backbones import feature_dim

        try:
            dim = feature_dim(extractor)
        except Exception:
            dim = 0
        out = np.zeros((0, dim), dtype=np.float32)

    if todo:
        with torch_threads(num_threads):
            out = _compute(paths, todo, keys, out, n, extractor, cfg, views, cache, key,
                           batch_size=batch_size, num_workers=num_workers, progress=progress,
                           channels_last=channels_last)
        if keys is not None:  # fill duplicates of the files just computed
            row_of = {keys[i]: i for i in todo}
            for i in np.flatnonzero(~found):
                src = row_of[keys[i]]
                if src != i:
                    out[i] = out[src]

    seconds = time.perf_counter() - started
    if stats is not None:
        stats.update(cached=int(found.sum()), extracted=len(todo), seconds=seconds, model_key=key)
    log.info("features: %d images, %d from cache, %d extracted in %.1f s", n, int(found.sum()),
             len(todo), seconds)
    return out


def _compute(paths, todo, keys, out, n, extractor, cfg, views, cache, key, *, batch_size,
             num_workers, progress, channels_last) -> np.ndarray:
    """Features of ``paths[todo]`` into ``out`` (N, D) (made when None), saving finished
    batches to ``cache`` as they come (also when a later image fails)."""
    runner = BackboneRunner(extractor, cfg, channels_last=channels_last)
    modes = [(m, m.training) for m in extractor.modules()]  # restored module by module
    was_channels_last = _is_channels_last(extractor)
    extractor.eval()
    if channels_last and not was_channels_last:
        extractor.to(memory_format=torch.channels_last)
    pending_keys: list[str] = []
    pending_rows: list[np.ndarray] = []
    state = {"out": out}

    def flush() -> None:
        if cache is not None and pending_keys:
            cache.put(key, pending_keys, np.concatenate(pending_rows))
            pending_keys.clear()
            pending_rows.clear()

    def on_batch(positions: np.ndarray, outputs: dict[str, np.ndarray], unreadable) -> None:
        feats = outputs["features"]
        if cache is not None and cache.dtype != np.float32:
            feats = feats.astype(cache.dtype).astype(np.float32)  # what a re-read gives
        if state["out"] is None:
            state["out"] = np.zeros((n, feats.shape[1]), dtype=np.float32)
        elif feats.shape[1] != state["out"].shape[1]:
            raise FeatureCacheError(
                f"{_arch(extractor)} gives {feats.shape[1]} features but the cache "
                f"{cache.path(key) if cache else ''} holds {state['out'].shape[1]}: clear it")
        rows = [todo[i] for i in positions]
        state["out"][rows] = feats
        if cache is not None:
            pending_keys.extend(keys[r] for r in rows)
            pending_rows.append(feats)
            if len(pending_keys) >= cache.shard_size:
                flush()

    failed = True
    try:
        score_images(runner, [paths[i] for i in todo], views=views, outputs=("features",),
                     batch_size=batch_size, num_workers=num_workers, skip_unreadable=False,
                     progress=progress, desc="extracting features", device=runner.device,
                     on_batch=on_batch)
        failed = False
    finally:
        try:
            flush()  # keep every finished batch, also when extraction stops half way
        except Exception:
            if not failed:
                raise
            log.exception("feature cache: could not save the finished batches")
        for module, training in modes:
            module.training = training
        if channels_last and not was_channels_last:
            extractor.to(memory_format=torch.contiguous_format)
    return state["out"]

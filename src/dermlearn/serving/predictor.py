"""Inference with a saved model (single or fold ensemble), with test-time augmentation and PA.

>>> predictor = Predictor.load("runs/ham/model")
>>> probs = predictor.predict_images([read_image("lesion.jpg")])     # (1, C)
>>> table = predict("runs/ham/model", "photos/", level="malignant_vs_benign")
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dermlearn.data.images import IMAGE_EXTENSIONS
from dermlearn.errors import DataError, DermlearnError, ImageDecodeError
from dermlearn.models.lesion_classifier import (METADATA_INPUTS, LesionClassifier, MetadataEncoder,
                                               load_model, read_config)
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.models.views import apply_view, check_views, first_views
from dermlearn.taxonomy import Taxonomy, aggregate
from dermlearn.training.dataset import LesionDataset


class UnreadableImagesError(DataError):
    """Some input images could not be decoded; every other image was scored.

    ``table`` holds the readable images' rows (what :func:`predict` would have returned without
    them) and ``unreadable`` the ``(path, reason)`` of each image that was skipped.
    """

    def __init__(self, unreadable: Sequence[tuple[str, str]], n_images: int,
                 table: pd.DataFrame | None = None):
        self.unreadable = list(unreadable)
        self.table = table
        n = len(self.unreadable)
        super().__init__(f"{n} of {n_images} images could not be read and have no row "
                         f"(the other {n_images - n} were scored):",
                         [f"{path}: {reason}" for path, reason in self.unreadable])


class _SkipUnreadable(Dataset):
    """A :class:`LesionDataset` whose undecodable images come back as zeros with the reason
    (an empty reason: the image was read), so one bad file does not stop the others."""

    def __init__(self, images: LesionDataset, input_size: Sequence[int]):
        self.images, self.input_size = images, tuple(input_size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int):
        try:
            image, meta, _ = self.images[row]
            return image, meta, ""
        except ImageDecodeError as exc:
            return (torch.zeros(self.input_size), torch.from_numpy(self.images.metadata[row]),
                    exc.reason or str(exc))


def score_readable(runner, images: torch.Tensor, metadata: torch.Tensor | None, ok: np.ndarray,
                   n_classes: int, tta: int = 1) -> np.ndarray:
    """Probabilities (N, C) from ``runner.predict_batch`` (a Predictor or a backend) for the
    images marked readable in ``ok`` (N,); NaN rows for the others (placeholders)."""
    if ok.all():
        return runner.predict_batch(images, metadata, tta=tta)
    probs = np.full((len(images), n_classes), np.nan)
    if ok.any():
        keep = torch.from_numpy(ok)
        probs[ok] = runner.predict_batch(
            images[keep.to(images.device)],
            None if metadata is None else metadata[keep.to(metadata.device)], tta=tta)
    return probs


def check_batch_size(batch_size: int, what: str = "batch size") -> int:
    """``batch_size`` as an int >= 1, else a DermlearnError naming it as ``what``."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DermlearnError(f"{what} must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_threads(threads: int | None) -> int | None:
    """``threads`` as None/0 (the backend's default: all cores) or an int >= 1, else a
    DermlearnError naming it."""
    if threads is None:
        return None
    if isinstance(threads, bool) or int(threads) != threads or threads < 0:
        raise DermlearnError(f"threads must be 0 (all cores) or a positive integer, "
                             f"got {threads!r}")
    return int(threads)


class Predictor:
    """Probabilities over a model's training classes; an ensemble averages its members."""

    def __init__(self, members: Sequence[LesionClassifier], config: dict, device: str = "cpu",
                 directory: str | Path | None = None):
        self.members = [m.eval().to(device) for m in members]
        self.config = config
        self.device = device
        #: The model directory it was loaded from (None when built in memory).
        self.directory = Path(directory) if directory is not None else None
        self.classes: list[str] = list(config["classes"])
        self.taxonomy = Taxonomy.from_dict(config["taxonomy"])
        self.preprocess = PreprocessConfig.from_dict(config["preprocess"])
        self.transform = eval_transform(self.preprocess)
        self.temperature = float(config.get("temperature", 1.0))
        meta = config.get("metadata")
        self.metadata_encoder = MetadataEncoder.from_dict(meta) if meta else None
        for m in self.members:
            m.to(memory_format=torch.channels_last)
        self._feature_layout: list[tuple[str, int]] | None = None
        #: Held while the members run with feature hooks; hold it to run them from another thread
        #: with hooks of your own (e.g. Grad-CAM), so neither sees the other's activations.
        self.lock = threading.RLock()

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Predictor":
        """Load ``model/`` (or a run directory holding one)."""
        directory = Path(directory)
        if (directory / "model" / "config.json").exists():  # a run directory
            directory = directory / "model"
        config = read_config(directory)
        members = [load_model(directory / m)[0] for m in config.get("ensemble", [])] or \
            [load_model(directory)[0]]
        return cls(members, config, device, directory=directory)

    def missing_metadata(self, n: int) -> torch.Tensor | None:
        """The "age, sex and site unknown" encoding for ``n`` images (None: no metadata branch)."""
        if self.metadata_encoder is None:
            return None
        unknown = self.metadata_encoder.encode(None, None, None)
        return torch.from_numpy(np.stack([unknown] * n)).to(self.device)

    @torch.inference_mode()
    def predict_batch(self, batch: torch.Tensor, metadata: torch.Tensor | None = None,
                      tta: int = 1) -> np.ndarray:
        """Probabilities (N, C) for a preprocessed batch (N, 3, H, W)."""
        views = first_views(tta)
        if self.metadata_encoder is not None and metadata is None:
            metadata = self.missing_metadata(len(batch))
        batch = batch.to(self.device)
        if metadata is not None:
            metadata = metadata.to(self.device)
        total = torch.zeros(len(batch), len(self.classes), dtype=torch.float64)
        for name in views:
            view = apply_view(batch, name).contiguous(memory_format=torch.channels_last)
            for model in self.members:
                logits = model(view, metadata) if model.metadata is not None else model(view)
                total += torch.softmax(logits.float() / self.temperature, dim=1).double().cpu()
        return (total / (tta * len(self.members))).numpy()

    @torch.inference_mode()
    def predict_batch_with_features(self, batch: torch.Tensor,
                                    metadata: torch.Tensor | None = None
                                    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, C), OOD feature vectors (N, D)) in one pass, no TTA.

        Probabilities are those of :meth:`predict_batch` (``tta=1``, ``metadata`` (N, M) as
        there); the feature vectors are the first member's penultimate features plus
        middle-stage channel statistics, laid out as :attr:`feature_layout` says -- the space
        :mod:`dermlearn.serving.ood` models.
        """
        from dermlearn.serving.ood import ood_features

        with self.lock:
            if self.metadata_encoder is not None:
                metadata = (self.missing_metadata(len(batch)) if metadata is None
                            else metadata.to(self.device))
            view = batch.to(self.device).contiguous(memory_format=torch.channels_last)
            total = torch.zeros(len(batch), len(self.classes), dtype=torch.float64)
            features = None
            for model in self.members:
                if features is None:
                    feats, features, layout = ood_features(model, view)
                    self._feature_layout = layout
                else:
                    feats = model.features(view)
                logits = model.classify(feats, metadata if model.metadata is not None else None)
                total += torch.softmax(logits.float() / self.temperature, dim=1).double().cpu()
        return (total / len(self.members)).numpy(), features.float().cpu().numpy()

    def features_batch(self, batch: torch.Tensor) -> np.ndarray:
        """OOD feature vectors (N, D) for a preprocessed batch (see
        :meth:`predict_batch_with_features`)."""
        return self.predict_batch_with_features(batch)[1]

    @property
    def feature_layout(self) -> list[tuple[str, int]]:
        """[(layer name, width)] of the OOD feature vector."""
        if self._feature_layout is None:
            _, h, w = self.preprocess.input_size
            self.predict_batch_with_features(torch.zeros(1, 3, h, w))
        return list(self._feature_layout)

    def predict_images(self, images: Sequence[Image.Image], tta: int = 1) -> np.ndarray:
        """Probabilities (N, C) for decoded RGB images."""
        batch = torch.stack([self.transform(img) for img in images])
        return self.predict_batch(batch, tta=tta)

    def predict_paths(self, paths: Sequence[str], *, tta: int = 1, batch_size: int = 32,
                      num_workers: int = 2, progress: bool = False,
                      backend=None, metadata: pd.DataFrame | None = None,
                      unreadable: list | None = None) -> np.ndarray:
        """Probabilities (N, C) for image files, decoded in streaming worker processes.

        ``backend`` (a :mod:`dermlearn.serving.backends` backend, e.g. ONNX Runtime) runs the
        model instead of this predictor's PyTorch members. ``metadata``: N rows with ``age``,
        ``sex``, ``site`` for a metadata-fusion model (without it every image is encoded as
        "age, sex and site unknown"). An undecodable image raises ImageDecodeError, unless
        ``unreadable`` is a list: then its row is NaN, ``(path, reason)`` is appended to the
        list, and the other images are scored.
        """
        from tqdm.auto import tqdm

        batch_size = check_batch_size(batch_size)
        try:  # before any decoding: a non-square model has 4 views, not 8
            check_views(first_views(tta), self.preprocess.image_size)
        except DermlearnError as exc:
            raise DermlearnError(f"--tta {tta}: {exc} (a non-square model takes at most 4 "
                                 f"views)") from None
        fuse = self.metadata_encoder is not None and metadata is not None
        if fuse and len(metadata) != len(paths):
            raise DermlearnError(f"metadata has {len(metadata)} rows for {len(paths)} images")
        encoded = self.metadata_encoder.encode_table(metadata) if fuse else None
        images = LesionDataset(paths, np.zeros(len(paths), dtype=np.int64), self.transform,
                               metadata=encoded)
        skip = unreadable is not None
        if skip:
            images = _SkipUnreadable(images, self.preprocess.input_size)
        loader = DataLoader(images, batch_size=batch_size,
                            num_workers=num_workers if len(paths) > batch_size else 0)
        runner = backend if backend is not None else self
        out, start = [], 0
        with tqdm(total=len(paths), unit="img", desc="predicting", disable=not progress) as bar:
            for batch, meta, reasons in loader:
                ok = np.array([not r for r in reasons]) if skip else np.ones(len(batch), bool)
                if skip:
                    unreadable.extend((paths[start + i], reasons[i])
                                      for i in np.flatnonzero(~ok))
                out.append(score_readable(runner, batch, meta if fuse else None, ok,
                                          len(self.classes), tta))
                start += len(batch)
                bar.update(len(batch))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def to_level(self, probs: np.ndarray, level: str) -> tuple[np.ndarray, list[str]]:
        """PA: probabilities of ``level``'s groups (N, G) from class probabilities (N, C)."""
        return aggregate(probs, self.classes, self.taxonomy, level)


class ResolvedInputs(NamedTuple):
    """What to score: image ids, file paths and, for a dataset, its ``age``/``sex``/``site``
    table (N rows, in the same order; None for image files and folders)."""

    ids: list[str]
    paths: list[str]
    metadata: pd.DataFrame | None = None


def resolve_inputs(inputs: str | Path | Sequence[str | Path]) -> ResolvedInputs:
    """Image ids, paths (and a dataset's metadata) from image files, folders of images, or one
    dataset spec."""
    from dermlearn.data import load

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items = [Path(str(i)) for i in inputs]
    if all(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in items):
        return ResolvedInputs([p.stem for p in items], [str(p) for p in items])
    if len(items) == 1:
        folder = items[0]
        direct = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) \
            if folder.is_dir() else []
        if direct:
            return ResolvedInputs([p.stem for p in direct], [str(p) for p in direct])
        manifest = load(str(inputs[0]), strict=False)
        missing = [p for p in manifest.problems if p.kind == "missing_file"]
        if missing:
            raise DermlearnError(f"{len(missing)} images of {inputs[0]} are missing, e.g. "
                                 f"{missing[0].message}")
        return ResolvedInputs(manifest.image_ids, manifest.table["path"].astype(str).tolist(),
                              manifest.table[list(METADATA_INPUTS)].reset_index(drop=True))
    bad = [str(p) for p in items if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)]
    raise DermlearnError(f"not image files: {', '.join(bad[:5])}")


def predict(model_dir: str | Path, inputs: str | Path | Sequence[str | Path], *,
            level: str | None = None, tta: int = 1, batch_size: int = 32,
            progress: bool = False, backend: str = "torch",
            threads: int | None = None) -> pd.DataFrame:
    """ISIC-format table: ``image`` then one probability column per class (or per ``level``
    group, summed up the taxonomy by PA).

    ``backend="onnx"`` runs ONNX Runtime on the model's ONNX export (made and cached on the
    fly); ``backend="auto"`` (the CLI's default) picks ONNX Runtime when it is installed, else
    PyTorch -- about 2-3x faster on CPU, probabilities within 1e-4 (``benchmarks/bench.py``);
    the default ``torch`` reproduces training's validation probabilities bit for bit.
    ``threads`` sets the backend's intra-op threads (or PyTorch's). A metadata-fusion model
    scoring a dataset gets each image's age, sex and site, with either backend.

    Images that cannot be decoded do not stop the others: every readable image is scored, then
    :class:`UnreadableImagesError` names each unreadable file and carries the readable images'
    table as ``.table``.
    """
    batch_size = check_batch_size(batch_size)
    threads = check_threads(threads)
    predictor = Predictor.load(model_dir)
    if level:  # an unknown level fails now, not after scoring every image
        predictor.to_level(np.full((1, len(predictor.classes)), 1 / len(predictor.classes)),
                           level)
    resolved = resolve_inputs(inputs)
    runner = None
    if backend != "torch":
        from dermlearn.serving.backends import create_backend

        runner = create_backend(predictor.directory, backend, predictor=predictor,
                                threads=threads)
    elif threads:
        torch.set_num_threads(threads)
    unreadable: list[tuple[str, str]] = []
    probs = predictor.predict_paths(resolved.paths, tta=tta, batch_size=batch_size,
                                    progress=progress, metadata=resolved.metadata,
                                    backend=runner if getattr(runner, "name", "") != "torch"
                                    else None, unreadable=unreadable)
    read = ~np.isnan(probs).any(axis=1)
    columns = predictor.classes
    if level:
        probs, columns = predictor.to_level(probs, level)
    table = pd.DataFrame(probs, columns=columns)
    table.insert(0, "image", resolved.ids)
    if unreadable:
        raise UnreadableImagesError(unreadable, len(table),
                                    table[read].reset_index(drop=True))
    return table

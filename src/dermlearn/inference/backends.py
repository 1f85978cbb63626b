"""Inference backends behind one interface: PyTorch (eager) and ONNX Runtime.

Both take a preprocessed batch (N, 3, H, W) float32 -- and, for a model that fuses age/sex/site,
optionally their encoding (N, M) (default: "unknown") -- and return :class:`BackendOutput`
(probabilities over the training classes with the saved temperature applied, averaged over
ensemble members, and the out-of-distribution feature vectors); both preprocess PIL images with
the model's own eval transform. Both are runners of the one scoring loop
(:func:`~dermlearn.inference.scoring.score_images`: ``run_batch`` averages the probabilities
over test-time views and takes the OOD vector from the first view).

>>> backend = create_backend("runs/ham/model", "onnx", threads=2)
>>> out = backend.infer(backend.preprocess_images([image]))
>>> out.probabilities.shape, out.features.shape        # (1, C), (1, D)
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image

from dermlearn.errors import DermlearnError
from dermlearn.inference.onnx_export import METADATA_INPUT
from dermlearn.inference.predictor import Predictor
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.models.views import apply_view, check_views, first_views
from dermlearn.parallel import check_threads

__all__ = ["BACKENDS", "BackendOutput", "InferenceBackend", "OnnxBackend", "TorchBackend",
           "create_backend", "resolve_backend"]

log = logging.getLogger(__name__)

BackendName = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = ("torch", "onnx")


@dataclass
class BackendOutput:
    """Model outputs for a batch: ``probabilities`` (N, C) and OOD ``features`` (N, D)."""

    probabilities: np.ndarray
    features: np.ndarray


class InferenceBackend(Protocol):
    """What the service and ``predict --backend`` need from a backend."""

    name: str
    classes: list[str]
    preprocess: PreprocessConfig

    def infer(self, batch: torch.Tensor | np.ndarray,
              metadata: torch.Tensor | np.ndarray | None = None) -> BackendOutput: ...

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...

    def predict_batch(self, batch: torch.Tensor, metadata: torch.Tensor | None = None,
                      tta: int = 1) -> np.ndarray: ...


class _Base:
    name = "base"
    classes: list[str]
    preprocess: PreprocessConfig
    transform: Callable[[Image.Image], torch.Tensor]

    def infer(self, batch: torch.Tensor | np.ndarray,
              metadata: torch.Tensor | np.ndarray | None = None
              ) -> BackendOutput:  # pragma: no cover
        raise NotImplementedError

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(3, H, W) of a preprocessed image."""
        return tuple(self.preprocess.input_size)

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Batch (N, 3, H, W) float32 from decoded RGB images (the model's eval transform)."""
        if not images:
            _, h, w = self.preprocess.input_size
            return torch.empty((0, 3, h, w))
        return torch.stack([self.transform(img) for img in images])

    def run_batch(self, images: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  views: Sequence[str] = ("identity",),
                  outputs: Sequence[str] = ("probabilities",)) -> dict[str, np.ndarray]:
        """``probabilities`` (N, C) averaged over ``views``; ``ood`` (N, D) of the first view."""
        unknown = sorted(set(outputs) - {"probabilities", "ood"})
        if unknown:
            raise DermlearnError(f"the {self.name} backend gives probabilities and ood, not "
                                 f"{', '.join(unknown)}")
        views = check_views(views, self.preprocess.image_size)
        total = np.zeros((len(images), len(self.classes)), dtype=np.float64)
        result = {}
        for v, name in enumerate(views):
            out = self.infer(apply_view(torch.as_tensor(images), name).contiguous(), metadata)
            total += out.probabilities
            if v == 0 and "ood" in outputs:
                result["ood"] = np.asarray(out.features, dtype=np.float32)
        if "probabilities" in outputs:
            result["probabilities"] = total / len(views)
        return result

    def predict_batch(self, batch: torch.Tensor, metadata: torch.Tensor | None = None,
                      tta: int = 1) -> np.ndarray:
        """Probabilities (N, C) averaged over ``tta`` dihedral views (as Predictor does)."""
        return self.run_batch(batch, metadata, views=first_views(tta))["probabilities"]


class TorchBackend(_Base):
    """PyTorch eager inference through a loaded :class:`Predictor` (CPU or CUDA)."""

    name = "torch"

    def __init__(self, predictor: Predictor, *, threads: int | None = None):
        threads = check_threads(threads)
        if threads:
            torch.set_num_threads(threads)
        self.predictor = predictor
        self.classes = list(predictor.classes)
        self.preprocess = predictor.preprocess
        self.transform = predictor.transform
        self.threads = torch.get_num_threads()

    def infer(self, batch: torch.Tensor | np.ndarray,
              metadata: torch.Tensor | np.ndarray | None = None) -> BackendOutput:
        out = self.predictor.run_batch(
            torch.as_tensor(batch), None if metadata is None else torch.as_tensor(metadata),
            outputs=("probabilities", "ood"))
        return BackendOutput(out["probabilities"], out["ood"])

    def run_batch(self, images: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  views: Sequence[str] = ("identity",),
                  outputs: Sequence[str] = ("probabilities",)) -> dict[str, np.ndarray]:
        return self.predictor.run_batch(images, metadata, views=views, outputs=outputs)

    def output_widths(self, outputs: Sequence[str]) -> dict[str, int]:
        return self.predictor.output_widths(outputs)


class OnnxBackend(_Base):
    """ONNX Runtime inference (CPU execution provider) of a file from
    :func:`~dermlearn.inference.onnx_export.export_onnx`; self-contained: classes and
    preprocessing come from the file's metadata."""

    name = "onnx"

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        threads = check_threads(threads)
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's default (cores)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DermlearnError(f"{self.path}: cannot load the ONNX model ({exc})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.classes = list(json.loads(self.metadata["classes"]))
            self.preprocess = PreprocessConfig.from_dict(json.loads(self.metadata["preprocess"]))
        except (KeyError, ValueError) as exc:
            raise DermlearnError(f"{self.path}: not a dermlearn ONNX export (metadata {exc})"
                                 ) from None
        self.transform = eval_transform(self.preprocess)
        self.threads = int(threads or 0)
        inputs = [i.name for i in self.session.get_inputs()]
        self.input_name = inputs[0]
        #: The age/sex/site input of a metadata-fusion export (None: the model has none).
        self.metadata_input = METADATA_INPUT if METADATA_INPUT in inputs else None
        self.unknown_metadata = (np.asarray(json.loads(self.metadata["unknown_metadata"]),
                                            dtype=np.float32)
                                 if self.metadata_input else None)
        self.feature_width = sum(int(w) for _, w in json.loads(
            self.metadata.get("feature_layout", "[]")))

    def output_widths(self, outputs: Sequence[str]) -> dict[str, int]:
        widths = {"probabilities": len(self.classes), "ood": self.feature_width}
        return {name: widths[name] for name in outputs}

    def infer(self, batch: torch.Tensor | np.ndarray,
              metadata: torch.Tensor | np.ndarray | None = None) -> BackendOutput:
        array = np.ascontiguousarray(np.asarray(batch), dtype=np.float32)
        feed = {self.input_name: array}
        if self.metadata_input:
            feed[self.metadata_input] = (np.tile(self.unknown_metadata, (len(array), 1))
                                         if metadata is None else
                                         np.ascontiguousarray(np.asarray(metadata), np.float32))
        elif metadata is not None:
            raise DermlearnError(f"{self.path} has no age/sex/site input (exported by an older "
                                 f"dermlearn): export the model again with `dermlearn export`")
        probs, feats = self.session.run(None, feed)
        return BackendOutput(probs.astype(np.float64), feats)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """``auto`` -> the fastest accurate engine measured on CPU (``benchmarks/bench.py``): ONNX
    Runtime when it is installed (probabilities within 1e-4 of PyTorch's), else PyTorch
    (channels-last eager); on a GPU, PyTorch. Other names are returned unchanged."""
    if backend != "auto":
        return backend
    return "onnx" if device == "cpu" and onnxruntime_available() else "torch"


def create_backend(model_dir: str | Path, backend: str = "torch", *,
                   predictor: Predictor | None = None, threads: int | None = None,
                   onnx_path: str | Path | None = None) -> TorchBackend | OnnxBackend:
    """A backend for a model directory; for ``onnx`` the export is made (and cached) on the
    fly unless ``onnx_path`` names one. ``auto`` (see :func:`resolve_backend`) falls back to
    PyTorch, with a warning, when the ONNX export or session cannot be made."""
    threads = check_threads(threads)  # a bad value is the caller's error, not a reason to fall back
    if backend == "auto":
        device = predictor.device if predictor is not None else "cpu"
        if resolve_backend("auto", device) == "onnx":
            try:
                return create_backend(model_dir, "onnx", predictor=predictor, threads=threads,
                                      onnx_path=onnx_path)
            except Exception as exc:  # noqa: BLE001 - any export/runtime failure: use torch
                log.warning("ONNX Runtime unavailable for %s (%s); using PyTorch", model_dir, exc)
        backend = "torch"
    if backend == "torch":
        return TorchBackend(predictor or Predictor.load(model_dir), threads=threads)
    if backend == "onnx":
        from dermlearn.inference.onnx_export import ensure_onnx

        path = Path(onnx_path) if onnx_path else ensure_onnx(model_dir, predictor)
        return OnnxBackend(path, threads=threads)
    raise DermlearnError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")

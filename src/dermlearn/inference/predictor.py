"""A saved model (one network or an ensemble) ready to score images, with PA to coarser levels.

>>> predictor = Predictor.load("runs/ham/model")          # or the run folder "runs/ham"
>>> probs = predictor.predict_images([read_image("lesion.jpg")], tta=8)     # (1, C)
>>> out = predictor.run_batch(batch, views=("identity",), outputs=("probabilities", "ood"))

Files are scored by :func:`dermlearn.inference.scoring.score_images` with a Predictor as its
runner; :func:`ensemble_probabilities` is the one place where members' logits become the
model's probabilities (mean of ``softmax(logits / temperature)``). Images are preprocessed once,
with the model's ``preprocess``; an ensemble member trained with another size or crop takes its
part of that batch inside itself (``LesionClassifier.read_inputs_at``).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from dermlearn.errors import DermlearnError
from dermlearn.inference.ood import ood_features
from dermlearn.models.errors import ModelError
from dermlearn.models.input_resize import input_box, photometric_mismatch
from dermlearn.models.lesion_classifier import (
    METADATA_INPUTS,
    LesionClassifier,
    MetadataEncoder,
    load_model,
    read_config,
)
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform
from dermlearn.models.views import apply_view, check_views, first_views
from dermlearn.taxonomy import Taxonomy, aggregate

__all__ = ["OUTPUTS", "Predictor", "ensemble_probabilities", "model_directory"]

#: Outputs a Predictor computes: probabilities (N, C), penultimate features averaged over the
#: members (N, D), and the out-of-distribution screen's vector (N, D').
OUTPUTS = ("probabilities", "embedding", "ood")


def model_directory(path: str | Path) -> Path:
    """The model folder of ``path``: ``path/model`` for a run folder, else ``path`` itself."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").is_file() else path


def ensemble_probabilities(logits: Sequence[torch.Tensor], temperature: float = 1.0,
                           dtype: torch.dtype = torch.float64,
                           weights: Sequence[float] | None = None) -> torch.Tensor:
    """The mean over ``logits`` (one (N, C) tensor per member and view) of
    ``softmax(logits / temperature)`` -- weighted by ``weights`` (one per entry of ``logits``,
    summing to 1) when given -- summed in ``dtype`` (float64 for reported probabilities;
    float32 inside an exported graph or under autograd)."""
    total = None
    for i, z in enumerate(logits):
        p = torch.softmax(z.float() / temperature, dim=1).to(dtype)
        if weights is not None:
            p = p * float(weights[i])
        total = p if total is None else total + p
    return total if weights is not None else total / len(logits)


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
        #: Each member's share of the probabilities (None: equal shares), e.g. fitted by
        #: ``dermlearn ensemble`` on a validation part.
        self.member_weights = ([float(w) for w in config["ensemble_weights"]]
                               if config.get("ensemble_weights") else None)
        meta = config.get("metadata")
        self.metadata_encoder = MetadataEncoder.from_dict(meta) if meta else None
        for m in self.members:
            m.to(memory_format=torch.channels_last)
        self._feature_layout: list[tuple[str, int]] | None = None
        #: Held while the members run with feature hooks; hold it to run them from another thread
        #: with hooks of your own (e.g. Grad-CAM), so neither sees the other's activations.
        self.lock = threading.RLock()

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> Predictor:
        """Load ``model/`` (or a run directory holding one)."""
        directory = model_directory(directory)
        config = read_config(directory)
        preprocess = PreprocessConfig.from_dict(config["preprocess"])
        members = []
        for name in config.get("ensemble", []):
            member, own = load_model(directory / name)
            trained = PreprocessConfig.from_dict(own["preprocess"])
            if (trained.image_size, trained.crop_pct) != (preprocess.image_size,
                                                          preprocess.crop_pct):
                why = photometric_mismatch(preprocess, trained)
                if why:
                    raise ModelError(f"{directory / name}: this member's preprocessing cannot "
                                     f"be made from the ensemble's ({why}); rebuild the "
                                     f"ensemble with dermlearn ensemble")
                photo = config.get("reference_photo") or [
                    math.floor(v / preprocess.crop_pct) for v in preprocess.image_size]
                try:
                    member.read_inputs_at(preprocess.image_size, trained.image_size,
                                          input_box(preprocess, trained, photo))
                except ModelError as exc:
                    raise ModelError(f"{directory / name}: {exc}") from None
            members.append(member)
        return cls(members or [load_model(directory)[0]], config, device, directory=directory)

    def member(self, index: int) -> Predictor:
        """A Predictor of ensemble member ``index`` alone (same config and temperature)."""
        return Predictor([self.members[index]], self.config, self.device, self.directory)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(3, H, W) of a preprocessed image."""
        return tuple(self.preprocess.input_size)

    # -- metadata ---------------------------------------------------------------------------
    def encode_metadata(self, table: pd.DataFrame | None) -> np.ndarray | None:
        """(N, M) encoding of a table's ``age``/``sex``/``site`` for a metadata-fusion model;
        None for a model without metadata, or when the table lacks those columns."""
        if self.metadata_encoder is None or table is None \
                or not set(METADATA_INPUTS) <= set(table.columns):
            return None
        return self.metadata_encoder.encode_table(table)

    def missing_metadata(self, n: int) -> torch.Tensor | None:
        """The "age, sex and site unknown" encoding for ``n`` images (None: no metadata branch)."""
        if self.metadata_encoder is None:
            return None
        unknown = self.metadata_encoder.encode(None, None, None)
        return torch.from_numpy(np.stack([unknown] * n)).to(self.device)

    # -- forward ----------------------------------------------------------------------------
    @torch.inference_mode()
    def run_batch(self, images: torch.Tensor, metadata: torch.Tensor | None = None, *,
                  views: Sequence[str] = ("identity",),
                  outputs: Sequence[str] = ("probabilities",)) -> dict[str, np.ndarray]:
        """Outputs (see :data:`OUTPUTS`) for a preprocessed batch (N, 3, H, W).

        ``probabilities`` average every member over every view; ``embedding`` (the members'
        penultimate features, averaged, or concatenated when their widths differ) and ``ood``
        (the first member's, see :func:`~dermlearn.inference.ood.ood_features`) are taken from
        the first view. ``metadata`` (N, M): None means "unknown" for every image.
        """
        unknown = sorted(set(outputs) - set(OUTPUTS))
        if unknown:
            raise DermlearnError(f"unknown output(s) {unknown}; a Predictor gives {OUTPUTS}")
        views = check_views(views, self.preprocess.image_size)
        if self.metadata_encoder is not None:
            metadata = (self.missing_metadata(len(images)) if metadata is None
                        else metadata.to(self.device))
        else:
            metadata = None
        images = images.to(self.device)
        logits, embedding, result = [], [], {}
        with self.lock:
            for v, name in enumerate(views):
                view = apply_view(images, name).contiguous(memory_format=torch.channels_last)
                for m, model in enumerate(self.members):
                    if v == 0 and m == 0 and "ood" in outputs:
                        feats, ood, self._feature_layout = ood_features(model, view)
                        result["ood"] = ood.float().cpu().numpy()
                    else:
                        feats = model.features(view)
                    if v == 0 and "embedding" in outputs:
                        embedding.append(feats.float().cpu())
                    logits.append(model.classify(
                        feats, metadata if model.metadata is not None else None))
        if "probabilities" in outputs:
            weights = None if self.member_weights is None else \
                [w / len(views) for _ in views for w in self.member_weights]
            result["probabilities"] = ensemble_probabilities(
                logits, self.temperature, weights=weights).cpu().numpy()
        if embedding:
            same = len({f.shape[1] for f in embedding}) == 1
            result["embedding"] = (torch.stack(embedding).mean(0) if same
                                   else torch.cat(embedding, dim=1)).numpy()
        return result

    def output_widths(self, outputs: Sequence[str]) -> dict[str, int]:
        """Width of each of ``outputs`` (what a row of it holds)."""
        widths = {"probabilities": len(self.classes)}
        if "embedding" in outputs:
            dims = [m.num_features for m in self.members]
            widths["embedding"] = dims[0] if len(set(dims)) == 1 else sum(dims)
        if "ood" in outputs:
            widths["ood"] = sum(w for _, w in self.feature_layout)
        return {name: widths[name] for name in outputs}

    def predict_batch(self, batch: torch.Tensor, metadata: torch.Tensor | None = None,
                      tta: int = 1) -> np.ndarray:
        """Probabilities (N, C) for a preprocessed batch (N, 3, H, W), averaged over ``tta``
        dihedral views."""
        return self.run_batch(batch, metadata, views=first_views(tta))["probabilities"]

    def predict_images(self, images: Sequence[Image.Image], tta: int = 1) -> np.ndarray:
        """Probabilities (N, C) for decoded RGB images."""
        batch = torch.stack([self.transform(img) for img in images])
        return self.predict_batch(batch, tta=tta)

    @property
    def feature_layout(self) -> list[tuple[str, int]]:
        """[(layer name, width)] of the OOD feature vector."""
        if self._feature_layout is None:
            _, h, w = self.preprocess.input_size
            self.run_batch(torch.zeros(1, 3, h, w), outputs=("ood",))
        return list(self._feature_layout)

    def to_level(self, probs: np.ndarray, level: str) -> tuple[np.ndarray, list[str]]:
        """PA: probabilities of ``level``'s groups (N, G) from class probabilities (N, C)."""
        return aggregate(probs, self.classes, self.taxonomy, level)

    def check_level(self, level: str | None) -> None:
        """Fail now, before any scoring, when ``level`` is not reachable from the classes."""
        if level:
            self.to_level(np.full((1, len(self.classes)), 1 / len(self.classes)), level)

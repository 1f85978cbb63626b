"""The trained model: backbone + (optional metadata branch) + linear head, saved as safetensors.

A model directory holds ``model.safetensors`` (weights) and ``config.json`` (backbone,
preprocessing, classes, taxonomy, metadata encoding, temperature, recipe, metrics). Loading
never unpickles anything.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dermlearn.atomic import atomic_write
from dermlearn.models.backbones import create_backbone, feature_dim
from dermlearn.models.errors import ModelError
from dermlearn.models.input_resize import InputResize

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
#: The manifest columns a metadata-fusion model reads, in its encoding's order.
METADATA_INPUTS: tuple[str, str, str] = ("age", "sex", "site")


class MetadataEncoder:
    """Encodes age, sex and site as a fixed-width float vector (missing values flagged).

    Layout: ``[age/100, age_missing, male, female, sex_missing, site one-hot..., site_other]``.
    """

    def __init__(self, sites: Sequence[str]):
        self.sites = list(sites)

    @classmethod
    def fit(cls, sites: Sequence[Any]) -> MetadataEncoder:
        return cls(sorted({str(s) for s in sites if isinstance(s, str) and s}))

    @property
    def dim(self) -> int:
        return 5 + len(self.sites) + 1

    def encode(self, age: Any, sex: Any, site: Any) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        if age is None or (isinstance(age, float) and np.isnan(age)):
            v[1] = 1.0
        else:
            v[0] = float(age) / 100.0
        v[{"male": 2, "female": 3}.get(sex, 4)] = 1.0
        v[5 + self.sites.index(site) if site in self.sites else self.dim - 1] = 1.0
        return v

    def encode_table(self, table) -> np.ndarray:
        """(N, dim) float32 from a table with ``age``, ``sex``, ``site`` columns."""
        return np.stack([self.encode(*row) for row in
                         zip(*(table[c] for c in METADATA_INPUTS))]) if len(table) else \
            np.zeros((0, self.dim), np.float32)

    def to_dict(self) -> dict:
        """``{"dim": M, "sites": [...]}`` (as saved in a model's config)."""
        return {"dim": self.dim, "sites": self.sites}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetadataEncoder:
        return cls(data["sites"])


class LesionClassifier(nn.Module):
    """Backbone features (N, D) [+ metadata branch (N, 32)] -> dropout -> linear -> logits (N, C)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, metadata_dim: int = 0,
                 drop_rate: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.num_features = feature_dim(backbone)
        self.metadata_dim = metadata_dim
        self.metadata = (nn.Sequential(nn.Linear(metadata_dim, 32), nn.ReLU())
                         if metadata_dim else None)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features + (32 if metadata_dim else 0), num_classes)
        #: Crops and resizes inputs to those the network trained on, for an ensemble member
        #: that reads the ensemble's input (:meth:`read_inputs_at`); None: inputs as given.
        self.input_resize: InputResize | None = None

    def read_inputs_at(self, size: tuple[int, int], native: tuple[int, int],
                       box: tuple[float, float, float, float] | None = None) -> None:
        """Take (N, 3, *size) batches and crop (``box``: top, left, height, width in input
        pixels; None: all) and resize them inside the network to ``native`` (H, W), the input
        it trained on: an ensemble member whose ensemble reads another preprocessing
        (:mod:`dermlearn.models.input_resize`). ``size == native`` without a box removes it."""
        self.input_resize = (None if box is None and tuple(size) == tuple(native)
                             else InputResize(tuple(size), tuple(native), box))

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` at the size the backbone trained at (see :meth:`read_inputs_at`)."""
        return images if self.input_resize is None else self.input_resize(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) image features, (N, D)."""
        return self.backbone(self.prepare_input(images))

    def classify(self, features: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, C) from features (N, D) and, if fused, metadata (N, M)."""
        if self.metadata is not None:
            if metadata is None:
                raise ModelError("this model fuses metadata (age, sex, site): pass it")
            features = torch.cat([features, self.metadata(metadata)], dim=1)
        return self.head(self.dropout(features))

    def forward(self, images: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(images), metadata)


def _mlp(num_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def head_config(head: nn.Module) -> dict[str, Any]:
    """JSON-safe description of a head from this module, for a model's ``config.json``.

    ``{"type": "linear"}`` or ``{"type": "mlp", "hidden": H, "dropout": P}``;
    :func:`build_head` rebuilds the same module (same state-dict keys) from it.
    """
    if isinstance(head, nn.Linear):
        return {"type": "linear"}
    layers = list(head.children()) if isinstance(head, nn.Sequential) else []
    if (len(layers) == 4 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.ReLU)
            and isinstance(layers[2], nn.Dropout) and isinstance(layers[3], nn.Linear)):
        return {"type": "mlp", "hidden": layers[0].out_features, "dropout": float(layers[2].p)}
    raise ModelError(f"not a dermlearn head: {head}")


def build_head(config: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    """An untrained head of the shape :func:`head_config` describes (load the weights into it)."""
    kind = config.get("type", "linear") if isinstance(config, Mapping) else None
    if kind == "linear":
        return nn.Linear(num_features, num_classes)
    if kind == "mlp":
        try:
            return _mlp(num_features, int(config["hidden"]), float(config.get("dropout", 0.0)),
                        num_classes)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed mlp head config {dict(config)!r} ({exc})") from None
    raise ModelError(f"unknown head config {config!r}: expected type 'linear' or 'mlp'")



def save_model(model: LesionClassifier, directory: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    full = {"format_version": FORMAT_VERSION, **config}
    atomic_write(directory / CONFIG_FILE,
                  lambda p: Path(p).write_text(json.dumps(full, indent=2, default=_json_default)))
    return directory


#: The file beside an ensemble's members that holds the tensors they all share.
SHARED_FILE = "shared.safetensors"


def share_common_weights(model_dir: str | Path, members: Sequence[str]) -> int:
    """Store the tensors that every member of the ensemble in ``model_dir`` holds identically
    (e.g. the frozen backbone of a features-mode fold ensemble) once, in
    ``model_dir/shared.safetensors``, each member keeping only its own; returns the bytes saved.
    Idempotent; every file is rewritten atomically and the members load as before."""
    model_dir = Path(model_dir)
    states = [dict(load_model(model_dir / m)[0].state_dict()) for m in members]
    common = [k for k in states[0]
              if all(k in s and s[k].shape == states[0][k].shape and torch.equal(s[k],
                                                                                states[0][k])
                     for s in states[1:])]
    if len(members) < 2 or not common:
        return 0
    shared = {k: states[0][k].detach().contiguous().cpu() for k in common}
    atomic_write(model_dir / SHARED_FILE, lambda p: save_file(shared, str(p)))
    saved = 0
    for member, state in zip(members, states):
        own = {k: v.detach().contiguous().cpu() for k, v in state.items() if k not in shared}
        directory = model_dir / member
        before = (directory / WEIGHTS_FILE).stat().st_size
        atomic_write(directory / WEIGHTS_FILE, lambda p, own=own: save_file(own, str(p)))
        relative = Path(*[".."] * len(Path(member).parts)) / SHARED_FILE
        update_config(directory, shared_weights=str(relative))
        saved += before - (directory / WEIGHTS_FILE).stat().st_size
    return saved - (model_dir / SHARED_FILE).stat().st_size


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def update_config(directory: str | Path, **fields: Any) -> dict[str, Any]:
    """Set ``fields`` in a saved model's ``config.json`` (atomically); returns the new config."""
    directory = Path(directory)
    config = {**read_config(directory), **fields}
    atomic_write(directory / CONFIG_FILE,
                  lambda p: Path(p).write_text(json.dumps(config, indent=2,
                                                          default=_json_default)))
    return config


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: not a dermlearn model directory (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model config ({exc})") from None


def build_model(config: Mapping[str, Any]) -> LesionClassifier:
    """An untrained LesionClassifier with the architecture ``config`` describes."""
    backbone = create_backbone(config["backbone"], weights="none", num_classes=0)
    model = LesionClassifier(backbone, len(config["classes"]),
                             metadata_dim=config["metadata"]["dim"] if config.get("metadata")
                             else 0)
    if config.get("head", {"type": "linear"}).get("type") != "linear":
        model.head = build_head(config["head"], model.head.in_features, len(config["classes"]))
    return model


def load_model(directory: str | Path) -> tuple[LesionClassifier, dict[str, Any]]:
    """Load a saved model (safetensors only, no pickle) in eval mode, with its config."""
    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory}: no {WEIGHTS_FILE}")
    model = build_model(config)
    state = {}
    files = [weights]
    if config.get("shared_weights"):  # tensors several ensemble members share, stored once
        files.insert(0, (directory / config["shared_weights"]).resolve())
    for path in files:
        if not path.is_file():
            raise ModelError(f"{directory}: no {path.name} (named by {CONFIG_FILE})")
        try:
            state.update(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ModelError(f"{path}: unreadable weights ({exc})") from None
    expected = model.state_dict()
    wrong = [(name, tuple(tensor.shape), tuple(expected[name].shape))
             for name, tensor in state.items()
             if name in expected and tuple(tensor.shape) != tuple(expected[name].shape)]
    if wrong:  # e.g. config.json's classes edited: torch would raise a page of shapes
        shapes = "; ".join(f"{name}: {list(saved)} in the weights, {list(wanted)} from "
                           f"{CONFIG_FILE}" for name, saved, wanted in wrong[:2])
        raise ModelError(f"{directory}: {CONFIG_FILE} does not match the saved weights "
                         f"({shapes}); was {CONFIG_FILE} edited (e.g. its classes), or copied "
                         f"from another run?")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{weights}: weights do not fit the architecture in {CONFIG_FILE} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    # built with random weights, now loaded: say so (feature caches refuse random weights)
    model.backbone.dermlearn_weights = f"dermlearn model {directory}"
    return model.eval(), config

"""Export a saved model (single or fold ensemble) to one self-describing ONNX file.

The graph takes ``image`` (N, 3, H, W) float32, preprocessed as the metadata says -- and, for a
model that fuses age/sex/site, ``metadata`` (N, M) float32, their encoding
(:class:`~dermlearn.models.lesion_classifier.MetadataEncoder`, whose sites and "all unknown"
row are in the file's metadata) -- and returns

* ``probabilities`` (N, C): the mean over ensemble members of ``softmax(logits / temperature)``
  (the saved temperature is part of the graph; it is also in the metadata);
* ``features`` (N, D): the out-of-distribution detector's feature vector
  (:mod:`dermlearn.inference.ood`): the first member's pooled penultimate features followed by
  channel statistics of middle backbone stages (``feature_layout`` in the metadata).

The batch axis is dynamic; the file is a single opset-17 file (TorchScript exporter,
``dynamo=False``: the dynamo exporter writes opset 18 with weights in a side file).
Preprocessing (input size, mean, std, interpolation, crop_pct), classes, taxonomy levels,
temperature and model id/version are stored in the ONNX ``metadata_props``.

>>> export_onnx("runs/ham/model", "ham.onnx")
>>> path = ensure_onnx("runs/ham/model")    # cached model.onnx (or a temp-dir copy), re-exported
...                                         # when the weights changed
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dermlearn import __version__
from dermlearn.atomic import atomic_write, check_output_file
from dermlearn.errors import DermlearnError
from dermlearn.inference.identity import available_levels, model_identity, source_digest
from dermlearn.inference.ood import ood_features
from dermlearn.inference.predictor import Predictor, ensemble_probabilities, model_directory

__all__ = ["METADATA_INPUT", "ONNX_FILE", "OPSET", "EnsembleGraph", "export_onnx", "ensure_onnx",
           "onnx_metadata", "read_onnx_metadata"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT_NAME = "image"
#: The age/sex/site input, present only in exports of models that fuse metadata.
METADATA_INPUT = "metadata"
#: Written as ``dermlearn.format``; a cached export of another format is made again.
FORMAT = "2"
OUTPUT_NAMES = ("probabilities", "features")
#: metadata_props key holding the digest of the weights the file was exported from.
DIGEST_KEY = "dermlearn.source_digest"


class EnsembleGraph(nn.Module):
    """(images, [metadata]) -> (mean member softmax(logits / T), OOD feature vector): the
    exported graph."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.members = nn.ModuleList(predictor.members)
        self.temperature = float(predictor.temperature)
        self.weights = predictor.member_weights

    def forward(self, images: torch.Tensor, metadata: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = [], None
        for member in self.members:
            if features is None:
                feats, features, _ = ood_features(member, images)
            else:
                feats = member.features(images)
            logits.append(member.classify(feats, metadata if member.metadata is not None
                                          else None))
        return ensemble_probabilities(logits, self.temperature, dtype=torch.float32,
                                      weights=self.weights), features


def onnx_metadata(predictor: Predictor) -> dict[str, str]:
    """The ``metadata_props`` written into an exported file (all values strings; JSON where
    structured)."""
    config = predictor.config
    model_id, version = model_identity(predictor.directory, config)
    pre = predictor.preprocess.to_dict()
    levels = {}
    onehot = np.eye(len(predictor.classes))
    for level in available_levels(predictor):
        grouped, groups = predictor.to_level(onehot, level)
        levels[level] = {"groups": groups,
                         "class_to_group": {c: groups[int(j)] for c, j in
                                            zip(predictor.classes, grouped.argmax(axis=1))}}
    meta = {
        "dermlearn.format": FORMAT,
        "dermlearn.version": __version__,
        "model_id": model_id,
        "model_version": version,
        DIGEST_KEY: source_digest(predictor.directory, config),
        "backbone": str(config.get("backbone")),
        "ensemble_members": str(len(predictor.members)),
        "classes": json.dumps(predictor.classes),
        "class_names": json.dumps(config.get("class_names") or {}),
        "taxonomy": predictor.taxonomy.name,
        "taxonomy_levels": json.dumps(levels),
        "temperature": repr(predictor.temperature),
        "preprocess": json.dumps(pre),
        "input_size": json.dumps(pre["input_size"]),
        "mean": json.dumps(pre["mean"]),
        "std": json.dumps(pre["std"]),
        "interpolation": pre["interpolation"],
        "crop_pct": repr(pre["crop_pct"]),
        "input_layout": ("NCHW float32 RGB; "
                         + (f"apply Shades of Gray colour constancy with p={pre['color_constancy']}"
                            " (color_constancy) to the RGB photograph, then "
                            if pre.get("color_constancy") else "")
                         + "resize the shorter side to size / crop_pct with 'interpolation', "
                         "centre-crop to input_size, scale to [0, 1], subtract mean and divide "
                         "by std per channel"),
        "color_constancy": repr(pre.get("color_constancy")),
        "outputs": "probabilities: mean over ensemble members of softmax(logits / temperature), "
                   "shape (N, len(classes)); features: the out-of-distribution detector's "
                   "input (N, D), parts as in feature_layout",
        "feature_layout": json.dumps(predictor.feature_layout),
    }
    encoder = predictor.metadata_encoder
    if encoder is None:
        meta["metadata_inputs"] = "none"
    else:
        meta["metadata_inputs"] = (f"{METADATA_INPUT}: (N, {encoder.dim}) float32, "
                                   "[age/100, age_missing, male, female, sex_missing, one-hot "
                                   "over metadata_sites, site_other]")
        meta["metadata_sites"] = json.dumps(encoder.sites)
        meta["unknown_metadata"] = json.dumps(encoder.encode(None, None, None).tolist())
    return meta


def export_onnx(model: str | Path | Predictor, out: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``model`` (a model directory or a loaded :class:`Predictor`) as a single ONNX file.

    Returns the path written (atomically: a crash leaves no half-written file).
    """
    import onnx

    out = check_output_file(out)
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    if predictor.device != "cpu":
        raise DermlearnError("export from a CPU predictor (Predictor.load(..., device='cpu'))")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = EnsembleGraph(predictor).eval()
    _, h, w = predictor.preprocess.input_size
    inputs: tuple[torch.Tensor, ...] = (torch.zeros(2, 3, h, w),)
    names = [INPUT_NAME]
    if predictor.metadata_encoder is not None:
        inputs += (predictor.missing_metadata(2).float(),)
        names.append(METADATA_INPUT)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which cannot write a
            # single opset-17 file; the traced shapes it warns about are the static H, W.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph, inputs, str(tmp), dynamo=False, opset_version=opset,
                input_names=names, output_names=list(OUTPUT_NAMES),
                dynamic_axes={n: {0: "batch"} for n in (*names, *OUTPUT_NAMES)},
                do_constant_folding=True)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in onnx_metadata(predictor).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "dermlearn"
        proto.producer_version = __version__
        proto.doc_string = (f"dermlearn skin-lesion classifier ({predictor.config.get('backbone')}"
                            f", {len(predictor.members)} member(s)); see metadata_props")
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    atomic_write(out, write)
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def _cache_candidates(directory: Path, digest: str) -> list[Path]:
    return [directory / ONNX_FILE,
            Path(tempfile.gettempdir()) / "dermlearn-onnx" / f"{digest[:24]}.onnx"]


def _fresh(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    try:
        meta = read_onnx_metadata(path)
        return meta.get(DIGEST_KEY) == digest and meta.get("dermlearn.format") == FORMAT
    except Exception:  # an unreadable cache file is simply re-exported
        return False


def ensure_onnx(model_dir: str | Path, predictor: Predictor | None = None) -> Path:
    """Path of an up-to-date ONNX export of ``model_dir``, exporting it when needed.

    The file is cached as ``MODEL_DIR/model.onnx``, or, when the model directory is read-only,
    in ``$TMPDIR/dermlearn-onnx/``; a cached file whose weights digest no longer matches the
    model is re-exported.
    """
    model_dir = model_directory(model_dir)
    predictor = predictor or Predictor.load(model_dir)
    digest = source_digest(model_dir, predictor.config)
    candidates = _cache_candidates(model_dir, digest)
    for path in candidates:
        if _fresh(path, digest):
            return path
    errors = []
    for path in candidates:
        try:
            log.info("exporting %s to ONNX at %s", model_dir, path)
            return export_onnx(predictor, path)
        except OSError as exc:  # read-only model directory: fall back to the temp dir
            errors.append(f"{path}: {exc}")
    raise DermlearnError("cannot write the ONNX export anywhere: " + "; ".join(errors))


def metadata_dict(meta: Mapping[str, str]) -> dict[str, Any]:
    """Decode the JSON-valued entries of :func:`onnx_metadata` (for clients and tests)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out

"""What the network has learned to separate: penultimate features, t-SNE, and its two figures.

Esteva et al. (2017, Fig. 4) embed the last hidden layer's features with t-SNE and colour the
points by class. :func:`embed` does the same for a saved model on a labelled set and also
colours them by whether the model got each image right.

>>> written = embed(predictor, load("../shared/data/ph2"), "tsne-out/")
>>> written["csv"], written["by_class"], written["by_correctness"]
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dermlearn.atomic import check_output_dir
from dermlearn.errors import DermlearnError
from dermlearn.inference.scoring import score_images

if TYPE_CHECKING:
    from dermlearn.data.manifest import Manifest
    from dermlearn.inference.predictor import Predictor

__all__ = ["embed", "embed_unseen", "extract_embeddings", "features_and_probs", "tsne_2d"]

TSNE_COLUMNS = ("image_id", "label", "predicted", "correct", "x", "y")


def features_and_probs(predictor: Predictor, paths: Sequence[str],
                       metadata: np.ndarray | None = None, *, batch_size: int = 32,
                       num_workers: int = 0, progress: bool = False,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, D) float32, probs (N, C) float64)`` from one pass over the image files.

    Features are each member's ``.features`` (pooled penultimate activations, eval transform,
    no TTA); an ensemble's are averaged over its members (concatenated when their widths
    differ). Probabilities are the predictor's: mean of softmax(logits / temperature).
    ``metadata`` (N, M) is used by models that fuse it; None means "unknown" for every image.
    An unreadable image is an ImageDecodeError naming it.
    """
    scores = score_images(predictor, [str(p) for p in paths], metadata=metadata,
                          outputs=("embedding", "probabilities"), batch_size=batch_size,
                          num_workers=num_workers, skip_unreadable=False, progress=progress,
                          desc="embedding")
    return scores.outputs["embedding"].astype(np.float32), scores.probabilities


def extract_embeddings(predictor: Predictor, paths: Sequence[str], batch_size: int = 32,
                       progress: bool = False, *, num_workers: int = 0) -> np.ndarray:
    """Penultimate features (N, D) float32 of image files; an ensemble's members' features are
    averaged (see :func:`features_and_probs`)."""
    return features_and_probs(predictor, paths, batch_size=batch_size, num_workers=num_workers,
                              progress=progress)[0]


def tsne_2d(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of features (N, D) to (N, 2) float32: scikit-learn's (Barnes-Hut) TSNE with PCA
    initialisation, learning rate "auto" and ``random_state=seed``.

    ``perplexity`` is clamped to ``max(1, min(perplexity, (N - 1) / 3))`` so that small sets
    work (t-SNE needs perplexity < N); N < 2, or N identical rows (one point: scikit-learn's
    PCA initialisation divides by zero there and its Barnes-Hut step then crashes the process),
    give zeros.
    """
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise DermlearnError(f"features must be (N, D), got shape {features.shape}")
    n = len(features)
    if not np.isfinite(features).all():
        raise DermlearnError("features hold NaN or infinite values")
    if n < 2 or (features == features[0]).all():
        return np.zeros((n, 2), np.float32)
    perplexity = float(max(1.0, min(perplexity, (n - 1) / 3.0)))
    if features.shape[1] < 2:
        features = np.hstack([features, np.zeros((n, 2 - features.shape[1]))])
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed)
    return tsne.fit_transform(features).astype(np.float32)


def _inputs(data: Manifest | pd.DataFrame | Sequence[str], labels: Sequence[str] | None,
            ) -> pd.DataFrame:
    """A table with image_id, path, label (and age/sex/site when known)."""
    table = getattr(data, "table", data)
    if isinstance(table, pd.DataFrame):
        if "path" not in table.columns or ("label" not in table.columns and labels is None):
            raise DermlearnError("embed needs a Manifest, a table with path and label columns, "
                                 "or paths with labels=")
        table = table.reset_index(drop=True).copy()
    else:
        paths = [str(p) for p in data]
        if labels is None:
            raise DermlearnError("embed needs labels for the image paths (labels=)")
        table = pd.DataFrame({"path": paths})
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(table):
            raise DermlearnError(f"got {len(labels)} labels for {len(table)} images")
        table["label"] = labels
    if "image_id" not in table.columns:
        table["image_id"] = [Path(p).stem for p in table["path"]]
    return table


def embed(predictor: Predictor, data: Manifest | pd.DataFrame | Sequence[str],
          out_dir: str | Path, *, labels: Sequence[str] | None = None, seed: int = 0,
          perplexity: float = 30.0, batch_size: int = 32, num_workers: int = 0,
          probs: np.ndarray | None = None, progress: bool = False) -> dict[str, Path]:
    """t-SNE of a labelled set's penultimate features, written to ``out_dir``.

    ``data``: a Manifest, a table with ``path`` and ``label`` (``image_id`` optional), or image
    paths with ``labels``. Writes ``tsne.csv`` (image_id, label, predicted, correct, x, y; one
    row per image, in input order), ``tsne_by_class.png`` (points coloured by label) and
    ``tsne_by_correctness.png`` (correct vs misclassified; labels outside the model's classes
    count as unknown). Models that fuse metadata get the table's age/sex/site when present.
    ``probs`` (N, C), when given, decide ``predicted``/``correct`` instead of the predictor's
    own output (e.g. a fold ensemble's held-out probabilities).
    Returns ``{"csv", "by_class", "by_correctness"}`` -> path.
    """
    from dermlearn.explain.lesion_focus import true_classes

    out_dir = check_output_dir(out_dir)
    table = _inputs(data, labels)
    if len(table) == 0:
        raise DermlearnError("embed needs at least one image")
    metadata = predictor.encode_metadata(table)
    features, own_probs = features_and_probs(predictor, table["path"].tolist(), metadata,
                                         batch_size=batch_size, num_workers=num_workers,
                                         progress=progress)
    if probs is None:
        probs = own_probs
    elif len(probs) != len(table):
        raise DermlearnError(f"embed got {len(probs)} probability rows for {len(table)} images")
    xy = tsne_2d(features, seed=seed, perplexity=perplexity)
    predicted = [predictor.classes[i] for i in probs.argmax(axis=1)]
    truth = true_classes(predictor, table["label"])
    frame = pd.DataFrame({
        "image_id": table["image_id"].astype(str),
        "label": table["label"].astype(str),
        "predicted": predicted,
        "correct": [None if t is None else bool(t == p) for t, p in zip(truth, predicted)],
        "x": xy[:, 0],
        "y": xy[:, 1],
    }, columns=list(TSNE_COLUMNS))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"csv": out_dir / "tsne.csv", "by_class": out_dir / "tsne_by_class.png",
               "by_correctness": out_dir / "tsne_by_correctness.png"}
    frame.to_csv(written["csv"], index=False)
    _plot_by_class(frame, predictor, written["by_class"])
    _plot_by_correctness(frame, written["by_correctness"])
    return written


def embed_unseen(predictor: Predictor, manifest: Manifest, out_dir: str | Path, *,
                 part: str = "auto", seed: int = 0, batch_size: int = 32,
                 progress: bool = False) -> tuple[dict[str, Path], str]:
    """:func:`embed` of the images ``predictor`` may be scored on
    (:func:`~dermlearn.inference.unseen.unseen_images`: never its training images, whose
    t-SNE would show what it memorised, not what it learned); a fold ensemble's run images get
    their held-out member's prediction. Returns (written files, what was embedded)."""
    from dermlearn.inference.unseen import WHOLE_MODEL, score_unseen, unseen_images

    out_dir = check_output_dir(out_dir)
    scope = unseen_images(predictor, manifest, part)
    probs = (score_unseen(predictor, manifest, scope, batch_size=batch_size, progress=progress)
             if (scope.member != WHOLE_MODEL).any() else None)
    written = embed(predictor, manifest.subset(scope.rows), out_dir, seed=seed, probs=probs,
                    batch_size=batch_size, progress=progress)
    return written, scope.description


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return fig, ax


def _legend(ax, n_entries: int, size: float, title: str | None = None) -> None:
    """The legend under the axes, in columns, so that long class names never squeeze the plot."""
    ax.legend(title=title, fontsize=7, title_fontsize=8, markerscale=max(1.0, 20 / size),
              loc="upper center", bbox_to_anchor=(0.5, -0.04), frameon=False,
              ncol=1 if n_entries <= 2 else 2)


def _marker_size(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 4.0, 30.0))


def _plot_by_class(frame: pd.DataFrame, predictor: Predictor, path: Path) -> None:
    import matplotlib

    fig, ax = _figure()
    counts = frame["label"].value_counts()
    order = list(counts.index)
    cmap = matplotlib.colormaps["tab10" if len(order) <= 10 else "tab20"]
    taxonomy = getattr(predictor, "taxonomy", None)
    size = _marker_size(len(frame))
    for i, label in enumerate(order):
        part = frame[frame["label"] == label]
        name = label
        if taxonomy is not None and label in taxonomy:
            display = taxonomy.display_name(label)
            name = f"{display} ({label})" if display and display != label else label
        ax.scatter(part["x"], part["y"], s=size, color=cmap(i % cmap.N), alpha=0.8,
                   linewidths=0, label=f"{name}, n={len(part)}")
    ax.set_title(f"Penultimate features (t-SNE) by diagnosis, n={len(frame)}", fontsize=10)
    _legend(ax, len(order), size, title="label")
    fig.savefig(path, dpi=150)


def _plot_by_correctness(frame: pd.DataFrame, path: Path) -> None:
    fig, ax = _figure()
    size = _marker_size(len(frame))
    known = frame["correct"].notna()
    groups = [("correct", frame[known & frame["correct"].eq(True)], "tab:blue", "o"),
              ("misclassified", frame[known & frame["correct"].eq(False)], "tab:red", "X"),
              ("label outside the model's classes", frame[~known], "tab:gray", "o")]
    for name, part, colour, marker in groups:
        if len(part):
            ax.scatter(part["x"], part["y"], s=size * (1.3 if marker == "X" else 1.0),
                       color=colour, marker=marker, alpha=0.8, linewidths=0,
                       label=f"{name}, n={len(part)}")
    n_known = int(known.sum())
    accuracy = (f", accuracy {frame.loc[known, 'correct'].astype(bool).mean():.3f}"
                if n_known else "")
    ax.set_title(f"Penultimate features (t-SNE) by correctness, n={len(frame)}{accuracy}",
                 fontsize=10)
    _legend(ax, len(ax.get_legend_handles_labels()[0]), size)
    fig.savefig(path, dpi=150)

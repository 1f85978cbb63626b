"""Publication figures (matplotlib, Agg): confusion matrices, ROC curves, reliability diagram.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure`
writes it as a PNG (150 dpi) and closes it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 150


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_figure(counts: np.ndarray, labels: Sequence[str], *, normalise: bool = False,
                     title: str | None = None) -> Figure:
    """Confusion matrix, rows = truth, columns = prediction; ``normalise`` divides each row by its
    total (recall on the diagonal). ``counts``: (C, C') with C' = C (+1 for ties if present)."""
    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) \
        if normalise else counts
    n_rows, n_cols = counts.shape
    col_labels = list(labels) + (["undecided"] if n_cols > n_rows else [])
    size = 1.2 + 0.55 * max(n_rows, 3)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = (1 if normalise else values.max()) / 2
    for i in range(n_rows):
        for j in range(n_cols):
            text = f"{values[i, j]:.2f}" if normalise else f"{int(values[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > threshold else "black")
    ax.set_xticks(range(n_cols), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalise
                           else "confusion matrix (counts)"))
    return fig


def roc_figure(curves: Sequence[Mapping], *, readers: Sequence[Mapping] | None = None,
               points: Sequence[Mapping] | None = None, title: str = "ROC") -> Figure:
    """ROC curves (sensitivity vs 1 - specificity).

    ``curves``: dicts with ``name``, ``fpr``, ``tpr``, ``auc`` and optionally ``auc_ci`` (low,
    high) and ``band`` (:func:`~dermlearn.evaluation.binary.bootstrap_roc_band`, drawn shaded).
    ``points``: the model's operating points, dicts with ``name``, ``sensitivity``,
    ``specificity`` (marked on the curve). ``readers``: dicts with ``name``, ``sensitivity``,
    ``specificity`` and optionally ``below_curve``; drawn as points (red when below the curve),
    as in Esteva et al.'s Fig. 3.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], color="0.75", lw=1, ls="--")
    for curve in curves:
        label = f"{curve['name']} (AUC {curve['auc']:.3f}"
        ci = curve.get("auc_ci")
        if ci and None not in ci:
            label += f", 95% CI {ci[0]:.3f}-{ci[1]:.3f}"
        line, = ax.plot(curve["fpr"], curve["tpr"], lw=1.6, label=label + ")")
        band = curve.get("band")
        if band:
            ax.fill_between(band["fpr"], band["low"], band["high"], color=line.get_color(),
                            alpha=0.18, lw=0, label=f"{band['level']:.0%} bootstrap band")
    markers = iter(("o", "s", "D", "^", "v", "P"))
    for point in points or ():
        ax.scatter([1 - point["specificity"]], [point["sensitivity"]], s=36,
                   marker=next(markers, "o"), color="black", zorder=4, label=point["name"])
    if readers:
        below = [r for r in readers if r.get("below_curve")]
        above = [r for r in readers if not r.get("below_curve")]
        for group, colour, what in ((below, "tab:red", "below curve"),
                                    (above, "tab:green", "on/above curve")):
            if group:
                ax.scatter([1 - r["specificity"] for r in group],
                           [r["sensitivity"] for r in group], s=28, color=colour,
                           edgecolor="black", zorder=3,
                           label=f"dermatologists, {what} ({len(group)})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def reliability_figure(bins: Mapping[str, Sequence], ece: float,
                       title: str = "reliability diagram") -> Figure:
    """Accuracy vs confidence per bin (``bins``: ``confidence``, ``accuracy``, ``count``, and
    optionally ``lower``/``upper`` bin edges), with the bin counts underneath."""
    conf = np.asarray(bins["confidence"], dtype=float)  # None (empty bin) -> NaN
    acc = np.asarray(bins["accuracy"], dtype=float)
    count = np.asarray(bins["count"], dtype=float)
    if "lower" in bins and "upper" in bins:
        lower, upper = np.asarray(bins["lower"], float), np.asarray(bins["upper"], float)
    else:
        edges = np.linspace(0, 1, len(conf) + 1)
        lower, upper = edges[:-1], edges[1:]
    centres, widths = (lower + upper) / 2, upper - lower
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    filled = count > 0
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    ax.bar(centres[filled], acc[filled], width=widths[filled], edgecolor="black",
           color="tab:blue", alpha=0.8, label="accuracy")
    ax.bar(centres[filled], conf[filled] - acc[filled], bottom=acc[filled],
           width=widths[filled], color="tab:red", alpha=0.3, hatch="//", label="gap")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    ax_count.bar(centres, count, width=widths, color="0.5", edgecolor="black")
    ax_count.set_xlabel("confidence (top-class probability)")
    ax_count.set_ylabel("images")
    ax_count.set_xlim(0, 1)
    return fig


def example_grid_figure(panels: Sequence[Mapping], *, columns: int = 4,
                        title: str | None = None) -> Figure:
    """A grid of image panels (``image``: PIL image or (H, W, 3) array, ``caption``: str)."""
    rows = max(1, int(np.ceil(len(panels) / columns)))
    # 3.4 x 3.9 in per panel at 150 dpi: captions readable at the report's full width
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        ax.imshow(np.asarray(panel["image"]))
        ax.set_title(panel["caption"], fontsize=10)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return fig

"""Heatmaps drawn over photographs: a blended overlay, and an original | overlay figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dermlearn.errors import DermlearnError

__all__ = ["colorize", "overlay", "save_panel"]


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A heatmap (h, w), values in [0, 1] (clipped), as RGB uint8 (h, w, 3) via a matplotlib colormap."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise DermlearnError(f"unknown colormap {cmap!r} (see matplotlib.colormaps)") from None
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0)
    rgba = colormap(np.clip(values, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> Image.Image:
    """``image`` blended with the coloured ``heatmap``: RGB, the image's size.

    Each pixel is ``(1 - alpha) * image + alpha * cmap(heatmap)``; ``heatmap`` is (h, w) with
    values in [0, 1] and is resized bilinearly to the image when its shape differs.
    """
    if not 0.0 <= alpha <= 1.0:
        raise DermlearnError(f"alpha must be in [0, 1], not {alpha}")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise DermlearnError(f"heatmap must be 2-D (h, w), got shape {heatmap.shape}")
    base = image.convert("RGB")
    width, height = base.size
    if heatmap.shape != (height, width):
        heatmap = np.asarray(Image.fromarray(heatmap, mode="F").resize(
            (width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    colour = colorize(heatmap, cmap).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colour
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), mode="RGB")


def save_panel(image: Image.Image, heatmap: np.ndarray, path: str | Path, *, title: str = "",
               alpha: float = 0.5, cmap: str = "jet", dpi: int = 150) -> Path:
    """Write a two-panel figure, original | overlay with a colour bar, to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    path = Path(path)
    width, height = image.size
    panel_h = 3.2
    panel_w = panel_h * width / max(height, 1)
    fig = Figure(figsize=(2 * panel_w + 0.9, panel_h + (0.5 if title else 0.2)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title("original", fontsize=9)
    axes[1].imshow(overlay(image, heatmap, alpha=alpha, cmap=cmap))
    axes[1].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), ax=axes, fraction=0.03,
                       pad=0.02)
    bar.set_label("relative importance", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

"""Explaining a model's decisions: saliency, Grad-CAM, lesion focus and feature embeddings.

* :func:`saliency_map` -- Esteva et al. (2017): L1 norm over RGB of the loss gradient w.r.t.
  the input pixels; :func:`gradcam_map` -- Grad-CAM on the backbone's last feature map. Both
  take a model or an ensemble's members and a preprocessed batch (N, 3, H, W) and return
  (N, H, W) maps in [0, 1].
* :func:`explain_images` / :func:`explain_to_dir` -- the same for a saved model
  (:class:`~dermlearn.inference.Predictor`) on photographs, carried back to each photograph's size;
  :func:`overlay` draws a heatmap over a photograph.
* :func:`lesion_focus_scores` / :func:`summarise_focus` -- how much of the heatmap falls on the
  lesion (HAM10000 segmentation masks): :func:`saliency_in_mask`, :func:`pointing_game_hit`.
* :func:`extract_embeddings`, :func:`tsne_2d`, :func:`embed` -- penultimate features and their
  t-SNE figures by class and by correctness.
"""
from dermlearn.explain.embeddings import embed, embed_unseen, extract_embeddings, tsne_2d
from dermlearn.explain.explanations import (
    METHODS,
    Explanation,
    explain_images,
    explain_to_dir,
)
from dermlearn.explain.geometry import crop_geometry, to_original, visible_region
from dermlearn.explain.gradcam import gradcam_map
from dermlearn.explain.lesion_focus import (
    lesion_focus_scores,
    pointing_game_hit,
    read_mask,
    saliency_in_mask,
    summarise_focus,
)
from dermlearn.explain.overlay import overlay, save_panel
from dermlearn.explain.saliency import saliency_map

__all__ = [
    "METHODS",
    "Explanation",
    "crop_geometry",
    "embed",
    "explain_images",
    "explain_to_dir",
    "embed_unseen",
    "extract_embeddings",
    "gradcam_map",
    "lesion_focus_scores",
    "overlay",
    "pointing_game_hit",
    "read_mask",
    "saliency_in_mask",
    "saliency_map",
    "save_panel",
    "summarise_focus",
    "to_original",
    "tsne_2d",
    "visible_region",
]

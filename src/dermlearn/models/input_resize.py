"""Resizing a preprocessed batch inside a network, so that ensemble members trained at
different input sizes read one input.

An ensemble reads each image once, preprocessed for its largest member; a member trained at a
smaller (or larger) size of the same aspect ratio and crop resizes that batch to its own size
first (:class:`InputResize`). The resize is linear and separable, ``y = R @ x @ C`` with fixed
matrices (:func:`resize_matrix`: antialiased bicubic weights, as PIL's and torchvision's
antialiased resize use), so it is two matrix products: the same in PyTorch, under autograd
(saliency, Grad-CAM) and in an exported ONNX graph, where opset 17 has no antialiased Resize.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dermlearn.models.errors import ModelError

__all__ = ["InputResize", "resize_matrix"]


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float32 matrix ``A`` of a 1-D antialiased bicubic resize from ``n_in`` to
    ``n_out`` samples: ``A @ v`` resizes a signal ``v`` of length ``n_in``. Rows sum to 1; the
    identity when ``n_in == n_out``."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be >= 1, got {n_in} -> {n_out}")
    if n_in == n_out:
        return torch.eye(n_in)
    # Column j of A is the resized unit vector e_j: resize the identity along one axis only
    # (the other keeps its size, where the bicubic kernel is the identity).
    eye = torch.eye(n_in, dtype=torch.float64).reshape(1, 1, n_in, n_in)
    resized = F.interpolate(eye, size=(n_out, n_in), mode="bicubic", align_corners=False,
                            antialias=True)
    return resized[0, 0].float()


class InputResize(nn.Module):
    """(N, C, *size_in) -> (N, C, *size_out): an antialiased bicubic resize as two matrix
    products (``size_*`` = (H, W) in pixels). Holds no learned weights (its matrices are not
    saved with the model)."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.size_in = (int(size_in[0]), int(size_in[1]))
        self.size_out = (int(size_out[0]), int(size_out[1]))
        self.register_buffer("rows", resize_matrix(self.size_in[0], self.size_out[0]),
                             persistent=False)
        self.register_buffer("cols", resize_matrix(self.size_in[1], self.size_out[1]).T
                             .contiguous(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.size_in:
            raise ModelError(f"this ensemble member reads {self.size_in[0]}x{self.size_in[1]} "
                             f"inputs (resized inside to {self.size_out[0]}x"
                             f"{self.size_out[1]}); got {tuple(images.shape[-2:])}")
        out = torch.matmul(torch.matmul(self.rows.to(images.dtype), images),
                           self.cols.to(images.dtype))
        if images.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def extra_repr(self) -> str:
        return f"size_in={self.size_in}, size_out={self.size_out}"

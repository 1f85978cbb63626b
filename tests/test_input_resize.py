"""Members of one ensemble at different input sizes: the in-network resize (issue 21)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermlearn.data.images import read_image
from dermlearn.models.errors import ModelError
from dermlearn.models.input_resize import InputResize, resize_matrix
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform, resize_mismatch


@pytest.mark.parametrize("n_in,n_out", [(7, 7), (12, 5), (5, 12), (300, 200), (201, 176)])
def test_resize_matrix_is_torchs_antialiased_bicubic_resize(n_in, n_out):
    a = resize_matrix(n_in, n_out)
    assert a.shape == (n_out, n_in)
    np.testing.assert_allclose(a.sum(1).numpy(), 1.0, atol=1e-5)
    x = torch.rand(2, 3, n_in, 9, dtype=torch.float64)
    ref = F.interpolate(x, size=(n_out, 9), mode="bicubic", align_corners=False,
                        antialias=True)
    np.testing.assert_allclose((a.double() @ x).numpy(), ref.numpy(), atol=1e-5)
    if n_in == n_out:
        assert torch.equal(a, torch.eye(n_in))
    with pytest.raises(ValueError, match=">= 1"):
        resize_matrix(0, 3)


def test_input_resize_is_a_2d_resize_and_names_a_wrong_input():
    step = InputResize((60, 80), (45, 60))
    x = torch.rand(2, 3, 60, 80)
    ref = F.interpolate(x, size=(45, 60), mode="bicubic", align_corners=False, antialias=True)
    np.testing.assert_allclose(step(x).numpy(), ref.numpy(), atol=1e-5)
    assert step(x.contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)
    assert not list(step.state_dict())  # nothing saved with the model
    with pytest.raises(ModelError, match="reads 60x80 inputs"):
        step(torch.rand(1, 3, 64, 64))


def test_which_preprocessing_a_resize_can_make():
    base = PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0)
    assert resize_mismatch(base, PreprocessConfig(input_size=(3, 225, 300), crop_pct=1.0)) is None
    assert resize_mismatch(base, base) is None
    assert "aspect ratio" in resize_mismatch(base, PreprocessConfig(input_size=(3, 176, 176),
                                                                    crop_pct=1.0))
    assert "crop_pct" in resize_mismatch(base, PreprocessConfig(input_size=(3, 150, 200)))
    assert "color_constancy" in resize_mismatch(
        base, PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0, color_constancy=6))
    assert "mean" in resize_mismatch(base, PreprocessConfig(
        input_size=(3, 150, 200), crop_pct=1.0, mean=(0.485, 0.456, 0.406)))


def test_a_photograph_resized_in_the_network_is_what_the_member_trained_on(ph2_dir):
    """A member trained at 150x200 reading the ensemble's 225x300 batch sees (nearly) the
    pixels its own preprocessing gives: the same crop, resized twice instead of once."""
    paths = sorted((ph2_dir).rglob("*.bmp"))[:4] or sorted(ph2_dir.rglob("*.jpg"))[:4]
    assert paths, "no PH2 photographs found"
    large = PreprocessConfig(input_size=(3, 225, 300), crop_pct=1.0)
    small = PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0)
    step = InputResize(large.image_size, small.image_size)
    for path in paths:
        image = read_image(path)
        direct = eval_transform(small)(image)
        via = step(eval_transform(large)(image)[None])[0]
        diff = (via - direct).abs()
        # normalised units (std 0.5: 1.0 is half the pixel range); PIL rounds to 8 bits between
        assert diff.mean() < 0.015 and diff.quantile(0.99) < 0.08, (path, diff.mean())
    # Another crop would not be: the same photograph squeezed is far off.
    squeezed = F.interpolate(eval_transform(large)(image)[None], size=(176, 176),
                             mode="bilinear")[0]
    other = eval_transform(PreprocessConfig(input_size=(3, 176, 176), crop_pct=1.0))(image)
    assert (squeezed - other).abs().mean() > 0.05

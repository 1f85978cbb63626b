"""Members of one ensemble with different input sizes and crops: the in-network crop and
resize (issue 21)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermlearn.data.images import read_image
from dermlearn.models.errors import ModelError
from dermlearn.models.input_resize import (
    InputResize,
    crop_resize_matrix,
    ensemble_input,
    input_box,
    resize_matrix,
)
from dermlearn.models.preprocessing import PreprocessConfig, eval_transform


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


def test_crop_resize_keeps_the_box_and_places_maps_back():
    x = torch.rand(1, 2, 40, 60)
    step = InputResize((40, 60), (16, 16), box=(4.2, 9.8, 32.0, 40.0))  # rows 4..36, cols 10..50
    assert step.rows_span == (4, 36) and step.cols_span == (10, 50)
    ref = F.interpolate(x[:, :, 4:36, 10:50], size=(16, 16), mode="bicubic",
                        align_corners=False, antialias=True)
    np.testing.assert_allclose(step(x).numpy(), ref.numpy(), atol=1e-5)
    placed = step.place(torch.ones(1, 1, 4, 4))
    assert placed.shape == (1, 1, 40, 60)
    assert float(placed.sum()) == pytest.approx(32 * 40, rel=1e-5)
    assert float(placed[0, 0, 4:36, 10:50].min()) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ModelError, match="not inside"):
        InputResize((40, 60), (16, 16), box=(-3.0, 0.0, 40.0, 60.0))
    np.testing.assert_allclose(crop_resize_matrix(10, 5).numpy(), resize_matrix(10, 5).numpy())


def test_the_input_an_ensemble_reads_keeps_what_every_member_keeps():
    photo = (450, 600)  # HAM10000's 4:3 frame
    frame = PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0)
    big_frame = PreprocessConfig(input_size=(3, 225, 300), crop_pct=1.0)
    square = PreprocessConfig(input_size=(3, 176, 176), crop_pct=0.875)
    # Same aspect ratio and crop: the larger reads, the smaller takes all of it.
    assert ensemble_input([frame, big_frame], photo) == big_frame
    top, left, height, width = input_box(big_frame, frame, photo)
    assert (round(top), round(top + height), round(left), round(left + width)) == (0, 225, 0, 300)
    # The whole frame (coarser) and a square centre crop (finer): the frame at the square's
    # resolution; the square member takes its 176 x 176 centre.
    read = ensemble_input([frame, square], photo)
    assert read.image_size == (201, 268) and read.crop_pct == 1.0
    assert input_box(read, square, photo) == pytest.approx((12.5, 46.0, 176.0, 176.0))
    assert input_box(read, frame, photo) == pytest.approx((0.0, 0.0, 201.0, 268.0), abs=0.5)
    # Refused: other normalisation, colour constancy, or crops neither of which holds the other.
    with pytest.raises(ModelError, match="mean"):
        ensemble_input([frame, PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0,
                                                mean=(0.485, 0.456, 0.406))], photo)
    with pytest.raises(ModelError, match="color_constancy"):
        ensemble_input([frame, PreprocessConfig(input_size=(3, 150, 200), crop_pct=1.0,
                                                color_constancy=6)], photo)
    strip = PreprocessConfig(input_size=(3, 100, 300), crop_pct=1.0)   # 200 x 600 of the photo
    box = PreprocessConfig(input_size=(3, 100, 100), crop_pct=1.0)     # 450 x 450 of it
    with pytest.raises(ModelError, match="cuts away"):
        ensemble_input([strip, box], photo)


@pytest.mark.parametrize("member,widest", [
    ((150, 200, 1.0), (225, 300, 1.0)),     # another size, one aspect ratio and crop
    ((176, 176, 0.875), (150, 200, 1.0)),   # a square centre crop of the whole frame
])
def test_a_photograph_read_by_the_ensemble_is_what_the_member_trained_on(ph2_dir, member,
                                                                           widest):
    """A member reading the ensemble's batch sees (nearly) the pixels its own preprocessing
    gives: the same part of the photograph, resized twice instead of once (PH2 photographs are
    about 574 x 765, not the 4:3 of the whole-frame member: the box is computed for each)."""
    paths = sorted(ph2_dir.rglob("*.jpg"))[:4] or sorted(ph2_dir.rglob("*.bmp"))[:4]
    assert paths, "no PH2 photographs found"
    own = PreprocessConfig(input_size=(3, *member[:2]), crop_pct=member[2])
    other = PreprocessConfig(input_size=(3, *widest[:2]), crop_pct=widest[2])
    for path in paths:
        image = read_image(path)
        photo = image.size[::-1]
        read = ensemble_input([own, other], photo)
        step = InputResize(read.image_size, own.image_size, input_box(read, own, photo))
        direct = eval_transform(own)(image)
        via = step(eval_transform(read)(image)[None])[0]
        # Nearer than the member's own input moved by one pixel (the two pipelines round the
        # photograph's resized width each their own way: up to a pixel apart at the edges).
        one_pixel = (direct[:, :, 1:] - direct[:, :, :-1]).abs().mean()
        assert (via - direct).abs().mean() < one_pixel, path
    if own.crop_pct == other.crop_pct:
        return
    # Where the crops differ, the whole input squeezed to the member's size would be far off.
    squeezed = F.interpolate(eval_transform(read)(image)[None], size=own.image_size,
                             mode="bilinear")[0]
    assert (squeezed - direct).abs().mean() > 0.05

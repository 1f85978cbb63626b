"""Safe decoding of the broken-input corpus (tests/data/bad): clear errors, correct conversions."""
from pathlib import Path

import numpy as np
import pytest

from dermlearn.data.images import check_image, read_image
from dermlearn.errors import ImageDecodeError

BAD = Path(__file__).parent / "data" / "bad"


@pytest.mark.parametrize("name, reason", [
    ("corrupt.jpg", "corrupt"),
    ("truncated.jpg", "truncated"),
    ("zero_bytes.jpg", "empty file"),
    ("text_named.jpg", "not a recognised image"),
    ("bomb.png", "decompression bomb"),
    ("missing.jpg", "file not found"),
])
def test_broken_images_raise_named_errors(name, reason):
    with pytest.raises(ImageDecodeError) as info:
        read_image(BAD / name)
    assert name in str(info.value)
    assert reason in str(info.value)
    assert check_image(BAD / name) is not None


@pytest.mark.parametrize("name", ["gray16.png", "rgba.png", "grayscale.jpg", "cmyk.jpg", "good.jpg"])
def test_valid_oddities_become_rgb(name):
    img = read_image(BAD / name)
    assert img.mode == "RGB" and img.size == (64, 48)
    rgb = np.asarray(img, dtype=int)
    # The dark blob sits left of centre; the skin background is light in every variant.
    assert rgb[24, 22].mean() < rgb[5, 60].mean() - 60


def test_sixteen_bit_scaled_not_clipped():
    gray = np.asarray(read_image(BAD / "gray16.png"))[..., 0]
    reference = np.asarray(read_image(BAD / "good.jpg").convert("L"))
    assert abs(int(gray[5, 60]) - int(reference[5, 60])) <= 4  # 16-bit /257, not clipped to 255


def test_exif_orientation_applied():
    img = read_image(BAD / "exif_rotated.jpg")
    assert img.size == (48, 64)  # stored 64x48 with orientation 6 -> displayed rotated 90 deg CW
    rgb = np.asarray(img, dtype=int).mean(axis=2)
    # Blob was left of centre; after a clockwise turn it is above centre.
    assert rgb[22, 24] < rgb[60, 24] - 60


def test_bytes_and_pixel_limit():
    data = (BAD / "good.jpg").read_bytes()
    assert read_image(data).size == (64, 48)
    with pytest.raises(ImageDecodeError, match="too large"):
        read_image(data, max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="empty upload"):
        read_image(b"")


def test_decode_error_keeps_its_type_and_file_through_a_worker():
    from torch.utils.data import DataLoader

    from dermlearn.data.dataset import ImageDataset

    data = ImageDataset([str(BAD / "truncated.jpg")], transform=lambda img: img)
    with pytest.raises(ImageDecodeError) as info:
        next(iter(DataLoader(data, num_workers=1, collate_fn=lambda batch: batch)))
    assert info.value.path.endswith("truncated.jpg") and "truncated" in info.value.reason

"""Safe image decoding: every photo dermlearn reads goes through :func:`read_image`.

It sniffs the content (never trusts the file name), refuses decompression bombs before
decoding pixels, applies the EXIF orientation, and converts 16-bit, RGBA, CMYK, palette
and grayscale images to 8-bit RGB. Anything that cannot be decoded raises
:class:`~dermlearn.errors.ImageDecodeError` naming the file and the reason.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermlearn.errors import ImageDecodeError

#: Formats accepted for photographs (sniffed from the bytes, not the extension).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "BMP", "WEBP", "MPO"})
#: Default pixel limit (width x height): 64 Mpx, about 3x a 24 Mpx dermatoscope camera.
DEFAULT_MAX_PIXELS = 64_000_000
#: File extensions scanned when a reader looks for images in a folder.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})

ImageSource = str | os.PathLike | bytes | BinaryIO


def _name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB (alpha composited on white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0
        elif arr.size and arr.max() > 255:
            arr = arr * (255.0 / max(arr.max(), 1.0))
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "CMYK":
        # Adobe-style (inverted) CMYK JPEGs are common; Pillow's conversion handles them.
        return img.convert("RGB")
    return img.convert("RGB")


def _decode_error(name: str, exc: BaseException) -> ImageDecodeError:
    msg = str(exc) or type(exc).__name__
    if "truncated" in msg.lower():
        return ImageDecodeError(name, f"truncated image data ({msg})")
    return ImageDecodeError(name, f"corrupt image data ({msg})")


def read_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image safely into an 8-bit RGB ``PIL.Image`` (EXIF orientation applied).

    ``source`` is a path, raw bytes or a binary file object. Raises ImageDecodeError for
    missing, empty, non-image, corrupt or truncated files, and for images over
    ``max_pixels`` (checked from the header, before any pixel is decoded).
    """
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageDecodeError(name, "file not found")
        if not path.is_file():
            raise ImageDecodeError(name, "not a regular file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(name, "empty file (0 bytes)")
        fp: BinaryIO = open(path, "rb")
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty upload (0 bytes)")
        fp = io.BytesIO(source)
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(fp)
            except UnidentifiedImageError:
                raise ImageDecodeError(name, "not a recognised image format (content sniffed, "
                                             "file name ignored)") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageDecodeError(name, "image too large (decompression bomb refused)") from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise _decode_error(name, exc) from None
            if img.format not in ALLOWED_FORMATS:
                raise ImageDecodeError(name, f"unsupported image format {img.format!r}; "
                                             f"expected one of {sorted(ALLOWED_FORMATS)}")
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(name, f"invalid image size {width}x{height}")
            if width * height > max_pixels:
                raise ImageDecodeError(
                    name, f"image too large: {width}x{height} = {width * height:,} pixels > "
                          f"limit {max_pixels:,} (decompression bomb refused)")
            try:
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageDecodeError(name, "image too large (decompression bomb refused)") from None
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise _decode_error(name, exc) from None
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # a malformed EXIF block must not reject a decodable photo
                pass
            return _to_rgb(img)
    finally:
        if isinstance(source, (str, os.PathLike)):
            fp.close()


def check_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Return None when ``path`` decodes as an image, else the reason it does not."""
    try:
        read_image(path, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return exc.reason
    return None

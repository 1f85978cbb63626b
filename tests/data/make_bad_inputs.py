"""Regenerate the broken-input corpus in ``tests/data/bad/`` (committed; run only to change it).

    python tests/data/make_bad_inputs.py
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).parent / "bad"


def _photo(width: int = 64, height: int = 48) -> Image.Image:
    """A small RGB test picture: skin-toned, with a dark blob left of centre."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[...] = (224, 172, 140)
    blob = (x - width * 0.35) ** 2 + (y - height * 0.5) ** 2 < (height * 0.3) ** 2
    rgb[blob] = (90, 50, 30)
    return Image.fromarray(rgb)


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A 1.6-gigapixel PNG header whose first rows are real: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
            + _png_chunk(b"IEND", b""))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    good = _jpeg(_photo())
    files = {
        "corrupt.jpg": good[:20] + bytes(range(256)) * 4,
        "truncated.jpg": good[: len(good) // 2],
        "zero_bytes.jpg": b"",
        "text_named.jpg": b"This is a text file, not a photograph.\n",
        "bomb.png": bomb_png(),
    }
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    photo = _photo()
    # Valid oddities: must be converted, not rejected.
    gray16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(OUT / "gray16.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(OUT / "rgba.png")
    photo.convert("L").save(OUT / "grayscale.jpg", quality=90)
    photo.convert("CMYK").save(OUT / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photo.save(OUT / "exif_rotated.jpg", quality=90, exif=exif.tobytes())
    photo.save(OUT / "good.jpg", quality=90)
    # A CSV that is not UTF-8 (Latin-1, as Excel on Windows writes it).
    (OUT / "latin1.csv").write_bytes("image_id,label,site\ngood,nv,épaule\n".encode("latin-1"))


if __name__ == "__main__":
    main()

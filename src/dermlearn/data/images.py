"""Safe image decoding: every photo dermlearn reads goes through :func:`read_image`.

It sniffs the content (never trusts the file name), refuses decompression bombs before
decoding pixels, applies the EXIF orientation, and converts 16-bit, RGBA, CMYK, palette
and grayscale images to 8-bit RGB. Anything that cannot be decoded raises
:class:`~dermlearn.errors.ImageDecodeError` naming the file and the reason.

A path may name a member of a zip archive (``/data/photos.zip/nv/x.jpg``, read in place, see
:mod:`dermlearn.data.sources`). DICOM files (dermoscopy exported from a PACS) are decoded with
pydicom, an optional dependency (``pip install 'dermlearn[dicom]'``); :func:`dicom_metadata`
reads their patient age, sex and body site.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermlearn.data.sources import read_member, split_member_path
from dermlearn.errors import ImageDecodeError

#: Formats accepted for photographs (sniffed from the bytes, not the extension).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "BMP", "WEBP", "MPO"})
#: Default pixel limit (width x height): 64 Mpx, about 3x a 24 Mpx dermatoscope camera.
DEFAULT_MAX_PIXELS = 64_000_000
#: File extensions scanned when a reader looks for images in a folder.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm"})
#: Extensions of image types that are not read (named when a reader skips such a file).
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({
    ".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".svg", ".ico", ".psd", ".raw",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
#: Where a DICOM file (Part 10) says so: "DICM" after a 128-byte preamble.
DICOM_MAGIC_OFFSET = 128

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


def _open(source: ImageSource, name: str) -> tuple[BinaryIO, bool]:
    """A readable binary stream of ``source`` and whether it is ours to close."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path):
            if os.stat(path).st_size == 0:
                raise ImageDecodeError(name, "empty file (0 bytes)")
            return open(path, "rb"), True
        if os.path.exists(path):
            raise ImageDecodeError(name, "not a regular file")
        if split_member_path(path) is None:
            raise ImageDecodeError(name, "file not found")
        data = read_member(path)  # ImageDecodeError: missing, unsafe, too large
        if not data:
            raise ImageDecodeError(name, "empty file (0 bytes)")
        return io.BytesIO(data), True
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty upload (0 bytes)")
        return io.BytesIO(source), True
    if not (hasattr(source, "seekable") and source.seekable()):
        return io.BytesIO(source.read()), True
    return source, False


def _head(fp: BinaryIO, n: int) -> bytes:
    start = fp.tell()
    try:
        return fp.read(n)
    finally:
        fp.seek(start)


def _looks_like_dicom(head: bytes, name: str) -> bool:
    """DICOM Part 10 ("DICM" after the preamble), or a ``.dcm`` file starting with a group
    0002/0008 element (a raw data set without the preamble)."""
    if head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return True
    return name.lower().endswith(".dcm") and head[:2] in (b"\x02\x00", b"\x08\x00")


def read_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image safely into an 8-bit RGB ``PIL.Image`` (EXIF orientation applied).

    ``source`` is a path (a file, or a zip member ``/abs/photos.zip/nv/x.jpg``), raw bytes or
    a binary file object. JPEG, PNG, TIFF, BMP and WebP are decoded by Pillow, DICOM by
    pydicom (see :func:`_read_dicom`). Raises ImageDecodeError for missing, empty, non-image,
    corrupt or truncated files, and for images over ``max_pixels`` (checked from the header,
    before any pixel is decoded).
    """
    name = _name(source)
    fp, close = _open(source, name)
    try:
        head = _head(fp, DICOM_MAGIC_OFFSET + 4)
        if _looks_like_dicom(head, name):
            return _read_dicom(fp, name, max_pixels)
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
            _check_pixels(name, width, height, max_pixels)
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
        if close:
            fp.close()


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(
            name, f"image too large: {width}x{height} = {width * height:,} pixels > "
                  f"limit {max_pixels:,} (decompression bomb refused)")


# --------------------------------------------------------------------------- DICOM

_DICOM_HINT = "reading DICOM files needs pydicom 3: pip install 'dermlearn[dicom]'"


def _pydicom(name: str):
    """The pydicom module (3.x), or ImageDecodeError saying how to install it."""
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401  (pydicom >= 3)
    except ImportError:
        raise ImageDecodeError(name, f"a DICOM file; {_DICOM_HINT}") from None
    return pydicom


def _read_dicom(fp: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Decode the first frame of a DICOM file as 8-bit RGB.

    RGB and YBR_FULL(_422) colour is converted to RGB (by pydicom), MONOCHROME1/2 to gray
    (MONOCHROME1 inverted), then RGB; samples over 8 bits are scaled from their stored range
    (``BitsStored``) to 0-255 (no VOI windowing). The pixel limit is checked from the header
    before the pixel data is read; only the first frame of a multi-frame file is decoded.
    """
    pydicom = _pydicom(name)
    from pydicom.pixels import pixel_array

    start = fp.tell()
    try:
        header = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    except Exception as exc:  # pydicom raises many types for malformed input
        raise ImageDecodeError(name, f"corrupt DICOM data ({exc})") from None
    if rows <= 0 or columns <= 0:
        raise ImageDecodeError(name, "DICOM file without an image (no Rows/Columns)")
    _check_pixels(name, columns, rows, max_pixels)
    try:
        fp.seek(start)
        try:
            array = pixel_array(fp, index=0)
        except Exception:  # no file meta / preamble: read the whole data set leniently
            fp.seek(start)
            array = pixel_array(pydicom.dcmread(fp, force=True), index=0)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageDecodeError(name, f"cannot decode the DICOM pixel data ({reason})") from None
    return _dicom_rgb(np.asarray(array), header, name)


def _dicom_rgb(array: np.ndarray, header, name: str) -> Image.Image:
    interpretation = str(header.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(header.get("SamplesPerPixel") or 1)
    if array.ndim == (4 if samples > 1 else 3):  # a frame stack after all: take the first
        array = array[0]
    if interpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            array = apply_color_lut(array, header)
        except Exception as exc:
            raise ImageDecodeError(name, f"cannot apply the DICOM colour palette ({exc})") from None
        bits = 16 if array.dtype.itemsize > 1 else 8
    else:
        bits = int(header.get("BitsStored") or header.get("BitsAllocated") or 8)
    if samples > 1 and (array.ndim != 3 or array.shape[2] != 3):
        raise ImageDecodeError(name, f"unsupported DICOM pixel layout {array.shape} "
                                     f"({interpretation or 'no PhotometricInterpretation'})")
    if samples == 1 and array.ndim != 2:
        raise ImageDecodeError(name, f"unsupported DICOM pixel layout {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "f":
        finite = np.nan_to_num(array.astype(np.float64))
        low, high = float(finite.min()), float(finite.max())
        pixels = np.clip(np.rint((finite - low) * (255.0 / max(high - low, 1e-12))), 0, 255) \
            .astype(np.uint8)
    else:
        values = array.astype(np.float64)
        if array.dtype.kind == "i" and header.get("PixelRepresentation") == 1:
            values += 2.0 ** (bits - 1)  # signed: shift to 0 .. 2**bits - 1
        if bits > 8:
            values *= 255.0 / (2.0 ** bits - 1)
        pixels = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if interpretation == "MONOCHROME1":  # 0 is white
        pixels = 255 - pixels
    if pixels.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(pixels), mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def _dicom_age(value) -> float | None:
    """DICOM Age String (``045Y``, ``018M``, ``003W``, ``010D``) in years."""
    match = _AGE.match(str(value or ""))
    if not match:
        return None
    return round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()], 4)


def _dicom_site(header) -> str | None:
    regions = header.get("AnatomicRegionSequence")
    for item in regions or ():
        meaning = str(item.get("CodeMeaning", "") or "").strip()
        if meaning:
            return re.sub(r"\s+", " ", meaning.replace("_", " ")).lower()
    body_part = str(header.get("BodyPartExamined", "") or "").strip()
    return re.sub(r"\s+", " ", body_part.replace("_", " ")).lower() or None


def dicom_metadata(source: ImageSource) -> dict:
    """Patient age (years, float), sex (``male``/``female``) and body site (lower case) from
    a DICOM file's header (PatientAge, PatientSex, AnatomicRegionSequence's CodeMeaning or
    else BodyPartExamined), each None where absent: ``{"age": 45.0, "sex": "female",
    "site": "back"}``. ``source`` is like :func:`read_image`'s; the pixel data is not read.
    Raises ImageDecodeError when the file cannot be read as DICOM or pydicom is missing.
    """
    name = _name(source)
    fp, close = _open(source, name)
    try:
        head = _head(fp, DICOM_MAGIC_OFFSET + 4)
        if not _looks_like_dicom(head, name):
            raise ImageDecodeError(name, "not a DICOM file")
        pydicom = _pydicom(name)
        try:
            header = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            sex = str(header.get("PatientSex", "") or "").strip().upper()
            return {"age": _dicom_age(header.get("PatientAge")),
                    "sex": {"M": "male", "F": "female"}.get(sex),
                    "site": _dicom_site(header)}
        except Exception as exc:
            raise ImageDecodeError(name, f"corrupt DICOM data ({exc})") from None
    finally:
        if close:
            fp.close()


def check_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Return None when ``path`` decodes as an image, else the reason it does not."""
    try:
        read_image(path, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return exc.reason
    return None

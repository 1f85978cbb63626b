"""Synthetic, dermoscopy-like skin-lesion images for demos and tests.

The images are procedurally drawn cartoons of the ABCD-rule look of seven HAM10000
classes (``akiec``, ``bcc``, ``bkl``, ``df``, ``mel``, ``nv``, ``vasc``). They are
**synthetic**: no real patient is depicted, and a model's accuracy on them says nothing
about clinical performance. They exist so that ``dermlearn demo`` runs end to end on a
fresh machine with no downloaded data, and so that training on them is learnable.

Rendering is vectorised numpy plus a few Pillow drawing calls; a 224 px image takes
about 10-20 ms on one CPU core. Everything is deterministic given a :class:`numpy.random.Generator`
(or a seed for :func:`make_synthetic_dataset`).

Example::

    >>> import numpy as np
    >>> img = render_lesion("mel", np.random.default_rng(0))
    >>> img.size, img.mode
    ((224, 224), 'RGB')

The drawing code is in the private package :mod:`dermlearn.data._synthetic`; this module is
the public interface: :func:`render_lesion` draws one image, :func:`make_synthetic_dataset`
writes a dataset folder (images, manifest, README).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dermlearn.data._synthetic.painters import SYNTHETIC_CLASSES, _check_label
from dermlearn.data._synthetic.photo import _photograph, _sample_lesion, _sample_skin

__all__ = [
    "SYNTHETIC_CLASSES",
    "DEFAULT_CLASSES",
    "MANIFEST_COLUMNS",
    "render_lesion",
    "make_synthetic_dataset",
]

#: Classes written by :func:`make_synthetic_dataset` unless told otherwise.
DEFAULT_CLASSES: tuple[str, ...] = ("mel", "nv", "bkl", "bcc")
#: Columns of the ``manifest.csv`` written by :func:`make_synthetic_dataset`, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "label", "lesion_id", "patient_id", "age", "sex", "site", "label_source",
)

_JPEG_QUALITY = 92
_IMAGE_ID_RE = re.compile(r"^SYN_\d{7}\.jpg$")

README_TEXT = """\
SYNTHETIC DATA - NOT REAL PATIENTS
==================================

Every image in this folder was generated procedurally by dermlearn
(dermlearn.data.synthetic.make_synthetic_dataset). They are cartoons of
dermoscopy images, drawn from simple rules (asymmetry, border, colour,
size), with made-up metadata (age, sex, site, patient and lesion ids).

* No image shows a real person or a real skin lesion.
* The labels are the rules used to draw the images, not diagnoses.
* Accuracy, sensitivity, AUC or any other number measured on this data
  says NOTHING about clinical performance. Never use it to judge, compare,
  validate or advertise a model for medical use.

The data exists only so that the dermlearn demo and tests run on a fresh
machine without downloading a real dataset.
"""


def render_lesion(label: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """Draw one synthetic dermoscopy-like image of class ``label``.

    Args:
        label: one of :data:`SYNTHETIC_CLASSES` (``akiec``, ``bcc``, ``bkl``, ``df``,
            ``mel``, ``nv``, ``vasc``).
        rng: the random generator; the same generator state gives the same image.
        size: side of the square image, px.

    Returns:
        An RGB :class:`PIL.Image.Image` of ``size`` x ``size`` px.

    Raises:
        ValueError: ``label`` is not a supported class.
    """
    _check_label(label)
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    lesion = _sample_lesion(label, rng, int(size))
    return _photograph(lesion, rng, jitter=0.0)


# --------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------
_SITES = ("back", "trunk", "lower extremity", "upper extremity", "abdomen", "chest",
          "face", "scalp", "neck", "ear", "hand", "foot")
_SITE_WEIGHTS: dict[str, tuple[float, ...]] = {
    #         back trunk lowx upx  abd  chest face scalp neck ear  hand foot
    "mel":   (0.28, 0.12, 0.20, 0.12, 0.05, 0.06, 0.08, 0.03, 0.03, 0.01, 0.01, 0.01),
    "nv":    (0.25, 0.20, 0.18, 0.10, 0.12, 0.07, 0.02, 0.01, 0.02, 0.00, 0.01, 0.02),
    "bkl":   (0.18, 0.14, 0.12, 0.10, 0.06, 0.10, 0.20, 0.04, 0.04, 0.01, 0.01, 0.00),
    "bcc":   (0.14, 0.08, 0.06, 0.06, 0.03, 0.07, 0.35, 0.06, 0.08, 0.06, 0.01, 0.00),
    "vasc":  (0.12, 0.22, 0.20, 0.12, 0.12, 0.08, 0.06, 0.02, 0.02, 0.00, 0.02, 0.02),
    "df":    (0.06, 0.08, 0.55, 0.20, 0.04, 0.03, 0.01, 0.00, 0.01, 0.00, 0.01, 0.01),
    "akiec": (0.06, 0.03, 0.08, 0.14, 0.01, 0.05, 0.42, 0.10, 0.04, 0.05, 0.02, 0.00),
}
_AGE = {  # mean, sd in years
    "mel": (60, 15), "nv": (42, 15), "bkl": (63, 13), "bcc": (67, 12),
    "vasc": (48, 20), "df": (44, 13), "akiec": (69, 10),
}
_P_MALE = {"mel": 0.56, "nv": 0.50, "bkl": 0.54, "bcc": 0.60, "vasc": 0.48, "df": 0.42, "akiec": 0.66}


def _class_counts(classes: Sequence[str], n: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names, not a single string")
    classes = list(dict.fromkeys(classes))
    if not classes:
        raise ValueError("classes is empty")
    for c in classes:
        _check_label(c)
    if isinstance(n, Mapping):
        extra = sorted(set(n) - set(classes))
        missing = [c for c in classes if c not in n]
        if extra or missing:
            raise ValueError(f"n_lesions_per_class must give a count for exactly the classes "
                             f"{classes}; missing {missing}, unexpected {extra}")
        counts = {c: n[c] for c in classes}
    else:
        counts = {c: n for c in classes}
    for c, k in counts.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"number of lesions for class {c!r} must be an integer >= 0, got {k!r}")
    return {c: int(k) for c, k in counts.items()}


def make_synthetic_dataset(
    dest: str | Path,
    n_lesions_per_class: int | Mapping[str, int] = 12,
    images_per_lesion: tuple[int, int] = (1, 3),
    classes: Sequence[str] = DEFAULT_CLASSES,
    size: int = 224,
    seed: int = 0,
) -> Path:
    """Write a small synthetic dermoscopy dataset and return the path of its manifest.

    Layout::

        dest/README.txt            says the data are synthetic, not for clinical judgement
        dest/manifest.csv          image_id,path,label,lesion_id,patient_id,age,sex,site,label_source
        dest/images/SYN_0000001.jpg ...

    ``path`` is relative to ``dest``. Each lesion (``SYNL_00001``...) gets a number of
    images drawn uniformly from ``images_per_lesion`` (inclusive); its images are the same
    lesion re-photographed (small changes of rotation, scale, lighting and hairs). A
    patient (``SYNP_00001``...) has one or two lesions. Age (years, multiples of 5), sex
    and site are made up, loosely class-dependent; ``label_source`` is ``synthetic``.

    Args:
        dest: output folder (created if needed). Files outside it are never touched; an
            existing manifest is overwritten and stale ``images/SYN_*.jpg`` files removed.
        n_lesions_per_class: lesions per class, one number or ``{class: count}`` covering
            every class in ``classes``.
        images_per_lesion: ``(min, max)`` images per lesion, ``1 <= min <= max``.
        classes: classes to draw, from :data:`SYNTHETIC_CLASSES`.
        size: image side, px.
        seed: random seed; the same seed gives byte-identical files.

    Returns:
        ``dest / "manifest.csv"``.
    """
    counts = _class_counts(classes, n_lesions_per_class)
    lo, hi = (int(v) for v in images_per_lesion)
    if not 1 <= lo <= hi:
        raise ValueError("images_per_lesion must be (min, max) with 1 <= min <= max, "
                         f"got {images_per_lesion}")
    size = int(size)
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")

    dest = Path(dest)
    img_dir = dest / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    labels = [c for c in counts for _ in range(counts[c])]
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]

    rows: list[dict[str, object]] = []
    written: set[str] = set()
    patient: dict[str, object] = {}
    lesions_left = 0
    n_patients = 0
    for lesion_no, label in enumerate(labels, start=1):
        if lesions_left == 0:  # a new patient with one or two lesions
            n_patients += 1
            lesions_left = 2 if rng.uniform() < 0.3 else 1
            mean, sd = _AGE[label]
            patient = {
                "patient_id": f"SYNP_{n_patients:05d}",
                "age": int(5 * round(float(np.clip(rng.normal(mean, sd), 5, 90)) / 5)),
                "sex": "male" if rng.uniform() < _P_MALE[label] else "female",
                "skin": _sample_skin(rng),
            }
        lesions_left -= 1
        site_p = np.asarray(_SITE_WEIGHTS[label])
        site = _SITES[int(rng.choice(len(_SITES), p=site_p / site_p.sum()))]
        lesion_rng = np.random.default_rng(rng.integers(2 ** 63))
        lesion = _sample_lesion(label, lesion_rng, size, skin=patient["skin"])
        for _ in range(int(rng.integers(lo, hi + 1))):
            image_id = f"SYN_{len(rows) + 1:07d}"
            view_rng = np.random.default_rng(rng.integers(2 ** 63))
            img = _photograph(lesion, view_rng, jitter=0.5)
            fname = f"{image_id}.jpg"
            img.save(img_dir / fname, format="JPEG", quality=_JPEG_QUALITY)
            written.add(fname)
            rows.append({
                "image_id": image_id, "path": f"images/{fname}", "label": label,
                "lesion_id": f"SYNL_{lesion_no:05d}", "patient_id": patient["patient_id"],
                "age": patient["age"], "sex": patient["sex"], "site": site,
                "label_source": "synthetic",
            })

    for old in img_dir.iterdir():  # stale images of an earlier, larger run
        if _IMAGE_ID_RE.match(old.name) and old.name not in written and old.is_file():
            old.unlink()

    manifest = dest / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (dest / "README.txt").write_text(README_TEXT, encoding="utf-8")
    return manifest

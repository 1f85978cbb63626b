"""The Manifest: one validated table, one row per image, that every later step consumes.

Columns (always present, in this order; extra columns from the source are kept after):

=============  =================================================================
image_id       unique id of the image (e.g. ``ISIC_0024306``)
path           absolute path of the image file
label          canonical taxonomy node id (e.g. ``mel``), see :mod:`dermlearn.taxonomy`
lesion_id      id of the lesion; images of one lesion must never straddle splits
patient_id     id of the patient, or missing
age            age in years (float), or missing
sex            ``male`` / ``female``, or missing
site           anatomical site (lower case), or missing
label_source   how the label was established (``histo``, ``follow_up``, ``consensus``...)
label_raw      the label exactly as the source wrote it
source_row     where the row came from (e.g. ``HAM10000_metadata.csv:17``), for messages
=============  =================================================================
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermlearn.data.images import check_image, read_image
from dermlearn.data.sources import image_exists
from dermlearn.taxonomy import Taxonomy

COLUMNS: tuple[str, ...] = (
    "image_id", "path", "label", "lesion_id", "patient_id", "age", "sex", "site",
    "label_source", "label_raw", "source_row",
)
#: Columns of ``Manifest.dropped`` (rows a lenient read dropped) and of ``dropped.csv``.
DROPPED_COLUMNS: tuple[str, ...] = ("image_id", "path", "source_row", "kind", "reason")
METADATA_COLUMNS: tuple[str, ...] = ("lesion_id", "patient_id", "age", "sex", "site", "label_source")


@dataclass(frozen=True)
class Problem:
    """One validation finding, tied to the file and source row it concerns."""

    kind: str
    message: str
    file: str | None = None
    row: str | None = None
    image_id: str | None = None
    severity: str = "error"  # "error" blocks strict loading; "warning" is reported only
    label: str | None = None  # the label concerned (an unknown label), for summaries

    def __str__(self) -> str:
        where = self.row or self.file
        tag = self.kind if self.severity == "error" else f"{self.kind}, warning"
        return f"[{tag}] {where}: {self.message}" if where else f"[{tag}] {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class Manifest:
    """A dataset as a table of image paths, labels and metadata; images are read lazily.

    Build one with :func:`dermlearn.data.load`. ``problems`` holds every validation
    finding; a manifest returned by ``load(...)`` (strict by default) has no error-level one.
    """

    def __init__(self, table: pd.DataFrame, *, taxonomy: Taxonomy, source: str, format: str,
                 problems: Sequence[Problem] = ()):
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"manifest table lacks columns {missing}")
        extra = [c for c in table.columns if c not in COLUMNS]
        self.table = table[list(COLUMNS) + extra].reset_index(drop=True)
        self.taxonomy = taxonomy
        self.source = source
        self.format = format
        self.problems: list[Problem] = list(problems)
        #: Rows dropped by a lenient read (``load(..., invalid="drop")``): image_id, path,
        #: source_row, kind, reason.
        self.dropped = pd.DataFrame(columns=list(DROPPED_COLUMNS))

    # -- basic views -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (f"Manifest({self.format}:{self.source}, {len(self)} images, "
                f"{self.n_lesions} lesions, {len(self.classes)} classes, "
                f"{len(self.problems)} problems)")

    def __iter__(self) -> Iterator[dict]:
        return (row._asdict() for row in self.table.itertuples(index=False))

    @property
    def image_ids(self) -> list[str]:
        return self.table["image_id"].tolist()

    @property
    def labels(self) -> list[str]:
        return self.table["label"].tolist()

    @property
    def classes(self) -> list[str]:
        """Labels present, in taxonomy order (unknown labels last, sorted)."""
        present = set(self.table["label"].dropna())
        ordered = [n for n in self.taxonomy.nodes if n in present]
        return ordered + sorted(present - set(ordered))

    @property
    def n_lesions(self) -> int:
        return int(self.table["lesion_id"].nunique())

    def class_counts(self) -> dict[str, int]:
        counts = self.table["label"].value_counts()
        return {c: int(counts[c]) for c in self.classes}

    def groups(self, by: str = "lesion") -> np.ndarray:
        """Group id per image for leakage-safe splitting; ``by`` is ``lesion`` or ``patient``."""
        column = {"lesion": "lesion_id", "patient": "patient_id"}.get(by)
        if column is None:
            raise ValueError(f"group must be 'lesion' or 'patient', not {by!r}")
        values = self.table[column]
        if values.isna().any():
            from dermlearn.errors import DataError
            n = int(values.isna().sum())
            raise DataError(f"cannot group by {by}: {n} of {len(values)} images have no {column} "
                            f"in {self.source}")
        return values.astype(str).to_numpy()

    # -- images --------------------------------------------------------------------
    def image_path(self, index: int) -> Path:
        return Path(self.table.at[index, "path"])

    def open_image(self, index: int) -> Image.Image:
        """Decode image ``index`` as RGB (see :func:`dermlearn.data.images.read_image`)."""
        return read_image(self.image_path(index))

    # -- derived manifests ---------------------------------------------------------
    def subset(self, rows: Iterable[int] | np.ndarray | pd.Series) -> Manifest:
        """A manifest of the given row positions (or boolean mask)."""
        rows = np.asarray(list(rows) if not isinstance(rows, (np.ndarray, pd.Series)) else rows)
        table = self.table[rows] if rows.dtype == bool else self.table.iloc[rows]
        kept = set(table["image_id"])
        problems = [p for p in self.problems if p.image_id is None or p.image_id in kept]
        return Manifest(table, taxonomy=self.taxonomy, source=self.source, format=self.format,
                        problems=problems)

    def select(self, image_ids: Iterable[str]) -> Manifest:
        """A manifest of the given image ids, in the given order."""
        ids = list(image_ids)
        position = pd.Series(np.arange(len(self)), index=self.table["image_id"])
        unknown = [i for i in ids if i not in position.index]
        if unknown:
            from dermlearn.errors import DataError
            raise DataError(f"{len(unknown)} image ids are not in {self.source}",
                            [f"unknown image_id {i!r}" for i in unknown])
        return self.subset(position.loc[ids].to_numpy())

    # -- validation ------------------------------------------------------------------
    def check_images(self, progress: bool = False) -> list[Problem]:
        """Decode every image once (slow-ish: ~1 ms per small JPEG); return the failures."""
        from tqdm.auto import tqdm

        found = []
        rows = zip(self.table["image_id"], self.table["path"], self.table["source_row"])
        for image_id, path, row in tqdm(rows, total=len(self), desc="checking images",
                                        unit="img", disable=not progress):
            if not image_exists(path):
                continue  # already reported as missing_file
            reason = check_image(path)
            if reason is not None:
                found.append(Problem("unreadable_image", f"{path}: {reason}", file=str(path),
                                     row=row, image_id=image_id))
        self.problems.extend(found)
        return found

    def summary(self) -> dict:
        """Counts and metadata completeness, as printed by ``dermlearn data inspect``."""
        t = self.table
        per_class = {c: {"images": n, "lesions": int(t.loc[t["label"] == c, "lesion_id"].nunique())}
                     for c, n in self.class_counts().items()}
        return {
            "source": self.source,
            "format": self.format,
            "taxonomy": self.taxonomy.name,
            "n_images": len(self),
            "n_lesions": self.n_lesions,
            "n_patients": int(t["patient_id"].nunique()),
            "classes": self.class_counts(),
            "per_class": per_class,
            "metadata_completeness": {c: round(float(t[c].notna().mean()), 4) if len(t) else 0.0
                                      for c in METADATA_COLUMNS},
            "problems": [p.to_dict() for p in self.problems],
        }

    def write_dropped(self, path: str | Path) -> Path | None:
        """Write :attr:`dropped` as a CSV (atomically); None, and nothing written, when no row
        was dropped."""
        if not len(self.dropped):
            return None
        from dermlearn.atomic import atomic_write

        path = Path(path)
        atomic_write(path, lambda tmp: self.dropped.to_csv(tmp, index=False))
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write the manifest as a CSV that ``load('csv:PATH')`` reads back."""
        path = Path(path)
        self.table.to_csv(path, index=False)
        return path

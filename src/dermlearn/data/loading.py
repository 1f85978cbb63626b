"""``load(spec)``: read any supported dataset into a validated :class:`Manifest`."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from dermlearn.data.manifest import Manifest, Problem
from dermlearn.data.readers import READERS
from dermlearn.errors import DataError
from dermlearn.taxonomy import Taxonomy, load_taxonomy


def parse_spec(spec: str | Path) -> tuple[str | None, Path]:
    """Split ``FORMAT:PATH`` into (format, path); a bare path gives (None, path)."""
    text = str(spec)
    head, sep, tail = text.partition(":")
    if sep and head.lower() in READERS:
        return head.lower(), Path(tail).expanduser()
    return None, Path(text).expanduser()


def detect_format(path: Path) -> str:
    """Name of the first reader that recognises ``path``."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for name, reader in READERS.items():
        if reader.detect(path):
            return name
    raise DataError(f"{path}: cannot tell the dataset format; prefix the path with one of "
                    f"{', '.join(f'{n}:' for n in READERS)} (e.g. csv:{path})")


def load(spec: str | Path, *, taxonomy: str | Path | Taxonomy = "dermatology",
         strict: bool = True, check_images: bool = False, progress: bool = False,
         **options) -> Manifest:
    """Read a dataset (path with auto-detected format, or ``FORMAT:PATH``) as a Manifest.

    Labels are resolved to canonical ids of ``taxonomy`` (built-in name, file, Taxonomy, or
    ``"flat"`` to accept the labels as they are). Every problem is collected; with
    ``strict=True`` any error-level problem raises :class:`DataError` listing them all, else
    they are kept in ``manifest.problems``. ``check_images=True`` also decodes every image.
    ``options`` go to the reader (e.g. ``label_col=`` for csv, ``metadata=`` for isic).
    """
    fmt, path = parse_spec(spec)
    fmt = fmt or detect_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    table, problems = READERS[fmt].read(path, **options)
    if isinstance(taxonomy, str) and taxonomy == "flat":
        taxonomy = Taxonomy.flat(sorted({str(v).strip() for v in table["label"] if _present(v)}))
    else:
        taxonomy = load_taxonomy(taxonomy)
    table, found = validate_table(table, taxonomy)
    manifest = Manifest(table, taxonomy=taxonomy, source=str(path), format=fmt,
                        problems=problems + found)
    if check_images:
        manifest.check_images(progress=progress)
    if strict:
        raise_on_errors(manifest)
    return manifest


def raise_on_errors(manifest: Manifest) -> None:
    """Raise DataError listing every error-level problem of ``manifest``."""
    errors = [p for p in manifest.problems if p.severity == "error"]
    if errors:
        raise DataError(f"{manifest.source}: {len(errors)} problem(s) found", errors)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) \
        and str(value).strip() != ""


def validate_table(table: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, list[Problem]]:
    """Canonicalise labels and check ids, files and lesion consistency; returns all problems."""
    table = table.copy()
    problems: list[Problem] = []
    labels = []
    for image_id, raw, row in zip(table["image_id"], table["label"], table["source_row"]):
        if not _present(raw):
            problems.append(Problem("empty_label", f"image {image_id!r} has no label", row=row,
                                    image_id=image_id))
            labels.append(None)
            continue
        canonical = taxonomy.canonical(str(raw))
        if canonical is None:
            problems.append(Problem("unknown_label", f"label {raw!r} of image {image_id!r} is not "
                                    f"in taxonomy {taxonomy.name!r}", row=row, image_id=image_id))
        labels.append(canonical or str(raw).strip())
    table["label"] = labels

    empty_ids = ~table["image_id"].map(_present)
    for row in table.loc[empty_ids, "source_row"]:
        problems.append(Problem("empty_image_id", "row has no image id", row=row))
    duplicated = table["image_id"].duplicated(keep=False) & ~empty_ids
    for image_id, rows in table[duplicated].groupby("image_id")["source_row"]:
        problems.append(Problem("duplicate_id", f"image id {image_id!r} appears {len(rows)} times "
                                f"(rows {', '.join(rows)})", row=rows.iloc[0], image_id=image_id))

    for image_id, path, row in zip(table["image_id"], table["path"], table["source_row"]):
        if not Path(path).is_file():
            problems.append(Problem("missing_file", f"image {image_id!r} not found at {path}",
                                    file=str(path), row=row, image_id=image_id))

    by_lesion: dict[str, set] = defaultdict(set)
    for lesion, label in zip(table["lesion_id"], table["label"]):
        if _present(lesion) and label is not None:
            by_lesion[lesion].add(label)
    for lesion, found in by_lesion.items():
        if len(found) > 1:
            rows = table.loc[table["lesion_id"] == lesion]
            images = ", ".join(f"{i} ({lab})" for i, lab in zip(rows["image_id"], rows["label"]))
            problems.append(Problem("lesion_label_conflict", f"lesion {lesion!r} has "
                                    f"{len(found)} labels: {images}", row=rows["source_row"].iloc[0]))
    return table, problems

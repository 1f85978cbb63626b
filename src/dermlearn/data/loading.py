"""``load(spec)``: read any supported dataset into a validated :class:`Manifest`."""
from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dermlearn.data.manifest import Manifest, Problem
from dermlearn.data.problems import drop_invalid, summarize_problems, unknown_label_message
from dermlearn.data.readers import READERS
from dermlearn.data.sources import image_exists, refuse_url
from dermlearn.errors import DataError
from dermlearn.taxonomy import Taxonomy, load_taxonomy, read_aliases


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


#: What :func:`load` does with rows that have an error-level problem.
INVALID = ("raise", "keep", "drop")


def check_data_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` checked as :func:`load`'s reading options (``aliases``, ``invalid`` and the
    readers' options, e.g. ``label_col``, ``sep``), ``None`` values left out; DataError naming
    an unknown one. What ``train(..., data_options=)`` and ``evaluate`` pass on to ``load``."""
    known = {"aliases", "invalid"}.union(*(_reader_options(fmt) for fmt in READERS))
    given = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise DataError(f"unknown data option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known))}")
    if "invalid" in given and given["invalid"] not in INVALID:
        raise DataError(f"data option invalid={given['invalid']!r}: one of {', '.join(INVALID)}")
    return given


def load(spec: str | Path, *, taxonomy: str | Path | Taxonomy = "dermatology",
         aliases: str | Path | Mapping[str, str] | None = None, invalid: str = "raise",
         check_images: bool = False, progress: bool = False, **options) -> Manifest:
    """Read a dataset (path with auto-detected format, or ``FORMAT:PATH``) as a Manifest.

    Labels are resolved to canonical ids of ``taxonomy`` (built-in name, file, Taxonomy, or
    ``"flat"`` to accept the labels as they are), ignoring case, accents and punctuation;
    ``aliases`` (a YAML file of ``label: node_id`` lines, or a dict) extends the tree with the
    user's own spellings. Every problem is collected; then, by ``invalid``:

    - ``"raise"`` (strict, the default): any error-level problem raises :class:`DataError`,
      summarised per kind (``dermlearn data inspect DATA --json`` lists them all);
    - ``"keep"``: the problems stay in ``manifest.problems`` (``data inspect``);
    - ``"drop"`` (lenient): rows with an error (missing file, unknown label, unreadable image,
      a lesion with two labels...) are dropped and listed in ``manifest.dropped``, with the
      reason; images are decoded to find unreadable ones.

    ``check_images=True`` also decodes every image. ``options`` go to the reader: for csv
    ``label_col``, ``image_col``, ``id_col``, ``lesion_col``, ``patient_col``, ``sep``...;
    for isic ``metadata``, ``images``.
    """
    if invalid not in INVALID:
        raise ValueError(f"invalid must be one of {INVALID}, not {invalid!r}")
    refuse_url(spec)
    fmt, path = parse_spec(spec)
    fmt = fmt or detect_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    _check_options(fmt, path, options)
    table, problems = READERS[fmt].read(path, **{k: v for k, v in options.items() if v is not None})
    if isinstance(taxonomy, str) and taxonomy == "flat":
        taxonomy = Taxonomy.flat(sorted({str(v).strip() for v in table["label"] if _present(v)}))
    else:
        taxonomy = load_taxonomy(taxonomy)
    if aliases is not None:
        taxonomy = taxonomy.with_aliases(read_aliases(aliases), source=str(aliases)
                                         if not isinstance(aliases, Mapping) else "aliases")
    table, found = validate_table(table, taxonomy)
    said = {p.row for p in problems if p.severity == "error"}  # the reader said why already
    found = [p for p in found if not (p.kind == "empty_label" and p.row in said)]
    manifest = Manifest(table, taxonomy=taxonomy, source=str(path), format=fmt,
                        problems=problems + found)
    if check_images or invalid == "drop":
        manifest.check_images(progress=progress)
    if invalid == "drop":
        manifest = drop_invalid(manifest)
    if invalid != "keep":
        raise_on_errors(manifest)
    return manifest


def _reader_options(fmt: str) -> set[str]:
    """The keyword options the reader of ``fmt`` takes (csv: its column options too)."""
    params = inspect.signature(READERS[fmt].read).parameters
    return {name for name, p in params.items()
            if name != "path" and p.kind is not inspect.Parameter.VAR_KEYWORD} \
        | set(getattr(READERS[fmt], "COLUMN_OPTIONS", ()))


def _check_options(fmt: str, path: Path, options: dict) -> None:
    """DataError naming a reading option that the format's reader does not take."""
    wrong = [k for k, v in options.items() if v is not None and k not in _reader_options(fmt)]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        users = [name for name in READERS if set(wrong) <= _reader_options(name)]
        raise DataError(f"{path} was read as {fmt} data, which does not take {flags}"
                        + (f" (it applies to {', '.join(users)} data: prefix the path, e.g. "
                           f"{users[0]}:{path})" if users else ""))


def raise_on_errors(manifest: Manifest) -> None:
    """Raise DataError summarising every error-level problem of ``manifest`` (per kind; the
    full list is ``dermlearn data inspect SOURCE --json``)."""
    errors = [p for p in manifest.problems if p.severity == "error"]
    if errors:
        raise DataError(f"{manifest.source}: {len(errors)} problem(s) found", errors,
                        summary=summarize_problems(errors, manifest.source))


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) \
        and str(value).strip() != ""


def validate_table(table: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, list[Problem]]:
    """Canonicalise labels and check ids, files and lesion consistency; returns all problems."""
    table = table.copy()
    problems: list[Problem] = []
    labels = []
    unknown: dict[str, str] = {}
    for image_id, raw, row in zip(table["image_id"], table["label"], table["source_row"]):
        if not _present(raw):
            problems.append(Problem("empty_label", f"image {image_id!r} has no label",
                                    row=row, image_id=image_id))
            labels.append(None)
            continue
        canonical = taxonomy.canonical(str(raw))
        if canonical is None:
            text = str(raw).strip()
            if text not in unknown:
                unknown[text] = unknown_label_message(text, taxonomy)
            problems.append(Problem("unknown_label", f"image {image_id!r}: {unknown[text]}",
                                    row=row, image_id=image_id, label=text))
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
        if not image_exists(path):
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

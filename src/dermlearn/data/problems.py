"""What to do with a dataset's problems: summarise them for a person (a few lines per kind, not
one line per row), and drop the rows they concern when reading leniently.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pandas as pd

from dermlearn.data.manifest import DROPPED_COLUMNS, Manifest, Problem
from dermlearn.taxonomy import Taxonomy

__all__ = ["DROPPED_COLUMNS", "drop_invalid", "dropped_kinds", "summarize_problems",
           "unknown_label_message"]

#: Up to this many problems are listed one per line; more are summarised per kind.
LIST_ALL = 12
#: Examples shown per kind (or per unknown label) in a summary.
EXAMPLES = 3

UNKNOWN_LABEL_WAYS_OUT = (
    "unknown labels: keep your labels as the classes with --taxonomy flat, or map each to the "
    "tree with --aliases FILE (YAML lines 'your label: node_id'); 'dermlearn taxonomy aliases "
    "[--grep WORD]' lists every known name")


def unknown_label_message(label: str, taxonomy: Taxonomy) -> str:
    """``label 'X' is not in taxonomy 'T'`` with the three nearest known names, if any."""
    near = taxonomy.nearest(label, n=3)
    hint = ("; nearest known names: " + ", ".join(
        f"{n!r}" + ("" if taxonomy.canonical(n) == n else f" ({taxonomy.canonical(n)})")
        for n in near)) if near else "; no known name is close"
    return f"label {label!r} is not in taxonomy {taxonomy.name!r}{hint}"


def summarize_problems(problems: Sequence[Problem], source: str | None = None) -> list[str]:
    """Lines for a person: unknown labels once per distinct label (with its rows); the other
    problems one per line when there are at most :data:`LIST_ALL` in all, else per kind a count
    and a few examples and where to get the full list. The ways out for unknown labels come
    once, at the end."""
    by_kind: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_kind[p.kind].append(p)
    summarised = len(problems) > LIST_ALL
    lines: list[str] = []
    for kind, found in by_kind.items():
        tag = kind if found[0].severity == "error" else f"{kind}, warning"
        if kind == "unknown_label":
            by_label: dict[str, list[Problem]] = defaultdict(list)
            for p in found:
                by_label[str(p.label)].append(p)
            for items in sorted(by_label.values(), key=len, reverse=True):
                rows = ", ".join(str(p.row or p.image_id) for p in items[:EXAMPLES])
                more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
                message = items[0].message.removeprefix(f"image {items[0].image_id!r}: ")
                lines.append(f"[{tag}] {message} -- {len(items)} image(s): {rows}{more}")
        elif not summarised or len(found) <= EXAMPLES:
            lines += [str(p) for p in found]
        else:
            lines.append(f"[{tag}] {len(found)} times, e.g.:")
            lines += [f"    {p.row or p.file or ''}: {p.message}" for p in found[:EXAMPLES]]
            lines.append(f"    ... and {len(found) - EXAMPLES} more")
    if summarised:
        lines.append(f"the full list: dermlearn data inspect{f' {source}' if source else ''} --json "
                     f"(with the same reading options)")
    if "unknown_label" in by_kind:
        lines.append(UNKNOWN_LABEL_WAYS_OUT)
    return lines


def dropped_kinds(dropped: pd.DataFrame) -> str:
    """``3 missing_file, 1 unknown_label``: the rows of a ``dropped`` table counted by kind."""
    return ", ".join(f"{n} {k}" for k, n in dropped["kind"].value_counts().items())


def drop_invalid(manifest: Manifest) -> Manifest:
    """The manifest without the rows that have an error-level problem (missing or unreadable
    file, unknown or empty label, duplicate id...) nor the images of a lesion given two labels;
    ``dropped`` lists each with its reason. Problems not tied to a row stay errors."""
    table = manifest.table
    by_id: dict[str, Problem] = {}
    by_row: dict[str, Problem] = {}
    kept_problems: list[Problem] = []
    for p in manifest.problems:
        if p.severity != "error":
            kept_problems.append(p)
        elif p.kind == "lesion_label_conflict":
            continue  # decided below, on what is left
        elif p.image_id is not None:
            by_id.setdefault(str(p.image_id), p)
        elif p.row is not None:
            by_row.setdefault(str(p.row), p)
        else:
            kept_problems.append(p)
    reasons: list[Problem | None] = [
        by_id.get(str(i)) or by_row.get(str(r))
        for i, r in zip(table["image_id"], table["source_row"])]
    remaining = pd.Series([r is None for r in reasons], index=table.index)
    labels = table.loc[remaining, ["lesion_id", "label"]].dropna()
    mixed = set(labels.groupby("lesion_id")["label"].nunique().loc[lambda n: n > 1].index)
    for i, (lesion, ok) in enumerate(zip(table["lesion_id"], remaining)):
        if ok and lesion in mixed:
            found = sorted(set(labels.loc[labels["lesion_id"] == lesion, "label"]))
            reasons[i] = Problem("lesion_label_conflict", f"lesion {lesion!r} has "
                                 f"{len(found)} labels ({', '.join(found)})")
    drop = [r is not None for r in reasons]
    dropped = pd.DataFrame({
        "image_id": table["image_id"][drop], "path": table["path"][drop],
        "source_row": table["source_row"][drop],
        "kind": [r.kind for r in reasons if r is not None],
        "reason": [r.message for r in reasons if r is not None]},
        columns=list(DROPPED_COLUMNS))
    kept = manifest.subset(~pd.Series(drop).to_numpy())
    kept.problems = [p for p in kept_problems if p.image_id is None
                     or str(p.image_id) in set(kept.table["image_id"].astype(str))]
    if len(dropped):
        kept.problems.append(Problem(
            "dropped", f"{len(dropped)} of {len(table)} rows dropped (--lenient): "
            + dropped_kinds(dropped),
            file=manifest.source, severity="warning"))
    kept.dropped = dropped.reset_index(drop=True)
    return kept

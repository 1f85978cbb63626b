"""Esteva et al.'s disease-partitioning algorithm and label -> training-class assignment.

"Descend the taxonomy until the current node contains fewer than ``max_class_size``
images across all its children; those nodes become the training classes."
"""
from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.tree import Taxonomy

__all__ = ["partition", "assign_classes", "class_counts", "label_counts", "resolve_classes"]


def label_counts(taxonomy: Taxonomy, labels: Iterable[Any]) -> dict[str, int]:
    """``{node id: number of labels resolving exactly to it}`` for nodes with any, in pre-order."""
    raw = Counter(labels)
    counts = taxonomy.resolve_counts(raw)
    return {node: n for node, n in counts.items() if n}


def partition(taxonomy: Taxonomy, counts: Mapping[str, int], max_class_size: int) -> list[str]:
    """Training classes (node ids, pre-order) from per-node image counts.

    ``counts`` maps a node (id or alias) to the images labelled exactly there. From the
    root down: a node whose subtree holds ``0 < total < max_class_size`` images, or a leaf
    with any images, becomes a class; otherwise its children are visited and images labelled
    directly at it (if any) form a class named by the node itself. Every image therefore
    falls in exactly one class under :func:`assign_classes`.
    """
    try:
        if isinstance(max_class_size, bool):
            raise TypeError
        size = operator.index(max_class_size)
    except TypeError:
        raise TaxonomyError(f"max_class_size must be a positive integer, got {max_class_size!r}") from None
    if size < 1:
        raise TaxonomyError(f"max_class_size must be a positive integer, got {size}")
    own = taxonomy.resolve_counts(counts)
    total = taxonomy.subtree_counts(own)
    chosen: set[str] = set()
    stack = [taxonomy.root]
    while stack:
        node = stack.pop()
        if total[node] == 0:
            continue
        kids = taxonomy.children(node)
        if total[node] < size or not kids:
            chosen.add(node)
            continue
        if own[node] > 0:
            chosen.add(node)
        stack.extend(kids)
    return [node for node in taxonomy.nodes if node in chosen]


def resolve_classes(taxonomy: Taxonomy, classes: Sequence[str]) -> list[str]:
    """Training classes as node ids (aliases resolved, order kept); duplicates are an error."""
    if isinstance(classes, str):
        raise TaxonomyError(f"classes must be a list of node ids, got the string {classes!r}")
    out: list[str] = []
    for cls in classes:
        node = taxonomy.resolve(cls, context="training classes")
        if node in out:
            raise TaxonomyError(f"training class {cls!r} (node {node!r}) is listed twice")
        out.append(node)
    if not out:
        raise TaxonomyError("no training classes given")
    return out


def _class_owner(taxonomy: Taxonomy, classes: Sequence[str]) -> dict[str, str | None]:
    """``{node id: its deepest ancestor-or-self class, or None}``."""
    wanted = set(classes)
    owner: dict[str, str | None] = {}
    for node in taxonomy.nodes:
        parent = taxonomy.parent(node)
        owner[node] = node if node in wanted else (None if parent is None else owner[parent])
    return owner


def assign_classes(taxonomy: Taxonomy, labels: Iterable[Any], classes: Sequence[str]) -> list[str]:
    """The class of each label: the class that is its deepest ancestor-or-self, or, for a
    label coarser than the classes, the one class below it.

    TaxonomyError names a label that is unknown, coarser than several classes (it spans them,
    so it cannot say which) or outside every class.
    """
    classes = resolve_classes(taxonomy, classes)
    owner = _class_owner(taxonomy, classes)
    out: list[str] = []
    for label in labels:
        node = taxonomy.resolve(label)
        cls = owner[node]
        if cls is None:
            inner = [c for c in classes if taxonomy.is_ancestor_or_self(node, c)]
            if len(inner) == 1:  # e.g. "malignant_melanoma" when "mel" is the only class in it
                out.append(inner[0])
                continue
            if inner:
                shown = ", ".join(map(repr, inner[:5])) + (", ..." if len(inner) > 5 else "")
                raise TaxonomyError(f"label {label!r} (node {node!r}) is coarser than the training classes: "
                                    f"it spans classes {shown}")
            raise TaxonomyError(f"label {label!r} (node {node!r}) lies outside every training class")
        out.append(cls)
    return out


def class_counts(taxonomy: Taxonomy, labels: Iterable[Any], classes: Sequence[str]) -> dict[str, int]:
    """``{class: number of labels assigned to it}`` for every class, in the given class order."""
    classes = resolve_classes(taxonomy, classes)
    out = dict.fromkeys(classes, 0)
    for cls, n in Counter(assign_classes(taxonomy, labels, classes)).items():
        out[cls] += n
    return out

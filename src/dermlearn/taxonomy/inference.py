"""Probability aggregation (PA, Esteva et al. 2017): a node's probability is the sum of the
predicted probabilities of the training classes in its subtree, itself included."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.partition import resolve_classes
from dermlearn.taxonomy.tree import LevelSpec, Taxonomy

__all__ = ["node_probability", "aggregate", "level_labels"]


def _as_probs(probs: Any, n_classes: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_classes:
        raise TaxonomyError(f"probabilities must have shape (N, {n_classes}) to match the "
                            f"{n_classes} training classes, got {arr.shape}")
    return arr


def node_probability(probs: Any, classes: Sequence[str], taxonomy: Taxonomy, node: str) -> np.ndarray:
    """P[node] for probs of shape (N, C) over ``classes`` -> shape (N,).

    Sums the classes that lie in ``node``'s subtree (0 when none does). A node strictly
    inside a class with no class at or below it cannot be separated by the model:
    TaxonomyError.
    """
    classes = resolve_classes(taxonomy, classes)
    arr = _as_probs(probs, len(classes))
    target = taxonomy.resolve(node)
    mask = np.array([taxonomy.is_ancestor_or_self(target, c) for c in classes], dtype=bool)
    if not mask.any():
        above = [c for c in classes if taxonomy.is_ancestor_or_self(c, target)]
        if above:
            raise TaxonomyError(f"node {node!r} is finer than training class {above[-1]!r}: "
                                "the model does not separate it")
    return arr[:, mask].sum(axis=1)


def aggregate(probs: Any, classes: Sequence[str], taxonomy: Taxonomy,
              level: LevelSpec) -> tuple[np.ndarray, list[str]]:
    """Probabilities of each group of ``level`` -> ((N, G) array, G group names in level order).

    ``level`` is a level name, a list of node ids (each its own group) or ``{group: [ids]}``.
    Each class goes to the group whose listed node is its deepest ancestor-or-self; a class
    coarser than the level (its subtree spans groups) or outside it is a TaxonomyError.
    Rows summing to 1 in ``probs`` sum to 1 in the result.
    """
    classes = resolve_classes(taxonomy, classes)
    arr = _as_probs(probs, len(classes))
    groups = list(taxonomy.level_groups(level))
    mapping = taxonomy.level_map(level)
    bad = [c for c in classes if c not in mapping]
    if bad:
        more = f" (and {len(bad) - 1} more: {', '.join(map(repr, bad[1:6]))})" if len(bad) > 1 else ""
        raise TaxonomyError(f"training class {bad[0]!r} cannot be aggregated: "
                            f"{taxonomy._ungrouped_reason(bad[0], level)}{more}")
    column = {g: j for j, g in enumerate(groups)}
    onehot = np.zeros((len(classes), len(groups)), dtype=np.float64)
    onehot[np.arange(len(classes)), [column[mapping[c]] for c in classes]] = 1.0
    return arr @ onehot, groups


def level_labels(labels: Iterable[Any], taxonomy: Taxonomy, level: LevelSpec) -> list[str]:
    """Group of each true label (id, name or alias) at ``level``, matching :func:`aggregate`."""
    return taxonomy.map_labels(labels, level)

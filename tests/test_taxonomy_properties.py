"""Property tests for dermlearn.taxonomy: partition() and probability aggregation invariants."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy import (
    Taxonomy,
    aggregate,
    assign_classes,
    class_counts,
    load_taxonomy,
    node_probability,
    partition,
)

DERM = load_taxonomy("dermatology")
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def trees(draw) -> Taxonomy:
    """Random tree of 1-25 nodes (n0 is the root) with up to 3 random non-overlapping levels."""
    n = draw(st.integers(1, 25))
    ids = [f"n{i}" for i in range(n)]
    children: dict[str, list[str]] = {}
    for i in range(1, n):
        children.setdefault(ids[draw(st.integers(0, i - 1))], []).append(ids[i])
    levels = {}
    for k in range(draw(st.integers(0, 3))):
        listed = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=n, unique=True))
        n_groups = draw(st.integers(1, len(listed)))
        groups: dict[str, list[str]] = {}
        for node in listed:
            groups.setdefault(f"g{draw(st.integers(0, n_groups - 1))}", []).append(node)
        levels[f"level{k}"] = groups
    return Taxonomy("random", ids[0], children, levels=levels)


@st.composite
def tree_with_counts(draw, fixed: Taxonomy | None = None) -> tuple[Taxonomy, dict[str, int], int]:
    tax = fixed if fixed is not None else draw(trees())
    labelled = draw(st.lists(st.sampled_from(tax.nodes), max_size=12, unique=True))
    counts = {node: draw(st.integers(0, 40)) for node in labelled}
    return tax, counts, draw(st.integers(1, 80))


def random_probs(seed: int, n_rows: int, n_classes: int) -> np.ndarray:
    """Rows on the simplex, some with exact zeros."""
    rng = np.random.default_rng(seed)
    raw = rng.exponential(size=(n_rows, n_classes)) * (rng.random((n_rows, n_classes)) < 0.8)
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    return raw / raw.sum(axis=1, keepdims=True)


def check_partition(tax: Taxonomy, counts: dict[str, int], size: int) -> list[str]:
    classes = partition(tax, counts, size)
    assert classes == partition(tax, dict(reversed(list(counts.items()))), size)  # deterministic
    assert classes == [n for n in tax.nodes if n in set(classes)]                  # pre-order, unique
    own = tax.resolve_counts(counts)
    total = tax.subtree_counts(counts)
    labels = [node for node, k in own.items() for _ in range(k)]
    if not labels:
        assert classes == []
        return classes
    per_class = class_counts(tax, labels, classes)                  # every image is assigned ...
    assert sum(per_class.values()) == len(labels)                   # ... to exactly one class
    for cls, n in per_class.items():
        assert n > 0                                                # no empty class
        inner = [c for c in classes if c != cls and tax.is_ancestor_or_self(cls, c)]
        if inner:
            # a class above other classes only holds the images labelled exactly at it
            assert n == own[cls] > 0 and total[cls] >= size
        else:
            assert n == total[cls]
            # a class is small enough, or cannot be split further
            splittable = any(total[c] for c in tax.children(cls))
            assert n < size or not splittable
    return classes


@FAST
@given(tree_with_counts())
def test_partition_random_trees(case):
    check_partition(*case)


@FAST
@given(tree_with_counts(fixed=DERM))
def test_partition_builtin_random_counts(case):
    check_partition(*case)


def check_aggregation(tax: Taxonomy, classes: list[str], probs: np.ndarray, adhoc: list[str]) -> None:
    # node probabilities: root is 1, every node in [0, 1], additive over children
    root = node_probability(probs, classes, tax, tax.root)
    np.testing.assert_allclose(root, 1.0, atol=1e-9)
    p = {}
    for node in tax.nodes:
        try:
            p[node] = node_probability(probs, classes, tax, node)
        except TaxonomyError:
            # only a node strictly inside a class, with no class at or below it, is refused
            assert not any(tax.is_ancestor_or_self(node, c) for c in classes)
            assert any(tax.is_ancestor_or_self(c, node) for c in classes)
            p[node] = np.zeros(len(probs))
        assert (p[node] >= 0).all() and (p[node] <= 1 + 1e-9).all()
    for node in reversed(tax.nodes):
        own = probs[:, classes.index(node)] if node in classes else 0.0
        np.testing.assert_allclose(p[node], own + sum(p[c] for c in tax.children(node)), atol=1e-9)
    # every named level, and ad-hoc levels {node, rest of the tree}
    specs = list(tax.levels) + [{"in": [node], "out": [tax.root]} for node in adhoc if node != tax.root]
    for level in specs:
        mapping = tax.level_map(level)
        try:
            out, groups = aggregate(probs, classes, tax, level)
        except TaxonomyError:
            assert any(c not in mapping for c in classes)
            continue
        assert all(c in mapping for c in classes)
        assert out.shape == (len(probs), len(groups)) and groups == list(tax.level_groups(level))
        assert (out >= 0).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
        for j, group in enumerate(groups):
            members = [i for i, c in enumerate(classes) if mapping[c] == group]
            np.testing.assert_allclose(out[:, j], probs[:, members].sum(axis=1), atol=1e-12)


@FAST
@given(tree_with_counts(), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_aggregation_random_trees(case, seed, n_rows):
    tax, counts, size = case
    classes = partition(tax, counts, size) or [tax.root]
    check_aggregation(tax, classes, random_probs(seed, n_rows, len(classes)), list(tax.nodes))


@FAST
@given(tree_with_counts(fixed=DERM), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_aggregation_builtin(case, seed, n_rows):
    tax, counts, size = case
    classes = partition(tax, counts, size) or [tax.root]
    adhoc = list(np.random.default_rng(seed).choice(tax.nodes, size=8, replace=False))
    check_aggregation(tax, classes, random_probs(seed, n_rows, len(classes)), adhoc + classes)


@FAST
@given(trees())
def test_level_map_rule(tax):
    """Mapped nodes get the group of their deepest listed ancestor-or-self, and no listed node of
    another group lies below them; the mapping agrees with map_labels."""
    assert Taxonomy.from_dict(tax.to_dict()) == tax
    for level, groups in tax.levels.items():
        listed = {n: g for g, ids in groups.items() for n in ids}
        mapping = tax.level_map(level)
        for node in tax.nodes:
            chain = [node, *tax.ancestors(node)]
            deepest = next((listed[a] for a in chain if a in listed), None)
            below = {listed[d] for d in tax.descendants(node) if d in listed}
            if deepest is not None and below <= {deepest}:
                assert mapping[node] == deepest
                assert tax.map_labels([node], level) == [deepest]
            else:
                assert node not in mapping
                with pytest.raises(TaxonomyError, match=repr(node)):
                    tax.map_labels([node], level)


@FAST
@given(tree_with_counts(), st.data())
def test_assign_classes_deepest(case, data):
    tax, counts, size = case
    classes = partition(tax, counts, size)
    if not classes:
        return
    node = data.draw(st.sampled_from(tax.nodes))
    covering = [c for c in classes if tax.is_ancestor_or_self(c, node)]
    inner = [c for c in classes if tax.is_ancestor_or_self(node, c)]
    if covering:
        assert assign_classes(tax, [node], classes) == [max(covering, key=tax.depth)]
    elif len(inner) == 1:  # coarser than the classes, but holding one of them: that one
        assert assign_classes(tax, [node], classes) == inner
    else:
        with pytest.raises(TaxonomyError, match=repr(node)):
            assign_classes(tax, [node], classes)


def test_builtin_labels_resolve_to_themselves():
    for node in DERM.nodes:
        assert DERM.canonical(node) == node
        assert DERM.canonical(f"  {node.upper().replace('_', ' ')} ") == node
        assert DERM.canonical(DERM.display_name(node)) == node
        for alias in DERM.aliases(node):
            assert DERM.canonical(alias) == node

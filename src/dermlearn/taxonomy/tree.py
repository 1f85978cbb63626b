"""A diagnosis taxonomy: a rooted tree of node ids with display names, aliases and named levels.

:class:`Taxonomy` holds the tree and answers questions about it (structure, labels, levels,
counts, rendering). Its file format and dict parsing are :mod:`dermlearn.taxonomy.schema`,
reading files and built-in trees :mod:`dermlearn.taxonomy.io`, level membership
:mod:`dermlearn.taxonomy.levels` and label matching :mod:`dermlearn.taxonomy.labels`.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.labels import _check_str, _quote_list, normalize_label
from dermlearn.taxonomy.levels import LevelsMixin, LevelSpec
from dermlearn.taxonomy.matching import LabelsMixin
from dermlearn.taxonomy.schema import _from_dict

__all__ = ["Taxonomy", "LevelSpec", "normalize_label"]


class Taxonomy(LevelsMixin, LabelsMixin):
    """An immutable rooted tree of diagnosis node ids.

    ``children`` maps a node id to its ordered child ids (nodes missing from it are
    leaves); every node must be reachable from ``root`` exactly once. ``names`` and
    ``aliases`` give display names and extra labels; ``levels`` maps a level name to
    ``{group: [node ids]}`` (or a list of node ids, each its own group). The level methods
    (:meth:`level_groups`, :meth:`level_map`, :meth:`map_labels`) come from :class:`LevelsMixin`,
    the label methods (:meth:`canonical`, :meth:`resolve`, :meth:`nearest`, :meth:`known_names`,
    :meth:`with_aliases`) from :class:`~dermlearn.taxonomy.matching.LabelsMixin`.
    """

    def __init__(
        self,
        name: str,
        root: str,
        children: Mapping[str, Sequence[str]],
        *,
        names: Mapping[str, str] | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        levels: Mapping[str, LevelSpec] | None = None,
        description: str = "",
    ):
        self._name = _check_str(name, "taxonomy name")
        self._description = str(description or "")
        self._root = _check_str(root, "root id")
        self._build_tree(children)
        self._names: dict[str, str] = {}
        for node, display in (names or {}).items():
            self._require(node)
            self._names[node] = _check_str(display, f"display name of node {node!r}")
        self._aliases: dict[str, tuple[str, ...]] = {}
        for node, items in (aliases or {}).items():
            self._require(node)
            items = [items] if isinstance(items, str) else list(items)
            checked = [_check_str(a, f"alias of node {node!r}") for a in items]
            if checked:
                self._aliases[node] = tuple(dict.fromkeys(checked))
        self._build_keys()
        self._levels: dict[str, dict[str, tuple[str, ...]]] = {}
        for level, spec in (levels or {}).items():
            _check_str(level, "level name")
            self._levels[level] = self._parse_level(spec, f"level {level!r}")
        self._level_cache: dict[str, tuple[dict, dict, dict]] = {}
        self._frozen = True

    # ----------------------------------------------------------------- construction
    def _build_tree(self, children: Mapping[str, Sequence[str]]) -> None:
        parent: dict[str, str | None] = {self._root: None}
        kids: dict[str, tuple[str, ...]] = {}
        order: list[str] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            order.append(node)
            raw = children.get(node, ())
            if isinstance(raw, str):
                raise TaxonomyError(f"children of node {node!r} must be a list of ids, got {raw!r}")
            ids = tuple(_check_str(c, f"child id of node {node!r}") for c in raw)
            for child in ids:
                if child in parent:
                    where = "the root" if child == self._root else f"a child of {parent[child]!r}"
                    raise TaxonomyError(
                        f"duplicate node id {child!r}: it is {where} and also a child of {node!r}")
                parent[child] = node
            kids[node] = ids
            stack.extend(reversed(ids))
        orphans = [n for n in children if n not in parent]
        if orphans:
            raise TaxonomyError(f"node(s) {_quote_list(orphans)} are not reachable from root {self._root!r}")
        self._parent = parent
        self._children = kids
        self._order = tuple(order)
        self._pos = {n: i for i, n in enumerate(order)}
        self._size: dict[str, int] = {}
        self._depth: dict[str, int] = {}
        for node in order:
            p = parent[node]
            self._depth[node] = 0 if p is None else self._depth[p] + 1
        for node in reversed(order):
            self._size[node] = 1 + sum(self._size[c] for c in kids[node])

    def _build_keys(self) -> None:
        """Index normalised ids, names and aliases; any clash between two nodes is an error."""
        keys: dict[str, tuple[str, str]] = {}
        for node in self._order:
            entries = [("id", node)]
            if node in self._names:
                entries.append(("display name", self._names[node]))
            entries += [("alias", a) for a in self._aliases.get(node, ())]
            for kind, text in entries:
                key = normalize_label(text)
                if not key:
                    raise TaxonomyError(f"{kind} {text!r} of node {node!r} has no letters or digits to match on")
                if key in keys and keys[key][0] != node:
                    other, other_text = keys[key]
                    raise TaxonomyError(
                        f"{kind} {text!r} of node {node!r} clashes with {other_text!r} of node {other!r} "
                        "(labels are matched ignoring case, accents and punctuation)")
                keys.setdefault(key, (node, text))
        self._keys = {k: v[0] for k, v in keys.items()}

    def __setattr__(self, key: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"Taxonomy is immutable (cannot set {key!r})")
        object.__setattr__(self, key, value)

    # ------------------------------------------------------------------ structure
    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def root(self) -> str:
        return self._root

    @property
    def nodes(self) -> tuple[str, ...]:
        """All node ids in pre-order (root first)."""
        return self._order

    @property
    def leaves(self) -> tuple[str, ...]:
        """Node ids without children, in pre-order."""
        return tuple(n for n in self._order if not self._children[n])

    @property
    def levels(self) -> dict[str, dict[str, list[str]]]:
        """``{level name: {group: [node ids]}}`` in declaration order (a copy)."""
        return {lv: {g: list(ids) for g, ids in groups.items()} for lv, groups in self._levels.items()}

    def _require(self, node: Any) -> str:
        if isinstance(node, str) and node in self._parent:
            return node
        hint = ""
        guess = self.canonical(node) if hasattr(self, "_keys") else None
        if guess is not None:
            hint = f" (did you mean node {guess!r}?)"
        raise TaxonomyError(f"unknown node id {node!r} in taxonomy {self._name!r}{hint}")

    def parent(self, node: str) -> str | None:
        """Parent id, or None for the root."""
        return self._parent[self._require(node)]

    def children(self, node: str) -> tuple[str, ...]:
        """Child ids in declaration order."""
        return self._children[self._require(node)]

    def ancestors(self, node: str) -> tuple[str, ...]:
        """Ancestor ids, nearest first, excluding ``node`` itself."""
        out = []
        p = self._parent[self._require(node)]
        while p is not None:
            out.append(p)
            p = self._parent[p]
        return tuple(out)

    def descendants(self, node: str) -> tuple[str, ...]:
        """Descendant ids in pre-order, excluding ``node`` itself."""
        i = self._pos[self._require(node)]
        return self._order[i + 1: i + self._size[node]]

    def is_ancestor_or_self(self, ancestor: str, node: str) -> bool:
        """True when ``ancestor`` is ``node`` or lies on its path to the root."""
        a, i = self._pos[self._require(ancestor)], self._pos[self._require(node)]
        return a <= i < a + self._size[ancestor]

    def depth(self, node: str) -> int:
        """Edges from the root (root = 0)."""
        return self._depth[self._require(node)]

    def display_name(self, node: str) -> str:
        """The node's display name, or its id when it has none."""
        return self._names.get(self._require(node), node)

    def aliases(self, node: str) -> tuple[str, ...]:
        """The node's aliases as declared."""
        return self._aliases.get(self._require(node), ())

    def __contains__(self, node: object) -> bool:
        return isinstance(node, str) and node in self._parent

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self._name, self._root, self._order))

    def __repr__(self) -> str:
        return (f"Taxonomy(name={self._name!r}, root={self._root!r}, nodes={len(self)}, "
                f"leaves={len(self.leaves)}, levels={list(self._levels)})")

    # ------------------------------------------------------------------ counts
    def resolve_counts(self, counts: Mapping[Any, int]) -> dict[str, int]:
        """``{node id: images labelled exactly there}`` for every node in pre-order; keys may be
        aliases (summed per node); counts must be non-negative integers."""
        own = dict.fromkeys(self._order, 0)
        for key, value in counts.items():
            node = self.resolve(key, context="counts")
            try:
                if isinstance(value, bool):
                    raise TypeError
                n = operator.index(value)
            except TypeError:
                raise TaxonomyError(f"count for {key!r} must be an integer, got {value!r}") from None
            if n < 0:
                raise TaxonomyError(f"count for {key!r} must be >= 0, got {n}")
            own[node] += n
        return own

    def subtree_counts(self, counts: Mapping[Any, int]) -> dict[str, int]:
        """``{node id: images labelled at the node or anywhere below it}`` for every node, pre-order."""
        total = self.resolve_counts(counts)
        for node in reversed(self._order):
            p = self._parent[node]
            if p is not None:
                total[p] += total[node]
        return total

    # ------------------------------------------------------------------ output
    def render(self, counts: Mapping[Any, int] | None = None, *, max_depth: int | None = None,
               show_aliases: bool = False) -> str:
        """A compact text tree, one node per line: ``id (Display name)``.

        With ``counts`` ({label: images labelled exactly there}) each line ends with
        ``n=<subtree total>`` plus ``(<k> here)`` for images labelled at an internal node.
        ``max_depth`` hides deeper nodes (noting how many).
        """
        own = self.resolve_counts(counts) if counts is not None else None
        total = self.subtree_counts(own) if own is not None else None
        lines: list[str] = []

        def line(node: str) -> str:
            text = node
            if node in self._names:
                text += f" ({self._names[node]})"
            if show_aliases and node in self._aliases:
                text += f" [{', '.join(self._aliases[node])}]"
            if total is not None:
                text += f"  n={total[node]}"
                if own[node] and self._children[node]:
                    text += f" ({own[node]} here)"
            if max_depth is not None and self._depth[node] == max_depth and self._children[node]:
                text += f"  +{self._size[node] - 1} below"
            return text

        def walk(node: str, prefix: str) -> None:
            kids = self._children[node]
            if max_depth is not None and self._depth[node] >= max_depth:
                return
            for i, child in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(prefix + ("└── " if last else "├── ") + line(child))
                walk(child, prefix + ("    " if last else "│   "))

        lines.append(line(self._root))
        walk(self._root, "")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The file-format dict (see :mod:`dermlearn.taxonomy.schema`); ``Taxonomy.from_dict``
        round-trips it."""
        def node_dict(node: str) -> dict[str, Any]:
            out: dict[str, Any] = {"id": node}
            if node in self._names:
                out["name"] = self._names[node]
            if node in self._aliases:
                out["aliases"] = list(self._aliases[node])
            if self._children[node]:
                out["children"] = [node_dict(c) for c in self._children[node]]
            return out

        root = node_dict(self._root)
        root.pop("children", None)
        data: dict[str, Any] = {"name": self._name}
        if self._description:
            data["description"] = self._description
        data["root"] = root if len(root) > 1 else self._root
        data["nodes"] = [node_dict(c) for c in self._children[self._root]]
        if self._levels:
            data["levels"] = self.levels
        return data

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None,
                  default_name: str | None = None) -> Taxonomy:
        """Build from the file-format dict; errors are prefixed with ``source`` (e.g. the file)."""
        try:
            return _from_dict(cls, data, default_name)
        except TaxonomyError as exc:
            if source is None:
                raise
            raise TaxonomyError(f"{source}: {exc}") from None

    @classmethod
    def flat(cls, labels: Iterable[str], name: str = "flat", *, root: str = "root") -> Taxonomy:
        """One-level tree: ``root`` with one leaf per distinct label (first-seen order) and a
        level ``"classes"`` in which every label is its own group."""
        # one leaf per label up to case, accents and punctuation ('mel' and 'MEL' are one
        # class, spelled as first seen)
        first: dict[str, str] = {}
        for x in labels:
            first.setdefault(normalize_label(_check_str(x, "label")), x)
        leaves = list(first.values())
        if not leaves:
            raise TaxonomyError("Taxonomy.flat needs at least one label")
        clash = first.get(normalize_label(root))
        if clash is not None:
            raise TaxonomyError(f"label {clash!r} collides with the root id; pass another root=")
        return cls(name, root, {root: leaves}, levels={"classes": {x: [x] for x in leaves}})

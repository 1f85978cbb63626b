"""A diagnosis taxonomy: a rooted tree of node ids with display names, aliases and named levels.

File format (YAML or JSON, same structure)::

    name: dermatology                 # optional; defaults to the file's stem
    description: free text            # optional
    root: skin_lesion                 # a node id, or {id, name, aliases}
    nodes:                            # the root's children, nested
      - id: malignant
        name: Malignant               # optional display name
        aliases: [cancer]             # optional; more strings that resolve to this node
        children:
          - id: mel
            aliases: [melanoma, MEL]
          - bcc                       # a bare string is a leaf with just an id
    levels:                           # optional named views of the tree
      esteva3: {benign: [benign], malignant: [malignant]}   # group -> node ids
      esteva9: [benign_dermal, malignant_melanoma]          # list: each node is its own group

A node belongs to the group whose listed node is its deepest ancestor-or-self, provided
no listed node of another group lies inside its subtree (such a node is coarser than
the level and has no group).
"""
from __future__ import annotations

import difflib
import json
import operator
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from dermlearn.errors import TaxonomyError

__all__ = ["Taxonomy", "LevelSpec", "builtin_taxonomies", "load_taxonomy", "normalize_label"]

#: A level: a level name, a list of node ids (one group each), or ``{group: [node ids]}``.
LevelSpec = Union[str, Sequence[str], Mapping[str, Sequence[str]]]

_TOP_KEYS = ("name", "description", "root", "nodes", "levels")
_NODE_KEYS = ("id", "name", "aliases", "children")
_ROOT_KEYS = ("id", "name", "aliases")
_SUFFIXES = (".yaml", ".yml", ".json")
_SEPARATORS = re.compile(r"[\s_\-]+")


def normalize_label(label: str) -> str:
    """Matching key of a label: ignores case, accents, apostrophes, surrounding whitespace
    and differences between ``_``, ``-`` and spaces (``"Bowen's-disease"`` == ``"bowens disease"``)."""
    text = unicodedata.normalize("NFKD", label)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.casefold().replace("'", "").replace("\u2019", "")
    return _SEPARATORS.sub(" ", text).strip()


def _quote_list(items: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in items)


def _check_str(value: Any, what: str) -> str:
    """``value`` as a non-empty string without surrounding whitespace, else TaxonomyError."""
    if not isinstance(value, str):
        hint = " (quote it in YAML)" if isinstance(value, (bool, int, float)) or value is None else ""
        raise TaxonomyError(f"{what} must be a string, got {type(value).__name__} {value!r}{hint}")
    if not value or value != value.strip():
        raise TaxonomyError(f"{what} must be non-empty without surrounding whitespace, got {value!r}")
    return value


class Taxonomy:
    """An immutable rooted tree of diagnosis node ids.

    ``children`` maps a node id to its ordered child ids (nodes missing from it are
    leaves); every node must be reachable from ``root`` exactly once. ``names`` and
    ``aliases`` give display names and extra labels; ``levels`` maps a level name to
    ``{group: [node ids]}`` (or a list of node ids, each its own group).
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
                        "(labels are matched ignoring case, accents, apostrophes and '_'/'-'/space)")
                keys.setdefault(key, (node, text))
        self._keys = {k: v[0] for k, v in keys.items()}

    def _parse_level(self, spec: Any, what: str) -> dict[str, tuple[str, ...]]:
        if isinstance(spec, Mapping):
            items = list(spec.items())
        elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
            items = [(self.resolve(ref, context=what), [ref]) for ref in spec]
        else:
            raise TaxonomyError(f"{what} must be a mapping of group -> [node ids] or a list of node ids, "
                                f"got {type(spec).__name__}")
        groups: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for group, refs in items:
            _check_str(group, f"group name in {what}")
            if isinstance(refs, str):
                refs = [refs]
            if not isinstance(refs, Sequence) or not refs:
                raise TaxonomyError(f"group {group!r} of {what} must list at least one node id")
            ids = []
            for ref in refs:
                node = self.resolve(ref, context=f"group {group!r} of {what}")
                if node in owner:
                    if owner[node] == group:
                        raise TaxonomyError(f"node {node!r} is listed twice in group {group!r} of {what}")
                    raise TaxonomyError(f"{what} is ambiguous: node {node!r} is listed in both "
                                        f"group {owner[node]!r} and group {group!r}")
                owner[node] = group
                ids.append(node)
            groups[group] = tuple(ids)
        if not groups:
            raise TaxonomyError(f"{what} has no groups")
        return groups

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

    # ------------------------------------------------------------------ labels
    def canonical(self, label: Any) -> str | None:
        """Node id for a node id, display name or alias (see :func:`normalize_label`); None if unknown."""
        if not isinstance(label, str):
            return None
        if label in self._parent:
            return label
        return self._keys.get(normalize_label(label))

    def resolve(self, label: Any, *, context: str = "") -> str:
        """Like :meth:`canonical` but raises TaxonomyError naming an unknown label."""
        node = self.canonical(label)
        if node is not None:
            return node
        where = f" in {context}" if context else ""
        close = difflib.get_close_matches(normalize_label(label), list(self._keys), n=3, cutoff=0.75) \
            if isinstance(label, str) else []
        hint = f" (close: {_quote_list(dict.fromkeys(self._keys[k] for k in close))})" if close else ""
        raise TaxonomyError(
            f"unknown label {label!r}{where}: not a node id, name or alias of taxonomy {self._name!r}{hint}")

    # ------------------------------------------------------------------ levels
    def _level_desc(self, level: LevelSpec) -> str:
        return f"level {level!r}" if isinstance(level, str) else "the given level"

    def level_groups(self, level: LevelSpec) -> dict[str, list[str]]:
        """``{group: [node ids]}`` of a named level, or of an ad-hoc list / mapping (validated)."""
        return {g: list(ids) for g, ids in self._groups(level).items()}

    def _groups(self, level: LevelSpec) -> dict[str, tuple[str, ...]]:
        if isinstance(level, str):
            if level not in self._levels:
                raise TaxonomyError(f"unknown level {level!r} in taxonomy {self._name!r}; "
                                    f"levels: {_quote_list(self._levels) or '(none)'}")
            return self._levels[level]
        return self._parse_level(level, "the given level")

    def _level_index(self, level: LevelSpec) -> tuple[dict, dict, dict]:
        """(node -> group mapping, node -> deepest listed group, node -> groups listed strictly below)."""
        if isinstance(level, str) and level in self._level_cache:
            return self._level_cache[level]
        groups = self._groups(level)
        listed = {n: g for g, ids in groups.items() for n in ids}
        deepest: dict[str, str | None] = {}
        for node in self._order:
            p = self._parent[node]
            deepest[node] = listed.get(node, None if p is None else deepest[p])
        below: dict[str, set[str]] = {n: set() for n in self._order}
        for node in reversed(self._order):
            p = self._parent[node]
            if p is not None:
                below[p] |= below[node]
                if node in listed:
                    below[p].add(listed[node])
        mapping = {n: deepest[n] for n in self._order
                   if deepest[n] is not None and below[n] <= {deepest[n]}}
        index = (mapping, deepest, below)
        if isinstance(level, str):
            self._level_cache[level] = index
        return index

    def _ungrouped_reason(self, node: str, level: LevelSpec) -> str:
        """Why ``node`` has no group at ``level`` (for error messages)."""
        _, deepest, below = self._level_index(level)
        order = list(self._groups(level))
        inner = [g for g in order if g in below[node]]
        g = deepest[node]
        if g is None and not inner:
            return f"it lies outside every group of {self._level_desc(level)} (groups: {_quote_list(order)})"
        if g is None:
            return (f"it is coarser than {self._level_desc(level)}: its subtree holds group(s) "
                    f"{_quote_list(inner)} and parts outside them")
        others = [x for x in inner if x != g]
        return (f"it is coarser than {self._level_desc(level)}: it falls in group {g!r} but its subtree "
                f"also holds group(s) {_quote_list(others)}")

    def level_map(self, level: LevelSpec) -> dict[str, str]:
        """``{node id: group}`` for every node whose whole subtree falls in one group, in pre-order.

        The group is the one whose listed node is the node's deepest ancestor-or-self; nodes
        above all groups, outside them, or spanning several groups are absent.
        """
        return dict(self._level_index(level)[0])

    def map_labels(self, labels: Iterable[Any], level: LevelSpec) -> list[str]:
        """Group of each label (id, name or alias) at ``level``; TaxonomyError names a label that
        is unknown or has no group there."""
        mapping = self._level_index(level)[0]
        seen: dict[Any, str] = {}
        out = []
        for label in labels:
            try:
                out.append(seen[label])
                continue
            except (KeyError, TypeError):
                pass
            node = self.resolve(label)
            if node not in mapping:
                raise TaxonomyError(f"label {label!r} (node {node!r}) has no group at "
                                    f"{self._level_desc(level)}: {self._ungrouped_reason(node, level)}")
            try:
                seen[label] = mapping[node]
            except TypeError:
                pass
            out.append(mapping[node])
        return out

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
        """The file-format dict (see module docstring); ``Taxonomy.from_dict`` round-trips it."""
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
                  default_name: str | None = None) -> "Taxonomy":
        """Build from the file-format dict; errors are prefixed with ``source`` (e.g. the file)."""
        try:
            return _from_dict(cls, data, default_name)
        except TaxonomyError as exc:
            if source is None:
                raise
            raise TaxonomyError(f"{source}: {exc}") from None

    @classmethod
    def flat(cls, labels: Iterable[str], name: str = "flat", *, root: str = "root") -> "Taxonomy":
        """One-level tree: ``root`` with one leaf per distinct label (first-seen order) and a
        level ``"classes"`` in which every label is its own group."""
        leaves = list(dict.fromkeys(_check_str(x, "label") for x in labels))
        if not leaves:
            raise TaxonomyError("Taxonomy.flat needs at least one label")
        if root in leaves:
            raise TaxonomyError(f"label {root!r} collides with the root id; pass another root=")
        return cls(name, root, {root: leaves}, levels={"classes": {x: [x] for x in leaves}})


# ---------------------------------------------------------------------- dict parsing
def _check_keys(item: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in item if k not in allowed]
    if unknown:
        raise TaxonomyError(f"{where}: unknown key(s) {_quote_list(map(str, unknown))} "
                            f"(allowed: {', '.join(allowed)})")


def _parse_aliases(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise TaxonomyError(f"{where}: 'aliases' must be a list of strings, got {type(value).__name__}")
    return [_check_str(a, f"{where}: alias") for a in value]


def _parse_nodes(items: Any, parent: str, where: str, acc: dict[str, Any]) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        raise TaxonomyError(f"{where}: expected a list of nodes, got {type(items).__name__}")
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, Mapping):
            raise TaxonomyError(f"{loc}: a node must be a mapping with an 'id' (or a bare id string), "
                                f"got {type(item).__name__} {item!r}")
        if "id" not in item:
            raise TaxonomyError(f"{loc}: node has no 'id' (keys: {_quote_list(map(str, item))})")
        node = _check_str(item["id"], f"{loc}: 'id'")
        loc = f"{loc} (node {node!r})"
        _check_keys(item, _NODE_KEYS, loc)
        if node in acc["where"]:
            raise TaxonomyError(f"duplicate node id {node!r} at {acc['where'][node]} and {loc}")
        acc["where"][node] = loc
        acc["children"].setdefault(parent, []).append(node)
        if item.get("name") is not None:
            acc["names"][node] = _check_str(item["name"], f"{loc}: 'name'")
        acc["aliases"][node] = _parse_aliases(item.get("aliases"), loc)
        _parse_nodes(item.get("children"), node, f"{loc}.children", acc)


def _from_dict(cls: type[Taxonomy], data: Any, default_name: str | None) -> Taxonomy:
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"top level must be a mapping with 'root' and 'nodes', got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, "top level")
    name = data.get("name", default_name)
    if name is None:
        raise TaxonomyError("missing 'name'")
    name = _check_str(name, "'name'")
    if "root" not in data:
        raise TaxonomyError("missing 'root' (the id of the tree's root node)")
    acc: dict[str, Any] = {"children": {}, "names": {}, "aliases": {}, "where": {}}
    root_spec = data["root"]
    if isinstance(root_spec, Mapping):
        _check_keys(root_spec, _ROOT_KEYS, "'root' (put the root's children under top-level 'nodes')")
        if "id" not in root_spec:
            raise TaxonomyError("'root' has no 'id'")
        root = _check_str(root_spec["id"], "'root' id")
        if root_spec.get("name") is not None:
            acc["names"][root] = _check_str(root_spec["name"], "'root' name")
        acc["aliases"][root] = _parse_aliases(root_spec.get("aliases"), "'root'")
    else:
        root = _check_str(root_spec, "'root'")
    acc["where"][root] = "'root'"
    _parse_nodes(data.get("nodes"), root, "nodes", acc)
    levels = data.get("levels") or {}
    if not isinstance(levels, Mapping):
        raise TaxonomyError(f"'levels' must be a mapping of level name -> groups, got {type(levels).__name__}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise TaxonomyError("'description' must be a string")
    return cls(name, root, acc["children"], names=acc["names"], aliases=acc["aliases"],
               levels=levels, description=description)


# ---------------------------------------------------------------------- files
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue
            if duplicate:
                raise TaxonomyError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TaxonomyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_text(text: str, suffix: str, source: str) -> Any:
    try:
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except TaxonomyError as exc:
        raise TaxonomyError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{source}: invalid YAML: {exc}") from None


def _read_taxonomy_file(path: Path) -> Taxonomy:
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise TaxonomyError(f"{path}: a taxonomy file must end in {', '.join(_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaxonomyError(f"taxonomy file not found: {path} "
                            f"(built-in taxonomies: {', '.join(builtin_taxonomies())})") from None
    except UnicodeDecodeError:
        raise TaxonomyError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = _parse_text(text, suffix, str(path))
    if data is None:
        raise TaxonomyError(f"{path}: file is empty")
    return Taxonomy.from_dict(data, source=str(path), default_name=path.stem)


def _builtin_dir() -> Any:
    return resources.files("dermlearn.taxonomy").joinpath("builtin")


def builtin_taxonomies() -> list[str]:
    """Names of the taxonomies shipped with dermlearn (``load_taxonomy(name)`` loads one)."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> Taxonomy:
    source = f"built-in taxonomy {name!r}"
    text = _builtin_dir().joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return Taxonomy.from_dict(_parse_text(text, ".yaml", source), source=source, default_name=name)


def load_taxonomy(spec: Taxonomy | str | os.PathLike | Mapping[str, Any]) -> Taxonomy:
    """A Taxonomy from itself, a built-in name (``"dermatology"``), a .yaml/.yml/.json path,
    or a file-format dict."""
    if isinstance(spec, Taxonomy):
        return spec
    if isinstance(spec, Mapping):
        return Taxonomy.from_dict(spec)
    if isinstance(spec, str) and spec.strip().lower() in builtin_taxonomies():
        return _load_builtin(spec.strip().lower())
    if isinstance(spec, (str, os.PathLike)):
        path = Path(os.fspath(spec))
        if path.suffix.lower() in _SUFFIXES or path.exists() or not isinstance(spec, str) \
                or os.sep in str(spec) or "/" in str(spec):
            return _read_taxonomy_file(path)
        raise TaxonomyError(f"unknown taxonomy {spec!r}: built-in taxonomies are "
                            f"{', '.join(builtin_taxonomies())}; or pass a .yaml/.yml/.json file")
    raise TaxonomyError(f"cannot load a taxonomy from {type(spec).__name__} {spec!r}")

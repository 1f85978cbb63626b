"""Named levels of a taxonomy: parsing a level spec into groups and mapping nodes to groups.

A level is ``{group: [node ids]}`` (or a list of node ids, each its own group). A node
belongs to the group whose listed node is its deepest ancestor-or-self, provided no listed
node of another group lies inside its subtree (such a node is coarser than the level and
has no group).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.labels import _check_str, _quote_list

__all__ = ["LevelSpec", "LevelsMixin"]

#: A level: a level name, a list of node ids (one group each), or ``{group: [node ids]}``.
LevelSpec = str | Sequence[str] | Mapping[str, Sequence[str]]


class LevelsMixin:
    """The level methods of :class:`~dermlearn.taxonomy.tree.Taxonomy`.

    Relies on the tree's ``_name``, ``_order`` (node ids in pre-order), ``_parent``
    (node -> parent id or None), ``_levels`` (parsed named levels), ``_level_cache`` and
    :meth:`resolve`.
    """

    _name: str
    _order: tuple[str, ...]
    _parent: dict[str, str | None]
    _levels: dict[str, dict[str, tuple[str, ...]]]
    _level_cache: dict[str, tuple[dict, dict, dict]]

    def _parse_level(self, spec: Any, what: str) -> dict[str, tuple[str, ...]]:
        """``{group: (node ids)}`` of a level spec, labels resolved; ``what`` names it in errors."""
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

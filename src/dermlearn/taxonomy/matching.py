"""Matching labels to a taxonomy's nodes: a label's node, the nearest known names to an unknown
label, every name a tree accepts, and a copy of a tree extended by a user's aliases.

Labels match ignoring case, accents and punctuation (:func:`~dermlearn.taxonomy.labels.
normalize_label`).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Self

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.labels import _check_str, _quote_list, normalize_label

__all__ = ["LabelsMixin"]


class LabelsMixin:
    """The label methods of :class:`~dermlearn.taxonomy.tree.Taxonomy`.

    Relies on the tree's ``_name``, ``_root``, ``_order`` (node ids in pre-order), ``_parent``,
    ``_names``, ``_aliases``, ``_keys`` (normalised label -> node id) and ``to_dict``.
    """

    _name: str
    _root: str
    _order: tuple[str, ...]
    _parent: dict[str, str | None]
    _names: dict[str, str]
    _aliases: dict[str, tuple[str, ...]]
    _keys: dict[str, str]

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
        close = self.nearest(label, cutoff=0.75) if isinstance(label, str) else []
        hint = f" (close: {_quote_list(dict.fromkeys(self.canonical(c) for c in close))})" if close else ""
        raise TaxonomyError(
            f"unknown label {label!r}{where}: not a node id, name or alias of taxonomy {self._name!r}{hint}")

    def nearest(self, label: str, n: int = 3, cutoff: float = 0.5) -> list[str]:
        """Up to ``n`` known labels (ids, display names or aliases, as written in the tree) most
        like ``label``, best first, each naming a different node; [] when none is close enough
        (``cutoff``: difflib's similarity ratio, 0..1)."""
        key = normalize_label(label)
        spelled = {normalize_label(text): text for node in self._order
                   for text in (node, self._names.get(node, node), *self._aliases.get(node, ()))}
        found = difflib.get_close_matches(key, list(self._keys), n=4 * n, cutoff=cutoff)
        by_node: dict[str, str] = {}
        for match in found:
            by_node.setdefault(self._keys[match], spelled.get(match, match))
        return list(by_node.values())[:n]

    def known_names(self) -> list[tuple[str, str, str]]:
        """Every label this tree accepts, as ``(label, kind, node id)`` rows in tree order:
        kind is ``id``, ``name`` or ``alias``. Matching ignores case, accents and punctuation."""
        rows = []
        for node in self._order:
            rows.append((node, "id", node))
            if node in self._names:
                rows.append((self._names[node], "name", node))
            rows += [(a, "alias", node) for a in self._aliases.get(node, ())]
        return rows

    def with_aliases(self, aliases: Mapping[str, str], *, source: str = "aliases") -> Self:
        """A copy of this tree that also accepts ``aliases`` (``{label: node id, name or alias}``),
        e.g. a user's ``histo_dx`` spellings; the copy keeps its name, and its ``to_dict`` holds
        the added aliases, so a run or model trained with it reads the same labels later.
        Raises TaxonomyError naming ``source`` for a target that is not in the tree or a label
        that already means another node."""
        added: dict[str, list[str]] = {}
        for label, target in aliases.items():
            label = _check_str(label if not isinstance(label, (int, float)) else str(label),
                               f"{source}: alias")
            if not isinstance(target, str):
                raise TaxonomyError(f"{source}: alias {label!r} must map to a node id (a string), "
                                    f"got {target!r}")
            try:
                node = self.resolve(target, context=f"{source} (target of {label!r})")
            except TaxonomyError as exc:
                raise TaxonomyError(f"{exc}; list the known names with 'dermlearn taxonomy "
                                    f"aliases'") from None
            known = self.canonical(label)
            if known is not None and known != node:
                raise TaxonomyError(f"{source}: alias {label!r} -> {target!r} clashes: {label!r} "
                                    f"already means node {known!r} of taxonomy {self._name!r}")
            if known is None:
                added.setdefault(node, []).append(label)
        if not added:
            return self
        data = self.to_dict()
        by_id = {}

        def index(node: dict) -> None:
            by_id[node["id"]] = node
            for child in node.get("children", ()):
                index(child)

        for top in data["nodes"]:
            index(top)
        if isinstance(data["root"], str):
            data["root"] = {"id": data["root"]}
        by_id[self._root] = data["root"]
        for node, labels in added.items():
            by_id[node]["aliases"] = [*by_id[node].get("aliases", ()), *labels]
        return type(self).from_dict(data, source=source)

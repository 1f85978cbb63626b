"""The taxonomy file format: parsing its dict (as read from YAML or JSON) into a Taxonomy.

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

:meth:`Taxonomy.to_dict <dermlearn.taxonomy.tree.Taxonomy.to_dict>` writes this dict and
:meth:`Taxonomy.from_dict <dermlearn.taxonomy.tree.Taxonomy.from_dict>` reads it (through
:func:`_from_dict` here); reading files is :mod:`dermlearn.taxonomy.io`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.labels import _check_str, _quote_list

if TYPE_CHECKING:
    from dermlearn.taxonomy.tree import Taxonomy

_TOP_KEYS = ("name", "description", "root", "nodes", "levels")
_NODE_KEYS = ("id", "name", "aliases", "children")
_ROOT_KEYS = ("id", "name", "aliases")


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

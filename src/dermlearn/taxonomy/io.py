"""Reading taxonomies: YAML/JSON files, the built-in trees shipped with dermlearn, and
:func:`load_taxonomy`, which accepts any of those (or a tree, or a file-format dict).

The file format is described in :mod:`dermlearn.taxonomy.schema`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy.tree import Taxonomy

__all__ = ["builtin_taxonomies", "load_taxonomy", "read_aliases"]

_SUFFIXES = (".yaml", ".yml", ".json")


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


@cache
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


def read_aliases(spec: str | os.PathLike | Mapping[str, str]) -> dict[str, str]:
    """A user's label aliases, ``{label: node id, name or alias}``: a mapping, or a YAML (or
    JSON) file of ``label: node_id`` lines (``Pigmented benign keratosis: bkl``). The labels
    are not checked here: :meth:`Taxonomy.with_aliases` checks them against a tree."""
    if isinstance(spec, Mapping):
        return {str(k): v for k, v in spec.items()}
    path = Path(os.fspath(spec)).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaxonomyError(f"alias file not found: {path}") from None
    except UnicodeDecodeError:
        raise TaxonomyError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = _parse_text(text, ".json" if path.suffix.lower() == ".json" else ".yaml", str(path))
    if data is None:
        return {}
    if not isinstance(data, Mapping) or any(not isinstance(v, str) for v in data.values()):
        raise TaxonomyError(f"{path}: an alias file holds 'label: node_id' lines (a mapping of "
                            f"strings), e.g.\n  Pigmented benign keratosis: bkl\n  histo SK: "
                            f"seborrheic_keratosis")
    return {str(k): v for k, v in data.items()}

"""The architecture, checked from the source: every run-time import in src/dermlearn goes to a
lower layer, and no module imports itself through others (issue 20).

Imports under ``if TYPE_CHECKING:`` are for type checkers only and are skipped; imports inside
functions run too and are checked like the others.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "dermlearn"

#: Layers, low to high; a part may import only its own and lower layers.
LAYERS = [["errors", "__init__"], ["atomic", "cache_dirs", "parallel"], ["taxonomy"], ["data"],
          ["splits"], ["models"], ["inference"], ["explain"], ["evaluation"], ["training"],
          ["serving"], ["demo"], ["cli"]]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, name: str | None = None) -> set[str]:
    """dermlearn modules ``path`` (module ``name``) imports at run time (relative imports
    resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
               and "TYPE_CHECKING" in ast.unparse(branch.test) for node in ast.walk(branch)}
    me = (name or _module_name(path)).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import submodule`` imports the submodule
            subs = {f"{module}.{a.name}" for a in node.names}
            found |= {module} | {s for s in subs if _exists(s)}
    return {m for m in found if m == "dermlearn" or m.startswith("dermlearn.")}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def _part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_part_has_a_layer(graph):
    unplaced = sorted({_part(m) for m in graph} - set(LAYER))
    assert not unplaced, f"top-level parts with no layer: {unplaced} (add them to LAYERS)"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{me} -> {target}" for me, targets in graph.items() for target in targets
                  if _part(target) != _part(me) and _part(target) != "__init__"
                  and LAYER[_part(target)] >= LAYER[_part(me)])


def test_every_runtime_import_goes_down(graph):
    upward = _upward(graph)
    assert not upward, "imports that go up or sideways a layer:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules(graph):
    """Tarjan's strongly connected components of the module graph: each must be one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    edges = defaultdict(set, {m: {t for t in ts if t in graph and t != m}
                              for m, ts in graph.items()})

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check can fail: a lazy import of the HTTP layer from inference is found, one under
    TYPE_CHECKING is not."""
    module = tmp_path / "probe.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from dermlearn.training.run import train\n"
                      "def f():\n    from ..serving import app\n")
    imports = _runtime_imports(module, "dermlearn.inference.probe")
    assert imports == {"dermlearn.serving", "dermlearn.serving.app"}
    assert _upward({"dermlearn.inference.probe": imports}) == [
        "dermlearn.inference.probe -> dermlearn.serving",
        "dermlearn.inference.probe -> dermlearn.serving.app"]


def test_import_dermlearn_is_light_and_has_the_front_door():
    """``import dermlearn`` loads no heavy library; the front-door names resolve on use."""
    import subprocess
    import sys

    code = ("import sys, dermlearn; heavy = [m for m in ('torch', 'pandas', 'lightning') "
            "if m in sys.modules]; print(heavy); "
            "print(sorted(n for n in ('load', 'make_splits', 'train', 'Predictor', 'predict', "
            "'evaluate') if callable(getattr(dermlearn, n))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == str(sorted(["load", "make_splits", "train", "Predictor", "predict",
                                 "evaluate"]))

"""The architecture, checked from the code's own imports (DESIGN, "Layout"): imports point
down the layers, ``search/`` and ``transfer/`` never import each other, ``runtime/`` never
imports ``store/``, ``report/`` neither runs nor records anything, MLflow and Ray stay out of
``trainables/``, and no module imports itself back through others (no cycle), function-level
imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "trainables", "search_spaces")
# lowest first; a unit may import its own layer's units or lower ones, never a higher one
LAYERS: list[set[str]] = [
    {"trainables"},
    {"search_spaces"},
    {"orchestrator.errors", "orchestrator.redact", "orchestrator.display", "orchestrator.config",
     "orchestrator.domain", "orchestrator.files", "orchestrator.__init__"},
    {"orchestrator.runtime"},
    {"orchestrator.store"},
    {"orchestrator.search", "orchestrator.transfer"},
    {"orchestrator.report"},
    {"orchestrator.commands", "orchestrator.train", "orchestrator.predict"},
    {"orchestrator.cli"},
]
PEERS_APART = [("orchestrator.search", "orchestrator.transfer")]
FORBIDDEN = {"trainables": ("mlflow", "ray", "optuna"), "orchestrator.report": ("mlflow", "ray"),
             "orchestrator.runtime": ("mlflow",), "orchestrator.domain": ("mlflow", "ray", "torch")}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__") if name.endswith(".__init__") and name.count(".") > 1 else name


def unit(module: str) -> str:
    """The layer unit a module belongs to: orchestrator's subpackages and top modules, or a package."""
    parts = module.split(".")
    if parts[0] != "orchestrator":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "orchestrator.__init__"


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The modules ``tree`` imports, absolute; ``from a import b`` counts a.b where b is a module.
    Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""
    names: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            names |= _imported(ast.Module(body=node.orelse, type_ignores=[]), module, is_package)
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                parts = module.split(".")
                keep = len(parts) - node.level + int(is_package)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        names |= _imported(node, module, is_package)
    return names


def imports() -> dict[str, set[str]]:
    """Every module of the packages and the modules of the packages it imports (anywhere in it)."""
    paths = {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}
    return {m: {n for n in _imported(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py")
                if n in paths or not ours(n)} for m, p in paths.items()}


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def layer_of(u: str) -> int:
    for i, layer in enumerate(LAYERS):
        if u in layer:
            return i
    raise AssertionError(f"{u} is in no layer of tests/test_layers.py: give it one")


def test_every_import_points_down_and_peers_stay_apart():
    wrong = []
    for module, names in imports().items():
        src = unit(module)
        for name in filter(ours, names):
            dst = unit(name)
            if dst == src:
                continue
            if layer_of(dst) > layer_of(src):
                wrong.append(f"{module} imports {name}: a higher layer")
            if (src, dst) in PEERS_APART or (dst, src) in PEERS_APART:
                wrong.append(f"{module} imports {name}: search and transfer stay apart")
    assert not wrong, "\n".join(wrong)


def test_the_libraries_each_layer_keeps_out():
    wrong = [f"{module} imports {name}" for module, names in imports().items() for name in names
             for u, banned in FORBIDDEN.items() if unit(module) == u and name.split(".")[0] in banned]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph = {m: {n for n in names if n in imports_cache} for m, names in imports_cache.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


imports_cache = imports()


DOWN = test_every_import_points_down_and_peers_stay_apart


@pytest.mark.parametrize("src,dst,check", [
    ("orchestrator.runtime.session", "orchestrator.store.tracking", DOWN),
    ("orchestrator.search.runner", "orchestrator.transfer.analysis", DOWN),
    ("trainables.serving", "mlflow", test_the_libraries_each_layer_keeps_out),
    ("orchestrator.domain", "orchestrator.transfer.analysis", test_no_import_cycle_between_modules)])
def test_each_check_fails_on_a_planted_wrong_import(src, dst, check, monkeypatch):
    """The checks fail on the imports they forbid (a check that cannot fail means nothing)."""
    planted = {**imports_cache, src: imports_cache[src] | {dst}}
    monkeypatch.setattr(__import__(__name__, fromlist=["imports"]), "imports", lambda: planted)
    monkeypatch.setattr(__import__(__name__, fromlist=["imports_cache"]), "imports_cache", planted)
    with pytest.raises(AssertionError):
        check()

"""The house rule of the package (docs/ARCHITECTURE.md): every module belongs to one layer, and
imports only point to its own layer or lower, with no cycles between modules.

The layer map and the allow-list below are data: to place a new folder, add it to LAYERS; when you
remove a violation, delete its line from ALLOWED (the test fails while a listed import no longer
exists, so the list only shrinks). Imports are read with ast from every module, including imports
inside functions (they still run), except those under `if TYPE_CHECKING:`.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "aiwriter"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Lowest first. A pattern names a module or a package (and everything in it); "aiwriter.*" is
# aiwriter/__init__.py and every module directly in aiwriter/ (the core). The most specific
# matching pattern decides a module's layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("aiwriter.errors", "aiwriter.paths")),
    ("models", ("aiwriter.models",)),
    ("speed", ("aiwriter.speed",)),
    ("core", ("aiwriter.*",)),
    ("features", ("aiwriter.story", "aiwriter.store", "aiwriter.hub", "aiwriter.training")),
    ("server", ("aiwriter.server",)),
    ("commands", ("aiwriter.commands", "aiwriter.__main__")),
]

# Known violations, each with the issue item that removes it. Only delete lines from this list.
ALLOWED: dict[tuple[str, str], str] = {
}


# ---------------------------------------------------------------------------------- reading imports

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree (function bodies too), skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        stack.extend(children)


def resolve(name: str, modules) -> str | None:
    """The module of ours that importing `name` loads: itself, else its longest known prefix."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, source: str, modules, is_package: bool = False) -> set[str]:
    found: set[str] = set()
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level-1 more
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from pkg import sub` loads the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                r = resolve(t, modules)
                if r and r != module:
                    found.add(r)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p.read_text(encoding="utf-8"), modules, p.name == "__init__.py") for m, p in modules.items()}


# ---------------------------------------------------------------------------------- the rule

def _matches(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        parent = pattern[:-2]
        return module == parent or module.startswith(parent + ".") and "." not in module[len(parent) + 1:]
    return module == pattern or module.startswith(pattern + ".")


def layer_of(module: str) -> int | None:
    best = None  # (specificity, layer index)
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if _matches(pattern, module):
                specificity = (len(pattern.rstrip(".*").split(".")), not pattern.endswith(".*"))
                if best is None or specificity > best[0]:
                    best = (specificity, index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return sorted(out)


def without_allowed(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in targets if (a, b) not in ALLOWED} for a, targets in graph.items()}


# ---------------------------------------------------------------------------------- tests

def test_every_module_has_a_layer():
    unplaced = [m for m in all_modules() if layer_of(m) is None]
    assert not unplaced, f"modules outside every layer (add their folder to LAYERS in {__file__}): {unplaced}"


def test_imports_point_down():
    bad = upward_imports(without_allowed(import_graph()))
    names = [name for name, _ in LAYERS]
    assert not bad, "upward imports (docs/ARCHITECTURE.md):\n" + "\n".join(
        f"  {a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})" for a, b in bad)


def test_no_import_cycles():
    found = cycles(without_allowed(import_graph()))
    assert not found, "import cycles between modules:\n" + "\n".join(f"  {' <-> '.join(c)}" for c in found)


def test_allow_list_only_shrinks():
    graph = import_graph()
    stale = [f"  {a} -> {b}: {why}" for (a, b), why in ALLOWED.items() if b not in graph.get(a, ())]
    assert not stale, "these allowed imports are gone: delete them from ALLOWED in tests/test_layers.py\n" + "\n".join(stale)


def test_the_checker_catches_what_it_should():
    modules = {"aiwriter", "aiwriter.errors", "aiwriter.engine", "aiwriter.models", "aiwriter.models.rwkv4",
               "aiwriter.server", "aiwriter.server.app", "aiwriter.store", "aiwriter.store.db"}
    assert layer_of("aiwriter.errors") < layer_of("aiwriter.models.rwkv4") < layer_of("aiwriter.engine") \
        < layer_of("aiwriter.store.db") < layer_of("aiwriter.server.app") < layer_of("aiwriter.__main__")
    assert layer_of("aiwriter.engine") == layer_of("aiwriter") and layer_of("aiwriter.unknown.x") is None
    src = "import os\ndef f():\n    from aiwriter.server import app\nfrom . import rwkv4\nfrom ..errors import AIWriterError\n" \
          "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aiwriter.engine import Model\n"
    got = imports_of("aiwriter.models.rwkv4x", src, modules | {"aiwriter.models.rwkv4x"})
    assert got == {"aiwriter.server.app", "aiwriter.models.rwkv4", "aiwriter.errors"}
    graph = {"aiwriter.models.rwkv4": {"aiwriter.server.app"}, "aiwriter.server.app": {"aiwriter.store.db"},
             "aiwriter.store.db": {"aiwriter.store"}, "aiwriter.store": {"aiwriter.store.db"},
             "aiwriter.engine": {"aiwriter.errors"}}
    assert upward_imports(graph) == [("aiwriter.models.rwkv4", "aiwriter.server.app")]
    assert cycles(graph) == [["aiwriter.store", "aiwriter.store.db"]]

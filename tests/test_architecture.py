"""The package's imports go one way: every ``talker`` module imports only modules of its own layer
or below (``LAYERS``), and no set of modules imports itself round a circle. Imports inside
functions count: they run too, only later."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "talker"

# lowest first: a module may import from its own layer (without a circle) and the layers below
LAYERS = [
    ("talker.errors", "talker.defaults"),
    ("talker.audio", "talker.pose", "talker.watermark"),
    ("talker.vad", "talker.video"),
    ("talker.frontends", "talker.data"),
    ("talker.models",),
    ("talker.hub",),
    ("talker.pipelines",),
    ("talker.training",),
    ("talker.evaluation",),
    ("talker.cli", "talker.__main__"),
]


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module → the talker modules it imports (a package's ``__init__`` counts when a module outside
    the package imports anything in it, since Python runs it first)."""
    graph = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                target = ".".join(x for x in (base, node.module) if x)
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for full in names:
                parts = full.split(".")
                for k in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:k])
                    outside = not name.startswith(prefix + ".") and prefix != name
                    if prefix in mods and prefix != "talker" and (outside or k == len(parts)) and prefix != name:
                        targets.add(prefix)
        graph[name] = targets
    return graph


def layer(name: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [m for m in modules() if m != "talker" and layer(m) is None] == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} imports {b}" for a, targets in sorted(graph.items()) if a != "talker"
            for b in sorted(targets) if layer(b) > layer(a)]


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(modules())) == []


def test_no_import_circle():
    assert cycles(import_graph(modules())) == []


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "talker"
    (pkg / "pipelines").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hub.py").write_text("from .pipelines import loading\n")
    (pkg / "pipelines" / "__init__.py").write_text("")
    (pkg / "pipelines" / "loading.py").write_text("def f():\n    from ..hub import g\n")
    graph = import_graph(modules(pkg))
    assert cycles(graph) == [["talker.hub", "talker.pipelines.loading"]]
    assert upward_imports(graph) == ["talker.hub imports talker.pipelines", "talker.hub imports talker.pipelines.loading"]


@pytest.mark.parametrize("name", ["talker.pipelines.dae_talker.pipeline_dae_talker"])
def test_the_pipeline_reads_as_the_method_in_at_most_300_lines(name):
    assert len(modules()[name].read_text().splitlines()) <= 300

"""The package's import graph: no circles, and every stage imports only the stages before it.

Reads the source with ``ast`` (nothing is imported), so a lazy import inside a function counts as
much as one at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ifbeta"

# The pipeline's order; a module may import its own stage and earlier ones, never a later one.
STAGES = ["core", "data", "models", "influence", "policy", "selection", "subsets", "pipeline", "distill",
          "evaluation", "cli"]
CORE = {"ifbeta", "ifbeta.config", "ifbeta.store", "ifbeta.integrity", "ifbeta.progress", "ifbeta.errors",
        "ifbeta.threads", "ifbeta.atomic"}
VIEWS = {"ifbeta.embed", "ifbeta.nn_descent", "ifbeta.plots"}  # side outputs: they may import the core and data only


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports (a package's own ``__init__`` when a name is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def stage_of(name: str) -> int:
    if name in CORE:
        return 0
    if name in VIEWS or name.rpartition(".")[0] in VIEWS:
        return 1.5  # after data, before models
    if name == "ifbeta.pipeline":
        return STAGES.index("pipeline")
    top = name.split(".")[1]
    if top not in STAGES:
        raise AssertionError(f"{name} belongs to no stage: add it to STAGES, CORE or VIEWS in this test")
    return STAGES.index(top)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circles():
    assert cycles(graph()) == []


def test_stages_import_only_earlier_stages():
    upward = [f"{name} (stage {stage_of(name)}) imports {target} (stage {stage_of(target)})"
              for name, targets in graph().items() for target in sorted(targets)
              if stage_of(target) > stage_of(name)]
    assert upward == []


def test_views_import_only_the_core_and_data():
    edges = graph()
    views = [name for name in edges if name in VIEWS or name.rpartition(".")[0] in VIEWS]
    assert "ifbeta.plots.maps" in views
    wrong = [f"{name} imports {target}" for name in views for target in edges[name]
             if target not in CORE and not target.startswith("ifbeta.data") and target not in views]
    assert wrong == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_circles(edges, expected):
    assert cycles(edges) == expected


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ifbeta.policy import bilevel\n")
    assert imports_of("ifbeta.x", module, {"ifbeta.policy.bilevel", "ifbeta.policy"}) == {"ifbeta.policy.bilevel"}
    module.write_text("from . import beta\n")
    assert imports_of("ifbeta.policy.preview", module, {"ifbeta.policy.beta"}) == {"ifbeta.policy.beta"}


def test_a_later_stage_import_is_reported():
    assert stage_of("ifbeta.distill.student") > stage_of("ifbeta.models.teachers")
    with pytest.raises(AssertionError, match="no stage"):
        stage_of("ifbeta.somewhere.new")

"""No import circles in `app` or `training`: the graph of intra-project imports (module level and
inside functions alike, read with ast, nothing imported) has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "training")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `name` (at `path`) imports anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg.
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        for target in targets:
            # the longest project module the dotted name lies in (a.b.c -> a.b if c is a name)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    # A package's __init__ runs before any of its modules: `a.b` also depends on `a`.
    for name in graph:
        parent = name.rpartition(".")[0]
        if parent in graph:
            graph[name].add(parent)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [m0, m1, ..., m0], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "training").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "a.py").write_text("def f():\n    from app import b\n")
    (tmp_path / "app" / "b.py").write_text("from .c import x\n")
    (tmp_path / "app" / "c.py").write_text("import app.a\nx = 1\n")
    (tmp_path / "training" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["app.a"] == {"app", "app.b"}
    assert graph["app.b"] == {"app", "app.c"}
    assert find_cycle(graph) == ["app.a", "app.b", "app.c", "app.a"]


def test_no_import_cycles():
    graph = import_graph()
    assert "training.cli" in graph and "app.inference" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_app_never_imports_training():
    graph = import_graph()
    wrong = {
        (m, d)
        for m, deps in graph.items()
        if m.startswith("app")
        for d in deps
        if d.startswith("training")
    }
    assert not wrong, f"app imports training: {sorted(wrong)}"

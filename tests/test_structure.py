"""The layering: `jobs` -> `stylegan` only, nothing in `stylegan` imports upward, and the module graph is acyclic
(imports anywhere in a module count, so no import hidden in a function can close a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def imports(path: Path, package: str) -> set[str]:
    """Modules of the project that `path` imports, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("stylegan", "jobs", "benchmarks", "tests")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    files = [p for pkg in ("stylegan", "jobs") for p in (REPO / pkg).rglob("*.py")]
    names = {module_name(p): p for p in files}
    return {name: {m for m in imports(p, name) if m in names and m != name} for name, p in names.items()}


def test_jobs_import_stylegan_and_stylegan_imports_nothing_above_it():
    for path in (REPO / "stylegan").rglob("*.py"):
        upward = {m for m in imports(path, "stylegan") if not m.startswith("stylegan")}
        assert not upward, f"{path.relative_to(REPO)} imports {sorted(upward)}"
    for path in (REPO / "jobs").rglob("*.py"):
        outside = {m for m in imports(path, "jobs") if m.split(".")[0] not in ("stylegan", "jobs")}
        assert not outside, f"{path.relative_to(REPO)} imports {sorted(outside)}"


def test_the_module_graph_is_acyclic():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert len(edges) > 30

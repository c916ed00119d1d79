"""The layering: `jobs` -> `stylegan` only; inside `stylegan`, each room imports only the rooms below it (ROOMS); the
network code imports nothing of the project outside itself; the module graph is acyclic (imports anywhere in a
module count, so no import hidden in a function can close a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

BASE = "base"  # the top-level modules: errors, files, progress, seeds, images, cluster and process groups, run folders
# Each room and the rooms it may import from (its own always). Read top-down, this is the house: networks at the
# bottom, knowing nothing of files, clusters or errors; the jobs' library code at the top.
ROOMS = {
    "stylegan.models": set(),
    BASE: set(),
    "stylegan.formats": {"stylegan.models", BASE},
    "stylegan.data": {BASE},
    "stylegan.generate": {"stylegan.models", BASE},
    "stylegan.metrics": {"stylegan.models", "stylegan.formats", "stylegan.data", "stylegan.generate", BASE},
    "stylegan.train": {"stylegan.models", "stylegan.formats", "stylegan.data", "stylegan.generate", BASE},
    "stylegan.projection": {"stylegan.models", "stylegan.data", "stylegan.generate", "stylegan.metrics", BASE},
    "stylegan.sampling": {"stylegan.models", "stylegan.generate", "stylegan.projection", BASE},
    "stylegan.evaluation": {"stylegan.models", "stylegan.formats", "stylegan.generate", "stylegan.metrics", BASE},
}


def imports(path: Path) -> set[str]:
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


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("stylegan", "jobs") for p in (REPO / pkg).rglob("*.py")}


def room(module: str) -> str | None:
    """The room a `stylegan` module lives in; None for the package itself."""
    if module == "stylegan":
        return None
    return next((r for r in ROOMS if r != BASE and (module == r or module.startswith(r + "."))), BASE)


def graph() -> dict[str, set[str]]:
    names = modules()
    return {name: {m for m in imports(p) if m in names and m != name} for name, p in names.items()}


def test_every_stylegan_module_is_in_a_room_and_the_base_is_small():
    rooms = {name: room(name) for name in modules() if name.startswith("stylegan.")}
    base = sorted(n for n, r in rooms.items() if r == BASE)
    assert all(n.count(".") == 1 for n in base), f"sub-packages outside ROOMS: {base}"
    assert len(base) <= 9, f"the base holds {len(base)} modules: give the new ones a room ({base})"


def test_each_room_imports_only_the_rooms_below_it():
    for name, targets in graph().items():
        if not name.startswith("stylegan"):
            continue
        own = room(name)
        allowed = ROOMS.get(own, set()) | {own}
        for target in targets:
            assert target.startswith("stylegan"), f"{name} imports {target}: stylegan imports nothing above it"
            assert room(target) in allowed, f"{name} ({own}) imports {target} ({room(target)})"


def test_the_network_code_imports_nothing_about_files_clusters_or_errors():
    for name, path in modules().items():
        if room(name) == "stylegan.models":
            assert not {m for m in imports(path) if not m.startswith("stylegan.models")}, name


def test_jobs_import_only_stylegan_and_jobs():
    for name, path in modules().items():
        if name.startswith("jobs"):
            outside = {m for m in imports(path) if m.split(".")[0] not in ("stylegan", "jobs")}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_benchmarks_import_no_test_helpers_and_no_private_names():
    for path in (REPO / "benchmarks").glob("*.py"):
        found = imports(path)
        assert not {m for m in found if m.startswith("tests")}, f"{path.name} imports test helpers"
        private = {m for m in found if m.startswith("stylegan") and m.rsplit(".", 1)[-1].startswith("_")}
        assert not private, f"{path.name} imports private names {sorted(private)}"


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


def test_every_slurm_script_finds_the_suite_with_the_same_lines():
    """The lines that find common.sh run before anything can be sourced, so each sbatch script carries them: they
    must stay one block, changed everywhere at once."""
    blocks = {}
    for script in sorted((REPO / "slurm").glob("*.sh")):
        lines = script.read_text().splitlines()
        if script.name != "common.sh":
            first = next(i for i, line in enumerate(lines) if line.startswith("# Slurm runs a copy"))
            last = next(i for i, line in enumerate(lines) if line.startswith("source "))
            blocks[script.name] = lines[first:last + 1]
    assert len(blocks) >= 5
    assert all(block == blocks["train.sh"] for block in blocks.values()), [n for n, b in blocks.items()
                                                                          if b != blocks["train.sh"]]

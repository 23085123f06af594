"""The house's rules, checked on the code itself: no import cycles between the project's modules,
no file over 400 lines, storage/ the only package that imports zarr, tasks/ never importing flows/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "storage", "bench")


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file (a late import inside a function counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycles_and_one_way_layers():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    assert {"tasks.cluster", "storage"} <= graph["tasks.kauto"] | graph["tasks.cluster"]  # the graph is read at all
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            assert state.get(n) != 1, f"import cycle: {' -> '.join(trail + [m, n])}"
            if n not in state:
                visit(n, trail + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    for m, deps in graph.items():
        if m.startswith(("tasks", "storage")):
            assert not any(d.startswith(("flows", "bench")) for d in deps), f"{m} imports a higher layer: {deps}"


def test_files_are_short_and_only_storage_touches_zarr():
    for m, p in modules().items():
        assert len(p.read_text().splitlines()) <= 400, f"{p.relative_to(ROOT)} is over 400 lines"
        if not m.startswith("storage"):
            assert "zarr" not in {n.split(".")[0] for n in _imported_names(p)}, f"{m} imports zarr"


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names

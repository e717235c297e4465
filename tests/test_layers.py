"""The harness's imports go one way (docs/design.md "Harness layers"): walked with ``ast``, no circle,
no import of a higher rank.  Every import counts, a function's lazy ones included."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rnnbench"
IMPLS = PACKAGE.parent / "impls"
# rank of each module (a package's submodules take the package's rank); docs/design.md "Harness layers"
RANKS = {
    "cli": 5, "__main__": 5,
    "sweep": 4, "report": 4, "recommend": 4, "recommend_measure": 4, "ray_executor": 4, "worker": 4, "history": 4,
    "jobs": 3, "train": 3, "measure": 3, "tasks": 3, "instructions": 3,
    "store": 2, "results": 2, "stability": 2, "crossover": 2, "contention": 2,
    "cost": 1, "suites": 1, "config": 1, "__init__": 1, "ragged": 1, "callgrind": 1,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)


def harness_imports(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``rnnbench.x`` and relative imports), at any depth;
    the package is the folder ``root`` (rnnbench, or impls)."""
    top_name = root.name
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                    mod = ".".join([*base, *([node.module] if node.module else [])])
                elif node.module and node.module.split(".")[0] == top_name:
                    mod = node.module[len(top_name) + 1:] if node.module != top_name else ""
                else:
                    continue
                if node.module is None or not mod:  # from . import x, y: each name may be a module
                    targets |= {f"{mod}.{a.name}".strip(".") for a in node.names}
                else:
                    targets.add(mod)
            elif isinstance(node, ast.Import):
                targets |= {a.name[len(top_name) + 1:] for a in node.names if a.name.startswith(top_name + ".")}
        known = {module_name(p, root) for p in root.rglob("*.py")}
        resolved = set()
        for t in targets:
            while t and t not in known:  # from .tasks import Copy -> tasks; from . import store -> store
                t = t.rpartition(".")[0]
            if t and t != name:
                resolved.add(t)
        graph[name] = resolved
    return graph


def rank(module: str) -> int:
    top = module.split(".")[0]
    if top not in RANKS:
        raise KeyError(f"rnnbench/{top} has no rank in tests/test_layers.py RANKS (docs/design.md 'Harness layers')")
    return RANKS[top]


def upward_imports(graph) -> list[str]:
    return [f"rnnbench/{a} (rank {rank(a)}) imports rnnbench/{b} (rank {rank(b)})"
            for a, targets in graph.items() for b in sorted(targets)
            if rank(b) > rank(a) and b.split(".")[0] != a.split(".")[0]]


def circles(graph) -> list[list[str]]:
    """Every elementary cycle found by depth-first search, between top-level modules."""
    top = {}
    for a, targets in graph.items():
        top.setdefault(a.split(".")[0], set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != a.split(".")[0])
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(top.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(top):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_has_a_rank():
    for name in harness_imports():
        rank(name)


def test_no_upward_import():
    bad = upward_imports(harness_imports())
    assert not bad, "imports against docs/design.md's ranks:\n" + "\n".join(bad)


def test_no_import_circle():
    found = circles(harness_imports())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(f"rnnbench/{m}" for m in c) for c in found)


def test_no_import_circle_in_impls():
    """impls/ has no ranks, but no circle either: each helper lives with its one user, the contract
    (spec, runner) below the backends, the ceiling measurement in a module of its own."""
    found = circles(harness_imports(IMPLS))
    assert not found, "import circles:\n" + "\n".join(" -> ".join(f"impls/{m}" for m in c) for c in found)
    assert harness_imports(IMPLS)["spec"] == set()  # the bottom: every backend's build checks against it


def test_the_walker_sees_lazy_imports_circles_and_upward_edges(tmp_path):
    """The checks fail on the faults they look for (a function-level import included)."""
    pkg = tmp_path / "rnnbench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "store.py").write_text("def f():\n    from .sweep import run\n")
    (pkg / "sweep.py").write_text("from . import store\nfrom rnnbench.cli import main\n")
    (pkg / "cli.py").write_text("import rnnbench.sweep\n")
    graph = harness_imports(pkg)
    assert graph["store"] == {"sweep"} and graph["sweep"] == {"store", "cli"} and graph["cli"] == {"sweep"}
    assert sorted(upward_imports(graph)) == ["rnnbench/store (rank 2) imports rnnbench/sweep (rank 4)",
                                             "rnnbench/sweep (rank 4) imports rnnbench/cli (rank 5)"]
    found = [set(c) for c in circles(graph)]
    assert {"store", "sweep"} in found and {"sweep", "cli"} in found


if __name__ == "__main__":  # print the graph (python tests/test_layers.py [PACKAGE_DIR])
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    for mod, targets in sorted(harness_imports(root).items()):
        print(f"{mod:<22} -> {', '.join(sorted(targets)) or '-'}")
    print("circles:", [" -> ".join(c) for c in circles(harness_imports(root))] or "none")

"""The shape of the code: an acyclic import graph, short modules, facts defined once.

These read the source (``ast`` and text), so they hold for every platform: a cycle hidden by
an import inside a function (the old ``population -> train -> population``), a second
parameter-count formula or a module that grew two stages fail here before they confuse a reader.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    """Module name -> file, for fastmlp/ and kernels/ (installed as fastmlp.kernels)."""
    out = {}
    for base, pkg in ((ROOT / "fastmlp", "fastmlp"), (ROOT / "kernels", "fastmlp.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


# Imports that may sit inside a function: optional dependencies, heavy to import or absent
# (fastmlp.kernels imports triton).  Everything else of fastmlp's is imported at the top.
LAZY_OK = ("triton", "matplotlib", "tqdm", "numba", "llvmlite", "numpy", "fastmlp.kernels")


def _imports(path: Path, name: str, mods) -> list[tuple[str, bool]]:
    """``(target module, at module level?)`` for every fastmlp import in ``path``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = set()
    for node in tree.body:  # statements run at import time, including inside if/try/with
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                else []:
            top.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = (base + "." + node.module if node.module else base) if node.level else node.module
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        out += [(t, id(node) in top) for t in targets]
    return out


def import_graph(with_lazy: bool = True) -> dict[str, set[str]]:
    """fastmlp module -> the fastmlp modules importing it runs: its imports (those inside
    functions too, when ``with_lazy``) and each target's parent packages below ``fastmlp``
    (``import fastmlp.engine.torch`` runs ``fastmlp/engine/__init__.py`` first)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target, at_top in _imports(path, name, mods):
            if not (at_top or with_lazy):
                continue
            parts = target.split(".")
            for k in range(2, len(parts) + 1):  # fastmlp.engine, fastmlp.engine.torch (not the root)
                edges.add(".".join(parts[:k]))
        graph[name] = {t for t in edges if t in mods and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph) -> list[str] | None:
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_among_fastmlp_modules():
    graph = import_graph()
    assert "fastmlp.engine.torch" in graph["fastmlp.population"]  # the graph sees real edges
    assert "fastmlp.engine" in graph["fastmlp.population"]  # and the packages they run
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_are_for_optional_dependencies_only():
    mods = _modules()
    lazy = [f"{path.relative_to(ROOT)}: {target}" for name, path in mods.items()
            for target, at_top in _imports(path, name, mods)
            if not at_top and target.startswith("fastmlp") and not target.startswith(LAZY_OK)]
    assert not lazy, "imports of fastmlp modules inside functions (a hidden cycle?): " + ", ".join(lazy)


def test_asking_about_a_backend_imports_no_triton():
    import subprocess
    import sys

    code = ("import sys, torch; from fastmlp import Population, engine; from fastmlp.architecture import Architecture; "
            "p = engine.Problem(Architecture([2, 40, 1]), 5, True, torch.float32); "
            "print(engine.get_backend('fused').limits(p)); Population([2, 5, 3, 1], 4); "
            "assert 'triton' not in sys.modules, 'triton was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "width 40" in out.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "fastmlp").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_short(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): it holds two stages"


def _sources():
    for d in ("fastmlp", "kernels", "bench"):
        yield from (ROOT / d).rglob("*.py")


def _find(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}:{i}" for p in _sources() for i, line in enumerate(p.read_text().splitlines(), 1)
            if rx.search(line)]


@pytest.mark.parametrize("what,pattern", [
    ("the parameter count", r"\w \* \w \+ \w for \w, \w in"),
    ("the small-contraction threshold", r"^\s*SMALL\w* = \d"),
    ("the next power of two", r"1 << \(.*\)\.bit_length\(\)"),
    ("the TRITON_INTERPRET parse", r"environ\.get\(\"TRITON_INTERPRET\""),
    ("the parameter check", r"isfinite\(.*\.all\(dim"),
    ("the memory model (bytes of a training run)", r"def (train|working|history)_bytes|def _population_bytes|"
                                                   r"def _working_bytes"),
])
def test_each_fact_has_one_definition(what, pattern):
    found = _find(pattern)
    expected = 3 if "memory" in what else 1  # working_bytes, history_bytes, train_bytes: one model
    home = ("fastmlp/architecture.py", "fastmlp/engine/base.py", "fastmlp/optional.py")
    assert len(found) == expected and all(f.startswith(home) for f in found), f"{what}: {found}"

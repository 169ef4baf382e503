"""The shape of the code: an acyclic import graph, short modules, facts defined once.

These read the source (``ast`` and text), so they hold for every platform: a cycle hidden by
an import inside a function, a second parameter-count formula or a module that grew two
stages fail here before they confuse a reader.
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


def _top_level_imports(tree: ast.Module):
    """Import statements executed when the module is imported (not those inside functions)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    stack.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = (base + "." + node.module if node.module else base) if node.level else node.module
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            edges |= {t for t in targets if t in mods and t != name}
        graph[name] = edges
    return graph


def test_no_import_cycle_among_fastmlp_modules():
    graph = import_graph()
    assert "fastmlp.engine.torch" in graph["fastmlp.population"]  # the graph sees real edges
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


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
    ("the memory model (bytes of a training run)", r"def (train|working|history)_bytes|def _population_bytes|"
                                                   r"def _working_bytes"),
])
def test_each_fact_has_one_definition(what, pattern):
    found = _find(pattern)
    expected = 3 if "memory" in what else 1  # working_bytes, history_bytes, train_bytes: one model
    assert len(found) == expected and all(f.startswith(("fastmlp/architecture.py", "fastmlp/engine/base.py"))
                                          for f in found), f"{what}: {found}"

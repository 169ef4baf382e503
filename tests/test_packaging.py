"""Packaging: kernels/ ships as fastmlp.kernels (editable and wheel); no triton or numba needed on CPU."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_kernels_folder():
    import fastmlp.kernels

    assert Path(fastmlp.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"


def test_wheel_contains_fastmlp_kernels(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("fastmlp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"fastmlp/kernels/{p.name}" for p in (ROOT / "kernels").glob("*.py")}
    assert "fastmlp/kernels/__init__.py" in names
    assert shipped <= names, shipped - names
    assert not any(n.startswith("kernels/") for n in names), "a top-level `kernels` package would clash"
    package = {f"fastmlp/{p.relative_to(ROOT / 'fastmlp').as_posix()}" for p in (ROOT / "fastmlp").rglob("*.py")}
    assert package <= names, package - names  # every sub-package ships (the list in pyproject.toml is explicit)
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.parametrize("missing,backend,needle", [
    ("triton", "triton", "triton"),
    ("numba", "fused", "pip install numba"),
])
def test_cpu_path_works_without_an_optional_dependency(missing, backend, needle, tmp_path):
    # In a child whose `import <missing>` fails: fastmlp imports, auto trains on the torch
    # engine, and naming the backend that needs the package says which and what to use instead.
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "import torch, fastmlp\n"
        "from fastmlp import Population, train, datasets\n"
        "from fastmlp.engine import get_backend\n"
        "get_backend('fused').target = None\n"  # by device: the CPU target, whatever TRITON_INTERPRET says
        "x, y = datasets.five_points()\n"
        "r = train(x, y, Population([2, 5, 3, 1], 8), 20, 0.25, backend='auto')\n"
        "assert r.backend == 'torch', r.backend\n"
        "try:\n"
        f"    train(x, y, Population([2, 5, 3, 1], 8), 20, 0.25, backend={backend!r})\n"
        "except ValueError as e:\n"
        f"    assert {needle!r} in str(e) and \"backend='torch'\" in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FASTMLP_CACHE_DIR": str(tmp_path)})  # nothing compiled: auto is torch
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

"""One compile cache, many CPUs (fastmlp/program_numba_cache.py).

A cache folder in a cluster home is shared by machines of different CPU types. Each CPU
target (numba's triple, CPU name and features) has its own entry beside the others: every
target compiles once, then loads, whatever ran in between, and never loads another CPU's
build. Other CPUs are stood in for by ``NUMBA_CPU_NAME`` (at most the host's level), one
subprocess per run, since numba reads its target once, at import. Compiles and loads are
counted by numba's own dispatcher statistics (``cache_misses`` / ``cache_hits``), never by
timing. The smallest program ([2, 1] on one sample: ~3 s to compile) keeps the compiles to
one per target.
"""
import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from fastmlp import program_numba as fc
from fastmlp import program_numba_cache as cache

_SIZES, _N = [2, 1], 1  # the cheapest program to compile

_RUN = """
import json, pickle, torch
from pathlib import Path
from fastmlp import Population, program_numba as fc, program_numba_cache as cache
sizes, N = {sizes!r}, {N!r}
before = fc.is_cached(sizes, N, "float32")
x = torch.linspace(-1, 1, N * sizes[0]).reshape(N, sizes[0]); y = torch.ones(N, sizes[-1])
pop = Population(sizes, 3)
packed, loss = fc.pack(pop.weights, pop.biases), torch.empty(7, 3)
fc.fused_train(x, y, packed, torch.full((3,), 0.5), torch.ones(3, dtype=torch.int8), loss, sizes, 7)
mod = fc.module(tuple(sizes), N, "float32")
st, path = mod.fused_cpu_train.stats, Path(mod.__file__)
index = next(path.parent.rglob(path.stem + ".fused_cpu_train-*.nbi"))
with open(index, "rb") as f:  # numba's index: its version, then (source stamp, {{key: data file}})
    pickle.load(f)
    stamp, overloads = pickle.loads(f.read())
print(json.dumps({{"before": before, "after": fc.is_cached(sizes, N, "float32"),
                  "hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values()),
                  "loss": loss.tolist(), "params": packed.tolist(), "entry": path.name,
                  "target": list(cache.numba_target()), "index_targets": [list(k[1]) for k in overloads]}}))
"""


def _env(cpu, **extra):
    """This process's environment with ``NUMBA_CPU_NAME`` = ``cpu`` ("host": unset), numba's
    other target settings unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX")}
    if cpu != "host":
        env["NUMBA_CPU_NAME"] = cpu
    return {**env, **extra}


def _run(folder, cpu):
    out = subprocess.run([sys.executable, "-c", _RUN.format(sizes=_SIZES, N=_N)],
                         env=_env(cpu, FASTMLP_CACHE_DIR=str(folder)), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _host_has_avx2() -> bool:
    return "+avx2" in cache.target()[2].split(",")


# haswell (AVX2; the host's own CPU where it has no AVX2: a target at most the host's level)
# and generic (no vector extension), the two CPUs the H200 issue's cluster alternated. Each CPU
# compiles at its first run; after a switch, two runs of one CPU in a row both load (before
# the fix both compiled). Two compiles and two loads: the cold compile is the cost of make test.
_SECOND, _HOST = "generic", "host"


def _sequence():
    first = "haswell" if _host_has_avx2() else _HOST
    return [first, _SECOND, _SECOND, first]


@pytest.fixture(scope="module")
def alternating(tmp_path_factory):
    pytest.importorskip("numba")
    folder = tmp_path_factory.mktemp("shared_cache")
    seq = _sequence()
    return folder, seq, [_run(folder, cpu) for cpu in seq]


@pytest.mark.slow
@pytest.mark.xdist_group("shared_cache")
def test_each_cpu_compiles_once_then_loads_whatever_ran_between(alternating):
    _, seq, runs = alternating
    first = {}
    for i, (cpu, r) in enumerate(zip(seq, runs)):
        if cpu not in first:  # compiled into a new entry, sealed
            first[cpu] = r
            assert (r["before"], r["misses"], r["hits"], r["after"]) == (False, 1, 0, True), (i, cpu)
        else:  # loaded, the very bits that CPU's compile computed
            assert (r["before"], r["misses"], r["hits"], r["after"]) == (True, 0, 1, True), (i, cpu)
            assert (r["loss"], r["params"]) == (first[cpu]["loss"], first[cpu]["params"]), (i, cpu)
            assert r["entry"] == first[cpu]["entry"], (i, cpu)
    assert len({r["entry"] for r in first.values()}) == len(first)  # an entry per CPU


@pytest.mark.slow
@pytest.mark.xdist_group("shared_cache")
def test_an_entry_holds_its_own_cpus_build_only(alternating):
    folder, seq, runs = alternating
    for cpu, r in zip(seq, runs):
        assert r["index_targets"] == [r["target"]], cpu  # numba's index: one build, this CPU's
        # "host": numba's own choice with NUMBA_CPU_NAME unset (whatever this process was given)
        assert r["target"][1] == (cpu if cpu != "host" else cache._target(None, None, None)[1])
        manifest = json.loads((folder / "numba" / r["entry"]).with_suffix(".ok").read_text())
        assert manifest["target"] == r["target"]
    assert len(list((folder / "numba").glob("*.ok"))) == len(set(seq))


@pytest.mark.slow
@pytest.mark.xdist_group("shared_cache")
def test_an_entry_numba_compiled_into_is_sealed_again(alternating, tmp_path):
    """An entry intact by its manifest whose numba index lacks the build (rewritten by a
    process racing this one, say): numba compiles, the entry is sealed again, the next run
    loads (without the new seal it would find its manifest stale and compile again)."""
    folder, seq, runs = alternating
    shutil.copytree(folder, tmp_path / "c")
    r = next(r for cpu, r in zip(seq, runs) if cpu == _SECOND)
    path = tmp_path / "c" / "numba" / r["entry"]
    index = next(path.parent.rglob(path.stem + ".fused_cpu_train-*.nbi"))
    raw = io.BytesIO(index.read_bytes())
    version = pickle.load(raw)
    stamp, _ = pickle.loads(raw.read())
    index.write_bytes(pickle.dumps(version, protocol=-1) + pickle.dumps((stamp, {}), protocol=-1))
    ok = path.with_suffix(".ok")
    manifest = json.loads(ok.read_text())
    name = str(index.relative_to(path.parent))
    manifest["files"][name] = [index.stat().st_size, cache._digest(index)]
    ok.write_text(json.dumps(manifest))
    recompiled = _run(tmp_path / "c", _SECOND)
    assert (recompiled["before"], recompiled["misses"], recompiled["after"]) == (True, 1, True)
    assert (recompiled["loss"], recompiled["params"]) == (r["loss"], r["params"])
    again = _run(tmp_path / "c", _SECOND)
    assert (again["misses"], again["hits"]) == (0, 1)


# numba's key, worked out without numba: the environment as numba/core/config.py reads it.
# generic and haswell agree already where the alternating runs find their entries (is_cached
# before the run: True); these are the host (NUMBA_CPU_NAME unset) and numba's other branches.
_SETTINGS = {
    "host": {},
    "haswell-features": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+fma,+sse4.2"},
    "sandybridge": {"NUMBA_CPU_NAME": "sandybridge"},  # one of the CPUs numba takes AVX from
    "avx-off": {"NUMBA_ENABLE_AVX": "0"},
}
_ASK = ("import json, sys; from fastmlp import program_numba_cache as c; t = c.target(); "
        "free = 'numba' not in sys.modules; print(json.dumps([list(t), free, list(c.numba_target())]))")


def test_the_target_is_numbas_own_key_without_numba():
    pytest.importorskip("numba")
    children = {}
    for name, extra in _SETTINGS.items():  # at once: each child imports torch and numba
        children[name] = subprocess.Popen([sys.executable, "-c", _ASK], env=_env("host", **extra),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, child in children.items():
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-3000:]
        ours, numba_free, numbas = json.loads(out.strip().splitlines()[-1])
        assert numba_free, name  # target() imports no numba (is_cached asks it on every run)
        assert ours == numbas, name


def test_is_cached_asks_for_this_cpu(monkeypatch, tmp_path):
    """The entry's path names the CPU target: another target never finds this one's entry."""
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path))
    src = fc.source(_SIZES, _N)
    paths = {}
    for cpu in ("generic", "haswell"):
        monkeypatch.setenv("NUMBA_CPU_NAME", cpu)
        paths[cpu] = cache.entry("t", src)
        assert paths[cpu].name.startswith(f"fused_cpu_t_{cpu}_")
    monkeypatch.delenv("NUMBA_CPU_NAME")
    paths["host"] = cache.entry("t", src)
    assert len(set(paths.values())) == 3
    assert cache.entry("t", src, cache.target()) == paths["host"]

"""The disk cache of fastmlp/program_numba.py: generated modules and numba's compiled code.

An entry for an (architecture, N, dtype) and a CPU target is three kinds of file under
:func:`cache_dir`:

* ``fused_cpu_{tag}_{cpu}_{key}.py``, the generated source; ``key`` digests the source, the
  versions of fastmlp, numba, llvmlite and Python, *and* the CPU target (:func:`target`), so
  a new generator or toolchain never meets an old entry, and each CPU has its own;
* numba's index (``.nbi``) and data (``.nbc``) files of its functions (``cache=True``), in
  ``__pycache__`` beside it (or under ``$NUMBA_CACHE_DIR``);
* ``fused_cpu_{tag}_{cpu}_{key}.ok``, written last, after a compile: the versions, the target,
  and the size and SHA-256 of the source and of every numba file.

An entry is trusted only when the manifest parses, names these versions, and every file
it lists has its size and digest (:func:`valid`, which :func:`is_cached` answers without
importing numba).  Anything else (a truncated or garbled source, index or data file, a
file from another numba) is deleted, and the module rebuilt and recompiled.

Why the target is in the key: numba keeps every target's build of a function in one index
(``<module>.<function>-<line>.pyXY.nbi``, a dict from (signature, (triple, CPU name,
features), bytecode digest) to a data file), named after the module's file.  With one
source file for all CPUs, a machine of another CPU type found the entry intact, missed in
numba's index, compiled and rewrote the index; the manifest no longer matched, and the next
run of either CPU wiped the entry and compiled again (a cache directory in a cluster home
shared by two CPU types: 8 of 8 runs compiled when alternating ``NUMBA_CPU_NAME=haswell``
and ``generic``).  Now each target has its own source file, hence its own numba files and
manifest: nothing one CPU writes touches another's entry.  And should numba still compile
into an entry found intact (its index lacked the build: rewritten by a process racing this
one, say), the entry is sealed again, so that this compile is its last.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import linecache
import os
import platform
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from ._version import __version__

__all__ = ["cache_dir", "versions", "target", "numba_target", "entry", "valid", "wipe", "load", "compile_module",
           "seal", "get"]


def cache_dir() -> Path:
    """``$FASTMLP_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastmlp``, else ``~/.cache/fastmlp``;
    subfolder ``numba``."""
    root = os.environ.get("FASTMLP_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastmlp"
    return Path(root) / "numba"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def versions() -> dict:
    """What a compiled entry depends on besides its source (read without importing numba)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    # once per process: importlib.metadata parses the packages' METADATA files (~1 ms a
    # call, and auto asks for the entry on every run)
    return (("fastmlp", __version__), ("numba", _version("numba")), ("llvmlite", _version("llvmlite")),
            ("python", "%d.%d" % sys.version_info[:2]))


def target() -> tuple:
    """The CPU target numba compiles for in this process, as numba's cache keys it: the
    ``(triple, CPU name, features)`` of ``codegen.magic_tuple()`` (numba/core/codegen.py),
    worked out without importing numba: llvmlite's binding, once a process (~50 ms on the
    2-core test box, which numba's own import then saves: it loads the same library).

    As numba/core/config.py reads the environment: ``NUMBA_CPU_NAME`` else the host's CPU;
    ``NUMBA_CPU_FEATURES``, else none for ``generic``, else the host's features with every
    ``avx*`` turned off unless AVX is enabled (``NUMBA_ENABLE_AVX``, by default on where the
    OS supports it and the CPU is not one of numba's list).  numba's ``.numba_config.yaml``
    is not read: where it sets these, :func:`get` (which asks numba) keys the entry by
    numba's answer and :func:`is_cached` never finds it (it answers False, not wrongly
    True); tests/test_program_cache.py checks this against numba's own answer."""
    env = os.environ
    return _target(env.get("NUMBA_CPU_NAME"), env.get("NUMBA_CPU_FEATURES"), env.get("NUMBA_ENABLE_AVX"))


@functools.lru_cache(maxsize=8)
def _target(cpu_name, features, enable_avx) -> tuple:
    import llvmlite.binding as ll

    name = ll.get_host_cpu_name() if cpu_name is None else cpu_name
    if features is None and str(cpu_name).lower() == "generic":
        features = ""
    if features is None:
        try:
            host = ll.get_host_cpu_features()
        except RuntimeError:
            host = None
        if host is None:
            features = ""
        else:
            if enable_avx is None:
                avx = _os_supports_avx() and (cpu_name or ll.get_host_cpu_name()) not in _NO_AVX_CPUS
            else:
                try:
                    avx = bool(int(enable_avx))
                except ValueError:  # numba warns and keeps its default *function*: truthy
                    avx = True
            if not avx:
                for k in host:
                    if k.startswith("avx"):
                        host[k] = False
            features = host.flatten()
    return (ll.get_process_triple(), name, features)


# numba/core/config.py's avx_default: CPUs on which numba turns AVX off
_NO_AVX_CPUS = {"corei7-avx", "core-avx-i", "sandybridge", "ivybridge", "nocona"}


def _os_supports_avx() -> bool:
    """numba/core/config.py's test: on x86 Linux, ``avx`` among /proc/cpuinfo's flags."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("i386", "i586", "i686", "x86_64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            return any(head.strip() == "flags" and "avx" in body.split()
                       for head, _, body in (line.partition(":") for line in f))
    except OSError:
        return True


def numba_target() -> tuple:
    """numba's own answer to :func:`target` (imports numba)."""
    from numba.core.registry import cpu_target

    return tuple(cpu_target.target_context.codegen().magic_tuple())


def entry(tag: str, src: str, cpu: tuple | None = None) -> Path:
    """The generated module's path for ``src`` compiled for the target ``cpu`` (default
    :func:`target`): the CPU's name, readable, and a digest of all three."""
    cpu = target() if cpu is None else tuple(cpu)
    key = hashlib.sha256(json.dumps([src, versions(), cpu]).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", cpu[1]) or "default"
    return cache_dir() / f"fused_cpu_{tag}_{name}_{key}.py"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(path: Path):
    try:
        m = json.loads(path.with_suffix(".ok").read_text())
        return m if isinstance(m, dict) and isinstance(m.get("files"), dict) else None
    except (OSError, ValueError):
        return None


_INTACT: dict = {}  # entry -> the (name, size, mtime) of its files when last found intact


def _signature(path: Path):
    m = _manifest(path)
    if m is None:
        return None
    try:
        return tuple((str(p), st.st_size, st.st_mtime_ns) for p in
                     [path, path.with_suffix(".ok"), *(path.parent / f for f in sorted(m["files"]))]
                     for st in [p.stat()])
    except (OSError, TypeError):
        return None


def valid(path: Path, src: str) -> bool:
    """Whether the entry at ``path`` is complete and intact: its manifest names the current
    versions, the source is ``src``, and every listed numba file has its size and digest.
    Hashing the files costs ~10 ms, and auto asks on every run: an entry found intact is
    trusted again while none of its files changed size or modification time."""
    sig = _signature(path)
    if sig is not None and _INTACT.get((path, src)) == sig:
        return True
    ok = _valid(path, src)
    if ok:
        _INTACT[(path, src)] = sig
    else:
        _INTACT.pop((path, src), None)
    return ok


def _valid(path: Path, src: str) -> bool:
    m = _manifest(path)
    if m is None or m.get("versions") != versions() or m.get("source") != hashlib.sha256(src.encode()).hexdigest():
        return False
    files = m["files"]
    if not any(f.endswith(".nbi") for f in files) or not any(f.endswith(".nbc") for f in files):
        return False
    try:
        if path.read_text() != src:
            return False
        for f, (size, digest) in files.items():
            p = path.parent / f  # relative to the source's folder, or absolute
            if p.stat().st_size != size or _digest(p) != digest:
                return False
    except (OSError, ValueError, TypeError):
        return False
    return True


def _numba_files(path: Path, folders) -> list:
    return sorted(p for d in folders if d.is_dir() for p in d.iterdir()
                  if p.name.startswith(path.stem + ".") and p.suffix in (".nbi", ".nbc"))


def _folders(path: Path, mod=None) -> set:
    """Where numba keeps the module's files: asked from its dispatchers when ``mod`` is
    given, else those the manifest lists, and ``__pycache__`` beside the source."""
    out = {path.parent / "__pycache__"}
    m = _manifest(path)
    out |= {(path.parent / f).parent for f in (m or {}).get("files", {})}
    for v in vars(mod).values() if mod is not None else ():
        where = getattr(getattr(v, "_cache", None), "_cache_path", None)
        if where:
            out.add(Path(where))
    return out


def wipe(path: Path, mod=None, source: bool = True) -> None:
    """Delete the entry: manifest first (so it is never half-trusted), numba's files, and
    (``source``) the generated module."""
    for p in [path.with_suffix(".ok")] + _numba_files(path, _folders(path, mod)) + [path] * source:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def load(path: Path, src: str, name: str):
    """Import the module at ``path`` (written from ``src`` unless it holds it already)."""
    if not path.exists() or path.read_text() != src:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(src)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # numba's cache finds the module's globals by its name
    spec.loader.exec_module(mod)
    return mod


def compile_module(mod, dtype: str) -> None:
    """Compile (or load) the one signature fused_train calls, then no other: loss_out is
    any-layout 2-D (a view of a larger history), which C arrays convert to."""
    from numba import types

    f, i = getattr(types, dtype), types.int64
    a1, a2 = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    mod.fused_cpu_train.compile((a1, a1, a2, a1, types.Array(types.int8, 1, "C"), types.Array(f, 2, "A"),
                                 types.Array(types.int32, 1, "C"), i, i, i, f, f, f, i, i, i, i))
    mod.fused_cpu_train.disable_compile()


def seal(path: Path, src: str, mod, cpu: tuple | None = None) -> None:
    """Write the manifest of a compiled entry (after numba wrote its files); ``cpu``: the
    target it was compiled for (recorded for the reader; the path's key holds it)."""
    rel = lambda p: str(p.relative_to(path.parent)) if p.is_relative_to(path.parent) else str(p)  # noqa: E731
    files = {rel(p): [p.stat().st_size, _digest(p)] for p in _numba_files(path, _folders(path, mod))}
    m = {"versions": versions(), "target": list(target() if cpu is None else cpu),
         "source": hashlib.sha256(src.encode()).hexdigest(), "files": files}
    tmp = path.with_suffix(f".{os.getpid()}.oktmp")
    tmp.write_text(json.dumps(m, indent=1))
    os.replace(tmp, path.with_suffix(".ok"))


def _compiled(mod) -> bool:
    """Whether numba compiled the training function in this process rather than loading it."""
    return any(mod.fused_cpu_train.stats.cache_misses.values())


def get(tag: str, src: str, memory_src, dtype: str):
    """The module of ``src`` imported and compiled through the cache entry of numba's CPU
    target: an entry that is not :func:`valid` is wiped and rebuilt, and an entry numba
    compiled into is sealed after the compile; when the folder is not writable,
    ``memory_src()`` (the source without ``cache=True``) is compiled in memory."""
    name = f"fastmlp_fused_cpu_{tag}"
    try:
        cpu = numba_target()  # numba's key, not our reading of it: entries never mix targets
        path = entry(tag, src, cpu)
        fresh = not valid(path, src)
        if fresh:
            wipe(path)
        mod = load(path, src, name)
        if fresh:  # numba's files elsewhere too (NUMBA_CACHE_DIR), now that its locator is known
            wipe(path, mod, source=False)
        try:
            compile_module(mod, dtype)
        except Exception:
            if fresh:
                raise
            wipe(path, mod, source=False)  # intact by its manifest, yet numba failed to read it
            mod, fresh = load(path, src, name), True
            compile_module(mod, dtype)
        if fresh or _compiled(mod):  # (intact, yet numba compiled: its files changed, seal them)
            seal(path, src, mod, cpu)
        return mod
    except OSError:
        src = memory_src()
        filename = f"<fastmlp.program_numba {tag}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        namespace = {"__name__": name}
        exec(compile(src, filename, "exec"), namespace)
        mod = SimpleNamespace(**namespace)
        compile_module(mod, dtype)
        return mod

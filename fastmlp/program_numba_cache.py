"""The disk cache of fastmlp/program_numba.py: generated modules and numba's compiled code.

An entry for an (architecture, N, dtype) is three kinds of file under :func:`cache_dir`:

* ``fused_cpu_{tag}_{key}.py``, the generated source; ``key`` digests the source *and* the
  versions of fastmlp, numba, llvmlite and Python, so a new generator or toolchain never
  meets an old entry;
* numba's index (``.nbi``) and data (``.nbc``) files of its functions (``cache=True``), in
  ``__pycache__`` beside it (or under ``$NUMBA_CACHE_DIR``);
* ``fused_cpu_{tag}_{key}.ok``, written last, after a compile: the versions and the size
  and SHA-256 of the source and of every numba file.

An entry is trusted only when the manifest parses, names these versions, and every file
it lists has its size and digest (:func:`valid`, which :func:`is_cached` answers without
importing numba).  Anything else (a truncated or garbled source, index or data file, a
file from another numba) is deleted, and the module rebuilt and recompiled.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import linecache
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from ._version import __version__

__all__ = ["cache_dir", "versions", "entry", "valid", "wipe", "load", "compile_module", "seal", "get"]


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


def entry(tag: str, src: str) -> Path:
    """The generated module's path for ``src``."""
    key = hashlib.sha256(json.dumps([src, versions()]).encode()).hexdigest()[:16]
    return cache_dir() / f"fused_cpu_{tag}_{key}.py"


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
                                 i, i, i, f, f, i, i, i))
    mod.fused_cpu_train.disable_compile()


def seal(path: Path, src: str, mod) -> None:
    """Write the manifest of a compiled entry (after numba wrote its files)."""
    rel = lambda p: str(p.relative_to(path.parent)) if p.is_relative_to(path.parent) else str(p)  # noqa: E731
    files = {rel(p): [p.stat().st_size, _digest(p)] for p in _numba_files(path, _folders(path, mod))}
    m = {"versions": versions(), "source": hashlib.sha256(src.encode()).hexdigest(), "files": files}
    tmp = path.with_suffix(f".{os.getpid()}.oktmp")
    tmp.write_text(json.dumps(m, indent=1))
    os.replace(tmp, path.with_suffix(".ok"))


def get(tag: str, src: str, memory_src, dtype: str):
    """The module of ``src`` imported and compiled through the cache entry: an entry that is
    not :func:`valid` is wiped and rebuilt, and sealed after the compile; when the folder is
    not writable, ``memory_src()`` (the source without ``cache=True``) is compiled in memory."""
    name = f"fastmlp_fused_cpu_{tag}"
    try:
        path = entry(tag, src)
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
        if fresh:
            seal(path, src, mod)
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

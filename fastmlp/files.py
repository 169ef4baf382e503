"""Writing files all or nothing, and the few system facts that takes (a leaf: no fastmlp import).

Everything fastmlp writes goes through here: a population file (:mod:`fastmlp.checkpoint`), a
run folder's move into place (:mod:`fastmlp.results`), a sweep's records, table and spec
(:mod:`fastmlp.sweep`), and the benchmarks' JSON.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["umask", "sync", "atomic_write", "alive", "exchange"]


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:  # os.umask would set it, for every thread, for a moment
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sync(path) -> None:
    """Flush a file, or a folder's entries, to the disk (where the platform can open it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to the disk and rename it
    to ``path``: a reader sees the old file or the whole new one, never a part, even after a
    crash.  The file gets the permissions a plain ``open`` would give it (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        sync(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync(path.parent)


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (this one does; unknown off POSIX: no)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


def _renameat2():
    """libc's renameat2 (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a, b) -> bool:
    """Swap the folders ``a`` and ``b`` in one step; False where the system or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False  # EPERM: seccomp filters (some containers) refuse unknown calls this way
    raise OSError(err, os.strerror(err), str(b))

"""The sweep folder's lock: one sweep writes a folder at a time.

``<out>/.lock`` is created with ``O_CREAT | O_EXCL`` (only one process can create it) and
holds the holder's pid, host name, start time and a random token.  Another sweep into the
folder is refused while the holder runs.  A lock whose pid is no longer alive on this host
(a sweep killed with SIGKILL, or a machine that rebooted) is stale: the next sweep says so
and takes it over.  A lock from another host cannot be checked: the refusal says so, and
names the file to delete once that sweep is known to be gone.  :func:`held` releases the lock
when the sweep ends, however it ends (an exception, Ctrl-C); under torch.distributed only
rank 0 takes it (the other ranks never write the folder).
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..files import alive
from .spec import SweepSpecError

__all__ = ["LOCK_FILE", "acquire", "release", "held"]

LOCK_FILE = ".lock"
# Attempts at taking a stale lock over while other sweeps race for it.
_TRIES = 5


def _read(path: Path) -> dict | None:
    """The lock's contents; None when it is gone; {} when it cannot be read."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


def _create(path: Path, info: dict) -> bool:
    """Create the lock file holding ``info``; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info) + "\n")
    return True


def acquire(out: Path, log: Callable[[str], None]) -> dict:
    """Take ``out``'s lock (``out`` exists); returns what the lock holds.  Raises
    :class:`SweepSpecError` ``("out", ...)`` naming the folder and the holder while another
    sweep holds it."""
    path = Path(out) / LOCK_FILE
    host = socket.gethostname()
    info = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "token": uuid.uuid4().hex}
    for _ in range(_TRIES):
        if _create(path, info):
            return info
        found = _read(path)
        if found is None:  # released meanwhile
            continue
        pid = found.get("pid")
        if not isinstance(pid, int) or found.get("host") != host or alive(pid):
            why = ("holds an unreadable lock" if not isinstance(pid, int) else
                   f"is being written by another sweep ({_holder(found)})")
            where = "" if found.get("host") == host else f"; if no sweep is running there any more, delete {path}"
            raise SweepSpecError("out", f"{out} {why}: wait until it finishes, or use another folder (lock file "
                                        f"{path}{where})")
        # Stale: move it aside under a name of our own, and make sure it was the stale one
        # that moved (not a lock another sweep took over in the meantime).
        aside = path.with_name(f"{LOCK_FILE}.stale-{info['token']}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        moved = _read(aside)
        if moved != found:
            try:
                os.link(aside, path)  # put the live lock back (unless a new one is already there)
            except FileExistsError:
                pass
        else:
            log(f"{out}: taking over the lock of a sweep that is no longer running ({_holder(found)})")
        aside.unlink(missing_ok=True)
    raise SweepSpecError("out", f"{out}: could not take the lock {path} (other sweeps keep taking it)")


def release(out: Path, info: dict) -> None:
    """Remove ``out``'s lock if it is still the one ``info`` describes."""
    path = Path(out) / LOCK_FILE
    found = _read(path)
    if found and found.get("token") == info.get("token"):
        path.unlink(missing_ok=True)


@contextmanager
def held(out: Path, log: Callable[[str], None], take: bool = True):
    """Hold ``out``'s lock for the body (``take=False``: do nothing, as on ranks other than
    0).  Creates ``out`` first; removes it again when the body fails and leaves it as empty
    as it was found missing."""
    if not take:
        yield
        return
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        info = acquire(out, log)
    except BaseException:
        if created:
            _remove_if_empty(out)
        raise
    try:
        yield
    except BaseException:
        release(out, info)
        if created:
            _remove_if_empty(out)
        raise
    release(out, info)


def _remove_if_empty(out: Path) -> None:
    try:
        out.rmdir()
    except OSError:
        pass

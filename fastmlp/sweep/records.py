"""Stage 4, the records: the sweep folder, its spec, and its configuration files checked on load.

``sweep.json`` describes what the folder may hold: the keys every record in it shares
(epochs, eps, dtype, a digest of every data set) and the union of the grids of every sweep
run into it (data sets, architectures, inits, lrs and seeds, in the order first asked).  A
sweep into a folder is accepted when its shared keys match the folder's (the digests of the
data sets both name, too): it may add values to the grid or reorder it, and then trains only
what the folder lacks.  Each record names exactly what it holds (``identity``, see
:mod:`fastmlp.sweep.run`), so the union needs no record for every combination.

``configs/<Config.filename>`` holds one configuration's record, written atomically.  A record
is read with ``torch.load(weights_only=True)`` (no code in a file ever runs) and checked
against the configuration its name stands for; one that is unreadable, holds something other
than tensors and plain values, or holds another configuration or other training is reported
in one line and retrained.

Under torch.distributed every rank runs the sweep; rank 0 writes, the others read.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import distributed
from ..files import atomic_write
from ..validate import PROBE_PREFIX
from . import run
from .lock import LOCK_FILE
from .spec import GRID_KEYS, Config, SweepSpec, SweepSpecError, seeds_of_text, seeds_text

__all__ = ["SPEC_FILE", "CONFIGS", "Held", "canonical", "spec_json", "claim", "write_spec", "config_path", "read",
           "scan", "save", "load"]

SPEC_FILE = "sweep.json"
CONFIGS = "configs"
# Names a fresh folder may hold and still count as empty: the lock and what a takeover of a
# stale one leaves (``.lock.stale-<token>``, from a sweep killed in between), and the
# writability probe of fastmlp.validate.check_out_dir (every rank makes one, concurrently).
_NOT_CONTENT = (LOCK_FILE, PROBE_PREFIX)


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def spec_json(spec: SweepSpec, digests: dict[str, str]) -> dict:
    """What a sweep of ``spec`` asks of its folder: the spec and a digest of every data set."""
    return {**spec.to_json(), "data_sha256": {d: digests[d] for d in spec.datasets}}


def _differences(found: dict, new: dict) -> list[str]:
    """The keys a folder and a sweep must share but do not, as ``key: folder has A, this sweep B``."""
    out = []
    for k in sorted(set(found) | set(new)):
        if k in GRID_KEYS:
            continue
        a, b = found.get(k), new.get(k)
        if k == "data_sha256" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"data_sha256 of {d}: folder has {a[d]}, this sweep {b[d]}"
                    for d in a if d in b and a[d] != b[d]]
        elif a != b:
            out.append(f"{k}: folder has {json.dumps(a)}, this sweep {json.dumps(b)}")
    return out


def _union(found: dict, new: dict) -> dict:
    """The folder's spec once ``new`` has run into it: its grids extended by ``new``'s values."""
    out = {**found, "data_sha256": {**found["data_sha256"], **new["data_sha256"]}}
    for k in GRID_KEYS:
        if k == "seeds":
            have = seeds_of_text(found[k])
            known = set(have)
            out[k] = seeds_text(have + [s for s in seeds_of_text(new[k]) if s not in known])
        else:
            out[k] = found[k] + [v for v in new[k] if v not in found[k]]
    return out


def _read_spec(path: Path) -> dict:
    found = json.loads(path.read_text())
    if not (isinstance(found, dict) and isinstance(found.get("data_sha256"), dict)
            and all(isinstance(found.get(k), list) for k in GRID_KEYS if k != "seeds")):
        raise ValueError("not a sweep spec")
    seeds_of_text(found.get("seeds"))
    return found


def _claim_folder(out: Path, new: dict) -> tuple[dict, bool]:
    path = out / SPEC_FILE
    if path.exists():
        try:
            found = _read_spec(path)
        except (OSError, ValueError) as e:
            raise SweepSpecError("out", f"{path} is not a readable sweep spec ({e}); use another folder") from None
        diff = _differences(found, new)
        if diff:
            raise SweepSpecError("out", f"{out} holds a different sweep ({'; '.join(diff)}), which this one cannot "
                                        "extend: a sweep into a folder may add or reorder data sets, architectures, "
                                        "inits, lrs and seeds, nothing else; use another folder")
        return _union(found, new), True
    if out.exists() and any(not p.name.startswith(_NOT_CONTENT) for p in out.iterdir()):
        raise SweepSpecError("out", f"{out} is not empty and holds no {SPEC_FILE}; refusing to write a sweep "
                                    "into it: use a new or empty folder")
    return new, False


def claim(out: Path, new: dict) -> tuple[dict, bool]:
    """Check that a sweep asking ``new`` (:func:`spec_json`) may write ``out``: ``(the
    folder's spec once it has, True when the folder already held a sweep)``.  Nothing is
    written (:func:`write_spec` does, once the sweep is known to fit).

    Rank 0 checks, and every other rank takes its answer (looking for itself, a rank could
    find rank 0 writing the spec: a temporary file in a folder with no sweep.json yet).
    Raises :class:`SweepSpecError` ``("out", ...)`` for a folder holding a sweep this one
    cannot extend (naming the keys that differ), an unreadable spec, or other files."""
    return distributed.on_main(lambda: _claim_folder(out, new))


def write_spec(out: Path, folder: dict) -> None:
    """Write ``sweep.json`` (when it changes)."""
    path = out / SPEC_FILE
    text = canonical(folder)
    if not (path.exists() and path.read_text() == text):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Path(p).write_text(text))


def config_path(out: Path, cfg: Config) -> Path:
    """Where ``cfg``'s record lives in the folder ``out``."""
    return out / CONFIGS / cfg.filename


def _unreadable(e: Exception) -> str:
    text = str(e)
    if "weights_only" in text.lower() or "Unsupported global" in text:
        name = re.search(r"GLOBAL ([\w.]+)", text)
        return (f"holds pickled Python objects{f' ({name.group(1)})' if name else ''}, not only tensors and "
                "plain values: not loaded")
    first = (text.strip().splitlines() or [type(e).__name__])[0]
    return f"is unreadable ({first[:100]})"


def read(out: Path, cfg: Config, spec: SweepSpec, data: dict, digests: dict[str, str]) -> tuple[dict | None, str]:
    """``(record, "")`` for ``cfg``'s file in ``out`` when it is a sound record of ``cfg``
    trained as ``spec`` says, else ``(None, why not)``.  The tensors are memory-mapped: only
    what is used is read."""
    path = config_path(out, cfg)
    if not path.exists():
        return None, "is missing"
    try:
        if not zipfile.is_zipfile(path):  # what torch.save writes: a truncated file has lost its directory
            return None, "is truncated or not a record (no zip directory at its end)"
        rec = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 -- whatever a damaged file makes torch.load raise
        return None, _unreadable(e)
    x, y = data[cfg.dataset]
    why = run.check(rec, run.identity(cfg, spec, digests[cfg.dataset]), [x.shape[1], *cfg.hidden, y.shape[1]])
    return (None, why) if why else (rec, "")


@dataclass(frozen=True)
class Held:
    """What a sound record in the folder holds: its seeds, and whether its loss histories."""

    seeds: tuple[int, ...]
    losses: bool


def scan(out: Path, spec: SweepSpec, data: dict, digests: dict[str, str],
         log: Callable[[str], None]) -> dict[Config, Held | None]:
    """What the folder holds of every configuration of ``spec`` (None: nothing usable).  A
    file that is there but cannot be used is reported, one line each, to ``log``."""
    held = {}
    for cfg in spec.configs():
        rec, why = read(out, cfg, spec, data, digests)
        if rec is None and why != "is missing":
            log(f"{config_path(out, cfg)} {why}; retraining it")
        held[cfg] = None if rec is None else Held(tuple(rec["seeds"].tolist()), "losses" in rec)
    return held


def save(out: Path, cfg: Config, record: dict) -> None:
    """Write one configuration's record, atomically (an interruption leaves no partial file)."""
    atomic_write(config_path(out, cfg), lambda p: torch.save(record, p))


def load(out: Path, spec: SweepSpec, data: dict, digests: dict[str, str]) -> dict[Config, dict]:
    """Every configuration's record, in table order, restricted to the spec's seeds in its order."""
    records = {}
    for cfg in spec.configs():
        rec, why = read(out, cfg, spec, data, digests)
        if rec is not None and not set(spec.seeds) <= set(rec["seeds"].tolist()):
            rec, why = None, "lacks some of the seeds"
        if rec is None:  # changed since this sweep wrote it: say which, and what to do
            raise SweepSpecError("out", f"{config_path(out, cfg)} {why}; rerun the sweep to retrain it")
        records[cfg] = run.select(rec, spec.seeds)
    return records

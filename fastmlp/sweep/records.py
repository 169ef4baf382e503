"""Stage 4, the records: the sweep folder's spec and its configuration files, and resume.

``sweep.json`` holds the spec (canonical JSON, with a digest of every data set); a folder
that holds another spec is refused.  ``configs/<Config.filename>`` holds one configuration's
record, written atomically when its population finishes.  A population whose files all
exist is done: a resumed sweep skips it.

Under torch.distributed every rank runs the sweep; rank 0 writes, the others read.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .. import distributed
from ..results import atomic_write
from .batches import Batch
from .spec import Config, SweepSpec, SweepSpecError

__all__ = ["SPEC_FILE", "canonical", "spec_json", "claim", "config_path", "done", "save", "load"]

SPEC_FILE = "sweep.json"
CONFIGS = "configs"


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def _data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().to("cpu", torch.float64).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def spec_json(spec: SweepSpec, data: dict) -> dict:
    """What ``sweep.json`` holds: the spec and a digest of every data set."""
    return {**spec.to_json(), "data_sha256": {d: _data_digest(*data[d]) for d in spec.datasets}}


def _claim_folder(out: Path, spec_json: dict) -> bool:
    """Write ``sweep.json`` into ``out``, or check the one there; True when resuming."""
    path = out / SPEC_FILE
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SweepSpecError("out", f"{path} is not a readable sweep spec ({e}); use another folder") from None
        if found != spec_json:
            keys = sorted(k for k in set(found) | set(spec_json) if found.get(k) != spec_json.get(k))
            diff = "; ".join(f"{k}: folder has {json.dumps(found.get(k))}, this sweep {json.dumps(spec_json.get(k))}"
                             for k in keys)
            raise SweepSpecError("out", f"{out} holds a different sweep ({diff}); refusing to mix them: "
                                        "use another folder, or repeat the folder's sweep to resume it")
        return True
    if out.exists() and any(out.iterdir()):
        raise SweepSpecError("out", f"{out} is not empty and holds no {SPEC_FILE}; refusing to write a sweep "
                                    "into it: use a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(canonical(spec_json)))
    return False


def claim(out: Path, spec_json: dict) -> bool:
    """Make ``out`` this sweep's folder; True when it already was (a resume).

    Rank 0 writes ``sweep.json`` or checks the one there; the other ranks then read it, as
    a resume would.  Raises :class:`SweepSpecError` ``("out", ...)`` for a folder holding
    another sweep, an unreadable spec, or other files."""
    main = distributed.is_main()
    if main:
        resuming = _claim_folder(out, spec_json)
    distributed.barrier()
    if not main:
        resuming = _claim_folder(out, spec_json)
    return resuming


def config_path(out: Path, cfg: Config) -> Path:
    """Where ``cfg``'s record lives in the folder ``out``."""
    return out / CONFIGS / cfg.filename


def done(out: Path, batch: Batch) -> bool:
    """True when every configuration of ``batch`` has its file."""
    return all(config_path(out, c).exists() for c in batch.configs)


def save(out: Path, cfg: Config, record: dict) -> None:
    """Write one configuration's record, atomically (an interruption leaves no partial file)."""
    atomic_write(config_path(out, cfg), lambda p: torch.save(record, p))


def load(out: Path, spec: SweepSpec) -> dict[Config, dict]:
    """Every configuration's record, in table order."""
    records = {}
    for cfg in spec.configs():
        p = config_path(out, cfg)
        try:
            records[cfg] = torch.load(p, weights_only=False)
        except Exception as e:  # a file damaged outside the sweep: say which, and what to do
            raise SweepSpecError("out", f"cannot read {p} ({e}); delete it and rerun the sweep to retrain "
                                        "that configuration") from None
    return records

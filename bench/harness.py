"""The benchmark harness: what every script in bench/ shares, so that each holds only what it measures.

* :class:`Providers`: one table of providers (name, what it is, where it runs, why it cannot
  run here), in the order the tables show them; ``select`` picks the named ones and says why
  the others are not run.
* :func:`environment`: THE environment record, :func:`fastmlp.results.environment` (the one
  run folders carry) plus what a benchmark adds: the device's name, core count, CPU
  capability, CUDA version, the load average before (and, after :func:`finish`, after).
* Timing: :func:`clock` (synchronized ``time.perf_counter`` and process CPU time around one
  call), :func:`interleaved` (rounds that time every case once, in turn), :func:`median_s`,
  :func:`do_bench` (``triton.testing.do_bench`` with quantiles [0.5, 0.2, 0.8] on CUDA).
* Output: :func:`table` (a markdown table), :func:`rate` (``4.96M``), :func:`write_json`
  (``bench/results/<bench>-<device>-<date><tag>.json``: bench, command, environment, rows...).
* CLI: :func:`parser` (``--out``, and ``--threads`` / ``--gpu`` or ``--smoke``), :func:`device`,
  :func:`cuda_or_smoke`; :func:`kernels` imports ``fastmlp.kernels`` from a plain checkout.

The scripts import it as ``harness`` (``python bench/<script>.py`` puts bench/ on the path);
importing it puts the repository first on ``sys.path``, so a checkout runs without an install.
It imports no GPU library: a script may still set ``TRITON_INTERPRET`` after importing it.
What a benchmark counts besides time (work, ops, bytes, profiles, ceilings) is in ``instruments.py``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without install

import torch  # noqa: E402

from fastmlp import files as _files, results as _results  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUANTILES = [0.5, 0.2, 0.8]  # median, 20 %, 80 % (the Triton tutorials' do_bench call)


# ---------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    """One thing a benchmark times: ``make`` builds it (what it takes is the script's business)."""

    name: str
    what: str
    make: Callable[..., Any]
    devices: tuple[str, ...] | None = None  # device types it runs on (None: any)
    check: Callable[[torch.device], str | None] | None = None  # why it cannot run here, or None

    def unavailable(self, device: torch.device) -> str | None:
        """None when this provider runs on ``device``, else the reason."""
        device = torch.device(device)
        if self.devices is not None and device.type not in self.devices:
            why = f"runs on {'/'.join(self.devices)} only, this run is on {device.type}"
            if "cuda" in self.devices:
                why += ": run with --gpu" if torch.cuda.is_available() else " and there is no CUDA on this machine"
            return why
        return self.check(device) if self.check is not None else None


class Providers:
    """The table of one script's providers, in the order its tables show them."""

    def __init__(self, *providers: Provider):
        self._by: dict[str, Provider] = {}
        for p in providers:
            self.add(p)

    def add(self, p: Provider) -> Provider:
        if p.name in self._by:
            raise ValueError(f"provider {p.name!r} is registered already")
        self._by[p.name] = p
        return p

    def names(self) -> list[str]:
        return list(self._by)

    def __getitem__(self, name: str) -> Provider:
        return self._by[name]

    def __iter__(self):
        return iter(self._by.values())

    def help(self) -> str:
        """One line per provider, for ``--help``."""
        w = max(map(len, self._by), default=0)
        return "providers:\n" + "\n".join(f"  {p.name:<{w}}  {p.what}" for p in self)

    def select(self, names: list[str] | None, device) -> tuple[list[Provider], dict[str, str]]:
        """The providers to run on ``device`` (``names`` in that order, or all) and
        ``{name: why not}`` for the rest of those asked for (all: those that cannot run here).
        An unknown name raises ValueError."""
        unknown = [n for n in (names or []) if n not in self._by]
        if unknown:
            raise ValueError(f"unknown provider {unknown[0]!r}; known: {', '.join(self._by)}")
        chosen, skipped = [], {}
        for n in names or self._by:
            why = self._by[n].unavailable(device)
            if why:
                skipped[n] = why
            else:
                chosen.append(self._by[n])
        return chosen, skipped


# ---------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------
def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def environment(device=None) -> dict:
    """:func:`fastmlp.results.environment` (date, versions, CPU, threads, ``gpu`` on CUDA) plus
    ``device`` (the GPU, or "CPU (n cores)"), ``cpu_count``, ``cpu_capability``, ``hostname``,
    on CUDA ``cuda`` and ``capability``, and ``loadavg_start``."""
    device = torch.device(device if device is not None else "cpu")
    env = _results.environment(device)
    env.update(cpu_count=os.cpu_count(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
               hostname=socket.gethostname())
    if device.type == "cuda":
        env.update(device=env["gpu"], cuda=torch.version.cuda,
                   capability=list(torch.cuda.get_device_capability(device)))
    else:
        env["device"] = f"{env['cpu']} ({env['cpu_count']} cores)"
    env["loadavg_start"] = loadavg()
    return env


def finish(env: dict) -> dict:
    """Record the load average at the end of the measurements."""
    env["loadavg_end"] = loadavg()
    return env


def describe(env: dict) -> str:
    """One line: device, versions, threads, date, load average."""
    load = f", load average {env['loadavg_start']} -> {env.get('loadavg_end')}" if "loadavg_start" in env else ""
    return (f"{env['device']}, torch {env['torch']}, triton {env['triton']}, python {env['python']}, "
            f"{env['threads']} threads, {env['date']}{load}")


def device_slug(env: dict) -> str:
    """The device part of a result file's name: the GPU, or the CPU model and its core count."""
    name = env["gpu"] if "gpu" in env else f"{env['cpu']}-{env['cpu_count']}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
def sync(device=None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], Any], device=None) -> tuple[float, float, Any]:
    """``fn()`` once between ``perf_counter`` readings (CUDA: synchronized on both sides):
    (wall seconds, process CPU seconds of all threads, what ``fn`` returned)."""
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


@dataclass
class Samples:
    """The timings of one case: wall and process CPU seconds per call, the last result."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def stats(self) -> dict:
        return {"median_s": self.median, "min_s": min(self.wall), "max_s": max(self.wall), "times_s": self.wall}


def interleaved(cases: dict[str, Callable[[], Callable[[], Any]]], device, repeats: int,
                on_round: Callable[[int, dict[str, Samples]], None] | None = None) -> dict[str, Samples]:
    """``repeats`` rounds, each timing every case once, in turn, so that a noisy neighbour slows
    them alike.  ``cases[name]()`` prepares a run (untimed) and returns the call to time."""
    out = {name: Samples() for name in cases}
    for r in range(repeats):
        for name, prepare in cases.items():
            wall, cpu, res = clock(prepare(), device)
            s = out[name]
            s.wall.append(wall)
            s.cpu.append(cpu)
            s.result = res
        if on_round is not None:
            on_round(r, out)
    return out


def median_s(fn: Callable[[], Any], device=None, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(clock(fn, device)[0] for _ in range(repeats))


def do_bench(fn: Callable[[], Any], device, warmup_ms: int = 25, rep_ms: int = 100) -> dict:
    """Milliseconds per call: ``{"ms": median, "q20", "q80"}``.  On CUDA
    ``triton.testing.do_bench`` (CUDA events, L2 cleared between calls); elsewhere (the
    interpreter's smoke runs) ``perf_counter`` over 3 calls, which measures nothing."""
    if torch.device(device).type != "cuda":
        ts = sorted(clock(fn)[0] * 1e3 for _ in range(3))
        return {"ms": ts[1], "q20": ts[0], "q80": ts[2]}
    import triton.testing

    ms = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=QUANTILES)
    return {"ms": ms[0], "q20": ms[1], "q80": ms[2]}


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def rate(r: float) -> str:
    """A rate in three or four digits: 767, 137.9k, 4.96M, 3.63G."""
    for scale, unit, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if r >= scale:
            return f"{r / scale:.{digits}f}{unit}"
    return f"{r:.0f}"


def table(head: list[str], rows: list[list], left: int = 0) -> str:
    """A markdown table: columns right-aligned but the first ``left``; cells through ``str``."""
    lines = [list(map(str, head))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(lines[0]), rule] + [line(l) for l in lines[1:]])


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that ran ``script`` (its ``__file__``), as typed from the repository root."""
    path = Path(script).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return " ".join(["python", str(shown), *(argv if argv is not None else sys.argv[1:])])


def write_json(out, bench: str, env: dict, fields: dict, *, script: str, argv: list[str] | None = None,
               slug: str | None = None, tag: str = "") -> Path:
    """Write ``{"bench", "command", "environment", **fields}`` to
    ``out/<bench>-<slug>-<date><tag>.json`` (slug: :func:`device_slug`; date: the record's)."""
    record = {"bench": bench, "command": command(script, argv), "environment": env, **fields}
    path = Path(out) / f"{bench}-{slug or device_slug(env)}-{env['date'][:10]}{tag}.json"
    text = json.dumps(record, indent=1) + "\n"
    _files.atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def log(msg: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def parser(doc: str, *, devices: bool = False, smoke: str | None = None, epilog: str | None = None):
    """The flags every script shares: ``--out``; with ``devices`` ``--threads`` and ``--gpu``;
    with ``smoke`` (its help text) ``--smoke`` for a CUDA script."""
    ap = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0], epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(RESULTS), help="results directory (default: bench/results)")
    if devices:
        ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
        ap.add_argument("--gpu", action="store_true", help="run on CUDA (with the providers that need it)")
    if smoke:
        ap.add_argument("--smoke", action="store_true", help=smoke)
    return ap


def device(args, ap: argparse.ArgumentParser) -> torch.device:
    """Apply ``--threads``; the device ``--gpu`` asks for (an error without CUDA)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "gpu", False):
        if not torch.cuda.is_available():
            ap.error("--gpu: CUDA is not available on this machine")
        return torch.device("cuda")
    return torch.device("cpu")


def cuda_or_smoke(args, script: str) -> torch.device | None:
    """CUDA; with ``--smoke`` the CPU, in Triton's interpreter (set before any kernel is
    imported); None, having said so, when there is no CUDA (the script then exits 0)."""
    if getattr(args, "smoke", False):
        os.environ["TRITON_INTERPRET"] = "1"
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(f"{script}: CUDA is not available here: the GPU providers were not run")
        return None
    return torch.device("cuda")


def kernels():
    """``fastmlp.kernels``.  From a checkout without install, kernels/ is loaded under that
    name (pyproject maps kernels/ -> fastmlp.kernels, which a plain sys.path does not)."""
    try:
        return importlib.import_module("fastmlp.kernels")
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location("fastmlp.kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["fastmlp.kernels"] = mod
        spec.loader.exec_module(mod)
        return mod

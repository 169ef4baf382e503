"""Results: statistics of a training run and its run folder (summary.json, losses.pt, plots)."""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import plot
from ._version import __version__
from .train import TrainResult

__all__ = ["summarize", "save_run", "format_summary", "pick_boundary_networks", "environment", "atomic_write",
           "cpu_name"]

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def environment(device: torch.device | str | None = None) -> dict:
    """Versions and hardware, for every file a run or benchmark writes."""
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
    }
    try:  # the installed version, without importing triton
        env["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        env["triton"] = None
    env["fastmlp"] = __version__
    if device is not None and torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(result: TrainResult, eps: float = 0.01) -> dict:
    """Numbers that describe a run: convergence, divergence, final-loss quantiles, speed."""
    final = result.final_loss.detach().double().cpu()
    finite = final[torch.isfinite(final)]
    q = torch.quantile(finite, torch.tensor(QUANTILES, dtype=torch.float64)) if finite.numel() else None
    G = len(final)
    return {
        "networks": G,
        "epochs": result.epochs,
        "backend": result.backend,
        "wall_time_s": result.wall_time_s,
        "network_epochs_per_s": result.network_epochs_per_s,
        "eps": eps,
        "converged_fraction": float(result.converged(eps).sum()) / G,
        "diverged": int(result.diverged.sum()),
        "final_loss_quantiles": {f"q{int(p * 100):02d}": (float(v) if q is not None else math.nan)
                                 for p, v in zip(QUANTILES, q if q is not None else [math.nan] * len(QUANTILES))},
        "chunks": result.n_chunks,
    }


def pick_boundary_networks(final_loss: torch.Tensor, k: int = 8) -> list[int]:
    """``k`` networks spread from the best to the worst final loss (non-finite last)."""
    final = final_loss.detach().double().cpu().nan_to_num(nan=math.inf)
    order = torch.argsort(final, stable=True)
    G = len(order)
    k = min(k, G)
    positions = [round(i * (G - 1) / max(k - 1, 1)) for i in range(k)]
    return [int(order[p]) for p in positions]


def _umask() -> int:
    try:  # Linux: read it without setting it (os.umask would change it for every thread a moment)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename: all or nothing.
    The file gets the permissions a plain ``open`` would give it (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_run(result: TrainResult, x: torch.Tensor, y: torch.Tensor, out, config: dict,
             n_boundaries: int = 8, eps: float = 0.01) -> dict:
    """Write a run folder: summary.json, losses.pt, loss_curves.png, boundaries.png (2-D inputs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": config, **summarize(result, eps), "world_size": result.extra.get("world_size", 1),
               "environment": environment(result.population.device)}
    pop = result.population
    atomic_write(out / "losses.pt", lambda p: torch.save({
        "losses": result.losses.cpu(), "final_loss": result.final_loss.cpu(),
        "diverged": result.diverged.cpu(), "lr": result.lr.cpu(), "seeds": pop.seeds.cpu()}, p))
    fig = plot.loss_curves(result.losses.cpu(), title=f"{pop.describe()}\n{len(pop)} networks, "
                           f"lr {config.get('lr', '')}, {config.get('init', '')}")
    plot.save(fig, out / "loss_curves")
    files = ["summary.json", "losses.pt", "loss_curves.png"]
    if pop.sizes[0] == 2 and x.dim() == 2:
        idx = pick_boundary_networks(result.final_loss, n_boundaries)
        chosen = pop[idx]
        titles = [f"seed {int(pop.seeds[i])}, loss {float(result.final_loss[i]):.1e}" for i in idx]
        fig = plot.decision_boundaries(x.cpu(), y.cpu(), lambda grid: chosen.predict(grid.to(pop.device)).cpu(),
                                       list(range(len(idx))), titles=titles)
        plot.save(fig, out / "boundaries")
        files.append("boundaries.png")
    summary["files"] = files + []
    atomic_write(out / "summary.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def format_summary(summary: dict) -> str:
    q = summary["final_loss_quantiles"]
    return "\n".join([
        f"{summary['networks']} networks x {summary['epochs']} epochs on {summary['backend']} "
        f"in {summary['wall_time_s']:.2f} s ({summary['network_epochs_per_s']:.3g} network-epochs/s)",
        f"converged (final loss < {summary['eps']:g}): {summary['converged_fraction']:.1%}, "
        f"diverged: {summary['diverged']}",
        "final loss quantiles: " + ", ".join(f"{k[1:]}% {v:.2e}" for k, v in q.items()),
    ])

"""Trainability statistics of a group of networks trained alike (one sweep configuration).

The lab ends by asking how depth, widths, learning rate and initialisation change what a
network learns and how fast.  Over many seeds those questions become numbers:

=====================  =================================================================
converged fraction     final loss < eps (and not diverged)
accuracy               outputs thresholded at 0.5 against labels thresholded at 0.5
epochs to eps          the first e with loss < eps after e updates (median, quartiles over
                       the networks that got there; the others counted as never-reached)
final-loss quantiles   over the networks with a finite final loss
diverged               networks whose loss or parameters became non-finite
=====================  =================================================================

Shapes follow the package convention, networks first: losses ``[G, epochs]`` (any strides:
``TrainResult.losses`` is a transposed view of an epoch-major buffer), ``final_loss`` and
``diverged`` ``[G]``, predictions ``[G, N, n_out]``.
"""
from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .quantiles import QUANTILE_BYTES, nanquantiles, quantiles

__all__ = ["epochs_to_eps", "accuracy", "nanquantiles", "quantiles", "loss_quantile_curves", "config_stats",
           "format_table", "write_csv", "markdown_table", "CURVE_QUANTILES", "FINAL_QUANTILES", "QUANTILE_BYTES"]

# Quantiles of the loss over networks kept per epoch for each configuration (enough to draw
# the median and the 5-95% band, and the quartiles for anyone who wants them).
CURVE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FINAL_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Networks per block when scanning [G, epochs] histories: bounds the bool temporary
# (65536 x 2500 epochs = 160 MiB) for populations of millions.
_BLOCK = 65536


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def epochs_to_eps(losses: torch.Tensor, final_loss: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Updates each network needed to bring its loss below ``eps``: int64 [G], -1 for never.

    ``losses [G, epochs]`` holds the loss at the start of each epoch (``losses[:, e]`` is the
    loss after ``e`` updates, as :func:`fastmlp.train` records it) and ``final_loss [G]``
    the loss after the last update, so the answer is the first ``e`` in ``0..epochs`` with
    ``loss_e < eps`` (``epochs`` when only the final loss got there).  NaN never counts as
    below ``eps``.  ``final_loss=None`` looks at the history only.
    """
    eps = _check_eps(eps)
    if losses.dim() != 2:
        raise ValueError(f"losses must be [G, epochs], got shape {tuple(losses.shape)}")
    G, E = losses.shape
    out = torch.full((G,), -1, dtype=torch.int64, device=losses.device)
    for g0 in range(0, G, _BLOCK):
        below = losses[g0:g0 + _BLOCK] < eps  # [g, E]
        if E:
            first = torch.argmax(below.to(torch.uint8), dim=1)  # the first maximum: the first True
            reached = below.any(dim=1)
            out[g0:g0 + _BLOCK] = torch.where(reached, first, out[g0:g0 + _BLOCK])
    if final_loss is not None:
        if final_loss.shape != (G,):
            raise ValueError(f"final_loss must be [{G}] to match losses, got shape {tuple(final_loss.shape)}")
        late = (out < 0) & (final_loss.to(losses.device) < eps)
        out[late] = E
    return out


def accuracy(pred: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Fraction of outputs on the right side of ``threshold``: pred [G, N, n_out], y [N, n_out]
    (or [N] when n_out = 1, or [G, N, n_out]) -> [G].  A NaN output (diverged) is wrong."""
    if pred.dim() != 3:
        raise ValueError(f"pred must be [G, N, n_out], got shape {tuple(pred.shape)}")
    y = y.to(pred.device)
    if y.dim() == 1:
        y = y[:, None]
    if y.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"y {tuple(y.shape)} does not match predictions {tuple(pred.shape)}")
    right = (pred > threshold) == (y > threshold)
    right &= ~torch.isnan(pred)
    return right.flatten(1).to(torch.float64).mean(dim=1)


def loss_quantile_curves(losses: torch.Tensor, qs: Sequence[float] = CURVE_QUANTILES) -> torch.Tensor:
    """Per-epoch quantiles over networks of the finite losses: [G, epochs] -> [len(qs), epochs]
    float32 on the CPU (NaN for an epoch where no network has a finite loss), computed on the
    losses' device by :func:`~fastmlp.quantiles.nanquantiles`."""
    if losses.dim() != 2:
        raise ValueError(f"losses must be [G, epochs], got shape {tuple(losses.shape)}")
    return nanquantiles(losses, qs).to(torch.float32).cpu()


def config_stats(final_loss: torch.Tensor, diverged: torch.Tensor, epochs_to: torch.Tensor,
                 acc: torch.Tensor, eps: float) -> dict:
    """The statistics of one configuration (a flat dict of numbers, a row of results.csv).

    Args:
        final_loss: [S] loss after the last update.
        diverged: [S] bool.
        epochs_to: [S] from :func:`epochs_to_eps` (-1 = never reached eps).
        acc: [S] from :func:`accuracy`.
        eps: the convergence threshold.
    """
    eps = _check_eps(eps)
    final = final_loss.detach().to(torch.float64).cpu()
    diverged = diverged.detach().cpu().bool()
    epochs_to = epochs_to.detach().cpu()
    acc = acc.detach().to(torch.float64).cpu()
    S = final.numel()
    if not (diverged.numel() == epochs_to.numel() == acc.numel() == S) or S == 0:
        raise ValueError(f"final_loss, diverged, epochs_to and acc must all be [S] with S >= 1, got "
                         f"{final.numel()}, {diverged.numel()}, {epochs_to.numel()}, {acc.numel()}")
    converged = (final < eps) & ~diverged
    reached = epochs_to[epochs_to >= 0].to(torch.float64)
    e25, e50, e75 = quantiles(reached, (0.25, 0.5, 0.75))
    fq = quantiles(final, FINAL_QUANTILES)
    row = {
        "networks": S,
        "converged": int(converged.sum()),
        "converged_fraction": float(converged.sum()) / S,
        "accuracy_mean": float(acc.mean()),
        "perfect_fraction": float((acc == 1.0).sum()) / S,
        "reached_eps": int(reached.numel()),
        "never_reached": S - int(reached.numel()),
        "epochs_to_eps_q25": e25,
        "epochs_to_eps_median": e50,
        "epochs_to_eps_q75": e75,
        "diverged": int(diverged.sum()),
    }
    for p, v in zip(FINAL_QUANTILES, fq):
        row[f"final_loss_q{round(p * 100):02d}"] = v
    return row


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def _fmt_epochs(row: dict) -> str:
    if row["reached_eps"] == 0:
        return "-"
    return f"{row['epochs_to_eps_median']:.0f} [{row['epochs_to_eps_q25']:.0f}-{row['epochs_to_eps_q75']:.0f}]"


def _fmt_loss(row: dict) -> str:
    if math.isnan(row["final_loss_q50"]):
        return "-"
    return f"{row['final_loss_q50']:.1e} [{row['final_loss_q05']:.1e}, {row['final_loss_q95']:.1e}]"


# (header, function of a row); the key columns come first.
_TABLE = [
    ("dataset", lambda r: str(r["dataset"])),
    ("hidden", lambda r: str(r["hidden"])),
    ("init", lambda r: str(r["init"])),
    ("lr", lambda r: f"{r['lr']:g}"),
    ("nets", lambda r: str(r["networks"])),
    ("converged", lambda r: f"{r['converged_fraction']:.1%}"),
    ("accuracy", lambda r: f"{r['accuracy_mean']:.1%}"),
    ("epochs to eps: median [q25-q75]", _fmt_epochs),
    ("never", lambda r: str(r["never_reached"])),
    ("final loss: median [q05, q95]", _fmt_loss),
    ("diverged", lambda r: str(r["diverged"])),
]


def _cells(rows: Iterable[dict]) -> tuple[list[str], list[list[str]]]:
    return [h for h, _ in _TABLE], [[f(r) for _, f in _TABLE] for r in rows]


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of configuration rows (what ``fastmlp sweep`` prints)."""
    head, body = _cells(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    numeric = [False] * 4 + [True] * (len(head) - 4)
    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def markdown_table(rows: Sequence[dict]) -> str:
    """The same table in Markdown (summary.md)."""
    head, body = _cells(rows)
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 4 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)


def write_csv(rows: Sequence[dict], path) -> None:
    """Every field of every row, one configuration a line (float fields at full precision)."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(Path(path), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})

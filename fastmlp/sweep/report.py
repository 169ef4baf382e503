"""Stage 5, the report: one table row per configuration record, ``results.csv``,
``summary.md``, and the :class:`SweepResult` that :func:`~fastmlp.sweep.sweep` returns
(the figures are :mod:`fastmlp.sweep.figures`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import stats
from ..files import atomic_write
from ..results import environment
from .records import SPEC_FILE, canonical
from .spec import SweepSpec, hidden_label

__all__ = ["SweepResult", "row", "write_csv", "write_summary", "TABLE_FILES"]

# The files every sweep writes besides its figures and configuration files.
TABLE_FILES = (SPEC_FILE, "results.csv", "summary.md")


@dataclass
class SweepResult:
    """What :func:`~fastmlp.sweep.sweep` returns: the table and where everything was written."""

    out: Path
    spec: SweepSpec
    rows: list[dict]
    records: list[dict] = field(repr=False)
    trained: int  # configurations trained by this call
    skipped: int  # configurations found finished in the folder
    wall_time_s: float
    train_time_s: float
    files: list[str]
    timings: dict = field(default_factory=dict)  # seconds per phase of this call
    trained_networks: int = 0  # networks trained by this call (configurations x the seeds they lacked)
    peak_bytes: int = 0  # estimated peak memory of this call's largest population (0: none trained)

    def table(self) -> str:
        return stats.format_table(self.rows)

    def timings_text(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())


def row(record: dict) -> dict:
    """A configuration record as a row of the table (and of results.csv).  The population
    columns add up the populations that trained its seeds (several once seeds were added)."""
    c, pops = record["config"], record["populations"]
    return {"dataset": c["dataset"], "hidden": hidden_label(c["hidden"]), "init": c["init"], "lr": c["lr"],
            "sizes": "-".join(map(str, c["sizes"])), **record["stats"],
            "backend": "+".join(dict.fromkeys(p["backend"] for p in pops)),
            "population_networks": sum(p["networks"] for p in pops),
            "population_wall_time_s": sum(p["wall_time_s"] for p in pops)}


def write_csv(out: Path, rows: list[dict]) -> None:
    atomic_write(out / "results.csv", lambda p: stats.write_csv(rows, p))


def summary_md(result: SweepResult, spec_json: dict, folder_json: dict, device, command: str | None) -> str:
    """The folder's summary.md: the command, the table, this call's timings, the figures,
    the spec of the table, the folder's when it holds more, and the environment."""
    env = environment(device)
    lines = [f"# Sweep {result.out.name}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"{len(result.rows)} configurations x {len(result.spec.seeds)} seeds, {result.spec.epochs} epochs; "
              f"converged means final loss < {result.spec.eps:g}; accuracy thresholds outputs and labels at 0.5; "
              "epochs to eps counts updates until the loss first drops below eps (median and quartiles over the "
              "networks that got there; `never` counts the others).", "",
              stats.markdown_table(result.rows), "",
              f"This call: {result.trained} configurations trained ({result.train_time_s:.1f} s of training), "
              f"{result.skipped} found done ({result.trained_networks} networks trained), "
              f"{result.wall_time_s:.1f} s in all ({result.timings_text()}).", ""]
    pngs = [f for f in result.files if f.endswith(".png")]
    if pngs:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in pngs] + [""]
    lines += ["## Spec (this table)", "", "```json", canonical(spec_json).rstrip(), "```", ""]
    if folder_json != spec_json:
        lines += [f"## The folder ({SPEC_FILE}: every grid run into it)", "", "```json",
                  canonical(folder_json).rstrip(), "```", ""]
    lines += ["## Environment", "", "```json", json.dumps(env, indent=1), "```", ""]
    return "\n".join(lines)


def write_summary(result: SweepResult, spec_json: dict, folder_json: dict, device, command: str | None) -> None:
    atomic_write(result.out / "summary.md",
                 lambda p: Path(p).write_text(summary_md(result, spec_json, folder_json, device, command)))

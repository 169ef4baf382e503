"""Command line: ``fastmlp train`` (the lab at scale; what ``make demo`` runs) and
``fastmlp sweep`` (the lab's closing questions over a grid, see :mod:`fastmlp.sweep`).

Every error ends as ``fastmlp <command>: error: --flag: message`` with exit status 2 (130
after Ctrl-C), never a traceback: the library's errors carry the argument they are about
(``err.arg``, :mod:`fastmlp.validate`) and ``validate.FLAGS`` maps it to its flag.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings

import torch
import torch.distributed as dist

import fastmlp

from . import datasets, distributed, engine
from .memory import plan_chunks
from .population import Population
from .results import animation_run, check_disk, check_run_folder, format_phases, format_summary, run_bytes, save_run
from .sweep import DEFAULTS as SWEEP_DEFAULTS
from .sweep import OPTION_DEFAULTS as SWEEP_OPTION_DEFAULTS
from .sweep import sweep
from .train import MAX_EPOCHS, default_record_every, train
from .validate import (ArgumentError, NotEnoughMemory, TargetRangeWarning, check_device, check_hidden, check_out_dir,
                       check_real, flag_of)

LAB_DEFAULTS = dict(dataset="five_points", hidden="5,3", epochs=2500, lr=0.25, seeds="1024",
                    init="glorot_uniform", gain=1.0, backend="auto", dtype="float32")


def parse_hidden(text: str) -> list[int]:
    """``"5,3"`` -> [5, 3]; ``""`` or ``"none"`` -> [] (a single sigmoid layer)."""
    try:
        return list(check_hidden(text))
    except ArgumentError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def parse_seeds(text: str) -> list[int] | int:
    """``"1024"`` -> 1024 networks (seeds 0..1023); ``"100:200"`` -> range; ``"3,7,9"`` -> list."""
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            if not 0 <= lo < hi:
                raise ValueError
            return list(range(lo, hi))
        if "," in text:
            return [int(p) for p in text.split(",")]
        n = int(text)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (1024), a range (100:200) or a list (3,7,9) of seeds, got {text!r}") from None


def _number(text: str, arg: str, **limits) -> float:
    """An argparse type: a finite number, checked by :func:`fastmlp.validate.check_real`."""
    try:
        return check_real(arg, float(text), **limits)
    except ValueError as e:  # float() of a non-number, or the check's ArgumentError
        raise argparse.ArgumentTypeError(e.message if isinstance(e, ArgumentError)
                                         else f"expected a number, got {text!r}") from None


def _gain(text: str) -> float:
    return _number(text, "gain")


def _lr(text: str) -> float:
    return _number(text, "lr", minimum=0)


def _eps(text: str) -> float:
    return _number(text, "eps", positive=True)



class _Parser(argparse.ArgumentParser):
    """argparse words its own errors ``argument --flag: message``; the library's errors come
    out as ``--flag: message``: one form for both."""

    def error(self, message: str):
        super().error(message.removeprefix("argument "))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastmlp", description="Train many small MLPs at once, "
                     "with the lab's hand-derived backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = {}  # command -> its parser (errors read "fastmlp <command>: error: ...")
    t = parser.commands["train"] = sub.add_parser("train", help="train one population (defaults: the lab's setup, 1024 seeds)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", default=LAB_DEFAULTS["dataset"],
                   help="five_points, xor, circles, moons, spirals, or csv:PATH")
    t.add_argument("--hidden", type=parse_hidden, default=LAB_DEFAULTS["hidden"],
                   help="hidden widths, comma-separated ('none' for no hidden layer)")
    t.add_argument("--epochs", type=_epochs, default=LAB_DEFAULTS["epochs"])
    t.add_argument("--lr", type=_lr, default=LAB_DEFAULTS["lr"], help="learning rate")
    t.add_argument("--seeds", type=parse_seeds, default=LAB_DEFAULTS["seeds"],
                   help="number of networks (seeds 0..n-1), a range a:b, or a list a,b,c")
    t.add_argument("--init", default=LAB_DEFAULTS["init"],
                   help="glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal, lecun_uniform, "
                        "normal[:std], uniform[:bound], zeros")
    t.add_argument("--gain", type=_gain, default=LAB_DEFAULTS["gain"], help="multiplies the init scheme's scale")
    t.add_argument("--dtype", choices=["float32", "float64"], default=LAB_DEFAULTS["dtype"])
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    t.add_argument("--backend", default=LAB_DEFAULTS["backend"], choices=engine.names(),
                   help="auto picks the fastest that can run (see fastmlp.engine)")
    t.add_argument("--out", default="runs/train",
                   help="run folder to write: a new or empty folder, or (with --force) a previous run's")
    t.add_argument("--force", action="store_true",
                   help="replace the previous run at --out as a whole (a folder holding no run is never replaced)")
    t.add_argument("--eps", type=_eps, default=0.01, help="a network has converged when its final loss < eps; "
                   "the first epoch below it is tracked on every epoch during training")
    t.add_argument("--record-every", type=_record_every, default=None, metavar="K",
                   help="keep the loss of every K-th epoch in losses.pt (default: every epoch while the history "
                        "fits in 64 MiB, else the smallest K that fits; 1 keeps all)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--animate", action="store_true",
                   help="also write boundaries.gif: the gallery's networks over training (2-D inputs)")
    parser.commands["sweep"] = _add_sweep_parser(sub)
    return parser


# -- fastmlp sweep ------------------------------------------------------------------------
# The sweep's defaults are the library's (SWEEP_DEFAULTS, SWEEP_OPTION_DEFAULTS): a flag left
# out passes nothing, and sweep() applies its own default.
SWEEP_OUT = "runs/sweep"


def _label(values) -> str:
    """A default as the flag would spell it: (0.25,) -> "0.25", ((5, 3),) -> "5,3"."""
    def one(v):
        return ",".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)
    return " ".join(one(v) for v in values) if isinstance(values, tuple) else one(values)


def _comma_list(convert):
    """An argparse type: ``"0.1,0.25"`` -> [0.1, 0.25] (with nargs="+" and append: any mix of
    repeated flags, several values and comma lists)."""
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"empty value in {text!r}")
        return [convert(p) for p in parts]
    return parse


def _record_every(text: str) -> int:
    """An argparse type: --record-every, an int >= 1."""
    return _epochs(text)


def _epochs(text: str) -> int:
    """An argparse type: epochs, an int in [1, 2**31 - 1] (0 epochs would train nothing and leave
    no losses; epoch numbers are int32 on the device)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {v}")
    if v > MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"expected an int <= {MAX_EPOCHS} (epoch numbers are int32 on the device), "
                                         f"got {v}")
    return v


def _add_sweep_parser(sub) -> argparse.ArgumentParser:
    d, o = SWEEP_DEFAULTS, SWEEP_OPTION_DEFAULTS
    s = sub.add_parser(
        "sweep", help="train a grid of configurations on the same seeds; statistics, plots, resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every (dataset, architecture, init, lr) configuration trains the same seeds.\n"
                    "Flags taking a grid accept several values, commas, or repeats:\n"
                    "  --hidden 5,3 8 4,4,4   --lr 0.1,0.25 1   --init he_normal --init normal:0.1@2\n"
                    "Re-running the same command into the same --out folder resumes it.")
    s.add_argument("--hidden", action="append", nargs="+", type=parse_hidden, metavar="W1,W2,...",
                   help="architectures: hidden widths, comma-separated ('none': no hidden layer); "
                        f"default {_label(d['hidden'])}")
    s.add_argument("--lr", action="append", nargs="+", type=_comma_list(_lr), metavar="LR",
                   help=f"learning rates; default {_label(d['lr'])}")
    s.add_argument("--init", action="append", nargs="+", type=_comma_list(str), metavar="SCHEME[@GAIN]",
                   help="init schemes: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal, "
                        "lecun_uniform, normal[:std], uniform[:bound], zeros; '@GAIN' sets a gain for one "
                        f"scheme; default {_label(d['init'])}")
    s.add_argument("--dataset", action="append", nargs="+", metavar="NAME",
                   help=f"five_points, xor, circles, moons, spirals, or csv:PATH; default {_label(d['datasets'])}")
    s.add_argument("--seeds", type=parse_seeds, default=d["seeds"],
                   help=f"seeds per configuration: a count, a range a:b, or a list a,b,c; default {d['seeds']}")
    s.add_argument("--epochs", type=_epochs, default=d["epochs"], help=f"default {d['epochs']}")
    s.add_argument("--eps", type=_eps, default=d["eps"],
                   help=f"a network has converged when its final loss < eps; default {d['eps']:g}")
    s.add_argument("--gain", type=_gain, default=d["gain"],
                   help=f"gain of every init without '@GAIN'; default {d['gain']:g}")
    s.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"])
    s.add_argument("--device", default=o["device"], help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    s.add_argument("--backend", default=o["backend"], choices=engine.names(),
                   help=f"default {o['backend']}: the fastest that can run (see fastmlp.engine)")
    s.add_argument("--out", default=SWEEP_OUT, help=f"the sweep folder; default {SWEEP_OUT}")
    s.add_argument("--formats", type=_comma_list(str), default=list(o["formats"]),
                   help=f"figure formats; default {','.join(o['formats'])}")
    s.add_argument("--no-plots", action="store_true", help="statistics only")
    s.add_argument("--save-losses", action="store_true", help="keep every network's loss history (big)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    return s


def _flatten(groups) -> list | None:
    """Repeated flags with several values each, some comma lists -> one list (None: not given)."""
    if groups is None:
        return None
    return [v for group in groups for item in group for v in (item if isinstance(item, list) else [item])]


def cmd_sweep(args, argv) -> int:
    grid = {"hidden": None if args.hidden is None else [h for group in args.hidden for h in group],
            "lr": _flatten(args.lr), "init": _flatten(args.init), "datasets": _flatten(args.dataset)}
    check_out_dir(args.out, "out")  # the sweep writes inside it: "", a file, no place to create it
    try:
        sweep(args.out, **{k: v for k, v in grid.items() if v is not None}, seeds=args.seeds, epochs=args.epochs,
              eps=args.eps, gain=args.gain, dtype=args.dtype, device=_default_device(args), backend=args.backend,
              progress=False if args.no_progress else None, plots=not args.no_plots, formats=args.formats,
              save_losses=args.save_losses, command="fastmlp " + shlex.join(argv))
    except OSError as e:  # the data sets are read by then: this is the sweep folder
        raise ArgumentError("out", f"cannot write the sweep folder {args.out!r}: {e.strerror or e}") from None
    return 0


def _default_device(args) -> str:
    """--device, else this rank's device under torchrun, else cuda when available."""
    if args.device:
        return args.device
    if getattr(args, "rank_device", None) is not None:
        return str(args.rank_device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_run_folder(args) -> None:
    """Before any work, rank 0 (the one that writes) checks the run folder; under torchrun
    every other rank gets its verdict, so that all stop with the same error, or none."""
    def check():
        try:
            check_run_folder(args.out, overwrite=args.force)
        except OSError as e:  # a folder on the way that cannot be read, a leftover that cannot be moved
            raise ArgumentError("out", f"cannot use the run folder {args.out!r}: {e.strerror or e}") from None

    distributed.on_main(check)


def cmd_train(args) -> int:
    phases = {"imports": time.perf_counter() - fastmlp.STARTED} if args.timed else {}
    t0 = time.perf_counter()
    _check_run_folder(args)
    device = check_device(_default_device(args))
    say = print if distributed.is_main() else (lambda *a, **k: None)
    x, y = datasets.get(args.dataset)  # warns about labels a sigmoid cannot reach (a CSV's)
    sizes = [x.shape[1], *args.hidden, y.shape[1]]
    if args.animate and x.shape[1] != 2:
        raise ArgumentError("animate", f"--animate draws decision boundaries over a plane: it needs 2-D inputs, "
                                       f"and {args.dataset} has {x.shape[1]}")
    pop = Population(sizes, args.seeds, init=args.init, gain=args.gain, dtype=getattr(torch, args.dtype),
                     device=device)
    shard = distributed.current()
    itemsize = pop.dtype.itemsize
    every = args.record_every or default_record_every(len(pop), args.epochs, itemsize)
    rows = -(-args.epochs // every)
    # Before any work: the training must fit in memory (train checks again, as it plans its
    # chunks), then the folder on the disk (rank 0 writes it; every rank gets its verdict).
    problem = engine.Problem(pop.arch, x.shape[0], True, pop.dtype, len(pop), args.epochs, every)
    lo, hi = shard.bounds(len(pop)) if shard is not None else (0, len(pop))
    plan_chunks(engine.select_backend(args.backend, device, problem), problem, max(hi - lo, 1), device)
    distributed.on_main(lambda: check_disk(args.out, run_bytes(pop.arch, len(pop), rows, itemsize, args.animate)))
    say(f"training {pop} on {args.dataset} (N = {len(x)}), {args.epochs} epochs, lr {args.lr:g}"
        + (f", sharded over {shard.world_size} ranks" if shard else "")
        + (f"; loss history: one epoch in {every}" if every > 1 else ""))
    t1 = time.perf_counter()
    phases["setup"] = t1 - t0
    with warnings.catch_warnings():  # the data set's warning, above, named the file and column already
        warnings.simplefilter("ignore", TargetRangeWarning)
        result = train(x, y, pop, args.epochs, args.lr, backend=args.backend,
                       progress=False if args.no_progress or not distributed.is_main() else None,
                       record_every=every, eps=args.eps)
        t2 = time.perf_counter()
        phases["train"] = t2 - t1  # the call: its checks, the memory plan, the blocks (wall_time_s: the blocks)
        t1 = t2
        # every rank replays (train is collective under torchrun); rank 0 draws
        replay = animation_run(result, x, y, args.lr) if args.animate else None
        if replay is not None:
            phases["animation replay"] = time.perf_counter() - t1
    if args.backend == "auto" and distributed.is_main():
        # A backend auto passed over for its one-off cost (the CPU program's cold compile)
        # prepares in the background, so that the next run of this problem can take it.
        problem = engine.Problem(pop.arch, x.shape[0], True, pop.dtype, len(pop), args.epochs)
        for name in engine.warm_up(pop.device, problem):
            say(f"(backend {name!r} is compiling for this architecture in the background: the next run can use it)")
    config = {"dataset": args.dataset, "sizes": sizes, "epochs": args.epochs, "lr": args.lr,
              "seeds": args.seeds if isinstance(args.seeds, int) else [int(s) for s in pop.seeds],
              "init": str(pop.init), "gain": args.gain, "dtype": args.dtype, "device": str(pop.device),
              "backend_requested": args.backend, "record_every": every}
    if distributed.is_main():  # every rank holds the gathered result; rank 0 writes it
        try:
            summary = save_run(result, x, y, args.out, config, eps=args.eps, overwrite=args.force,
                               animation=replay, phases=phases, disk_checked=True)
        except OSError as e:
            raise ArgumentError("out", f"cannot write the run folder {args.out!r}: {e.strerror or e}") from None
        say(format_summary(summary))
        say(f"wrote {os.path.join(args.out, '')}: " + ", ".join(summary["files"]))
        say(format_phases(phases))
    distributed.barrier()
    return 0


def _warning_printer(prog: str, show):
    """fastmlp's warnings about the user's input as ``fastmlp <command>: warning: message``;
    any other warning as Python shows it."""
    def printer(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TargetRangeWarning):
            print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)
    return printer


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv_is_process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    command = parser.commands[args.command]
    if extra:
        command.error(f"{extra[0]}: unrecognized argument")
    args.rank_device = None
    args.timed = argv_is_process  # imports are timed from fastmlp's first line when main is the program
    try:
        args.rank_device = distributed.init_from_env()  # under torchrun: join the process group
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(command.prog, warnings.showwarning)
            if args.command == "train":
                return cmd_train(args)
            return cmd_sweep(args, argv)
    except (ArgumentError, NotEnoughMemory) as e:
        command.error(f"{flag_of(e.arg)}: {e.message}")
    except (MemoryError, torch.cuda.OutOfMemoryError) as e:  # the allocator (a CUDA OOM is no MemoryError)
        command.error(f"--seeds: out of memory ({e}); train fewer seeds or epochs")
    except KeyboardInterrupt:
        print(f"\n{command.prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.rank_device is not None and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""The one-launch backend: one call trains a block of epochs of every network.

The per-architecture training program (``fastmlp/program.py``) has two targets, chosen by
the population's device:

=========  ============================================  ======================================
target     runs on                                       rendered by
=========  ============================================  ======================================
triton     CUDA (CPU with ``TRITON_INTERPRET=1``,        ``kernels/fused_unrolled.py`` (and the
           when ``target = "triton"`` is set)            tile kernel of ``kernels/fused_train.py``)
numba      the CPU                                       ``fastmlp/program_numba.py``
=========  ============================================  ======================================

Parameters are packed once into a ``[P, G]`` network-minor buffer (``Architecture.pack``);
each block of epochs is one call that keeps every network's weights in registers (a GPU
thread's, or a SIMD lane's); the population's tensors are written back when the loop asks
(the end, Ctrl-C).  The compiled code is imported when a run starts, so asking whether this
backend takes a problem (``BACKEND.limits``) reads only the Architecture.

Limits, both targets: data shared by all networks (the data are scalars every lane or
thread reads), float32 / float64, and ``Architecture.fused_limits``: at most 4 hidden layers,
widths up to 32, N up to 4096.  On a GPU the register file sets them; on the CPU the
generated straight-line program (its size grows with N x parameters up to 16 samples)
would take longer to compile than it saves past them.
"""
from __future__ import annotations

import torch

import importlib.util
import os
import subprocess
import sys

from .. import program_numba
from ..architecture import UNROLL_SAMPLES  # imports numba only when a program compiles
from .base import Backend, Problem, finite_loss, finite_parameters
from .torch import linear_act_fwd, output_delta
from .triton import triton_unavailable

__all__ = ["FusedRun", "FusedBackend", "BACKEND", "TARGETS"]

TARGETS = ("triton", "numba")




def numba_available() -> bool:
    """True when numba can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a module entry set to None (blocked), or a broken one
        return False


def _launcher(target: str):
    """The module whose ``fused_train`` launches ``target``'s program (same contract)."""
    if target == "triton":
        from ..kernels import fused_train  # imports triton

        return fused_train
    return program_numba


class FusedRun:
    """Packed parameters and launches for one chunk of networks (a :class:`~fastmlp.engine.base.Run`)."""

    def __init__(self, pop, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, target: str = "triton",
                 variant: str | None = None, threads: int | None = None, eps: float | None = None):
        self._fk, self.variant = _launcher(target), variant
        self._kw = {"threads": threads} if target == "numba" and threads is not None else {}
        self.pop, self.x, self.y, self.lr = pop, x, y, lr
        self.packed = pop.arch.pack(pop.weights, pop.biases)
        self.active_i8 = torch.ones(len(pop), dtype=torch.int8, device=pop.device)
        # -1 until a loss is below eps; without eps, 0s (the program changes no entry >= 0)
        self.first = torch.full((len(pop),), -1 if eps is not None else 0, dtype=torch.int32, device=pop.device)
        self.eps = 0.0 if eps is None else float(eps)
        self._tracking = eps is not None
        self._synced = True  # the population's tensors hold what `packed` holds

    @property
    def active(self) -> torch.Tensor:
        return self.active_i8 != 0

    @property
    def first_below(self) -> torch.Tensor:
        return self.first if self._tracking else torch.full_like(self.first, -1)

    def block(self, history_rows: torch.Tensor, epochs: int | None = None, record_every: int = 1,
              e_base: int = 0) -> None:
        """Train ``epochs`` (default ``len(history_rows)``) epochs in one launch, recording every
        ``record_every``-th epoch's loss and noting the first below eps on every epoch."""
        epochs = history_rows.shape[0] if epochs is None else epochs
        self._fk.fused_train(self.x, self.y, self.packed, self.lr, self.active_i8, history_rows, self.pop.sizes,
                             epochs, record_every, variant=self.variant, first_below=self.first, eps=self.eps,
                             e_base=e_base, **self._kw)
        self._synced = False

    def check_parameters(self) -> None:
        if self._fk is program_numba:
            # numpy, on this thread: torch's isfinite on a [P, G] buffer runs on its OpenMP
            # pool, whose threads then spin and compete with the program's own threads for
            # the next block (lab network, G = 1024, 2 cores: 19.8 -> 28.9 M network-epochs/s).
            import numpy as np  # present wherever numba is

            active = self.active_i8.numpy()
            active &= np.isfinite(self.packed.numpy()).all(axis=0)
            return
        self.active_i8.mul_(finite_parameters(self.packed, network_dim=-1).to(torch.int8))

    def write_back(self) -> None:
        if not self._synced:
            self.pop.arch.unpack_into(self.packed, self.pop.weights, self.pop.biases)
            self._synced = True

    def final_loss(self, out: torch.Tensor) -> None:
        """Loss of the current parameters, with the torch engine's ops."""
        self.write_back()
        z = self.x
        for w, b, act in zip(self.pop.weights, self.pop.biases, self.pop.arch.acts):
            z = linear_act_fwd(z, w, b, act)
        output_delta(z, self.y, loss=out)
        finite = finite_loss(out, torch.empty_like(out), torch.empty_like(out, dtype=torch.bool))
        self.active_i8.mul_(finite.to(torch.int8))


class FusedBackend(Backend):
    name = "fused"
    # Epochs per call.  Overhead per call: one parameter check and a progress update
    # (bench/bench_train.py measures it against one call for all epochs).
    block_epochs = 250
    # On the CPU a call of 250 epochs of a few networks is over in well under a millisecond,
    # and the ~90 us of Python around each call (launch checks, the parameter check) would
    # cost more than the program (G = 1: 0.86 ms of 3.4): there a block grows to about this
    # many seconds of estimated work (never fewer than block_epochs epochs).  None: always
    # block_epochs.
    block_seconds: float | None = 0.05
    # On a GPU (the triton target on CUDA) a block is about this long (estimated by
    # gpu_epoch_seconds; a slower GPU than the H200 gets longer blocks).
    gpu_block_seconds: float = 0.25
    gpu_latency_s: float = 1.4e-8
    gpu_param_samples_per_s: float = 4.6e12
    auto_devices = ("cuda", "cpu")
    # A run holds the packed parameters; its final loss is a forward pass with the torch
    # engine's ops, bmm above 16 inputs (Architecture.working_bytes, program "fused").
    working_memory = "fused"
    # The target: None picks by device (CUDA: triton, CPU: numba); "triton" on the CPU runs
    # Triton's interpreter (TRITON_INTERPRET=1; the kernel tests do this).
    target: str | None = None
    # Which Triton kernel: None picks by rule (the generated one-thread program when a network
    # fits a thread, else the tile kernel); "unrolled" or "tiles" forces one (tests, benchmarks).
    variant: str | None = None
    # Threads of the numba target (None: torch.get_num_threads()); results do not depend on it.
    threads: int | None = None
    # backend="auto" on the CPU compares estimated times: the numba target pays numba's import
    # (when not imported yet), a load from the disk cache or a cold compile (when the program is
    # not in this process yet), then the program on whole 16-network blocks; the torch engine
    # a fixed cost per layer and epoch (its ~57 tensor ops per layer) plus the parameters it
    # moves.  Measured on the 2-core dev box, lab network (37 parameters), float32, quiet:
    # numba import after torch 0.18-0.20 s, load 0.25-0.27 s, cold compile 4.97 s, the
    # program ~27 M network-epochs/s (bench/README.md, Table 7); the torch engine 4.1 k
    # network-epochs/s at G = 1 (0.24 ms an epoch, 3 layers) and 7.1 M at G = 65536
    # (0.14 us a network-epoch).  The estimates below round those against the program.
    numba_import_s: float = 0.25
    load_s: float = 0.3
    cold_compile_s: float = 5.0
    program_param_epochs_per_s: float = 1.0e9
    torch_layer_epoch_s: float = 8.0e-5
    torch_param_epochs_per_s: float = 2.6e8

    def target_for(self, device: torch.device) -> str:
        if self.target is not None:
            if self.target not in TARGETS:
                raise ValueError(f"FusedBackend.target must be None or one of {TARGETS}, got {self.target!r}")
            return self.target
        return "triton" if device.type == "cuda" else "numba"

    def unavailable(self, device):
        target = self.target_for(device)
        if target == "triton":
            return triton_unavailable(device, "its one-launch kernels")
        if device.type != "cpu":
            return f"runs its numba target on the CPU only, and the population is on {device}"
        if not numba_available():
            return "needs numba on the CPU (pip install numba)"
        return None

    def limits(self, problem: Problem):
        if not problem.shared_data:
            return "per-network x or y (the fused program reads one data set shared by all networks)"
        if problem.dtype not in (torch.float32, torch.float64):
            return f"{problem.dtype} parameters (the fused program takes float32 and float64)"
        return problem.arch.fused_limits(problem.N)

    def _program(self, problem: Problem) -> tuple:
        return (tuple(problem.arch.sizes), min(problem.N, UNROLL_SAMPLES + 1), str(problem.dtype).removeprefix("torch."))

    def _seconds(self, problem: Problem, cached: bool) -> tuple[float, float]:
        """Estimated ``(numba target, torch engine)`` seconds for ``problem``."""
        arch, epochs = problem.arch, problem.epochs
        blocks = -(-problem.G // program_numba.BLOCK)
        fixed = 0.0 if "numba" in sys.modules else self.numba_import_s
        if not program_numba.is_loaded(*self._program(problem)):
            fixed += self.load_s if cached else self.cold_compile_s
        ours = fixed + blocks * program_numba.BLOCK * epochs * arch.n_params / self.program_param_epochs_per_s
        torch_s = epochs * (arch.n_layers * self.torch_layer_epoch_s
                            + problem.G * arch.n_params / self.torch_param_epochs_per_s)
        return ours, torch_s

    def gpu_epoch_seconds(self, problem: Problem) -> float:
        """Estimated seconds of one epoch of ``problem`` on a GPU: a thread runs its network's
        epochs one after another (``gpu_latency_s`` per parameter-sample, what a lightly
        loaded GPU shows) until the networks fill the machine (``gpu_param_samples_per_s``).
        Measured on the H200 (bench_fused, lab network, N = 5, 185 parameter-samples): 2.6 us an
        epoch at G = 65,536 (the latency), 38 us at 2**20 (4.6e12 parameter-samples/s)."""
        work = problem.arch.n_params * max(problem.N, 1)
        return max(work * self.gpu_latency_s, problem.G * work / self.gpu_param_samples_per_s)

    def epochs_per_block(self, problem: Problem, device: torch.device) -> int:
        if self.block_seconds is None or not problem.G:
            return self.block_epochs
        if self.target_for(device) == "triton":
            if torch.device(device).type != "cuda":  # the interpreter: short blocks (tests)
                return self.block_epochs
            # A block of about gpu_block_seconds: the lab network trains 2500 epochs in one
            # launch up to ~2**21 networks on an H200 (blocks of 250 epochs cost +30% at
            # G = 65,536 there; the loop's host time is 22.5 us a block, bench/README.md), while
            # a run of minutes still checks its parameters, updates the bar and stops on Ctrl-C
            # every quarter second.
            return max(self.block_epochs, int(self.gpu_block_seconds / self.gpu_epoch_seconds(problem)))
        lanes = -(-problem.G // program_numba.BLOCK) * program_numba.BLOCK
        rate = self.program_param_epochs_per_s / problem.arch.n_params  # network-epochs per second
        return max(self.block_epochs, int(self.block_seconds * rate / lanes))

    def worth_it(self, problem: Problem, device: torch.device) -> bool:
        target = self.target_for(device)
        if target == "triton":
            return device.type == "cuda"  # Triton's CPU interpreter is for tests, never auto's pick
        ours, torch_s = self._seconds(problem, program_numba.is_cached(*self._program(problem)))
        return ours <= torch_s

    def warm_up(self, problem: Problem, device: torch.device) -> bool:
        """Compile the numba program into the disk cache in a detached process (the CLI's
        ``fastmlp train`` asks after a run that auto gave to the torch engine), unless
        ``FASTMLP_BACKGROUND_COMPILE=0``."""
        if (self.target_for(device) != "numba" or os.environ.get("FASTMLP_BACKGROUND_COMPILE", "1") == "0"
                or not numba_available()):
            return False
        sizes, n, dtype = self._program(problem)
        if program_numba.is_cached(sizes, n, dtype):
            return False
        ours, torch_s = self._seconds(problem, cached=True)
        if ours > torch_s:  # not worth it even once compiled: nothing to prepare
            return False
        code = f"from fastmlp import program_numba as p; p.compiled({sizes!r}, {n}, {dtype!r})"
        # Lowest CPU priority: the run that started it (its figures, here) keeps the cores.
        nice = (lambda: os.nice(19)) if hasattr(os, "nice") else None
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=nice)
        return True

    def start(self, pop, x, y, lr, eps=None) -> FusedRun:
        return FusedRun(pop, x, y, lr, self.target_for(pop.device), self.variant, self.threads, eps)


BACKEND = FusedBackend()

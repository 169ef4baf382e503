"""How ``bench_train.py`` trains G lab networks, one class per provider (its ``PROVIDERS`` table
names them): the lab's per-network loop, ``fastmlp.train``, the one-launch CPU program
(``fastmlp.program_numba``), and the baselines written here: plain bmm, PyTorch's ``torch.func``
ensembling idiom and JAX's ``jit(lax.scan(vmap(value_and_grad)))``.

Each: ``prepare(pop, x, y)`` -> state (untimed; copies the initial weights), ``ready(state, epochs)``
(untimed: compiles what a run of ``epochs`` needs), ``run(state, epochs)`` -> final loss [G']
(timed), ``nets(state)`` -> how many networks ran, ``weights(state)`` -> [G', n_in, n_out] per
layer (the agreement check), ``where(device)`` -> the device it computes on when the run's
tensors are on ``device`` ("cpu", "cuda:0"; the tables' labels), and ``loops``: whether it
issues its work epoch by epoch from Python (on a GPU those are timed over fewer epochs).
"""
from __future__ import annotations

import torch

import fastmlp
from fastmlp import reference


def torch_device_label(device) -> str:
    """``cpu`` or ``cuda:<index>`` (the current device when ``device`` names none)."""
    d = torch.device(device)
    if d.type == "cuda":
        return f"cuda:{d.index if d.index is not None else torch.cuda.current_device()}"
    return d.type if d.index is None else str(d)


class Runner:
    slow = False  # fewer epochs per timed run
    loops = True  # a Python loop over epochs, each launching its own ops

    def __init__(self, lr: float):
        self.lr = lr

    def where(self, device) -> str:
        """The device this provider computes on when the run's tensors are on ``device``."""
        return torch_device_label(device)

    def nets(self, state) -> int:
        return len(state["pop"]) if "pop" in state else state["G"]

    def ready(self, state, epochs: int) -> None:
        """Whatever a run of ``epochs`` epochs compiles, done untimed (default: nothing)."""


class ReferenceLoop(Runner):
    """The lab's engine, one network after another: ``max_nets`` are timed (its rate is extrapolated)."""
    slow = True

    def __init__(self, lr: float, max_nets: int):
        super().__init__(lr)
        self.max_nets = max_nets

    def prepare(self, pop, x, y):
        k = min(len(pop), self.max_nets)
        return {"nets": [pop.network(i) for i in range(k)], "G": k, "x": x, "y": y}

    def run(self, state, epochs):
        x, y = state["x"], state["y"]
        for net in state["nets"]:
            reference.train(x, y, net, epochs, self.lr)
        return torch.stack([net.get_loss(x, y) for net in state["nets"]])

    def weights(self, state):
        return [torch.stack([net.layers[l].get_weight() for net in state["nets"]])
                for l in range(len(state["nets"][0].layers))]


class FastmlpBackend(Runner):
    """``fastmlp.train(x, y, population, epochs, lr, backend=...)``."""

    def __init__(self, lr: float, backend: str):
        super().__init__(lr)
        self.backend = backend
        self.loops = backend != "fused"  # the one-launch program runs blocks of hundreds of epochs

    def prepare(self, pop, x, y):
        return {"pop": pop.clone(), "x": x, "y": y}

    def run(self, state, epochs):
        r = fastmlp.train(state["x"], state["y"], state["pop"], epochs, self.lr, backend=self.backend, progress=False)
        return r.final_loss

    def weights(self, state):
        return [w.contiguous() for w in state["pop"].weights]


class PlainBmm(Runner):
    """The same equations written plainly: baddbmm/bmm on contiguous [G, ...] tensors.

    z_l = act(z_{l-1} @ W_l + b_l);  delta_L = 2 (z_L - y) / (N n_out) * z_L (1 - z_L);
    delta_{l-1} = (delta_l @ W_l^T) * (1 - z_{l-1}^2);  W_l -= lr z_{l-1}^T delta_l;
    b_l -= lr sum_n delta_l.  No autograd, no preallocated buffers, no layout tricks.
    """

    def prepare(self, pop, x, y):
        G, N = len(pop), x.shape[0]
        return {"W": [w.contiguous().clone() for w in pop.weights],
                "b": [b.contiguous().clone() for b in pop.biases],
                "x": x.expand(G, N, x.shape[1]).contiguous(), "y": y, "G": G}

    def run(self, state, epochs):
        W, b, x, y = state["W"], state["b"], state["x"], state["y"]
        L = len(W)
        G, N, n_out = x.shape[0], x.shape[1], W[-1].shape[2]
        history = torch.empty(epochs, G, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            for e in range(epochs):
                zs = [x]
                for l in range(L):
                    z = torch.baddbmm(b[l].unsqueeze(1), zs[-1], W[l])
                    zs.append(torch.tanh(z) if l < L - 1 else torch.sigmoid(z))
                out = zs[-1]
                diff = out - y
                history[e] = (diff * diff).mean(dim=(1, 2))
                delta = 2.0 / (N * n_out) * diff * out * (1 - out)
                for l in reversed(range(L)):
                    weight_grad = torch.bmm(zs[l].transpose(1, 2), delta)
                    bias_grad = delta.sum(dim=1)
                    if l > 0:  # with W_l before its update
                        delta_below = torch.bmm(delta, W[l].transpose(1, 2)) * (1 - zs[l] * zs[l])
                    W[l].sub_(weight_grad, alpha=self.lr)
                    b[l].sub_(bias_grad, alpha=self.lr)
                    if l > 0:
                        delta = delta_below
            out = x
            for l in range(L):
                out = torch.baddbmm(b[l].unsqueeze(1), out, W[l])
                out = torch.tanh(out) if l < L - 1 else torch.sigmoid(out)
            return ((out - y) ** 2).mean(dim=(1, 2))

    def weights(self, state):
        return state["W"]


class FuncEnsemble(Runner):
    """PyTorch's model-ensembling idiom (torch.func tutorial), with manual SGD."""

    def prepare(self, pop, x, y):
        import torch.nn as nn
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap

        layers = []
        for (a, c), act in zip(pop.arch.layers, pop.arch.acts):
            layers += [nn.Linear(a, c), nn.Tanh() if act == "tanh" else nn.Sigmoid()]
        template = nn.Sequential(*layers).to(x.device)
        # stack_module_state over G models returns {"0.weight": [G, out, in], "0.bias": [G, out],
        # ...}, stacked contiguous.  Building G nn.Modules costs 0.6 ms each here (5 s at
        # G = 8192, 40 s at 65536), so the stacked dict is built from one model's keys and
        # filled from the population: same keys, shapes and layout, and the same initial
        # weights as every other provider.
        params, buffers = stack_module_state([template])
        linear_keys = [k for k in params if k.endswith(".weight")]
        for l, k in enumerate(linear_keys):
            params[k] = pop.weights[l].transpose(1, 2).contiguous().clone()  # nn.Linear: [out, in]
            params[k[:-len("weight")] + "bias"] = pop.biases[l].contiguous().clone()
        base = template.to("meta")

        def loss_fn(params, buffers, x, y):
            out = functional_call(base, (params, buffers), (x,))
            return torch.mean((out - y) ** 2)

        step = vmap(grad_and_value(loss_fn), in_dims=(0, 0, None, None))
        return {"params": params, "buffers": buffers, "step": step, "loss_fn": loss_fn,
                "x": x, "y": y, "G": len(pop), "keys": linear_keys}

    def run(self, state, epochs):
        from torch.func import vmap

        params, buffers, step, x, y = state["params"], state["buffers"], state["step"], state["x"], state["y"]
        history = torch.empty(epochs, state["G"], dtype=x.dtype, device=x.device)
        names = list(params)
        for e in range(epochs):
            grads, loss = step(params, buffers, x, y)
            history[e] = loss
            with torch.no_grad():
                torch._foreach_sub_([params[k] for k in names], [grads[k] for k in names], alpha=self.lr)
        return vmap(state["loss_fn"], in_dims=(0, 0, None, None))(params, buffers, x, y)

    def weights(self, state):
        return [state["params"][k].transpose(1, 2) for k in state["keys"]]


def _forward_loss(pop, x, y) -> torch.Tensor:
    """MSE [G] of the population's current parameters on shared x, y (torch ops)."""
    z = x
    for w, b, act in zip(pop.weights, pop.biases, pop.arch.acts):
        z = torch.matmul(z, w) + b.unsqueeze(-2)
        z = torch.tanh(z) if act == "tanh" else torch.sigmoid(z)
    return ((z - y) ** 2).mean(dim=(-2, -1))


def fused_cpu_via() -> str:
    """How the fused CPU provider trains: ``"train"`` (``fastmlp.train(backend="fused")``) once
    the fused backend takes the CPU, else ``"launcher"`` (``program_numba.fused_train``)."""
    from fastmlp import engine

    return "train" if engine.get_backend("fused").unavailable(torch.device("cpu")) is None else "launcher"


class FusedCpu(Runner):
    """The one-launch training program on the CPU (numba, one network per SIMD lane).

    Through ``fastmlp.train(..., backend="fused")`` when the engine runs it on the CPU; until then
    the launcher directly, with what ``train`` would do around it, all timed: pack the parameters
    ([P, G]), one launch for every epoch (loss recorded every epoch), unpack, final loss."""

    loops = False

    def __init__(self, lr: float):
        super().__init__(lr)
        self.via = fused_cpu_via()

    def where(self, device) -> str:
        return "cpu"  # numba: always the CPU (the provider runs only in CPU runs)

    def prepare(self, pop, x, y):
        return {"pop": pop.clone(), "x": x, "y": y}

    def run(self, state, epochs):
        pop, x, y = state["pop"], state["x"], state["y"]
        if self.via == "train":
            return fastmlp.train(x, y, pop, epochs, self.lr, backend="fused", progress=False).final_loss
        from fastmlp import program_numba

        G, arch = len(pop), pop.arch
        packed = arch.pack(pop.weights, pop.biases)
        lr = torch.full((G,), self.lr, dtype=packed.dtype)
        active = torch.ones(G, dtype=torch.int8)
        history = torch.empty(epochs, G, dtype=packed.dtype)
        program_numba.fused_train(x, y, packed, lr, active, history, pop.sizes, epochs)
        arch.unpack_into(packed, pop.weights, pop.biases)
        with torch.no_grad():
            return _forward_loss(pop, x, y)

    def weights(self, state):
        return [w.contiguous() for w in state["pop"].weights]


class JaxScan(Runner):
    """JAX's idiom: ``jax.jit`` of a ``lax.scan`` over epochs of ``vmap`` over networks of
    ``value_and_grad`` of the MSE, SGD in the scan body.  The weights are the population's
    (Glorot, seeds 0..G-1), copied.  ``ready`` compiles (``jit(...).lower(...).compile()``) for
    the population's shapes and the epoch count; ``compile_s[(G, epochs)]`` keeps its time.

    The device is explicit: ``platform`` "cpu" runs on ``jax.devices("cpu")[0]`` and "gpu" on
    ``jax.devices("gpu")[0]``, whatever JAX's default device is (where JAX has CUDA its default
    is the GPU: a provider that only called ``jnp.asarray`` ran there while labelled CPU).  The
    arrays are committed to that device (``jax.device_put``), compiled and run under
    ``jax.default_device``, and every run checks that its result lives there.  ``precision``
    "highest" (the default) computes the float32 matmuls in full float32, as torch does by
    default; "default" lets XLA use TF32 on the GPU."""
    loops = False

    def __init__(self, lr: float, dtype: torch.dtype, platform: str = "cpu", precision: str = "highest"):
        super().__init__(lr)
        import jax

        if platform not in ("cpu", "gpu"):
            raise ValueError(f"platform must be 'cpu' or 'gpu', got {platform!r}")
        if precision not in ("highest", "default"):
            raise ValueError(f"precision must be 'highest' or 'default', got {precision!r}")
        if dtype == torch.float64:
            jax.config.update("jax_enable_x64", True)
        self.dtype = dtype
        self.platform = platform
        self.precision = precision
        self.device = jax.devices(platform)[0]  # RuntimeError when JAX has no such backend
        self.compile_s: dict = {}
        self._fns: dict = {}

    def where(self, device=None) -> str:
        """``cpu`` or ``cuda:<id>``: the JAX device it computes on (torch's spelling)."""
        return "cpu" if self.device.platform == "cpu" else f"cuda:{self.device.id}"

    def describe(self) -> str:
        import jax

        return f"JAX {jax.__version__}, {self.device.platform} device {self.device.id} ({self.device.device_kind})"

    def prepare(self, pop, x, y):
        import jax
        import numpy as np

        def arr(t):
            a = jax.device_put(np.ascontiguousarray(t.detach().cpu().numpy()), self.device)
            assert a.dtype == np.dtype(str(self.dtype).removeprefix("torch.")), "jax_enable_x64 is off"
            return a

        params = [(arr(w), arr(b)) for w, b in zip(pop.weights, pop.biases)]  # [G, in, out], [G, out]
        return {"params": params, "out": params, "x": arr(x), "y": arr(y), "G": len(pop),
                "acts": tuple(pop.arch.acts)}

    def _compiled(self, state, epochs: int):
        import jax
        import jax.numpy as jnp
        from jax import lax

        key = (state["G"], epochs, state["acts"])
        if key in self._fns:
            return self._fns[key]
        acts, lr = state["acts"], self.lr
        precision = lax.Precision.HIGHEST if self.precision == "highest" else None

        def loss(p, x, y):
            z = x
            for (w, b), act in zip(p, acts):
                z = jnp.matmul(z, w, precision=precision) + b
                z = jnp.tanh(z) if act == "tanh" else jax.nn.sigmoid(z)
            return jnp.mean((z - y) ** 2)

        step = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))

        def train(p, x, y):
            def epoch(p, _):
                l, g = step(p, x, y)
                return jax.tree_util.tree_map(lambda a, ga: a - lr * ga, p, g), l

            p, history = lax.scan(epoch, p, None, length=epochs)
            return p, history, jax.vmap(loss, in_axes=(0, None, None))(p, x, y)

        import time

        t0 = time.perf_counter()
        with jax.default_device(self.device):
            fn = jax.jit(train).lower(state["params"], state["x"], state["y"]).compile()
        self.compile_s[(state["G"], epochs)] = time.perf_counter() - t0
        self._fns[key] = fn
        return fn

    def ready(self, state, epochs):
        self._compiled(state, epochs)

    def run(self, state, epochs):
        import jax
        import numpy as np

        fn = self._compiled(state, epochs)
        with jax.default_device(self.device):
            params, _history, final = fn(state["params"], state["x"], state["y"])
        final.block_until_ready()
        ran_on = set(final.devices())
        if ran_on != {self.device}:
            raise RuntimeError(f"jax provider: asked for {self.device}, the result is on {sorted(map(str, ran_on))}")
        state["out"] = params
        return torch.from_numpy(np.asarray(final).copy())

    def weights(self, state):
        import numpy as np

        return [torch.from_numpy(np.asarray(w).copy()) for w, _ in state["out"]]

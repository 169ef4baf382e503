"""The one-launch training kernel on a GPU: the issue's bar, and what blocks of epochs cost.

Lab network (2-5-3-1), five points, float32, G in {2**12, 2**16, 2**20}, 2500 epochs; the providers
are the table ``PROVIDERS`` below (``--help`` lists them).  ``fused`` is ``fastmlp.train`` as a user
calls it (its checks, the packing, its blocks of ``FusedBackend.epochs_per_block`` epochs, one
launch each, the final loss), ``fused-1`` one launch of ``fused_train`` for all epochs: the
overhead of train() and its blocks is fused / fused-1 - 1 (target < 5% at every G >= 4096).  ``triton`` and ``torch`` are timed over
fewer epochs (``--slow-epochs``) and scaled to 2500, stated in the table.

Bar: fused <= 0.1 s at G = 2**20 (>= 2.6e10 network-epochs/s) and >= 20x the torch engine.
Writes bench/results/fused-<device>-<date>.json.  Without CUDA it says so and exits 0.
"""
from __future__ import annotations

import sys

import harness
import torch

SIZES = [2, 5, 3, 1]
LR = 0.25
PER_LAYER = ("triton", "torch")  # timed over --slow-epochs


def via_train(backend: str):
    """``fastmlp.train(..., backend=backend)`` on a population made once (untimed)."""
    def make(G, x, y, lr, epochs):
        from fastmlp import Population, train

        pop = Population(SIZES, G, device=x.device)
        return lambda: train(x, y, pop, epochs, lr, backend=backend, progress=False)
    return make


def one_launch(fast_tanh: bool = False, variant: str | None = None):
    """``fused_train`` directly: all epochs in one launch, from the same packed parameters every call,
    keeping the loss of the epochs train() keeps by default and tracking the first below 0.01 as it does."""
    def make(G, x, y, lr, epochs):
        from fastmlp import Population
        from fastmlp.kernels import fused_train as fk
        from fastmlp.train import default_record_every

        pop = Population(SIZES, G, device=x.device)
        packed = fk.pack(pop.weights, pop.biases)
        k = default_record_every(G, epochs, 4)
        loss = torch.empty(-(-epochs // k), G, device=x.device)

        def go():
            active = torch.ones(G, dtype=torch.int8, device=x.device)
            first = torch.full((G,), -1, dtype=torch.int32, device=x.device)
            fk.fused_train(x, y, packed.clone(), lr, active, loss, SIZES, epochs, k, fast_tanh=fast_tanh,
                           variant=variant, first_below=first, eps=0.01)
        return go
    return make


def _gpu_only(device):
    return None if device.type == "cuda" else "tanh.approx.f32 is inline PTX: a GPU only, not the interpreter"


PROVIDERS = harness.Providers(
    harness.Provider("fused", "fastmlp.train(backend='fused'): blocks of epochs, one launch each (the default)",
                     via_train("fused")),
    harness.Provider("fused-1", "one launch for all epochs (fused_train directly)", one_launch()),
    harness.Provider("fused-approx", "one launch with tanh.approx.f32 (its own tolerance row in the tests)",
                     one_launch(fast_tanh=True), check=_gpu_only),
    harness.Provider("fused-tiles", "one launch of the tile kernel (kernels/fused_train.py) instead of the "
                                    "generated one-register-per-weight kernel the launcher picks",
                     one_launch(variant="tiles")),
    harness.Provider("triton", "fastmlp.train(backend='triton'): the per-layer kernels", via_train("triton")),
    harness.Provider("torch", "fastmlp.train(backend='torch'): the torch engine", via_train("torch")),
)


def summarize(rows, E: int, block) -> dict:
    """Per G: the chunking overhead, fused vs the torch engine and vs the tile kernel."""
    summary = {}
    for G in sorted({r["G"] for r in rows}):
        by = {r["provider"]: r for r in rows if r["G"] == G}
        s = summary[G] = dict(chunk_overhead=by["fused"]["median_s"] / by["fused-1"]["median_s"] - 1,
                              speedup_vs_torch=by["torch"]["seconds_per_2500"] / by["fused"]["seconds_per_2500"],
                              speedup_vs_tiles=by["fused-tiles"]["median_s"] / by["fused-1"]["median_s"],
                              fused_s=by["fused"]["median_s"])
        print(f"G={G}: train() in blocks of {block(G)} epochs costs {100 * s['chunk_overhead']:+.1f}% vs one launch; fused is "
              f"{s['speedup_vs_torch']:.1f}x the torch engine and its kernel {s['speedup_vs_tiles']:.2f}x the tile "
              f"kernel; {s['fused_s']:.3f} s for {E} epochs" + (" (bar: <= 0.1 s, >= 20x)" if G == 2**20 else ""))
    return summary


def main(argv=None):
    ap = harness.parser(__doc__, epilog=PROVIDERS.help(),
                        smoke="no GPU: G = 64, 8 epochs, one repeat, on the CPU in Triton's interpreter "
                              "(checks the script, measures nothing)")
    ap.add_argument("--G", default="4096,65536,1048576")
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--slow-epochs", type=int, default=100, help="epochs timed for the per-layer providers")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    dev = harness.cuda_or_smoke(args, "bench_fused")
    if dev is None:
        return 0
    Gs = [int(g) for g in args.G.split(",")]
    if args.smoke:
        Gs, args.epochs, args.slow_epochs, args.repeats = [64], min(args.epochs, 8), min(args.slow_epochs, 2), 1
    harness.kernels()
    from fastmlp import Architecture, datasets, engine

    x, y = (t.to(dev) for t in datasets.five_points())
    providers, skipped = PROVIDERS.select(None, dev)
    for n, why in skipped.items():
        print(f"# not run: {n}: {why}")
    env = harness.environment(dev)
    E, rows = args.epochs, []
    for G in Gs:
        lr = torch.full((G,), LR, device=dev)
        for p in providers:
            epochs = args.slow_epochs if p.name in PER_LAYER else E
            fn = p.make(G, x, y, lr, epochs)
            fn()  # warm-up: compiles
            s = harness.Samples(wall=[harness.clock(fn, dev)[0] for _ in range(args.repeats)])
            rows.append(dict(G=G, provider=p.name, epochs=epochs, **s.stats(), seconds_per_2500=s.median * E / epochs,
                             network_epochs_per_s=G * epochs / s.median))
            harness.log(f"  G={G} {p.name}: {s.median:.4f} s for {epochs} epochs")
    harness.finish(env)
    print(harness.table(["G", "provider", "epochs", "median s", f"(per {E})", "net-epochs/s"],
                        [[r["G"], r["provider"], r["epochs"], f"{r['median_s']:.4f}", f"{r['seconds_per_2500']:.4f}",
                          f"{r['network_epochs_per_s']:.3g}"] for r in rows]))
    fused, arch = engine.get_backend("fused"), Architecture(SIZES)
    summary = summarize(rows, E, lambda G: min(E, fused.epochs_per_block(
        engine.Problem(arch, x.shape[0], True, torch.float32, G, E), dev)))
    path = harness.write_json(args.out, "fused", env, dict(triton=env["triton"], epochs=E, skipped=skipped, rows=rows,
                                                           summary={str(k): v for k, v in summary.items()}),
                              script=__file__, argv=argv, tag="-smoke" if args.smoke else "")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

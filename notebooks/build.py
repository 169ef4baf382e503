#!/usr/bin/env python
"""Write notebooks/lab4.ipynb from the cells below and execute it, so that the committed
notebook carries its outputs (figures as PNG) and reads on a code-hosting site without running.

    python notebooks/build.py            # rebuild and execute in place (about a minute)
    python notebooks/build.py --no-run   # the cells only, no outputs

The notebook is the lab (``fastmlp.reference``, as the lab writes it), the same network over
4096 seeds (``Population``, ``train``), and the lab's closing questions as small sweeps.
``tests/test_notebook.py`` executes a copy in ``make test``.  Cells tagged ``figure`` must
produce an image (the test checks).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "lab4.ipynb"
TIMEOUT_S = 600  # per cell

# (kind, source, tags): kind is "md" or "code"; "figure" in tags: the cell must show an image.
CELLS: list[tuple[str, str, tuple[str, ...]]] = [
    ("md", """# Lab 4 on fastmlp: backpropagation by hand, then for thousands of networks

The lab derives backpropagation for an MLP (tanh hidden layers, sigmoid output, MSE loss,
Glorot-uniform initialisation), trains the 2-5-3-1 network on five points with full-batch
gradient descent (2500 epochs, learning rate 0.25) and plots its decision boundary.  Part A runs
the lab's own cells on `fastmlp.reference`, the engine written as the lab writes it.  Part B
trains the same network from 4096 random initialisations at once.  Part C answers the lab's
closing questions (depth and widths, learning rate, initialisation) with small sweeps.""", ()),
    ("code", """%matplotlib inline
%config InlineBackend.figure_formats = ['png']
import matplotlib.pyplot as plt
import torch

import fastmlp
from fastmlp import Population, plot, train
from fastmlp.reference import NeuralNetwork, plot_decision_boundary
from fastmlp.reference import train as reference_train

torch.manual_seed(0)
print(fastmlp.__version__, torch.__version__)""", ()),
    ("md", """## A. The lab, on the reference engine

The five points: the origin is class 1, its four neighbours class 0.""", ()),
    ("code", """x = torch.tensor([
    [0, 0],
    [1, 0],
    [0, -1],
    [-1, 0],
    [0, 1]
], dtype=torch.float)
y = torch.tensor([1, 0, 0, 0, 0])

network = NeuralNetwork(
    input_size=2,
    hidden_sizes=[5, 3],
    output_size=1
)

print(network.forward(x))
network.backward(x, y)""", ()),
    ("md", "The decision boundary of the randomly initialised network:", ()),
    ("code", "plot_decision_boundary(x, y, network);", ("figure",)),
    ("md", "Training: 2500 full-batch updates with learning rate 0.25.", ()),
    ("code", "network, losses = reference_train(x, y, network, 2500, 0.25)\nprint(f'final loss {float(losses[-1]):.2e}')", ()),
    ("md", "The loss after each update:", ()),
    ("code", """fig, ax = plt.subplots()
ax.plot(losses)
ax.set(xlabel='epoch', ylabel='MSE', yscale='log');""", ("figure",)),
    ("md", "And the decision boundary of the trained network:", ()),
    ("code", "plot_decision_boundary(x, y, network);", ("figure",)),
    ("md", """## B. The same network from 4096 random initialisations

`Population` holds 4096 networks of one architecture, seeds 0..4095 (seed *s* always starts from
the same weights); `train` runs the same equations for all of them at once.  `snapshot_every`
keeps the parameters of a few networks along the way.""", ()),
    ("code", """pop = Population([2, 5, 3, 1], 4096)
result = train(x, y, pop, 2500, 0.25, snapshot_every=50, snapshot_networks=range(8))
print(result)
print(f'converged (final loss < 0.01): {float(result.converged().float().mean()):.1%} of {len(pop)}')""", ()),
    ("md", "Loss over training: every 64th network, and the median with the 5-95 % band of all 4096.", ()),
    ("code", "plot.loss_curves(result.losses[::64])", ("figure",)),
    ("code", """from fastmlp import stats

q = stats.loss_quantile_curves(result.losses, (0.05, 0.5, 0.95))
plot.loss_bands({'2-5-3-1, 4096 seeds': [('lr 0.25', q)]})""", ("figure",)),
    ("md", """The gallery: the decision boundaries of the networks at evenly spaced ranks of the final loss,
from the best to the worst.""", ()),
    ("code", """from fastmlp.results import pick_boundary_networks

idx = pick_boundary_networks(result.final_loss, 8)
titles = [f'seed {int(pop.seeds[i])}, loss {float(result.final_loss[i]):.1e}' for i in idx]
plot.decision_boundaries(x, y, pop[idx].predict, range(len(idx)), titles=titles)""", ("figure",)),
    ("md", """Every hidden unit of one network, as a map of its output over the input plane (the first
row is the first hidden layer), and the output boundary last:""", ()),
    ("code", "plot.unit_maps(pop, int(idx[0]), x, y)", ("figure",)),
    ("md", """Seed 0's units at the start of training, from the first of its snapshots (`snapshot_networks=range(8)`
kept seeds 0-7 every 50 epochs), and after it:""", ()),
    ("code", "plot.unit_maps(result.snapshots.population(0), 0, x, y, title='seed 0, epoch 0')", ("figure",)),
    ("code", "plot.unit_maps(result.snapshots.population(-1), 0, x, y, title='seed 0, epoch 2500')", ("figure",)),
    ("md", """Keeping the trained networks: `save` and `load` round-trip bit for bit; `to_module` hands one
network to PyTorch as a plain `nn.Sequential`.""", ()),
    ("code", """import tempfile, pathlib

path = pathlib.Path(tempfile.mkdtemp()) / 'population.pt'
pop.save(path)
again = Population.load(path)
print(again)
print('bitwise equal:', all(torch.equal(a, b) for a, b in zip(again.weights + again.biases, pop.weights + pop.biases)))
module = again.to_module(int(idx[0]))
print(module)
print('same outputs:', torch.allclose(module(x), pop.predict(x)[int(idx[0])]))""", ()),
    ("md", """## C. The lab's closing questions, over many seeds

Each question is a small sweep (`fastmlp.sweep`): every configuration trains the same 256 seeds, so
comparisons are paired; a network has *converged* when its final loss is below 0.01.""", ()),
    ("code", """from IPython.display import Image, display

work = pathlib.Path(tempfile.mkdtemp())

def show(sweep_result, *names):
    for name in names:
        display(Image(filename=str(sweep_result.out / f'{name}.png'), width=760))""", ()),
    ("md", "**Depth and hidden sizes.** *Train a few randomly initialized networks and vary depth and hidden sizes "
           "to discover different decision boundaries.*", ()),
    ("code", """depth = fastmlp.sweep(work / 'depth', hidden=[[1], [2], [8], [5, 3], [3, 3, 3, 3]], lr=[0.25],
                      seeds=256, epochs=2500, formats=['png'], log=None, progress=False)
print(depth.table())
show(depth, 'boundaries')""", ("figure",)),
    ("md", "DEPTH_FINDINGS", ()),
    ("md", "**Learning rate.** *Modify the learning rate and see how it affects the convergence speed.*", ()),
    ("code", """rates = fastmlp.sweep(work / 'lr', hidden=[[5, 3]], lr=[0.1, 0.25, 1, 4, 16], seeds=256, epochs=2500,
                      formats=['png'], log=None, progress=False)
print(rates.table())
show(rates, 'epochs_to_eps')""", ("figure",)),
    ("md", "LR_FINDINGS", ()),
    ("md", "**Initialization.** *Try different ways to initialize the weights and note how trainability changes.*", ()),
    ("code", """inits = fastmlp.sweep(work / 'init', hidden=[[5, 3], [4, 4, 4]], lr=[0.25, 4],
                      init=['glorot_uniform', 'he_normal', 'normal:3', 'normal:0.01'],
                      seeds=256, epochs=2500, formats=['png'], log=None, progress=False)
print(inits.table())
show(inits, 'converged')""", ("figure",)),
    ("md", "INIT_FINDINGS", ()),
    ("code", """# No figure was left registered with pyplot by any cell above.
assert plt.get_fignums() == [], plt.get_fignums()""", ()),
]

# Two sentences per question of what its figures show, written against the tables the executed
# cells print (the same seeds give the same numbers on every run; README's answers agree).
FINDINGS = {
    "DEPTH_FINDINGS": "One tanh unit cannot isolate the centre point: none of the 256 networks converges, "
                      "and they all answer 0 everywhere (80 % accuracy); two units already do it 62 % of the time, "
                      "and 8, 5-3 and 3-3-3-3 units 97-100 %, almost always with a band through the centre along "
                      "one diagonal.  Depth buys speed more than success: the median network reaches loss 0.01 "
                      "after 1404 epochs with 8 units in one layer, 704 with 5-3 and 435 with 3-3-3-3.",
    "LR_FINDINGS": "Up to lr 4 the epochs to convergence scale as 1/lr (median 1601, 704, 182 and 65 epochs at "
                   "lr 0.1, 0.25, 1 and 4) and the converged fraction rises from 78 % to 100 %.  At lr 16 the "
                   "steps overshoot: only 45 % converge, and the median final loss is back at 0.13.",
    "INIT_FINDINGS": "Too small an init (normal, std 0.01) trains nothing: every network sits at the symmetric "
                     "saddle, loss 0.16, answering 0.2 everywhere, at both learning rates and depths.  Too large "
                     "(std 3) saturates the tanh units and hurts more with depth (2-4-4-4-1 at lr 4: 7 % "
                     "converge), while Glorot and He keep 99-100 % trainable, He a little faster.",
}


def build():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source, tags in CELLS:
        source = FINDINGS.get(source, source)
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


KERNEL = "fastmlp-lab4"


def execute(nb, cwd: Path, timeout: int = TIMEOUT_S):
    """Run every cell of ``nb`` in a kernel of *this* interpreter (a kernelspec written for the
    run, not whatever ``python3`` kernel the user's Jupyter has), from the folder ``cwd``."""
    import json
    import os
    import tempfile

    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="fastmlp-kernel-") as where:
        spec = Path(where) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.executable})", "language": "python"}))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = where + (os.pathsep + old if old else "")
        try:
            NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def main() -> None:
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--no-run", action="store_true", help="write the cells without executing them")
    args = ap.parse_args()
    nb = build()
    if not args.no_run:
        execute(nb, HERE)
        for cell in nb.cells:  # volatile fields: keep the diff of a rebuild small
            cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({NOTEBOOK.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()

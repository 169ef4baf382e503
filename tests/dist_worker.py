"""Entry point for the distributed tests: ``fastmlp`` under torchrun, with fault injection.

``FASTMLP_TEST_KILL_RANK=r`` makes rank r SIGKILL itself ``FASTMLP_TEST_KILL_AFTER``
seconds after start (mid-training), the way an out-of-memory killer or a lost node would.
``--api`` runs the Python API under a process group this script initialises itself.
"""
import os
import signal
import sys
import threading

kill_rank = os.environ.get("FASTMLP_TEST_KILL_RANK")
if kill_rank is not None and os.environ.get("RANK") == kill_rank:
    delay = float(os.environ.get("FASTMLP_TEST_KILL_AFTER", "2.0"))
    threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()

if sys.argv[1:2] == ["--api"]:
    import torch
    import torch.distributed as dist

    from fastmlp import Population, datasets, train

    dist.init_process_group("gloo")  # the user's own process group
    x, y = datasets.five_points()
    pop = Population([2, 5, 3, 1], 200)
    # snapshots of networks on both ranks (rank 0 trains 0..127, rank 1 128..199), in no order
    r = train(x, y, pop, 300, torch.linspace(0.1, 1.0, 200), snapshot_every=100, snapshot_networks=[199, 3, 130, 64])
    if dist.get_rank() == 0:
        s = r.snapshots
        torch.save({"losses": r.losses.contiguous(), "final_loss": r.final_loss, "diverged": r.diverged,
                    "weights": [w.contiguous() for w in pop.weights], "world": r.extra["world_size"],
                    "snapshots": [*s.weights, *s.biases, s.loss], "snapshot_epochs": s.epochs},
                   sys.argv[2])
    dist.destroy_process_group()
    sys.exit(0)

from fastmlp.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))

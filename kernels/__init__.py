"""Triton kernels for fastmlp (installed as ``fastmlp.kernels``).

One file per fused op, each a private ``@triton.jit`` kernel and a public launcher
(check shapes/dtypes/devices -> allocate -> launch); ``fastmlp.engine.triton`` calls them.

==================  ==============================================================
``linear_act_fwd``  ``z_out = act(x @ w + b)``, act in {tanh, sigmoid}
``output_delta``    ``delta = 2 (z - y) / (N n_out) * z (1 - z)`` and each MSE loss
``delta_bwd``       ``delta_prev = (delta @ w^T) * (1 - z_prev**2)``
``grad_update``     ``w -= lr z_prev^T delta``, ``b -= lr sum_n delta`` (frozen: untouched)
``fused_train``     every op above for every layer, for many epochs, in one launch with
                    the weights in registers (``kernels/fused_train.py``, backend "fused"):
                    a kernel generated per architecture with one register per weight
                    (``kernels/fused_unrolled.py``) when a network fits a thread, else a
                    tile kernel; ``kernels/aot.py`` compiles them for a GPU target
==================  ==============================================================

Limits: float32 / float64; any G >= 1, N >= 1; layer widths up to ``MAX_WIDTH`` (128),
past which the launchers raise a ValueError naming ``backend='torch'``.  ``fused_train``:
0-4 hidden layers, widths up to 32, N up to 4096, data shared by all networks
(``fused_train.fused_limits``).  Importing this
package imports triton; set ``TRITON_INTERPRET=1`` *before* the import to run the kernels
in Triton's CPU interpreter.
"""
from ._launch import MAX_WIDTH
from .delta_bwd import delta_bwd
from .grad_update import grad_update
from .linear_act import linear_act_fwd
from .output_delta import output_delta

__all__ = ["linear_act_fwd", "output_delta", "delta_bwd", "grad_update", "MAX_WIDTH"]

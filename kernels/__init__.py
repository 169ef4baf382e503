"""Triton kernels for fastmlp (installed as ``fastmlp.kernels``)."""

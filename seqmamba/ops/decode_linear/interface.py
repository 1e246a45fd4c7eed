"""Dispatch for a decode step's projections: y = x @ weight^T + bias for a few rows (CUDA, 16-bit) -> the
split-K Triton kernel where its rule says so, everything else -> F.linear."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..backend import resolve_backend


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  backend: str = "auto") -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for x (rows, in_features), weight (out_features, in_features).

    A decode step multiplies a few rows (the batch) by each layer's weights: the weights are read once, so the
    GEMM is a memory-bound read of the weight, and with few rows cuBLAS has few output tiles to spread over the
    GPU (1.4B at batch 1 on the H200: out_proj 2.5x its weight-read floor, x_proj 22x). On CUDA, for 16-bit
    x and weight without autograd, ``backend="auto"`` takes the Triton kernel when ``triton_kernels.use_kernel``
    says so (``kernel_wins``: the rows and shapes where it beat cuBLAS), else F.linear. ``backend="triton"``
    forces the kernel (CPU only under TRITON_INTERPRET=1), "torch" / "reference" force F.linear.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"decode_linear: x has shape {tuple(x.shape)} and weight {tuple(weight.shape)}; "
                         "expected x (rows, in_features) and weight (out_features, in_features)")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"decode_linear: bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    chosen = resolve_backend("decode_linear", backend, x.is_cuda)
    if chosen != "triton":
        return F.linear(x, weight, bias)
    from . import triton_kernels

    if backend == "auto" and not triton_kernels.use_kernel(x, weight, bias):
        return F.linear(x, weight, bias)
    return triton_kernels.decode_linear_triton(x, weight, bias)

"""Dispatch for one decode step: CUDA -> Triton, CPU -> PyTorch."""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import resolve_backend
from .reference import selective_state_update_ref


def selective_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                           B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                           dt_softplus: bool = False, backend: str = "auto") -> torch.Tensor:
    if state.dim() != 3:
        raise ValueError(f"selective_state_update: state has shape {tuple(state.shape)}, expected (batch, dim, N)")
    batch, dim, N = state.shape
    for name, t in (("x", x), ("dt", dt)) + ((("z", z),) if z is not None else ()):
        if t.shape != (batch, dim):
            raise ValueError(f"selective_state_update: {name} has shape {tuple(t.shape)}, expected ({batch}, {dim})")
    if A.shape != (dim, N):
        raise ValueError(f"selective_state_update: A has shape {tuple(A.shape)}, expected ({dim}, {N})")
    for name, t in (("B", B), ("C", C)):
        if not (t.shape == (batch, N) or (t.dim() == 3 and t.shape[0] == batch and t.shape[2] == N
                                          and dim % t.shape[1] == 0)):
            raise ValueError(f"selective_state_update: {name} has shape {tuple(t.shape)}, "
                             f"expected ({batch}, {N}) or ({batch}, G, {N})")
    if resolve_backend("selective_state_update", backend, state.is_cuda) == "triton":
        from .triton_kernels import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)

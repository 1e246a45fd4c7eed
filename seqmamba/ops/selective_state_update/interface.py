"""Dispatch for one decode step: CUDA -> Triton, CPU -> PyTorch."""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import resolve_backend
from .reference import selective_state_update_ref


def selective_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                           B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                           dt_softplus: bool = False, backend: str = "auto",
                           dt_proj_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One decode step; ``state`` is updated in place and y (batch, dim) returned.

    ``dt_proj_weight`` (dim, R): dt is then the (batch, R) input of Mamba's dt projection, applied inside
    the step (one kernel fewer per layer and token on CUDA)."""
    if state.dim() != 3:
        raise ValueError(f"selective_state_update: state has shape {tuple(state.shape)}, expected (batch, dim, N)")
    batch, dim, N = state.shape
    if dt_proj_weight is not None:
        if dt_proj_weight.dim() != 2 or dt_proj_weight.shape[0] != dim:
            raise ValueError(f"selective_state_update: dt_proj_weight has shape {tuple(dt_proj_weight.shape)}, "
                             f"expected ({dim}, R)")
        if dt.shape != (batch, dt_proj_weight.shape[1]):
            raise ValueError(f"selective_state_update: dt has shape {tuple(dt.shape)}, expected "
                             f"({batch}, {dt_proj_weight.shape[1]}): the dt projection's input")
    per_channel = [("x", x)] + ([("dt", dt)] if dt_proj_weight is None else []) + ([("z", z)] if z is not None else [])
    for name, t in per_channel:
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

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_proj_weight)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_proj_weight)

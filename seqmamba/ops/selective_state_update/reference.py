"""One recurrent step of the selective SSM, in place on the state (the oracle for the Triton kernel)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def selective_state_update_ref(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                               B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor] = None,
                               z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                               dt_softplus: bool = False,
                               dt_proj_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """state (batch, dim, N) updated in place; x, dt, z (batch, dim); A (dim, N); B, C (batch, N) or
    (batch, G, N); D, dt_bias (dim,). With ``dt_proj_weight`` (dim, R), dt is the low-rank (batch, R) input
    of the dt projection and dt = dt @ dt_proj_weight^T is formed here, in fp32.
    Returns y (batch, dim) in x's dtype."""
    batch, dim, N = state.shape
    dt32 = dt.float() if dt_proj_weight is None else dt.float() @ dt_proj_weight.float().t()
    if dt_bias is not None:
        dt32 = dt32 + dt_bias.float()
    if dt_softplus:
        dt32 = F.softplus(dt32)
    if B.dim() == 3:  # grouped (batch, G, N) -> (batch, dim, N)
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B, C = B[:, None], C[:, None]
    dA = torch.exp(dt32[..., None] * A.float())
    dBx = (dt32 * x.float())[..., None] * B.float()
    new_state = state.float() * dA + dBx
    state.copy_(new_state.to(state.dtype))
    y = (new_state * C.float()).sum(-1)
    if D is not None:
        y = y + x.float() * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype)

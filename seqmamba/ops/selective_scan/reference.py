"""Sequential fp32 reference of the selective scan: the oracle every fast path is tested against.

Readable on purpose: one loop over time, the state h of shape (batch, dim, N) carried in fp32.
Autograd flows through it (slowly) so it is also the gradient oracle.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def expand_bc(X: torch.Tensor, batch: int, dim: int, L: int) -> torch.Tensor:
    """B or C in any accepted layout -> (batch, dim, N, L) view-broadcast in fp32.

    (dim, N) is constant over time; (batch, N, L) is shared by all channels; (batch, G, N, L)
    is shared by the dim // G channels of each group.
    """
    X = X.float()
    if X.dim() == 2:  # (dim, N)
        return X[None, :, :, None].expand(batch, dim, X.shape[1], L)
    if X.dim() == 3:  # (batch, N, L)
        return X[:, None].expand(batch, dim, X.shape[1], L)
    G = X.shape[1]  # (batch, G, N, L)
    return X.repeat_interleave(dim // G, dim=1)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Optional[torch.Tensor] = None,
):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t . h_t + D u_t;  out = y * silu(z)."""
    dtype_in = u.dtype
    batch, dim, L = u.shape
    u32, delta32 = u.float(), delta.float()
    if delta_bias is not None:
        delta32 = delta32 + delta_bias.float()[:, None]
    if delta_softplus:
        delta32 = F.softplus(delta32)
    A32 = A.float()
    Bx = expand_bc(B, batch, dim, L)
    Cx = expand_bc(C, batch, dim, L)
    if initial_state is not None:
        h = initial_state.float()
    else:
        h = u32.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        dA = torch.exp(delta32[:, :, t, None] * A32)  # (batch, dim, N)
        dBu = (delta32[:, :, t] * u32[:, :, t])[:, :, None] * Bx[:, :, :, t]
        h = dA * h + dBu
        ys.append((h * Cx[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if L > 0 else u32.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D.float()[:, None] * u32
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out

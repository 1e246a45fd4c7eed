"""Sequential fp32 reference of the selective scan: the oracle every fast path is tested against.

Readable on purpose: one loop over time, the state h of shape (batch, dim, N) carried in fp32.
Autograd flows through it (slowly) so it is also the gradient oracle.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def expand_bc(X: torch.Tensor, batch: int, dim: int, L: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B or C in any accepted layout -> (batch, dim, N, L) view-broadcast in ``dtype``.

    (dim, N) is constant over time; (batch, N, L) is shared by all channels; (batch, G, N, L)
    is shared by the dim // G channels of each group.
    """
    X = X.to(dtype)
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
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t . h_t + D u_t;  out = y * silu(z).

    Computed in fp32 (float64 when u is float64, so ``gradcheck`` can use it as the gradient oracle)."""
    dtype_in = u.dtype
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, L = u.shape
    u32, delta32 = u.to(cdt), delta.to(cdt)
    if delta_bias is not None:
        delta32 = delta32 + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        delta32 = F.softplus(delta32)
    A32 = A.to(cdt)
    Bx = expand_bc(B, batch, dim, L, cdt)
    Cx = expand_bc(C, batch, dim, L, cdt)
    if initial_state is not None:
        h = initial_state.to(cdt)
    else:
        h = u32.new_zeros(batch, dim, A.shape[1])
    # unbind, not x[..., t]: the backward of one unbind is one stack, while indexing step by step
    # back-propagates a full-size zero-filled gradient per step (O(L^2) memory traffic).
    deltas, us = delta32.unbind(-1), u32.unbind(-1)
    Bs, Cs = Bx.unbind(-1), Cx.unbind(-1)
    ys = []
    for t in range(L):
        dA = torch.exp(deltas[t][:, :, None] * A32)  # (batch, dim, N)
        dBu = (deltas[t] * us[t])[:, :, None] * Bs[t]
        h = dA * h + dBu
        ys.append((h * Cs[t]).sum(-1))
    y = torch.stack(ys, dim=-1) if L > 0 else u32.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u32
    if z is not None:
        y = y * F.silu(z.to(cdt))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out

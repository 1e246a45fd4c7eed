"""Plain-PyTorch depthwise causal conv1d (the oracle for the Triton kernels), plus its one-step update."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def causal_conv1d_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      activation: Optional[str] = None) -> torch.Tensor:
    """x (batch, dim, L), weight (dim, width), bias (dim,) -> (batch, dim, L): out_t = sum_k w_k x_{t-width+1+k}."""
    dim, width = weight.shape
    out = F.conv1d(x, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                   padding=width - 1, groups=dim)[..., : x.shape[-1]]
    return F.silu(out) if activation in ("silu", "swish") else out


def causal_conv1d_update_ref(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                             bias: Optional[torch.Tensor] = None, activation: Optional[str] = None) -> torch.Tensor:
    """One decode step. x (batch, dim); conv_state (batch, dim, width) holds the last `width` inputs and is
    updated in place (shift left, append x). Returns (batch, dim)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state * weight.to(conv_state.dtype)).sum(-1)
    if bias is not None:
        out = out + bias.to(out.dtype)
    out = out.to(x.dtype)
    return F.silu(out) if activation in ("silu", "swish") else out

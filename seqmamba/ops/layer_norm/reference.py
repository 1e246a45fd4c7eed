"""Plain-PyTorch residual-add + RMSNorm / LayerNorm: the contract the Triton kernels are tested against.

``out = norm(x + residual) * weight (+ bias)``, computed in fp32. The sum is rounded to the dtype the new
residual is stored in before it is normalised, so the normalised value is exactly the residual handed to
the next block. The unfused ``Block`` path matches it in fp32; in a bf16 model with ``residual_in_fp32`` it
normalises the residual rounded to bf16 (as mamba_ssm's unfused path does), so the two differ by that rounding.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch


def residual_dtype_for(x: torch.Tensor, residual: Optional[torch.Tensor], residual_in_fp32: bool) -> torch.dtype:
    """mamba_ssm's rule: a given residual keeps its dtype; the first block's is fp32 or x's dtype."""
    if residual is not None:
        return residual.dtype
    return torch.float32 if residual_in_fp32 else x.dtype


def layer_norm_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   residual: Optional[torch.Tensor] = None, eps: float = 1e-5, prenorm: bool = False,
                   residual_in_fp32: bool = False, is_rms_norm: bool = False
                   ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """x, residual (..., N); weight, bias (N,). Returns out in x's dtype, and with ``prenorm`` also the new
    residual ``x + residual`` (in residual's dtype, or fp32 / x's dtype per ``residual_in_fp32`` when None)."""
    new_residual = x.float() if residual is None else x.float() + residual.float()
    new_residual = new_residual.to(residual_dtype_for(x, residual, residual_in_fp32))
    h = new_residual.float()
    if is_rms_norm:
        h = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    else:
        h = h - h.mean(dim=-1, keepdim=True)
        h = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    out = h * weight.float()
    if bias is not None:
        out = out + bias.float()
    out = out.to(x.dtype)
    return (out, new_residual) if prenorm else out


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 residual: Optional[torch.Tensor] = None, eps: float = 1e-5, prenorm: bool = False,
                 residual_in_fp32: bool = False):
    return layer_norm_ref(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm=True)

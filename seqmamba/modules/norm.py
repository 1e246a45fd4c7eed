"""Normalisation layers, with mamba_ssm's parameter names so checkpoints load unchanged."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..ops import layer_norm_fn


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x / sqrt(mean(x^2) + eps) * weight``.

    Computed in fp32 and returned in the input's dtype (mamba_ssm's ``rms_norm_ref`` with upcast),
    so a bf16 model normalises the fp32 residual stream without losing precision.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel where PyTorch has one (fewer launches per decode step).
        out = nn.functional.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32 and returned in the input's dtype (used when rms_norm=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


def fused_add_norm(hidden_states: torch.Tensor, residual: Optional[torch.Tensor], norm: nn.Module,
                   prenorm: bool, residual_in_fp32: bool) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``norm(hidden_states + residual)`` in one kernel (:func:`seqmamba.ops.layer_norm_fn`) with ``norm``'s
    parameters; with ``prenorm`` also the new residual. ``norm`` is an :class:`RMSNorm` or :class:`LayerNorm`."""
    if not isinstance(norm, (RMSNorm, nn.LayerNorm)) or norm.weight is None:
        raise TypeError(f"fused_add_norm: needs an RMSNorm or an affine LayerNorm, got {norm!r}")
    return layer_norm_fn(hidden_states, norm.weight, getattr(norm, "bias", None), residual=residual, eps=norm.eps,
                         prenorm=prenorm, residual_in_fp32=residual_in_fp32, is_rms_norm=isinstance(norm, RMSNorm))


def add_norm(hidden_states: torch.Tensor, residual: Optional[torch.Tensor], norm: nn.Module, prenorm: bool,
             residual_in_fp32: bool, fused: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """``norm(hidden_states + residual)`` (of ``hidden_states`` alone when ``residual`` is None); with ``prenorm``
    also the new residual, in fp32 when ``residual_in_fp32``. The pre-norm step of every block and the final norm.

    ``fused`` on CUDA: :func:`fused_add_norm`, the same math in one launch (a decode step is bound by the number
    of kernels, not by bytes). In a bf16 model that kernel normalises the fp32 residual itself, as mamba_ssm's
    fused path does, where the unfused path normalises its rounding to the norm's dtype.
    """
    if fused and hidden_states.is_cuda:
        return fused_add_norm(hidden_states, residual, norm, prenorm=prenorm, residual_in_fp32=residual_in_fp32)
    residual = hidden_states if residual is None else hidden_states + residual
    out = norm(residual.to(dtype=norm.weight.dtype))
    if not prenorm:
        return out
    return out, residual.to(torch.float32) if residual_in_fp32 else residual

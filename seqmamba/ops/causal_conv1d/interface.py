"""Dispatch for the depthwise causal conv1d: CUDA -> Triton, CPU -> PyTorch (cuDNN/mkldnn conv)."""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import resolve_backend
from .reference import causal_conv1d_ref, causal_conv1d_update_ref


def _check_activation(op: str, activation) -> None:
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"{op}: activation must be None, 'silu' or 'swish', got {activation!r}")


def _check(x, weight, bias, activation):
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x has shape {tuple(x.shape)}, expected (batch, dim, L)")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d: weight has shape {tuple(weight.shape)}, expected ({x.shape[1]}, width)")
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f"causal_conv1d: bias has shape {tuple(bias.shape)}, expected ({x.shape[1]},)")
    _check_activation("causal_conv1d", activation)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  activation: Optional[str] = None, backend: str = "auto") -> torch.Tensor:
    _check(x, weight, bias, activation)
    if resolve_backend("causal_conv1d", backend, x.is_cuda) == "triton":
        from .triton_kernels import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, activation)
    return causal_conv1d_ref(x, weight, bias, activation)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, activation: Optional[str] = None,
                         backend: str = "auto") -> torch.Tensor:
    if x.dim() != 2 or conv_state.shape[:2] != x.shape or conv_state.shape[2] != weight.shape[1]:
        raise ValueError(f"causal_conv1d_update: x {tuple(x.shape)}, conv_state {tuple(conv_state.shape)}, "
                         f"weight {tuple(weight.shape)}; expected (batch, dim), (batch, dim, width), (dim, width)")
    _check_activation("causal_conv1d_update", activation)
    if resolve_backend("causal_conv1d_update", backend, x.is_cuda) == "triton":
        from .triton_kernels import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x, conv_state, weight, bias, activation)
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)

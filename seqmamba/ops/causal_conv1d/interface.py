"""Dispatch for the depthwise causal conv1d: CUDA -> Triton, CPU -> PyTorch (cuDNN/mkldnn conv)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..backend import resolve_backend
from ..decode_linear import decode_linear
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


def causal_conv1d_update_proj(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                              bias: Optional[torch.Tensor], activation: Optional[str], proj_weight: torch.Tensor,
                              backend: str = "auto", fused: Optional[bool] = None
                              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Mamba block's decode step from the conv to x_proj: ``out = causal_conv1d_update(x, conv_state, ...)``
    (conv_state updated in place), then ``out @ proj_weight^T``; returns (out, projection), both in x's dtype.

    With the Triton backend, ``fused`` (None: the rule ``use_update_proj``, on CUDA, 16-bit, large batch) runs
    both in one kernel: its programs split the channels, so x_proj's reduction over them is split as well and
    the conv output is multiplied while still in registers. Otherwise the two ops run one after the other
    (x_proj through decode_linear)."""
    if proj_weight.dim() != 2 or proj_weight.shape[1] != x.shape[-1]:
        raise ValueError(f"causal_conv1d_update_proj: proj_weight has shape {tuple(proj_weight.shape)}, "
                         f"expected (outputs, {x.shape[-1]}) for x {tuple(x.shape)}")
    if resolve_backend("causal_conv1d_update", backend, x.is_cuda) == "triton":
        from . import triton_kernels

        if fused if fused is not None else triton_kernels.use_update_proj(x, weight, proj_weight):
            if x.dim() != 2 or conv_state.shape[:2] != x.shape or conv_state.shape[2] != weight.shape[1]:
                raise ValueError(f"causal_conv1d_update_proj: x {tuple(x.shape)}, conv_state "
                                 f"{tuple(conv_state.shape)}, weight {tuple(weight.shape)}; expected (batch, dim), "
                                 "(batch, dim, width), (dim, width)")
            _check_activation("causal_conv1d_update_proj", activation)
            return triton_kernels.causal_conv1d_update_proj_triton(x, conv_state, weight, bias, activation,
                                                                   proj_weight)
    out = causal_conv1d_update(x, conv_state, weight, bias, activation, backend=backend)
    proj_backend = "torch" if backend in ("torch", "reference") else "auto"
    return out, decode_linear(out, proj_weight, backend=proj_backend)

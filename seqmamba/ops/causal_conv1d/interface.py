"""Dispatch for the depthwise causal conv1d: CUDA -> Triton, CPU -> PyTorch (cuDNN/mkldnn conv)."""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import records_autograd, resolve_backend
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


def _check_proj(x, proj_weight):
    if proj_weight.dim() != 2 or proj_weight.shape[1] != x.shape[1]:
        raise ValueError(f"causal_conv1d_x_proj: proj_weight has shape {tuple(proj_weight.shape)}, expected "
                         f"(rows, {x.shape[1]})")


def conv_x_proj_fuses(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      proj_weight: torch.Tensor, backend: str = "auto") -> bool:
    """Whether ``causal_conv1d_x_proj`` on these tensors runs as one Triton kernel: the Triton backend, the switch
    ``triton_kernels.FUSED_X_PROJ`` on, nothing recorded by autograd (the fused kernel is the inference forward), no
    autocast, one 16/32-bit dtype for x and the projection, and a grid small enough for the fused kernel to win
    (``triton_kernels.conv_x_proj_launch``)."""
    if resolve_backend("causal_conv1d", backend, x.is_cuda) != "triton":
        return False
    from .triton_kernels import conv_x_proj_launch

    batch, dim, L = x.shape  # the switch and the grid rule first: the Mamba block asks this in every forward
    if conv_x_proj_launch(batch, dim, L, proj_weight.shape[0], x.device, x.dtype) is None:
        return False
    if records_autograd(x, weight, bias, proj_weight) or torch.is_autocast_enabled(x.device.type):
        return False
    return proj_weight.dtype == x.dtype and x.dtype in (torch.float16, torch.bfloat16, torch.float32) \
        and weight.shape[1] <= 9


def causal_conv1d_x_proj(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         activation: Optional[str], proj_weight: torch.Tensor,
                         backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The Mamba block's conv and x_proj: u = causal_conv1d(x, weight, bias, activation) (batch, dim, L) and
    x_dbl = proj_weight @ u (batch, rows, L), L contiguous. Where ``conv_x_proj_fuses`` says so, one Triton kernel
    that multiplies each conv tile into x_dbl as it stores it (u is not read back); otherwise the conv op and a
    matmul, with autograd."""
    _check(x, weight, bias, activation)
    _check_proj(x, proj_weight)
    if conv_x_proj_fuses(x, weight, bias, proj_weight, backend):
        from .triton_kernels import causal_conv1d_x_proj_triton

        return causal_conv1d_x_proj_triton(x, weight, bias, activation, proj_weight)
    u = causal_conv1d(x, weight, bias, activation, backend)
    return u, torch.matmul(proj_weight.to(u.dtype), u)

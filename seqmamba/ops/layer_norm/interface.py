"""Dispatch for residual-add + RMSNorm / LayerNorm: CUDA -> Triton, CPU -> the PyTorch reference.

``rms_norm_fn`` / ``layer_norm_fn`` follow mamba_ssm's ``ops.triton.layer_norm``: with ``residual`` the
input is ``x + residual``; with ``prenorm=True`` the new residual is returned beside the normalised output
(so a block hands it to the next one); ``residual_in_fp32`` makes the first block's residual fp32.
``backend`` forces "reference" (alias "torch") or "triton" (on the CPU only under TRITON_INTERPRET=1).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..backend import resolve_backend
from .reference import layer_norm_ref, residual_dtype_for

Output = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class _AddNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm):
        from .triton_kernels import add_norm_fwd

        shape = x.shape
        x_rows = _as_rows(x)
        residual_rows = _as_rows(residual) if residual is not None else None
        residual_dtype = residual_dtype_for(x, residual, residual_in_fp32)
        # The sum is materialised when it is an output or differs from x; otherwise x is what gets normalised.
        store_sum = prenorm or residual is not None or residual_dtype != x.dtype
        out, residual_out, mean, rstd = add_norm_fwd(x_rows, weight, bias, residual_rows, eps,
                                                     residual_dtype if store_sum else None, is_rms_norm)
        normed_input = residual_out if residual_out is not None else x_rows
        ctx.save_for_backward(normed_input, weight, bias, mean, rstd)
        ctx.shape, ctx.x_dtype, ctx.prenorm, ctx.is_rms_norm = shape, x.dtype, prenorm, is_rms_norm
        ctx.residual_dtype = residual.dtype if residual is not None else None
        out = out.view(shape)
        return (out, residual_out.view(shape)) if prenorm else out

    @staticmethod
    def backward(ctx, dout, *dresidual_out):
        from .triton_kernels import add_norm_bwd

        normed_input, weight, bias, mean, rstd = ctx.saved_tensors
        dres = _as_rows(dresidual_out[0]) if ctx.prenorm and dresidual_out[0] is not None else None
        dx, dresidual, dweight, dbias = add_norm_bwd(
            _as_rows(dout), normed_input, weight, bias is not None, mean, rstd, dres,
            ctx.x_dtype, ctx.residual_dtype, ctx.is_rms_norm)
        if dbias is not None:
            dbias = dbias.to(bias.dtype)
        dresidual = dresidual.view(ctx.shape) if dresidual is not None else None
        return dx.view(ctx.shape), dweight, dbias, dresidual, None, None, None, None


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) -> (M, N) with unit column stride (a view when the layout allows, the kernels take a row stride)."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _check(x, weight, bias, residual, eps):
    if x.dim() < 1 or weight.shape != (x.shape[-1],):
        raise ValueError(f"layer_norm: weight has shape {tuple(weight.shape)}, expected ({x.shape[-1]},) "
                         f"for x of shape {tuple(x.shape)}")
    if bias is not None and bias.shape != weight.shape:
        raise ValueError(f"layer_norm: bias has shape {tuple(bias.shape)}, expected {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"layer_norm: residual has shape {tuple(residual.shape)}, expected x's {tuple(x.shape)}")
    if not eps > 0:
        raise ValueError(f"layer_norm: eps must be > 0, got {eps}")


def layer_norm_fn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  residual: Optional[torch.Tensor] = None, eps: float = 1e-5, prenorm: bool = False,
                  residual_in_fp32: bool = False, is_rms_norm: bool = False, backend: str = "auto") -> Output:
    """LayerNorm (or RMSNorm with ``is_rms_norm``) of ``x + residual`` over the last dim; see the module doc."""
    _check(x, weight, bias, residual, eps)
    # Under torch.compile the reference is traced instead: Inductor generates the fused add + norm (forward and
    # backward) itself and fuses it with its neighbours, where the Triton kernels' autograd.Function would be a
    # graph break (their launch cache reads data pointers).
    if resolve_backend("layer_norm", backend, x.is_cuda) == "triton" and not torch.compiler.is_compiling():
        return _AddNormFunction.apply(x, weight, bias, residual, float(eps), bool(prenorm), bool(residual_in_fp32),
                                      bool(is_rms_norm))
    return layer_norm_ref(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm)


def rms_norm_fn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                residual: Optional[torch.Tensor] = None, eps: float = 1e-5, prenorm: bool = False,
                residual_in_fp32: bool = False, backend: str = "auto") -> Output:
    """RMSNorm of ``x + residual``: ``s / sqrt(mean(s^2) + eps) * weight (+ bias)``; see the module doc."""
    return layer_norm_fn(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm=True, backend=backend)

"""Triton kernels for residual-add + RMSNorm / LayerNorm over the last dimension, forward and backward.

Forward: one program per row: s = x (+ residual) in fp32, stored as the new residual (in its dtype) and
normalised from that stored value, out = norm(s) * weight (+ bias). One launch replaces the ~8 elementwise
kernels of the unfused add, casts and norm, which is what bounds a CUDA-graph decode step.
Backward: each program walks a contiguous range of rows, writes dx (plus the residual's gradient, which is
the same values in the residual's dtype) and accumulates its partial dweight / dbias in registers; the
partials are summed in PyTorch.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..buffers import empty, empty_like
from ..launch import CachedLaunch, cdiv, sm_count


@triton.jit
def _add_norm_fwd_kernel(
    X, RES, W, B, Y, RES_OUT, MEAN, RSTD,
    s_x, s_res, s_y, s_res_out, N, eps,
    HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL_OUT: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_RMS_NORM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * s_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(RES + row * s_res + cols, mask=mask, other=0.0).to(tl.float32)
    if STORE_RESIDUAL_OUT:
        stored = x.to(RES_OUT.dtype.element_ty)
        tl.store(RES_OUT + row * s_res_out + cols, stored, mask=mask)
        x = stored.to(tl.float32)  # normalise exactly what the next block will add to
    if IS_RMS_NORM:
        centred = x
    else:
        mean = tl.sum(x, axis=0) / N
        tl.store(MEAN + row, mean)
        centred = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / N + eps)
    tl.store(RSTD + row, rstd)
    y = centred * rstd * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * s_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _add_norm_bwd_kernel(
    X, W, DY, DX, DRES_OUT, DRES_IN, DW_PART, DB_PART, MEAN, RSTD,
    s_x, s_dy, s_dx, s_dres_out, s_dres_in, M, N, rows_per_program,
    HAS_DRESIDUAL_OUT: tl.constexpr, STORE_DRESIDUAL_IN: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_RMS_NORM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    first_row = pid.to(tl.int64) * rows_per_program
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for i in range(0, rows_per_program):
        row = first_row + i
        # The last program's range may run past M: its rows load zeros and store nothing.
        in_range = row < M
        mask = col_mask & in_range
        x = tl.load(X + row * s_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * s_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row, mask=in_range, other=0.0)
        if IS_RMS_NORM:
            xhat = x * rstd
        else:
            mean = tl.load(MEAN + row, mask=in_range, other=0.0)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        wdy = w * dy
        dw += dy * xhat
        if HAS_BIAS:
            db += dy
        c1 = tl.sum(xhat * wdy, axis=0) / N
        if IS_RMS_NORM:
            dx = (wdy - xhat * c1) * rstd
        else:
            c2 = tl.sum(wdy, axis=0) / N
            dx = (wdy - (xhat * c1 + c2)) * rstd
        if HAS_DRESIDUAL_OUT:  # prenorm: the new residual is an output too
            dx += tl.load(DRES_OUT + row * s_dres_out + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row * s_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        if STORE_DRESIDUAL_IN:
            tl.store(DRES_IN + row * s_dres_in + cols, dx.to(DRES_IN.dtype.element_ty), mask=mask)
    tl.store(DW_PART + pid * N + cols, dw, mask=col_mask)
    if HAS_BIAS:
        tl.store(DB_PART + pid * N + cols, db, mask=col_mask)


_launch_fwd = CachedLaunch(_add_norm_fwd_kernel)
_launch_bwd = CachedLaunch(_add_norm_bwd_kernel)


def _block_and_warps(N: int) -> Tuple[int, int]:
    BLOCK_N = triton.next_power_of_2(N)
    if BLOCK_N > 65536 // 4:  # one row must fit a program's registers / shared memory
        raise ValueError(f"layer_norm: feature dimension {N} is too large for the row kernel (max 16384)")
    return BLOCK_N, min(max(BLOCK_N // 256, 1), 8)


def add_norm_fwd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 residual: Optional[torch.Tensor], eps: float, residual_out_dtype: Optional[torch.dtype],
                 is_rms_norm: bool):
    """x, residual (M, N) with unit column stride. Returns (out (M, N) in x's dtype, residual_out or None,
    mean (M,) or None, rstd (M,)). ``residual_out_dtype`` None: the sum is not stored."""
    M, N = x.shape
    out = empty_like(x, memory_format=torch.contiguous_format)
    residual_out = None if residual_out_dtype is None else empty((M, N), x.device, residual_out_dtype)
    mean = None if is_rms_norm else empty((M,), x.device, torch.float32)
    rstd = empty((M,), x.device, torch.float32)
    BLOCK_N, num_warps = _block_and_warps(N)
    _launch_fwd(
        (M,),
        (x, residual if residual is not None else x, weight, bias if bias is not None else weight, out,
         residual_out if residual_out is not None else out, mean if mean is not None else rstd, rstd),
        (x.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0),
         residual_out.stride(0) if residual_out is not None else 0, N, eps),
        dict(HAS_RESIDUAL=residual is not None, STORE_RESIDUAL_OUT=residual_out is not None, HAS_BIAS=bias is not None,
             IS_RMS_NORM=is_rms_norm, BLOCK_N=BLOCK_N),
        num_warps)
    return out, residual_out, mean, rstd


def add_norm_bwd(dy: torch.Tensor, normed_input: torch.Tensor, weight: torch.Tensor, has_bias: bool,
                 mean: Optional[torch.Tensor], rstd: torch.Tensor, dresidual_out: Optional[torch.Tensor],
                 x_dtype: torch.dtype, residual_dtype: Optional[torch.dtype], is_rms_norm: bool):
    """Returns (dx (M, N) in x_dtype, dresidual (M, N) in residual_dtype or None, dweight in weight's dtype,
    dbias (fp32) or None: the caller casts it to the bias's dtype."""
    M, N = normed_input.shape
    dx = empty((M, N), dy.device, x_dtype)
    dresidual = None if residual_dtype is None else empty((M, N), dy.device, residual_dtype)
    if dy.is_cuda:
        n_programs = sm_count(dy.device.index) * 2
    else:
        n_programs = 4  # the interpreter: a few programs still exercise the row ranges
    n_programs = max(1, min(n_programs, M))
    rows_per_program = cdiv(M, n_programs)
    dw_part = empty((n_programs, N), dy.device, torch.float32)
    db_part = empty((n_programs, N), dy.device, torch.float32) if has_bias else None
    BLOCK_N, num_warps = _block_and_warps(N)
    _launch_bwd(
        (n_programs,),
        (normed_input, weight, dy, dx, dresidual_out if dresidual_out is not None else dy,
         dresidual if dresidual is not None else dx, dw_part, db_part if db_part is not None else dw_part,
         mean if mean is not None else rstd, rstd),
        (normed_input.stride(0), dy.stride(0), dx.stride(0),
         dresidual_out.stride(0) if dresidual_out is not None else 0,
         dresidual.stride(0) if dresidual is not None else 0, M, N, rows_per_program),
        dict(HAS_DRESIDUAL_OUT=dresidual_out is not None, STORE_DRESIDUAL_IN=dresidual is not None, HAS_BIAS=has_bias,
             IS_RMS_NORM=is_rms_norm, BLOCK_N=BLOCK_N),
        num_warps)
    dweight = dw_part.sum(0).to(weight.dtype)
    dbias = db_part.sum(0) if has_bias else None
    return dx, dresidual, dweight, dbias

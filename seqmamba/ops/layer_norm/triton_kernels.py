"""Triton kernels for residual-add + RMSNorm / LayerNorm over the last dimension, forward and backward.

Forward: each program normalises a tile of ROWS rows: s = x (+ residual) in fp32, stored as the new residual (in
its dtype) and normalised from that stored value, out = norm(s) * weight (+ bias). One launch replaces the ~8
elementwise kernels of the unfused add, casts and norm, which is what bounds a CUDA-graph decode step.
Backward: each program walks a contiguous range of row tiles, writes dx (plus the residual's gradient, which is
the same values in the residual's dtype) and accumulates its partial dweight / dbias in registers; the
partials are summed in PyTorch.

ROWS (``_tile``): one row per program from 1024 features up (the models' widths: 768 and more), several below,
so that a tile holds ~1024 elements. With one 64-wide row per program (the paper's synthetic models, d_model 64,
262K rows per step) each program moved 256 bytes, and the backward walked ~1,000 rows per program one dependent
load-reduce-store after another.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..buffers import empty, empty_like
from ..launch import CachedLaunch, cdiv, grid_dependency_wait, sm_count


@triton.jit
def _add_norm_fwd_kernel(
    X, RES, W, B, Y, RES_OUT, MEAN, RSTD,
    s_x, s_res, s_y, s_res_out, M, N, eps,
    HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL_OUT: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_RMS_NORM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    x = tl.load(X + rows[:, None] * s_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(RES + rows[:, None] * s_res + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if STORE_RESIDUAL_OUT:
        stored = x.to(RES_OUT.dtype.element_ty)
        tl.store(RES_OUT + rows[:, None] * s_res_out + cols[None, :], stored, mask=mask)
        x = stored.to(tl.float32)  # normalise exactly what the next block will add to
    if IS_RMS_NORM:
        centred = x
    else:
        mean = tl.sum(x, axis=1) / N
        tl.store(MEAN + rows, mean, mask=row_mask)
        centred = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / N + eps)
    tl.store(RSTD + rows, rstd, mask=row_mask)
    y = centred * rstd[:, None] * tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * s_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _add_norm_bwd_kernel(
    X, W, DY, DX, DRES_OUT, DRES_IN, DW_PART, DB_PART, MEAN, RSTD,
    s_x, s_dy, s_dx, s_dres_out, s_dres_in, M, N, tiles_per_program,
    HAS_DRESIDUAL_OUT: tl.constexpr, STORE_DRESIDUAL_IN: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_RMS_NORM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    pid = tl.program_id(0)
    first_row = pid.to(tl.int64) * tiles_per_program * ROWS
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    dw = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    for i in range(0, tiles_per_program):
        rows = first_row + i * ROWS + tl.arange(0, ROWS)
        # The last program's range may run past M: its rows load zeros and store nothing.
        in_range = rows < M
        mask = in_range[:, None] & col_mask[None, :]
        x = tl.load(X + rows[:, None] * s_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * s_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=in_range, other=0.0)[:, None]
        if IS_RMS_NORM:
            xhat = x * rstd
        else:
            mean = tl.load(MEAN + rows, mask=in_range, other=0.0)[:, None]
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        wdy = w * dy
        dw += dy * xhat
        if HAS_BIAS:
            db += dy
        c1 = tl.sum(xhat * wdy, axis=1)[:, None] / N
        if IS_RMS_NORM:
            dx = (wdy - xhat * c1) * rstd
        else:
            c2 = tl.sum(wdy, axis=1)[:, None] / N
            dx = (wdy - (xhat * c1 + c2)) * rstd
        if HAS_DRESIDUAL_OUT:  # prenorm: the new residual is an output too
            dx += tl.load(DRES_OUT + rows[:, None] * s_dres_out + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows[:, None] * s_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if STORE_DRESIDUAL_IN:
            tl.store(DRES_IN + rows[:, None] * s_dres_in + cols[None, :], dx.to(DRES_IN.dtype.element_ty), mask=mask)
    tl.store(DW_PART + pid * N + cols, tl.sum(dw, axis=0), mask=col_mask)
    if HAS_BIAS:
        tl.store(DB_PART + pid * N + cols, tl.sum(db, axis=0), mask=col_mask)


_launch_fwd = CachedLaunch(_add_norm_fwd_kernel, pdl=True)
_launch_bwd = CachedLaunch(_add_norm_bwd_kernel, pdl=True)


def _tile(N: int) -> Tuple[int, int, int]:
    """(ROWS, BLOCK_N, num_warps) of a program's tile: rows of BLOCK_N = next_power_of_2(N) columns, ROWS of them
    so that a tile holds ~1024 elements (1 row from 1024 columns up, as before tiles: those launches are
    unchanged), 256 elements per warp, 1 to 8 warps."""
    BLOCK_N = triton.next_power_of_2(N)
    if BLOCK_N > 65536 // 4:  # one row must fit a program's registers / shared memory
        raise ValueError(f"layer_norm: feature dimension {N} is too large for the row kernel (max 16384)")
    ROWS = max(1, 1024 // BLOCK_N)
    return ROWS, BLOCK_N, min(max(ROWS * BLOCK_N // 256, 1), 8)


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
    ROWS, BLOCK_N, num_warps = _tile(N)
    _launch_fwd(
        (cdiv(M, ROWS),),
        (x, residual if residual is not None else x, weight, bias if bias is not None else weight, out,
         residual_out if residual_out is not None else out, mean if mean is not None else rstd, rstd),
        (x.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0),
         residual_out.stride(0) if residual_out is not None else 0, M, N, eps),
        dict(HAS_RESIDUAL=residual is not None, STORE_RESIDUAL_OUT=residual_out is not None, HAS_BIAS=bias is not None,
             IS_RMS_NORM=is_rms_norm, ROWS=ROWS, BLOCK_N=BLOCK_N),
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
    ROWS, BLOCK_N, num_warps = _tile(N)
    tiles = cdiv(M, ROWS)
    if dy.is_cuda:  # 2 programs per SM for one-row tiles (as measured before tiles); 4 for several-row tiles
        # (4 warps at 114-144 registers compiled for sm_90: 3-4 of them fit an SM's 64K registers)
        n_programs = sm_count(dy.device.index) * (2 if ROWS == 1 else 4)
    else:
        n_programs = 4  # the interpreter: a few programs still exercise the row ranges
    n_programs = max(1, min(n_programs, tiles))
    tiles_per_program = cdiv(tiles, n_programs)
    n_programs = cdiv(tiles, tiles_per_program)  # none left with no rows (their partials would stay unwritten)
    dw_part = empty((n_programs, N), dy.device, torch.float32)
    db_part = empty((n_programs, N), dy.device, torch.float32) if has_bias else None
    _launch_bwd(
        (n_programs,),
        (normed_input, weight, dy, dx, dresidual_out if dresidual_out is not None else dy,
         dresidual if dresidual is not None else dx, dw_part, db_part if db_part is not None else dw_part,
         mean if mean is not None else rstd, rstd),
        (normed_input.stride(0), dy.stride(0), dx.stride(0),
         dresidual_out.stride(0) if dresidual_out is not None else 0,
         dresidual.stride(0) if dresidual is not None else 0, M, N, tiles_per_program),
        dict(HAS_DRESIDUAL_OUT=dresidual_out is not None, STORE_DRESIDUAL_IN=dresidual is not None, HAS_BIAS=has_bias,
             IS_RMS_NORM=is_rms_norm, ROWS=ROWS, BLOCK_N=BLOCK_N),
        num_warps)
    dweight = dw_part.sum(0).to(weight.dtype)
    dbias = db_part.sum(0) if has_bias else None
    return dx, dresidual, dweight, dbias

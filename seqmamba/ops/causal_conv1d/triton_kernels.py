"""Triton depthwise causal conv1d: forward, backward and the one-step decode update (in place on the conv
state). Autograd: a plain autograd.Function in eager mode, torch.library custom ops under torch.compile (the
custom ops' dispatcher round trips cost host time; notes/triton_scan.md "Session 3").

out[b, d, t] = act(bias[d] + sum_k weight[d, k] x[b, d, t - width + 1 + k]), zero padding on the left.
Each program takes a (BLOCK_D, BLOCK_L) tile. Accumulation is fp32. The taps x[t - s] come one of two ways:
* column taps (``COLUMN_TAPS``, the default wherever a tile is whole 8-step groups and the width is at most 9):
  two aligned loads, the tile's own steps and the 8 before them, each taken apart into its 8 columns
  (tile_columns.py); the tap at shift s of column j is column j - s of the tile, or column j - s + 8 of the
  previous group. With the time axis contiguous every load is a 16-byte vector.
* shifted loads: the width shifted copies of x, one load each. A shift that is not a multiple of 8 steps makes
  the load's addresses misaligned for a vector, so Triton issues 2-byte loads (sm_90 SASS of the forward at
  (8, 256, 4): 48 LDG.E.U16 for the three shifted taps against 2 LDG.E.128 for the aligned one).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..backend import records_autograd
from ..buffers import empty
from ..launch import CachedLaunch, cdiv, grid_dependency_wait, zeroed_views
from ..tile_columns import _columns, _join_columns


@triton.jit
def _conv_fwd_tile(x_row, w_ptr, bias_ptr, d_idx, t_idx, mask_d, L, s_x_l, s_w_d, s_w_k,
                   WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        src = t_idx - (WIDTH - 1) + k
        m = mask_d[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(x_row + src[None, :].to(tl.int64) * s_x_l, mask=m, other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + d_idx * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * xv
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    return acc


# Steps per column group of the column taps: 8 bf16 = one 16-byte vector. A tap shifts by at most width - 1 steps.
GROUP_STEPS = 8
GROUP = tl.constexpr(GROUP_STEPS)  # the same, for the kernels


@triton.jit
def _load_columns(row, t0, L, s_l, mask_d, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, V: tl.constexpr):
    """Steps t0 .. t0 + BLOCK_L - 1 of the rows (zero outside [0, L)) as V fp32 columns of BLOCK_D x BLOCK_L / V
    rows: column j holds the steps t0 + g V + j of every group g, row-major over (channel, group)."""
    t = t0 + tl.arange(0, BLOCK_L)
    m = mask_d[:, None] & ((t >= 0) & (t < L))[None, :]
    tile = tl.load(row + t[None, :].to(tl.int64) * s_l, mask=m, other=0.0).to(tl.float32)
    return _columns(tl.reshape(tile, (BLOCK_D * (BLOCK_L // V), V)), BLOCK_D * (BLOCK_L // V), V)


@triton.jit
def _tap(cur, other, j: tl.constexpr, s: tl.constexpr, V: tl.constexpr):
    """Column j of the tile shifted by s steps (x[t + s], |s| <= V): a column of ``cur`` (the tile's own groups)
    or, past its group's edge, of ``other`` (the groups V steps before the tile for s < 0, after it for s > 0)."""
    if j + s < 0:
        return other[j + s + V]
    elif j + s >= V:
        return other[j + s - V]
    else:
        return cur[j + s]


@triton.jit
def _per_row(ptr, offsets, mask_d, BLOCK_D: tl.constexpr, G: tl.constexpr):
    """A per-channel value (fp32, at ptr + offsets) broadcast to the columns' rows (channel, group)."""
    v = tl.load(ptr + offsets, mask=mask_d, other=0.0).to(tl.float32)
    return tl.reshape(tl.broadcast_to(v[:, None], (BLOCK_D, G)), (BLOCK_D * G,))


@triton.jit
def _weight_rows(w_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, G: tl.constexpr):
    """The WIDTH weights of each channel, each broadcast to the columns' rows."""
    ws = ()
    for k in tl.static_range(WIDTH):
        ws = ws + (_per_row(w_ptr + k * s_w_k, d_idx * s_w_d, mask_d, BLOCK_D, G),)
    return ws


@triton.jit
def _weighted_taps(init, ws, cur, other, WIDTH: tl.constexpr, CAUSAL: tl.constexpr):
    """Per column j: init + sum_k ws[k] x[t - (WIDTH - 1 - k)] (CAUSAL, the forward: ``other`` the groups before
    the tile) or init + sum_k ws[k] x[t + WIDTH - 1 - k] (the transposed conv: ``other`` the groups after it)."""
    V: tl.constexpr = GROUP
    sums = ()
    for j in tl.static_range(V):
        acc = init
        for k in tl.static_range(WIDTH):
            if CAUSAL:
                acc += ws[k] * _tap(cur, other, j, k - (WIDTH - 1), V)
            else:
                acc += ws[k] * _tap(cur, other, j, (WIDTH - 1) - k, V)
        sums = sums + (acc,)
    return sums


@triton.jit
def _conv_pre_columns(xs, xp, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH: tl.constexpr,
                      HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """The pre-activation tile as GROUP columns (column taps), from the columns of x (xs) and of the groups
    before the tile (xp)."""
    G: tl.constexpr = BLOCK_L // GROUP
    ws = _weight_rows(w_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, BLOCK_D, G)
    if HAS_BIAS:
        init = _per_row(bias_ptr, d_idx, mask_d, BLOCK_D, G)
    else:
        init = tl.zeros([BLOCK_D * G], dtype=tl.float32)
    return _weighted_taps(init, ws, xs, xp, WIDTH, True)


@triton.jit
def _store_columns(ptrs, cols, mask, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """The inverse of _load_columns: GROUP columns -> one (BLOCK_D, BLOCK_L) vector store."""
    V: tl.constexpr = GROUP
    tile = tl.reshape(_join_columns(cols, BLOCK_D * (BLOCK_L // V), V), (BLOCK_D, BLOCK_L))
    tl.store(ptrs, tile.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, dim, L,
    s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_o_b, s_o_d, s_o_l,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    COLUMN_TAPS: tl.constexpr = False, PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    x_row = x_ptr + pid_b * s_x_b + d_idx[:, None].to(tl.int64) * s_x_d
    mask = mask_d[:, None] & (t_idx < L)[None, :]
    ptrs = out_ptr + pid_b * s_o_b + d_idx[:, None].to(tl.int64) * s_o_d + t_idx[None, :].to(tl.int64) * s_o_l
    if COLUMN_TAPS:
        t0 = pid_l * BLOCK_L
        xs = _load_columns(x_row, t0, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, GROUP)
        xp = _load_columns(x_row, t0 - GROUP, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, GROUP)
        pres = _conv_pre_columns(xs, xp, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, HAS_BIAS, BLOCK_D,
                                 BLOCK_L)
        if SILU:
            outs = ()
            for j in tl.static_range(GROUP):
                outs = outs + (pres[j] * tl.sigmoid(pres[j]),)
            pres = outs
        _store_columns(ptrs, pres, mask, BLOCK_D, BLOCK_L)
    else:
        acc = _conv_fwd_tile(x_row, w_ptr, bias_ptr, d_idx, t_idx, mask_d, L, s_x_l, s_w_d, s_w_k,
                             WIDTH, HAS_BIAS, BLOCK_D, BLOCK_L)
        if SILU:
            acc = acc * tl.sigmoid(acc)
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dpre_columns(xs, xp, douts, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH: tl.constexpr,
                  HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """dpre = dout * act'(pre) as GROUP columns, pre recomputed from the columns of x (xs) and of the groups before
    them (xp)."""
    if SILU:
        pres = _conv_pre_columns(xs, xp, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, HAS_BIAS, BLOCK_D,
                                 BLOCK_L)
        dpres = ()
        for j in tl.static_range(GROUP):
            sig = tl.sigmoid(pres[j])
            dpres = dpres + (douts[j] * sig * (1.0 + pres[j] * (1.0 - sig)),)
        return dpres
    return douts


@triton.jit
def _weight_grads_columns(dpres, xs, xp, dw_ptr, dbias_ptr, d_idx, mask_d, WIDTH: tl.constexpr,
                          HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """The tile's sums of the weight and bias gradients (dpre x the taps of x), added atomically."""
    V: tl.constexpr = GROUP
    G: tl.constexpr = BLOCK_L // V
    for k in tl.static_range(WIDTH):
        acc = tl.zeros([BLOCK_D * G], dtype=tl.float32)
        for j in tl.static_range(V):
            acc += dpres[j] * _tap(xs, xp, j, k - (WIDTH - 1), V)
        tl.atomic_add(dw_ptr + d_idx * WIDTH + k, tl.sum(tl.reshape(acc, (BLOCK_D, G)), axis=1), mask=mask_d,
                      sem="relaxed")
    if HAS_BIAS:
        acc = dpres[0]
        for j in tl.static_range(1, V):
            acc += dpres[j]
        tl.atomic_add(dbias_ptr + d_idx, tl.sum(tl.reshape(acc, (BLOCK_D, G)), axis=1), mask=mask_d, sem="relaxed")


@triton.jit
def _conv_dpre_columns(x_row, w_ptr, bias_ptr, dout_row, dpre_ptrs, dw_ptr, dbias_ptr, d_idx, t0, mask_d, mask, L,
                       s_x_l, s_w_d, s_w_k, s_do_l, WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """The dpre kernel's tile by column taps: dpre stored, the weight and bias gradients' tile sums added."""
    V: tl.constexpr = GROUP
    douts = _load_columns(dout_row, t0, L, s_do_l, mask_d, BLOCK_D, BLOCK_L, V)
    xs = _load_columns(x_row, t0, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, V)
    xp = _load_columns(x_row, t0 - V, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, V)
    dpres = _dpre_columns(xs, xp, douts, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, HAS_BIAS, SILU,
                          BLOCK_D, BLOCK_L)
    _store_columns(dpre_ptrs, dpres, mask, BLOCK_D, BLOCK_L)
    _weight_grads_columns(dpres, xs, xp, dw_ptr, dbias_ptr, d_idx, mask_d, WIDTH, HAS_BIAS, BLOCK_D, BLOCK_L)


@triton.jit
def _causal_conv1d_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, dx_ptr, dw_ptr, dbias_ptr, dim, L,
    s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_do_b, s_do_d, s_do_l, s_dx_b, s_dx_d, s_dx_l,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    PDL: tl.constexpr = False,
):
    """The whole backward in one pass, by column taps (FUSED_BACKWARD): dx, and the weight and bias gradients.
    dx[t] needs dpre up to width - 1 steps after t, so besides the tile's own dpre the kernel recomputes dpre for
    the groups one group later (only their first width - 1 columns enter dx), from x and dout loaded one group
    later. dpre never goes through memory (the two-kernel path writes and reads it in
    fp32: 14 bytes moved per element instead of 6). dx: any strides (e.g. the x half of the Mamba block's in_proj
    gradient)."""
    grid_dependency_wait(PDL)
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    V: tl.constexpr = GROUP
    G: tl.constexpr = BLOCK_L // V
    t0 = pid_l * BLOCK_L
    x_row = x_ptr + pid_b * s_x_b + d_idx[:, None].to(tl.int64) * s_x_d
    do_row = dout_ptr + pid_b * s_do_b + d_idx[:, None].to(tl.int64) * s_do_d
    xs = _load_columns(x_row, t0, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, V)
    xp = _load_columns(x_row, t0 - V, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, V)
    xn = _load_columns(x_row, t0 + V, L, s_x_l, mask_d, BLOCK_D, BLOCK_L, V)
    douts = _load_columns(do_row, t0, L, s_do_l, mask_d, BLOCK_D, BLOCK_L, V)
    doutn = _load_columns(do_row, t0 + V, L, s_do_l, mask_d, BLOCK_D, BLOCK_L, V)
    dpres = _dpre_columns(xs, xp, douts, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, HAS_BIAS, SILU,
                          BLOCK_D, BLOCK_L)
    dpren = _dpre_columns(xn, xs, doutn, w_ptr, bias_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, HAS_BIAS, SILU,
                          BLOCK_D, BLOCK_L)   # zero past L: dout is loaded as zero there
    _weight_grads_columns(dpres, xs, xp, dw_ptr, dbias_ptr, d_idx, mask_d, WIDTH, HAS_BIAS, BLOCK_D, BLOCK_L)
    ws = _weight_rows(w_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, BLOCK_D, G)
    dxs = _weighted_taps(tl.zeros([BLOCK_D * G], dtype=tl.float32), ws, dpres, dpren, WIDTH, False)
    dx_ptrs = dx_ptr + pid_b * s_dx_b + d_idx[:, None].to(tl.int64) * s_dx_d + t_idx[None, :].to(tl.int64) * s_dx_l
    _store_columns(dx_ptrs, dxs, mask_d[:, None] & (t_idx < L)[None, :], BLOCK_D, BLOCK_L)


@triton.jit
def _causal_conv1d_dpre_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, dpre_ptr, dw_ptr, dbias_ptr, dim, L,
    s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_do_b, s_do_d, s_do_l,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    COLUMN_TAPS: tl.constexpr = False, PDL: tl.constexpr = False,
):
    """dpre = dout * act'(pre) (fp32, contiguous), plus the weight and bias gradients (atomics over tiles)."""
    grid_dependency_wait(PDL)
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    mask = mask_d[:, None] & (t_idx < L)[None, :]
    x_row = x_ptr + pid_b * s_x_b + d_idx[:, None].to(tl.int64) * s_x_d
    if COLUMN_TAPS:
        _conv_dpre_columns(x_row, w_ptr, bias_ptr, dout_ptr + pid_b * s_do_b + d_idx[:, None].to(tl.int64) * s_do_d,
                           dpre_ptr + (pid_b * dim + d_idx[:, None]) * L + t_idx[None, :], dw_ptr, dbias_ptr, d_idx,
                           pid_l * BLOCK_L, mask_d, mask, L, s_x_l, s_w_d, s_w_k, s_do_l,
                           WIDTH, HAS_BIAS, SILU, BLOCK_D, BLOCK_L)
        return
    dout = tl.load(dout_ptr + pid_b * s_do_b + d_idx[:, None].to(tl.int64) * s_do_d
                   + t_idx[None, :].to(tl.int64) * s_do_l, mask=mask, other=0.0).to(tl.float32)
    if SILU:
        pre = _conv_fwd_tile(x_row, w_ptr, bias_ptr, d_idx, t_idx, mask_d, L, s_x_l, s_w_d, s_w_k,
                             WIDTH, HAS_BIAS, BLOCK_D, BLOCK_L)
        sig = tl.sigmoid(pre)
        dpre = dout * sig * (1.0 + pre * (1.0 - sig))
    else:
        dpre = dout
    tl.store(dpre_ptr + (pid_b * dim + d_idx[:, None]) * L + t_idx[None, :], dpre, mask=mask)
    for k in tl.static_range(WIDTH):
        src = t_idx - (WIDTH - 1) + k
        m = mask_d[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(x_row + src[None, :].to(tl.int64) * s_x_l, mask=m, other=0.0).to(tl.float32)
        tl.atomic_add(dw_ptr + d_idx * WIDTH + k, tl.sum(dpre * xv, axis=1), mask=mask_d, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d_idx, tl.sum(dpre, axis=1), mask=mask_d, sem="relaxed")


@triton.jit
def _causal_conv1d_dx_kernel(
    dpre_ptr, w_ptr, dx_ptr, dim, L, s_w_d, s_w_k,
    WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
    COLUMN_TAPS: tl.constexpr = False, PDL: tl.constexpr = False,
):
    """dx[t] = sum_k weight[k] dpre[t + width - 1 - k] (the transposed, anti-causal conv)."""
    grid_dependency_wait(PDL)
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    row = (pid_b * dim + d_idx[:, None]) * L
    if COLUMN_TAPS:  # the taps reach forward: the tile's groups and the next group's
        V: tl.constexpr = GROUP
        G: tl.constexpr = BLOCK_L // V
        t0 = pid_l * BLOCK_L
        gs = _load_columns(dpre_ptr + row, t0, L, 1, mask_d, BLOCK_D, BLOCK_L, V)
        gn = _load_columns(dpre_ptr + row, t0 + V, L, 1, mask_d, BLOCK_D, BLOCK_L, V)
        ws = _weight_rows(w_ptr, d_idx, mask_d, s_w_d, s_w_k, WIDTH, BLOCK_D, G)
        dxs = _weighted_taps(tl.zeros([BLOCK_D * G], dtype=tl.float32), ws, gs, gn, WIDTH, False)
        _store_columns(dx_ptr + row + t_idx[None, :], dxs, mask_d[:, None] & (t_idx < L)[None, :], BLOCK_D, BLOCK_L)
        return
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        src = t_idx + (WIDTH - 1) - k
        m = mask_d[:, None] & (src < L)[None, :]
        g = tl.load(dpre_ptr + row + src[None, :], mask=m, other=0.0)
        wk = tl.load(w_ptr + d_idx * s_w_d + k * s_w_k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * g
    tl.store(dx_ptr + row + t_idx[None, :], acc.to(dx_ptr.dtype.element_ty), mask=mask_d[:, None] & (t_idx < L)[None, :])


@triton.jit
def _causal_conv1d_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, dim,
    s_x_b, s_x_d, s_s_b, s_s_d, s_s_k, s_w_d, s_w_k, s_o_b, s_o_d,
    WIDTH: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr,
    PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    pid_d, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    k_idx = tl.arange(0, BLOCK_W)
    mask_d = d_idx < dim
    state_row = state_ptr + pid_b * s_s_b + d_idx[:, None] * s_s_d
    # Shift left by one and append x: new[k] = old[k + 1] for k < width - 1, new[width - 1] = x.
    shifted = tl.load(state_row + (k_idx[None, :] + 1) * s_s_k, mask=mask_d[:, None] & (k_idx[None, :] + 1 < WIDTH),
                      other=0.0)
    xv = tl.load(x_ptr + pid_b * s_x_b + d_idx * s_x_d, mask=mask_d, other=0.0)
    new_state = tl.where(k_idx[None, :] == WIDTH - 1, xv[:, None].to(shifted.dtype), shifted)
    mask_dk = mask_d[:, None] & (k_idx[None, :] < WIDTH)
    tl.store(state_row + k_idx[None, :] * s_s_k, new_state, mask=mask_dk)
    w = tl.load(w_ptr + d_idx[:, None] * s_w_d + k_idx[None, :] * s_w_k, mask=mask_dk, other=0.0).to(tl.float32)
    acc = tl.sum(new_state.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + pid_b * s_o_b + d_idx * s_o_d, acc.to(out_ptr.dtype.element_ty), mask=mask_d)


# The decode step's launch, (channels per program, warps), by batch x dim. H200, 100 launches per CUDA graph
# (bench_decode_kernels.py, BENCHMARKS.md eleventh session): 1.4B (dim 4096) batch 128: 64 x 4 6.79 us, 256 x 4
# 4.89, 128 x 1 4.82, 512 x 4 4.89; 130M (1536) batch 64: 2.40 -> 2.15 with 256 x 4; at batch 1, 64 x 4 stays
# (1.54-1.56 us; 256 x 4 1.88-1.91). A read of the old row whole, stored one place left, was slower (5.3-10 us
# at batch 128) and raced where a row spanned warps (the new x stored before another lane's read).
UPDATE_CONFIGS = {"small": (64, 4), "large": (256, 4)}
UPDATE_LARGE_FROM = 16384  # batch x dim from which the "large" launch runs

# The parallel kernels' tiles, (channels, time steps, warps) per program: "fwd" for the forward, "bwd" for the
# backward's two kernels. H200, bf16, bench_conv_configs.py (gpu_check.sh convsweep, twelfth session), against the
# first sessions' (16, 128, 4) at 64x1536x2048 / 8x1536x4096 / 64x128x4112 / 1x256x2^20 (batch x dim x L):
# forward (8, 256, 4) 0.96-0.99x the time at every shape (0.367 / 0.096 / 0.069 / 0.488 ms; floors 0.190 / 0.047 /
# 0.032 / 0.253), best geometric mean of 24 configs; backward (4, 256, 4) 0.91x at the first three (1.619 / 0.419 /
# 0.296 ms) and 0.68x at 2^20 (2.788 ms), best geometric mean. (Those were shifted loads; with the column taps, a
# sweep at 64x1536x2048 (twentieth session) found the forward's best 4 x 1024 x 4 at 0.203 ms against these tiles'
# 0.213, and the backward's 8 x 128 x 4 at 0.778 against 0.791: within 5%, so the tiles stayed.)
LAUNCH = {"fwd": (8, 256, 4), "bwd": (4, 256, 4)}
# The backward's weight and bias gradients are atomic adds, one per program and channel, so one address takes
# batch x (L / time tile) of them in turn. Past BWD_MAX_TIME_TILES the time tile doubles (up to 1024): at 1 x 2^20,
# 4096 adds per address at 256 steps took 2.788 ms, 2048 at 512 steps 2.478 (the best of 24 configs at that shape),
# where the shapes under the cap lose with longer tiles (4 x 512: 1.05-1.07x the time of 4 x 256).
BWD_MAX_TIME_TILES = 2048
# Tried and dropped (twelfth session): the backward as one kernel recomputing dpre at the width - 1 shifts dx needs
# instead of passing it through memory in fp32 (6 bytes moved per element instead of 14). It lost at every tile and
# shape: best 2.013 vs 1.619 ms at 64x1536x2048, 0.515 vs 0.417 at 8x1536x4096, 0.357 vs 0.294 at 64x128x4112 (four
# conv + sigmoid evaluations per element, and the shifted loads, cost more than the fp32 round trip saves). With the
# column taps the recompute is cheap, and the one-kernel backward wins (FUSED_BACKWARD below).
# The taps from the columns of two aligned loads (module docstring) where a tile is whole groups and the width
# fits a group; False: one shifted load per tap everywhere. H200, bf16, the default tiles, in one run
# (bench_conv_configs.py --taps shifted columns, twentieth session), shifted -> columns, ms (x the memory floor):
# forward 0.366 -> 0.213 (1.93 -> 1.13x) at 64x1536x2048, 0.097 -> 0.059 at 8x1536x4096, 0.068 -> 0.042 at
# 64x128x4112, 0.487 -> 0.283 at 1x256x2^20; backward 1.622 -> 0.791 (2.44 -> 1.19x), 0.419 -> 0.211, 0.296 ->
# 0.166, 2.480 -> 1.419. The 130M prefill at batch 64: 100.2 -> 97.3 ms.
COLUMN_TAPS = True
# The backward as one kernel where the column taps apply (_causal_conv1d_bwd_kernel: dpre recomputed for the width - 1
# steps after each group instead of a round trip through memory in fp32); False: the dpre and dx kernels. H200, bf16,
# default tiles (twenty-eighth session, bench_conv_configs.py --backward two-kernels one-kernel), ms: 0.79 -> 0.51 at
# 64x1536x2048, 0.21-0.22 -> 0.14 at 8x1536x4096, 0.16 -> 0.11 at 64x128x4112, 1.42-1.44 -> 0.99 at 1x256x2^20.
FUSED_BACKWARD = True


def _column_taps(width: int, block_l: int) -> bool:
    return COLUMN_TAPS and block_l % GROUP_STEPS == 0 and width - 1 <= GROUP_STEPS


_launch_fwd = CachedLaunch(_causal_conv1d_fwd_kernel, pdl=True)
_launch_dpre = CachedLaunch(_causal_conv1d_dpre_kernel, pdl=True)
_launch_dx = CachedLaunch(_causal_conv1d_dx_kernel, pdl=True)
_launch_bwd = CachedLaunch(_causal_conv1d_bwd_kernel, pdl=True)
_launch_update = CachedLaunch(_causal_conv1d_update_kernel, pdl=True)


def _grid(batch, dim, L, block_d, block_l):
    return (cdiv(L, block_l), cdiv(dim, block_d), batch)


def _backward_launch(batch, L):
    """LAUNCH["bwd"], its time tile doubled (up to 1024) while batch x time tiles passes BWD_MAX_TIME_TILES."""
    block_d, block_l, num_warps = LAUNCH["bwd"]
    while batch * cdiv(L, block_l) > BWD_MAX_TIME_TILES and block_l < 1024:
        block_l *= 2
    return block_d, block_l, num_warps


def _conv_forward(x, weight, bias, silu):
    batch, dim, L = x.shape
    out = empty((batch, dim, L), x.device, x.dtype)
    if L == 0:
        return out
    block_d, block_l, num_warps = LAUNCH["fwd"]
    _launch_fwd(_grid(batch, dim, L, block_d, block_l), (x, weight, bias if bias is not None else weight, out),
                (dim, L, *x.stride(), *weight.stride(), *out.stride()),
                dict(WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l,
                     COLUMN_TAPS=_column_taps(weight.shape[1], block_l)),
                num_warps)
    return out


def _conv_gradients(x, weight, bias, silu, dout, dx_out=None):
    """(dx, dweight, dbias); dx written into ``dx_out`` (a (batch, dim, L) view, any strides) when given."""
    batch, dim, L = x.shape
    width = weight.shape[1]
    dw, dbias = zeroed_views(x.device, [(dim, width), (dim,)])
    dx = empty((batch, dim, L), x.device, x.dtype) if dx_out is None else dx_out
    if L > 0:
        block_d, block_l, num_warps = _backward_launch(batch, L)
        grid = _grid(batch, dim, L, block_d, block_l)
        columns = _column_taps(width, block_l)
        if columns and FUSED_BACKWARD:
            _launch_bwd(grid, (x, weight, bias if bias is not None else weight, dout, dx, dw, dbias),
                        (dim, L, *x.stride(), *weight.stride(), *dout.stride(), *dx.stride()),
                        dict(WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l),
                        num_warps)
            return dx, dw.to(weight.dtype), dbias.to(bias.dtype if bias is not None else torch.float32)
        if dx_out is not None and not dx_out.is_contiguous():  # the dx kernel writes (batch, dim, L) contiguous
            dx = empty((batch, dim, L), x.device, x.dtype)
        dpre = empty((batch, dim, L), x.device, torch.float32)
        _launch_dpre(grid, (x, weight, bias if bias is not None else weight, dout, dpre, dw, dbias),
                     (dim, L, *x.stride(), *weight.stride(), *dout.stride()),
                     dict(WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l,
                          COLUMN_TAPS=columns),
                     num_warps)
        _launch_dx(grid, (dpre, weight, dx), (dim, L, *weight.stride()),
                   dict(WIDTH=width, BLOCK_D=block_d, BLOCK_L=block_l, COLUMN_TAPS=columns), num_warps)
        if dx_out is not None and dx is not dx_out:
            dx = dx_out.copy_(dx)
    return dx, dw.to(weight.dtype), dbias.to(bias.dtype if bias is not None else torch.float32)


@torch.library.custom_op("seqmamba::causal_conv1d_fwd", mutates_args=())
def _causal_conv1d_fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool) -> torch.Tensor:
    return _conv_forward(x, weight, bias, silu)


@_causal_conv1d_fwd_op.register_fake
def _(x, weight, bias, silu):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("seqmamba::causal_conv1d_bwd", mutates_args=())
def _causal_conv1d_bwd_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool,
                          dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, dbias = _conv_gradients(x, weight, bias, silu, dout)
    # a custom op's outputs must not share storage (fp32 weights: dw and dbias are views of one buffer)
    return dx, dw.clone(), dbias.clone()


@_causal_conv1d_bwd_op.register_fake
def _(x, weight, bias, silu, dout):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight),
            x.new_empty((x.shape[1],), dtype=bias.dtype if bias is not None else torch.float32))


def _conv_setup_context(ctx, inputs, output):
    x, weight, bias, silu = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu = silu


def _conv_backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dw, dbias = _causal_conv1d_bwd_op(x, weight, bias, ctx.silu, dout)
    return dx, dw, dbias if bias is not None else None, None


_causal_conv1d_fwd_op.register_autograd(_conv_backward, setup_context=_conv_setup_context)


class _CausalConv1dEager(torch.autograd.Function):
    """The custom ops' forward and backward without the dispatcher, for eager mode."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        _conv_setup_context(ctx, (x, weight, bias, silu), None)
        return _conv_forward(x, weight, bias, silu)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dw, dbias = _conv_gradients(x, weight, bias, ctx.silu, dout)
        return dx, dw, dbias if bias is not None else None, None


def causal_conv1d_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         activation: Optional[str] = None) -> torch.Tensor:
    """Same contract as ``causal_conv1d_ref``; any strides of x."""
    silu = activation in ("silu", "swish")
    if torch.compiler.is_compiling():
        return _causal_conv1d_fwd_op(x, weight, bias, silu)
    if records_autograd(x, weight, bias):
        return _CausalConv1dEager.apply(x, weight, bias, silu)
    return _conv_forward(x, weight, bias, silu)


def causal_conv1d_update_triton(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                                bias: Optional[torch.Tensor] = None, activation: Optional[str] = None) -> torch.Tensor:
    """One decode step; conv_state (batch, dim, width) is updated in place. Returns (batch, dim)."""
    batch, dim = x.shape
    width = weight.shape[1]
    out = empty((batch, dim), x.device, x.dtype)
    BLOCK_D, num_warps = UPDATE_CONFIGS["large" if batch * dim >= UPDATE_LARGE_FROM else "small"]
    _launch_update((cdiv(dim, BLOCK_D), batch), (x, conv_state, weight, bias if bias is not None else weight, out),
                   (dim, *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride()),
                   dict(WIDTH=width, BLOCK_W=triton.next_power_of_2(width), HAS_BIAS=bias is not None,
                        SILU=activation in ("silu", "swish"), BLOCK_D=BLOCK_D),
                   num_warps)
    return out

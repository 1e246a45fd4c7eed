"""Triton depthwise causal conv1d: forward, backward and the one-step decode update (in place on the conv
state). Autograd: a plain autograd.Function in eager mode, torch.library custom ops under torch.compile (the
custom ops' dispatcher round trips cost host time; notes/triton_scan.md "Session 3").

out[b, d, t] = act(bias[d] + sum_k weight[d, k] x[b, d, t - width + 1 + k]), zero padding on the left.
Each program takes a (BLOCK_D, BLOCK_L) tile and reads the width shifted copies of x it needs (the
overlap comes from L1/L2, so x is read from memory about once). Accumulation is fp32.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..backend import records_autograd
from ..buffers import empty, split_scratch
from ..launch import CachedLaunch, cdiv, zeroed_views


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


@triton.jit
def _causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, dim, L,
    s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_o_b, s_o_d, s_o_l,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    x_row = x_ptr + pid_b * s_x_b + d_idx[:, None].to(tl.int64) * s_x_d
    acc = _conv_fwd_tile(x_row, w_ptr, bias_ptr, d_idx, t_idx, mask_d, L, s_x_l, s_w_d, s_w_k,
                         WIDTH, HAS_BIAS, BLOCK_D, BLOCK_L)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    mask = mask_d[:, None] & (t_idx < L)[None, :]
    tl.store(out_ptr + pid_b * s_o_b + d_idx[:, None].to(tl.int64) * s_o_d + t_idx[None, :].to(tl.int64) * s_o_l,
             acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _causal_conv1d_dpre_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, dpre_ptr, dw_ptr, dbias_ptr, dim, L,
    s_x_b, s_x_d, s_x_l, s_w_d, s_w_k, s_do_b, s_do_d, s_do_l,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """dpre = dout * act'(pre) (fp32, contiguous), plus the weight and bias gradients (atomics over tiles)."""
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    mask = mask_d[:, None] & (t_idx < L)[None, :]
    x_row = x_ptr + pid_b * s_x_b + d_idx[:, None].to(tl.int64) * s_x_d
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
):
    """dx[t] = sum_k weight[k] dpre[t + width - 1 - k] (the transposed, anti-causal conv)."""
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    t_idx = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d_idx < dim
    row = (pid_b * dim + d_idx[:, None]) * L
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
):
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



@triton.jit
def _conv_update_proj_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, pw_ptr, proj_ptr, part_ptr, count_ptr,
    batch, dim, n_out, m_pad,
    s_x_b, s_x_d, s_s_b, s_s_d, s_s_k, s_w_d, s_w_k, s_o_b, s_o_d, s_pw_n, s_pw_d, s_p_b, s_p_n,
    WIDTH: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, D_STEPS: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLITS: tl.constexpr, FP32_DOT: tl.constexpr,
):
    """The conv update of (BLOCK_M rows, D_STEPS x BLOCK_D channels), then those channels' share of
    x_proj: out @ pw[:, channels]^T into an fp32 scratch slot; the program of a row block that arrives last
    sums its SPLITS slots in slot order (bitwise repeatable) and stores proj."""
    pid_s, pid_m = tl.program_id(0), tl.program_id(1)
    m_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_idx = tl.arange(0, BLOCK_N)
    k_idx = tl.arange(0, BLOCK_W)
    mask_m, mask_n = m_idx < batch, n_idx < n_out
    m64 = m_idx.to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in tl.static_range(D_STEPS):
        d_idx = (pid_s * D_STEPS + step) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = d_idx < dim
        mask_md = mask_m[:, None] & mask_d[None, :]
        # (BLOCK_M, BLOCK_D, BLOCK_W): shift each state row left by one and append x, as the update kernel does
        rows = state_ptr + m64[:, None, None] * s_s_b + d_idx[None, :, None] * s_s_d + k_idx[None, None, :] * s_s_k
        mask_k = mask_md[:, :, None] & (k_idx[None, None, :] < WIDTH)
        shifted = tl.load(rows + s_s_k, mask=mask_k & (k_idx[None, None, :] + 1 < WIDTH), other=0.0)
        xv = tl.load(x_ptr + m64[:, None] * s_x_b + d_idx[None, :] * s_x_d, mask=mask_md, other=0.0)
        new_state = tl.where(k_idx[None, None, :] == WIDTH - 1, xv[:, :, None].to(shifted.dtype), shifted)
        tl.debug_barrier()  # every old value of these rows is read before any is overwritten, whatever the layouts
        tl.store(rows, new_state, mask=mask_k)
        w = tl.load(w_ptr + d_idx[:, None] * s_w_d + k_idx[None, :] * s_w_k,
                    mask=mask_d[:, None] & (k_idx[None, :] < WIDTH), other=0.0).to(tl.float32)
        y = tl.sum(new_state.to(tl.float32) * w[None, :, :], axis=2)
        if HAS_BIAS:
            y += tl.load(bias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        if SILU:
            y = y * tl.sigmoid(y)
        y = y.to(out_ptr.dtype.element_ty)  # x_proj reads the stored (rounded) conv output, as F.linear would
        tl.store(out_ptr + m64[:, None] * s_o_b + d_idx[None, :] * s_o_d, y, mask=mask_md)
        pw = tl.load(pw_ptr + n_idx[None, :] * s_pw_n + d_idx[:, None] * s_pw_d,
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # (BLOCK_D, BLOCK_N)
        if FP32_DOT:  # fp32 operands, and the interpreter (a 16-bit tl.dot is wrong under triton 3.6's)
            acc = tl.dot(y.to(tl.float32), pw.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(y, pw, acc)
    # scratch: SPLITS slots of (m_pad, BLOCK_N) fp32, every element of a program's tile written (no masks)
    slot = part_ptr + m64[:, None] * BLOCK_N + n_idx[None, :]
    tl.store(slot + pid_s * m_pad * BLOCK_N, acc)
    tl.debug_barrier()  # all of this program's partial is written before it counts itself in (release, GPU scope)
    arrived = tl.atomic_add(count_ptr + pid_m, 1, sem="acq_rel", scope="gpu")
    if arrived == SPLITS - 1:
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in tl.static_range(SPLITS):
            total += tl.load(slot + s * m_pad * BLOCK_N, cache_modifier=".cg")
        tl.store(proj_ptr + m64[:, None] * s_p_b + n_idx[None, :] * s_p_n, total.to(proj_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_n[None, :])
        tl.atomic_xchg(count_ptr + pid_m, 0, sem="relaxed", scope="gpu")  # zero for the next launch

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
# 0.296 ms) and 0.68x at 2^20 (2.788 ms), best geometric mean.
LAUNCH = {"fwd": (8, 256, 4), "bwd": (4, 256, 4)}
# The backward's weight and bias gradients are atomic adds, one per program and channel, so one address takes
# batch x (L / time tile) of them in turn. Past BWD_MAX_TIME_TILES the time tile doubles (up to 1024): at 1 x 2^20,
# 4096 adds per address at 256 steps took 2.788 ms, 2048 at 512 steps 2.478 (the best of 24 configs at that shape),
# where the shapes under the cap lose with longer tiles (4 x 512: 1.05-1.07x the time of 4 x 256).
BWD_MAX_TIME_TILES = 2048
# Tried and dropped (twelfth session): the backward as one kernel recomputing dpre at the width - 1 shifts dx needs
# instead of passing it through memory in fp32 (6 bytes moved per element instead of 14). It lost at every tile and
# shape: best 2.013 vs 1.619 ms at 64x1536x2048, 0.515 vs 0.417 at 8x1536x4096, 0.357 vs 0.294 at 64x128x4112 (four
# conv + sigmoid evaluations per element, and the shifted loads, cost more than the fp32 round trip saves).
_launch_fwd = CachedLaunch(_causal_conv1d_fwd_kernel)
_launch_dpre = CachedLaunch(_causal_conv1d_dpre_kernel)
_launch_dx = CachedLaunch(_causal_conv1d_dx_kernel)
_launch_update = CachedLaunch(_causal_conv1d_update_kernel)
_launch_update_proj = CachedLaunch(_conv_update_proj_kernel)


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
                dict(WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l),
                num_warps)
    return out


def _conv_gradients(x, weight, bias, silu, dout):
    batch, dim, L = x.shape
    width = weight.shape[1]
    dw, dbias = zeroed_views(x.device, [(dim, width), (dim,)])
    dx = empty((batch, dim, L), x.device, x.dtype)
    if L > 0:
        dpre = empty((batch, dim, L), x.device, torch.float32)
        block_d, block_l, num_warps = _backward_launch(batch, L)
        grid = _grid(batch, dim, L, block_d, block_l)
        _launch_dpre(grid, (x, weight, bias if bias is not None else weight, dout, dpre, dw, dbias),
                     (dim, L, *x.stride(), *weight.stride(), *dout.stride()),
                     dict(WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l),
                     num_warps)
        _launch_dx(grid, (dpre, weight, dx), (dim, L, *weight.stride()),
                   dict(WIDTH=width, BLOCK_D=block_d, BLOCK_L=block_l), num_warps)
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


class ProjConfig(NamedTuple):
    """The fused conv update + x_proj launch: (rows, channels per step, steps) per program, and warps."""
    block_m: int = 16
    block_d: int = 64
    d_steps: int = 4
    num_warps: int = 4


# The fused decode kernel (``causal_conv1d_update_proj``) and the rule that takes it in the Mamba block's decode
# step: CUDA, 16-bit, no autograd, and at least PROJ_MIN_ROWS batch rows. Not yet timed on a GPU: off until
# bench_decode_kernels.py --kernels convproj measures it against the conv update + F.linear it replaces.
PROJ_ENABLED = False
PROJ_MIN_ROWS = 64
PROJ_CONFIG = ProjConfig()


def _proj_config_from_env(text: str) -> ProjConfig:
    """Developer switch for benchmarks: ``SEQMAMBA_CONV_PROJ_CONFIG="16,64,4,4"`` (rows, channels, steps, warps)
    replaces PROJ_CONFIG at import."""
    try:
        values = [int(v) for v in text.split(",")]
        return ProjConfig(*values)
    except (ValueError, TypeError):
        raise ValueError(f"SEQMAMBA_CONV_PROJ_CONFIG: {text!r} is not 1-4 comma-separated integers "
                         f"({', '.join(ProjConfig._fields)})") from None


if os.environ.get("SEQMAMBA_CONV_PROJ_CONFIG", "").strip():
    PROJ_CONFIG = _proj_config_from_env(os.environ["SEQMAMBA_CONV_PROJ_CONFIG"].strip())


def use_update_proj(x: torch.Tensor, weight: torch.Tensor, proj_weight: torch.Tensor) -> bool:
    """The Mamba block's rule for its decode step's conv and x_proj (see PROJ_ENABLED)."""
    return (PROJ_ENABLED and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
            and proj_weight.dtype == x.dtype and x.shape[0] >= PROJ_MIN_ROWS
            and not records_autograd(x, weight, proj_weight))


def causal_conv1d_update_proj_triton(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                                     bias: Optional[torch.Tensor], activation: Optional[str],
                                     proj_weight: torch.Tensor, config: Optional[ProjConfig] = None
                                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One decode step of the conv (conv_state updated in place) and x_proj of its output, in one launch:
    returns (out (batch, dim) in x's dtype, out @ proj_weight^T (batch, n_out) in x's dtype)."""
    batch, dim = x.shape
    width, n_out = weight.shape[1], proj_weight.shape[0]
    cfg = config or PROJ_CONFIG
    block_m, block_n = max(16, cfg.block_m), max(16, triton.next_power_of_2(n_out))  # tl.dot's smallest side
    block_d = max(16, cfg.block_d)
    splits = cdiv(dim, block_d * cfg.d_steps)
    row_blocks = cdiv(batch, block_m)
    m_pad = row_blocks * block_m
    out = empty((batch, dim), x.device, x.dtype)
    proj = empty((batch, n_out), x.device, x.dtype)
    part, count = split_scratch(x.device, splits * m_pad * block_n, row_blocks)
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    _launch_update_proj(
        (splits, row_blocks),
        (x, conv_state, weight, bias if bias is not None else weight, out, proj_weight, proj, part, count),
        (batch, dim, n_out, m_pad, *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
         *proj_weight.stride(), *proj.stride()),
        dict(WIDTH=width, BLOCK_W=triton.next_power_of_2(width), HAS_BIAS=bias is not None,
             SILU=activation in ("silu", "swish"), BLOCK_M=block_m, BLOCK_D=block_d, D_STEPS=cfg.d_steps,
             BLOCK_N=block_n, SPLITS=splits, FP32_DOT=interpret or x.dtype == torch.float32),
        cfg.num_warps)
    return out, proj

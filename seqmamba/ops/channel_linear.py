"""A channel-mixing linear map with a narrow input (dt_proj), forward and backward, each in one pass over L (Triton).

The Mamba block's x_proj and dt_proj map channels at every time step, channels-first: y[b] = W x[b] with W (M, K),
x (batch, K, L), y (batch, M, L). Their backward is dx[b] = W^T dy[b] and dW = sum_b dy[b] x[b]^T. As batched GEMMs
that is two launches that each read dy, a (batch, M, K) weight gradient per batch row and a sum over the batch; with
M or K as small as dt_rank (4 in the paper's selective-copying model) the GEMMs are far from the memory floor, and
the weight-gradient GEMM has one tile per batch row to spread over the GPU (twenty-ninth session, BENCHMARKS.md).

``linear_backward`` does both in one kernel: each program takes one batch row's run of time steps, loads dy's and
x's (all channels, BLOCK_L steps) tiles once, writes dx = W^T dy (optionally added to what dx holds) and
accumulates dy x^T in fp32 over its steps. The per-program partial weight gradients are summed afterwards
(deterministic: no atomics). Both products go through ``tl.dot`` (tensor cores; fp32 inputs in IEEE precision, not
TF32). ``linear_forward`` is the matching forward (y = W x, one tile of steps per program), which the inner node uses
for delta = dt_proj(dt). Both take any (M, K) whose padded tile is within MAX_TILE; ``applies`` says where the Mamba
inner node takes them: dt_proj (x of at most MAX_K channels, at most MAX_M outputs), where they beat the GEMMs.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import buffers
from .launch import CachedLaunch, cdiv, grid_dependency_wait, interpreting, sm_count

# Set False to use the batched GEMMs (torch.bmm) everywhere (benchmarks time both: --channel-linear).
ENABLED = True
# Whether the inner node's forward (delta = dt_proj(dt)) takes linear_forward where applies() holds (else bmm).
FORWARD = True
# The largest (padded) weight tile a program holds as its fp32 weight-gradient accumulator, M x K: larger ones are
# refused (they would not fit a program's registers and shared memory).
MAX_TILE = 128 * 128
# Where the inner node takes these kernels: x of at most MAX_K channels (dt_proj's input, dt_rank wide) and at most
# MAX_M outputs (d_inner): the shapes timed against the GEMMs (d_inner 128 and 256, BENCHMARKS.md).
MAX_K = 16
MAX_M = 256
# Programs per SM the launch aims for (each program a run of one batch row's steps).
PROGRAMS_PER_SM = 8


@triton.jit
def _linear_bwd_kernel(w_ptr, dy_ptr, x_ptr, dx_ptr, dw_ptr,
                       M, K, L, steps_per_program, programs_per_row,
                       s_w_m, s_w_k, s_dy_b, s_dy_m, s_dy_l, s_x_b, s_x_k, s_x_l, s_dx_b, s_dx_k, s_dx_l,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr,
                       ACCUMULATE: tl.constexpr, F32: tl.constexpr, PDL: tl.constexpr = False):
    """Program (s, b): steps [s * steps_per_program, (s + 1) * steps_per_program) of batch row b. Writes dx there and
    its partial weight gradient, fp32 (M, K), at dw_ptr[b * programs_per_row + s]. F32: the products in fp32 (IEEE,
    not TF32) whatever the inputs' dtype (16-bit values are exact in fp32)."""
    grid_dependency_wait(PDL)
    pid_s = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    m = tl.arange(0, BLOCK_M)
    k = tl.arange(0, BLOCK_K)
    t = tl.arange(0, BLOCK_L)
    mask_m = m < M
    mask_k = k < K
    # W^T as a (BLOCK_K, BLOCK_M) tile, zero outside (M, K): the padded rows / columns of both products vanish
    wt = tl.load(w_ptr + k[:, None] * s_w_k + m[None, :] * s_w_m, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
    dw = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    dy_row = dy_ptr + pid_b * s_dy_b + m[:, None].to(tl.int64) * s_dy_m
    x_row = x_ptr + pid_b * s_x_b + k[:, None].to(tl.int64) * s_x_k
    dx_row = dx_ptr + pid_b * s_dx_b + k[:, None].to(tl.int64) * s_dx_k
    start = pid_s * steps_per_program
    stop = tl.minimum(start + steps_per_program, L)
    for l0 in range(start, stop, BLOCK_L):
        steps = l0 + t
        mask_t = steps < stop
        t64 = steps.to(tl.int64)
        g = tl.load(dy_row + t64[None, :] * s_dy_l, mask=mask_m[:, None] & mask_t[None, :], other=0.0)
        xv = tl.load(x_row + t64[None, :] * s_x_l, mask=mask_k[:, None] & mask_t[None, :], other=0.0)
        mask_dx = mask_k[:, None] & mask_t[None, :]
        if F32:
            g = g.to(tl.float32)
            d = tl.dot(wt.to(tl.float32), g, input_precision="ieee")
            dw = tl.dot(g, tl.trans(xv.to(tl.float32)), dw, input_precision="ieee")
        else:
            g = g.to(wt.dtype)
            d = tl.dot(wt, g)
            dw = tl.dot(g, tl.trans(xv.to(wt.dtype)), dw)
        if ACCUMULATE:
            d += tl.load(dx_row + t64[None, :] * s_dx_l, mask=mask_dx, other=0.0).to(tl.float32)
        tl.store(dx_row + t64[None, :] * s_dx_l, d.to(dx_ptr.dtype.element_ty), mask=mask_dx)
    out = dw_ptr + (pid_b * programs_per_row + pid_s) * M * K
    tl.store(out + m[:, None] * K + k[None, :], dw, mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def _linear_fwd_kernel(w_ptr, x_ptr, y_ptr, M, K, L,
                       s_w_m, s_w_k, s_x_b, s_x_k, s_x_l, s_y_b, s_y_m, s_y_l,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_L: tl.constexpr, F32: tl.constexpr,
                       PDL: tl.constexpr = False):
    """Program (l, b): y = W x for BLOCK_L steps of batch row b, all M channels (W, x zero-padded to the tiles)."""
    grid_dependency_wait(PDL)
    pid_l = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    m = tl.arange(0, BLOCK_M)
    k = tl.arange(0, BLOCK_K)
    steps = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    t64 = steps.to(tl.int64)
    mask_m = m < M
    mask_t = steps < L
    w = tl.load(w_ptr + m[:, None] * s_w_m + k[None, :] * s_w_k, mask=mask_m[:, None] & (k < K)[None, :], other=0.0)
    xv = tl.load(x_ptr + pid_b * s_x_b + k[:, None].to(tl.int64) * s_x_k + t64[None, :] * s_x_l,
                 mask=(k < K)[:, None] & mask_t[None, :], other=0.0)
    if F32:
        y = tl.dot(w.to(tl.float32), xv.to(tl.float32), input_precision="ieee")
    else:
        y = tl.dot(w, xv.to(w.dtype))
    tl.store(y_ptr + pid_b * s_y_b + m[:, None].to(tl.int64) * s_y_m + t64[None, :] * s_y_l,
             y.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_t[None, :])


_launch = CachedLaunch(_linear_bwd_kernel, pdl=True)
_launch_fwd = CachedLaunch(_linear_fwd_kernel, pdl=True)
# (BLOCK_L, num_warps) of the forward (one tile of steps per program).
FWD_TILES = (64, 4)


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot's smallest dimension


def applies(weight: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether the Mamba inner node takes these kernels for this weight and a tensor of the call (``like``: its device
    and dtype): ENABLED, a Triton device (CUDA, or the interpreter), x of at most MAX_K channels, at most MAX_M
    outputs. The H200 (twenty-ninth session, CUDA-graph replays): dt_proj's backward 2.21x the GEMMs at
    (64, 128, 4, 4112), 1.35x at (16, 256, 8, 16384); its forward 1.74x / 1.08x; x_proj's backward (K = d_inner)
    0.67-0.90x, so the GEMMs keep it."""
    M, K = weight.shape
    return (ENABLED and (like.is_cuda or interpreting()) and K <= MAX_K and M <= MAX_M
            and like.dtype in (torch.float32, torch.float16, torch.bfloat16))


def _check_tile(name: str, M: int, K: int) -> None:
    if _block(M) * _block(K) > MAX_TILE:
        raise ValueError(f"{name}: a {M} x {K} weight pads to a {_block(M)} x {_block(K)} tile, more than MAX_TILE "
                         f"({MAX_TILE} elements) for one program; use torch.bmm for it")


def _launch_shape(batch: int, L: int, block_l: int, device: torch.device, programs_per_sm: int) -> tuple:
    """(steps per program, programs per batch row): about programs_per_sm programs per SM in all, each a whole
    number of BLOCK_L steps."""
    blocks = cdiv(L, block_l)
    target = programs_per_sm * (sm_count(device.index if device.index is not None else torch.cuda.current_device())
                                if device.type == "cuda" else 2)
    per_row = max(1, min(blocks, cdiv(target, batch)))
    steps = cdiv(blocks, per_row) * block_l
    return steps, cdiv(L, steps)


def _tiles(M: int, K: int) -> tuple:
    """(BLOCK_L, num_warps) for a (BLOCK_M, BLOCK_K) weight tile."""
    tile = _block(M) * _block(K)
    return (64, 4) if tile <= 64 * 64 else (64, 8)


def _products_in_fp32(t: torch.Tensor) -> bool:
    """The kernels' F32: fp32 inputs, and every input under the interpreter, whose tl.dot of bf16 tiles returns
    garbage (16-bit values are exact in fp32, so the results are the same; the GPU tests cover the 16-bit dot)."""
    return t.dtype == torch.float32 or interpreting()


def linear_forward(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[b] = weight x[b] as torch.bmm(weight.to(x.dtype).expand(batch, -1, -1), x) computes it (products in x's
    dtype, fp32 sums, y in x's dtype, contiguous): weight (M, K), x (batch, K, L) any strides. For the shapes
    ``applies`` admits (dt_proj: K of a few channels), where it is one memory-bound pass writing y."""
    batch, K, L = x.shape
    M = weight.shape[0]
    if weight.shape[1] != K:
        raise ValueError(f"linear_forward: weight {tuple(weight.shape)} and x {tuple(x.shape)} do not fit "
                         "y[b] = weight x[b]")
    _check_tile("linear_forward", M, K)
    w = weight.to(x.dtype)
    y = buffers.empty((batch, M, L), x.device, x.dtype)
    if y.numel() == 0:
        return y.zero_()
    block_l, num_warps = FWD_TILES
    _launch_fwd((cdiv(L, block_l), batch), (w, x, y), (M, K, L, *w.stride(), *x.stride(), *y.stride()),
                dict(BLOCK_M=_block(M), BLOCK_K=_block(K), BLOCK_L=block_l,
                     F32=_products_in_fp32(x)), num_warps=num_warps)
    return y


def linear_backward(weight: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, dx: Optional[torch.Tensor] = None,
                    accumulate: bool = False) -> tuple:
    """(dx, dW) of y[b] = weight x[b]: dx = weight^T dy, written into ``dx`` (any strides) if given, added to what it
    holds with ``accumulate``; dW = sum_b dy[b] x[b]^T, summed in fp32, in weight's dtype.

    weight (M, K), cast to dy's dtype; dy (batch, M, L); x (batch, K, L); any strides. The products take dy's dtype
    (16-bit inputs exactly, fp32 in IEEE precision) and sum in fp32 (``_products_in_fp32``)."""
    batch, M, L = dy.shape
    K = weight.shape[1]
    if weight.shape[0] != M or x.shape != (batch, K, L):
        raise ValueError(f"linear_backward: weight {tuple(weight.shape)}, dy {tuple(dy.shape)} and x "
                         f"{tuple(x.shape)} do not fit y[b] = weight x[b]")
    _check_tile("linear_backward", M, K)
    if accumulate and dx is None:
        raise ValueError("linear_backward: accumulate=True needs the dx to add into")
    if dx is None:
        dx = buffers.empty((batch, K, L), x.device, x.dtype)
    elif dx.shape != (batch, K, L):
        raise ValueError(f"linear_backward: dx {tuple(dx.shape)}, expected {(batch, K, L)}")
    w = weight.to(dy.dtype)
    if batch * L == 0:  # no steps: nothing to launch (a grid of 0 programs)
        return dx, torch.zeros(M, K, device=dy.device, dtype=weight.dtype)
    block_l, num_warps = _tiles(M, K)
    steps, per_row = _launch_shape(batch, L, block_l, dy.device, PROGRAMS_PER_SM)
    partial = buffers.empty((batch * per_row, M, K), dy.device, torch.float32)
    _launch((per_row, batch), (w, dy, x, dx, partial),
            (M, K, L, steps, per_row, *w.stride(), *dy.stride(), *x.stride(), *dx.stride()),
            dict(BLOCK_M=_block(M), BLOCK_K=_block(K), BLOCK_L=block_l, ACCUMULATE=accumulate,
                 F32=_products_in_fp32(dy)), num_warps=num_warps)
    return dx, partial.sum(0).to(weight.dtype)

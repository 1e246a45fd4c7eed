"""Triton kernels for one decode step of the selective SSM, in place on the state.

state[b, d, :] <- exp(dt A[d]) * state + dt B x;  y = C . state + D x;  y *= silu(z).
Optionally dt = dt_proj_weight @ dt_low is formed in the kernel (Mamba's rank-R dt projection), which saves
the decode step one kernel per layer.
One program per (batch, block of channels); B / C are (batch, N) or grouped (batch, G, N). At large batch the dt
projection is either one GEMM first or, for 16-bit states, the row-block kernel: one program per (batch rows,
channels) block forming dt with one tensor-core product (DECODE_DT_PROJ_MAX_BYTES, DECODE_DT_PROJ_ROWS). State
math is fp32 whatever the state's dtype. Designed to be captured in a CUDA graph (no host work besides the launch).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..buffers import empty
from ..decode_linear import decode_linear
from ..launch import CachedLaunch, cdiv, grid_dependency_wait
from ..selective_scan.triton_kernels import _softplus


@triton.jit
def _selective_state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, W_ptr, out_ptr,
    dim, N, channels_per_group, R,
    s_s_b, s_s_d, s_s_n, s_x_b, s_x_d, s_dt_b, s_dt_d, s_W_d, s_W_r, s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n, s_z_b, s_z_d, s_o_b, s_o_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DT_PROJ: tl.constexpr, BLOCK_R: tl.constexpr,
    ONE_GROUP: tl.constexpr, PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    pid_d, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n_idx = tl.arange(0, BLOCK_N)
    mask_d = d_idx < dim
    mask_dn = mask_d[:, None] & (n_idx < N)[None, :]

    state_ptrs = state_ptr + pid_b * s_s_b + d_idx[:, None] * s_s_d + n_idx[None, :] * s_s_n
    state = tl.load(state_ptrs, mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + pid_b * s_x_b + d_idx * s_x_d, mask=mask_d, other=0.0).to(tl.float32)
    if DT_PROJ:  # dt = W @ dt_low: the (BLOCK_D, R) rows of the dt projection times the (R,) low-rank input
        r_idx = tl.arange(0, BLOCK_R)
        mask_r = r_idx < R
        dt_low = tl.load(dt_ptr + pid_b * s_dt_b + r_idx * s_dt_d, mask=mask_r, other=0.0).to(tl.float32)
        W = tl.load(W_ptr + d_idx[:, None] * s_W_d + r_idx[None, :] * s_W_r,
                    mask=mask_d[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
        dt = tl.sum(W * dt_low[None, :], axis=1)
    else:
        dt = tl.load(dt_ptr + pid_b * s_dt_b + d_idx * s_dt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    A = tl.load(A_ptr + d_idx[:, None] * s_A_d + n_idx[None, :] * s_A_n, mask=mask_dn, other=0.0).to(tl.float32)
    if ONE_GROUP:  # B / C shared by every channel (Mamba's decode): one (N,) row each, no per-channel division
        mask_n = n_idx < N
        B = tl.load(B_ptr + pid_b * s_B_b + n_idx * s_B_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        C = tl.load(C_ptr + pid_b * s_C_b + n_idx * s_C_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    else:
        group = d_idx // channels_per_group  # per channel: a block may straddle groups
        B = tl.load(B_ptr + pid_b * s_B_b + group[:, None] * s_B_g + n_idx[None, :] * s_B_n,
                    mask=mask_dn, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + pid_b * s_C_b + group[:, None] * s_C_g + n_idx[None, :] * s_C_n,
                    mask=mask_dn, other=0.0).to(tl.float32)

    state = state * tl.exp(dt[:, None] * A) + (dt * x)[:, None] * B
    tl.store(state_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_dn)
    y = tl.sum(state * C, axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * s_z_b + d_idx * s_z_d, mask=mask_d, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(out_ptr + pid_b * s_o_b + d_idx * s_o_d, y.to(out_ptr.dtype.element_ty), mask=mask_d)


@triton.jit
def _selective_state_update_rows_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, W_ptr, out_ptr,
    batch, dim, N, R,
    s_s_b, s_s_d, s_s_n, s_x_b, s_x_d, s_dt_b, s_dt_r, s_W_d, s_W_r, s_A_d, s_A_n,
    s_B_b, s_B_n, s_C_b, s_C_n, s_z_b, s_z_d, s_o_b, s_o_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    FP32_DOT: tl.constexpr, PDL: tl.constexpr = False,
):
    """One decode step for a (BLOCK_B batch rows, BLOCK_D channels) block, B / C in one group, with dt = dt_low @
    W^T formed by one tensor-core product per block (W's rows read once per BLOCK_B batch rows, dt kept in fp32).
    The state block is (BLOCK_B, BLOCK_D, BLOCK_N)."""
    grid_dependency_wait(PDL)
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    b_idx = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n_idx = tl.arange(0, BLOCK_N)
    r_idx = tl.arange(0, BLOCK_R)
    mask_b, mask_d, mask_n, mask_r = b_idx < batch, d_idx < dim, n_idx < N, r_idx < R
    b64 = b_idx.to(tl.int64)
    mask_bd = mask_b[:, None] & mask_d[None, :]

    dt_low = tl.load(dt_ptr + b64[:, None] * s_dt_b + r_idx[None, :] * s_dt_r,
                     mask=mask_b[:, None] & mask_r[None, :], other=0.0)  # (BLOCK_B, BLOCK_R)
    w_t = tl.load(W_ptr + d_idx[None, :] * s_W_d + r_idx[:, None] * s_W_r,
                  mask=mask_r[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_R, BLOCK_D)
    # fp32 operands either way. bf16 / fp16 values are exact in tf32 (8 / 10 mantissa bits of its 10), so "tf32"
    # is exact on the tensor cores for them; fp32 inputs take "ieee". (A bf16 tl.dot is also wrong under triton
    # 3.6's interpreter: errors ~1e10 on a 16 x 16 product.)
    if FP32_DOT:
        dt = tl.dot(dt_low.to(tl.float32), w_t.to(tl.float32), input_precision="ieee")
    else:
        dt = tl.dot(dt_low.to(tl.float32), w_t.to(tl.float32), input_precision="tf32")
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if SOFTPLUS:
        dt = _softplus(dt)
    x = tl.load(x_ptr + b64[:, None] * s_x_b + d_idx[None, :] * s_x_d, mask=mask_bd, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + d_idx[:, None] * s_A_d + n_idx[None, :] * s_A_n,
                mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32)  # (BLOCK_D, BLOCK_N)
    mask_bn = mask_b[:, None] & mask_n[None, :]
    B = tl.load(B_ptr + b64[:, None] * s_B_b + n_idx[None, :] * s_B_n, mask=mask_bn, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + b64[:, None] * s_C_b + n_idx[None, :] * s_C_n, mask=mask_bn, other=0.0).to(tl.float32)

    state_ptrs = (state_ptr + b64[:, None, None] * s_s_b + d_idx[None, :, None] * s_s_d
                  + n_idx[None, None, :] * s_s_n)
    mask_s = mask_bd[:, :, None] & mask_n[None, None, :]
    state = tl.load(state_ptrs, mask=mask_s, other=0.0).to(tl.float32)
    state = state * tl.exp(dt[:, :, None] * A[None, :, :]) + (dt * x)[:, :, None] * B[:, None, :]
    tl.store(state_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_s)
    y = tl.sum(state * C[:, None, :], axis=2)  # (BLOCK_B, BLOCK_D)
    if HAS_D:
        y += x * tl.load(D_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        z = tl.load(z_ptr + b64[:, None] * s_z_b + d_idx[None, :] * s_z_d, mask=mask_bd, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(out_ptr + b64[:, None] * s_o_b + d_idx[None, :] * s_o_d, y.to(out_ptr.dtype.element_ty), mask=mask_bd)


# Channels per program and warps; None picks both by size (benchmarks/bench_selective_scan.py times the choices).
DECODE_BLOCK_D: Optional[int] = None
DECODE_NUM_WARPS: int = 4
# The dt projection inside the kernel re-reads W (dim, R) once per batch row: batch x W's bytes from L2 each step
# (1.4B at batch 128: 128 MB per layer, against 67 MB of state traffic), and its (channels, R) dot per row is
# most of the kernel's work. Above this many bytes the step forms dt with one GEMM first (W read once; dt rounded
# to the input dtype, as mamba_ssm's step does) and the kernel takes the full dt. None: always inside (one launch
# fewer per layer, what pays at batch 1). H200, 100 launches per CUDA graph (bench_decode_kernels.py, BENCHMARKS.md
# eleventh session): 1.4B batch 128 42.2 -> 20.5 us (fp32 state), 40.3 -> 16.3 (bf16); batch 1 2.08 inside, 4.13
# with the GEMM; 130M batch 64 (9.4 MB) level (6.58 / 6.62). Programs running several batch rows with W loaded
# once were 1.4-5x slower at batch 128 (the dot stays per row; registers) and were dropped.
DECODE_DT_PROJ_MAX_BYTES: Optional[int] = 16 * 2 ** 20
# Past DECODE_DT_PROJ_MAX_BYTES, with B / C in one group: (batch rows, channels, warps) per program for the row-block
# kernel, which forms dt in the kernel by one tensor-core product per block (no GEMM launch, no dt round trip,
# dt kept in fp32: 1e-5 from the fp32 reference at 1.4B batch 128, against 6e-4 for the GEMM's bf16 dt) instead
# of the GEMM first. None: the GEMM first. H200, 1.4B batch 128, us per launch (bench_decode_kernels.py, eleventh
# session): bf16 state 16.16 (GEMM first) -> 14.08 (16 x 32 x 4; 14.3-16.3 for the other blocks tried); fp32 state
# 20.39 -> 21.0-29.1 (slower: the GEMM path is already at 1.21x its memory floor there, and with an fp32 state
# the 16 x 32 x 4 block compiles to 163 registers against 123 for bf16 (sm_90, no spills): 3 blocks per SM, not
# 4), so fp32 states keep the GEMM unless DECODE_DT_PROJ_ROWS_FP32_STATE. 1.4B decode at batch 128 with bf16
# states: 42,440 -> 43,354 tokens/s.
DECODE_DT_PROJ_ROWS: Optional[Tuple[int, int, int]] = (16, 32, 4)
DECODE_DT_PROJ_ROWS_FP32_STATE: bool = False


_launch = CachedLaunch(_selective_state_update_kernel, pdl=True)
_launch_rows = CachedLaunch(_selective_state_update_rows_kernel, pdl=True)


def _bc_strides(X: torch.Tensor):
    """(batch, N) -> one group; (batch, G, N) as is. Returns (G, (s_batch, s_group, s_n))."""
    if X.dim() == 2:
        return 1, (X.stride(0), 0, X.stride(1))
    return X.shape[1], X.stride()


def selective_state_update_triton(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                                  B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor] = None,
                                  z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                                  dt_softplus: bool = False,
                                  dt_proj_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Same contract as ``selective_state_update_ref``: updates ``state`` in place, returns y (batch, dim)."""
    batch, dim, N = state.shape
    G_B, sB = _bc_strides(B)
    G_C, sC = _bc_strides(C)
    if G_B != G_C:
        raise ValueError(f"selective_state_update: B has {G_B} groups and C has {G_C}; they must match")
    out = empty((batch, dim), x.device, x.dtype)
    BLOCK_N = max(triton.next_power_of_2(N), 2)
    BLOCK_D, num_warps = DECODE_BLOCK_D, DECODE_NUM_WARPS
    if BLOCK_D is None:
        # H100 sweep (notes/triton_scan.md "Session 3", dim 1536, N 16, 100 steps per CUDA graph, B / C in one
        # group): batch 1: 32 x 4 warps 1.86 us, 16 x 4 1.89, 8 x 1 1.91, 4 x 1 1.94; batch 64: 64 x 4 4.33 us,
        # 32 x 2 4.70, 32 x 4 4.89, 16 x 1 5.92.
        BLOCK_D, num_warps = (32, 4) if batch * dim <= 16384 else (64, 4)
    BLOCK_D = max(1, min(BLOCK_D, 4096 // BLOCK_N))
    if (dt_proj_weight is not None and DECODE_DT_PROJ_MAX_BYTES is not None
            and batch * dt_proj_weight.numel() * dt_proj_weight.element_size() > DECODE_DT_PROJ_MAX_BYTES):
        if (DECODE_DT_PROJ_ROWS is not None and G_B == 1
                and (state.element_size() < 4 or DECODE_DT_PROJ_ROWS_FP32_STATE)):
            return _update_row_blocks(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_proj_weight, out)
        dt = decode_linear(dt, dt_proj_weight)  # (batch, dim); cuBLAS or the split-K kernel, by its rule
        dt_proj_weight = None
    zz = z if z is not None else x
    W = dt_proj_weight if dt_proj_weight is not None else A
    R = dt_proj_weight.shape[1] if dt_proj_weight is not None else 1
    _launch(
        (cdiv(dim, BLOCK_D), batch),
        (state, x, dt, A, B, C, D if D is not None else A, zz, dt_bias if dt_bias is not None else A, W, out),
        (dim, N, dim // G_B, R,
         *state.stride(), *x.stride(), *dt.stride(), *W.stride(), *A.stride(), *sB, *sC, *zz.stride(),
         *out.stride()),
        dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
             BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, DT_PROJ=dt_proj_weight is not None,
             BLOCK_R=max(triton.next_power_of_2(R), 2), ONE_GROUP=G_B == 1),
        num_warps)
    return out


def _update_row_blocks(state, x, dt_low, A, B, C, D, z, dt_bias, dt_softplus, W, out):
    """The decode step by (batch rows x channels) blocks, dt = dt_low @ W^T inside (DECODE_DT_PROJ_ROWS)."""
    batch, dim, N = state.shape
    R = W.shape[1]
    block_b, block_d, num_warps = DECODE_DT_PROJ_ROWS
    block_b, block_d = max(16, block_b), max(16, block_d)  # tl.dot's smallest tile side
    zz = z if z is not None else x
    B2, C2 = B.reshape(batch, N) if B.dim() == 3 else B, C.reshape(batch, N) if C.dim() == 3 else C
    _launch_rows(
        (cdiv(dim, block_d), cdiv(batch, block_b)),
        (state, x, dt_low, A, B2, C2, D if D is not None else A, zz, dt_bias if dt_bias is not None else A, W, out),
        (batch, dim, N, R, *state.stride(), *x.stride(), *dt_low.stride(), *W.stride(), *A.stride(), *B2.stride(),
         *C2.stride(), *zz.stride(), *out.stride()),
        dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
             BLOCK_B=block_b, BLOCK_D=block_d, BLOCK_N=max(triton.next_power_of_2(N), 2),
             BLOCK_R=max(16, triton.next_power_of_2(R)),
             FP32_DOT=dt_low.dtype == torch.float32 or W.dtype == torch.float32),
        num_warps)
    return out

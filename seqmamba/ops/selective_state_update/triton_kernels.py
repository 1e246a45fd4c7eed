"""Triton kernel for one decode step of the selective SSM, in place on the state.

state[b, d, :] <- exp(dt A[d]) * state + dt B x;  y = C . state + D x;  y *= silu(z).
Optionally dt = dt_proj_weight @ dt_low is formed in the kernel (Mamba's rank-R dt projection), which saves
the decode step one kernel per layer.
One program per (batch, block of channels); B / C are (batch, N) or grouped (batch, G, N). State math is
fp32 whatever the state's dtype. Designed to be captured in a CUDA graph (no host work besides the launch).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..buffers import empty
from ..launch import CachedLaunch, cdiv
from ..selective_scan.triton_kernels import _softplus


@triton.jit
def _selective_state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, W_ptr, out_ptr,
    dim, N, channels_per_group, R,
    s_s_b, s_s_d, s_s_n, s_x_b, s_x_d, s_dt_b, s_dt_d, s_W_d, s_W_r, s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n, s_z_b, s_z_d, s_o_b, s_o_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DT_PROJ: tl.constexpr, BLOCK_R: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
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


_launch = CachedLaunch(_selective_state_update_kernel)


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
        dt = torch.nn.functional.linear(dt, dt_proj_weight)  # (batch, dim)
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

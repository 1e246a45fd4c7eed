"""A decode step's projections on the tensor cores, split over K: y = x @ W^T (+ bias) for a few rows.

At decode the rows are the batch and each weight is read once per step, so a projection is a read of its weight,
and it runs at the memory's bandwidth only if enough SMs read it. With a few rows, cuBLAS has few output tiles to
spread (1.4B at batch 1 on the H200: out_proj 2.5x its weight-read floor, x_proj, 160 outputs from 4096, 22x).
This kernel splits K as well, which fills the GPU at small batch; from 64 rows its partials are summed by a second
launch (``two_pass``), which at batch 128 still wins on the narrow x_proj and the short-K dt_proj and loses on
in_proj / out_proj (``kernel_wins`` keeps the measured cases apart).

Here one program takes (BLOCK_M rows, BLOCK_N outputs) over one of SPLIT_K ranges of K. Each program writes
its fp32 partial tile to a scratch slot, then counts itself in with an atomic on its tile's counter; the
program that arrives last sums the SPLIT_K slots in slot order (so the result does not depend on which
program finished when: runs are bitwise repeatable), adds the bias, stores y in x's dtype and resets the
counter. One launch, no zeroed buffer per call (the scratch is fully written before it is read; the counters
are zeroed once and every launch leaves them at zero), so it can be captured in a CUDA graph. A config with
``two_pass`` leaves the sum to a second launch over all outputs, in the same slot order (so the same bits).

The scratch and counters are kept per (device, shape) and reused by every launch of that shape, which is safe
while launches of one shape run one after another (one stream, as in generation; a CUDA graph warmed up eagerly
before capture shares them with eager calls). Two streams running the same shape at once would share them:
don't, or use F.linear there.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..backend import records_autograd
from ..buffers import empty
from ..launch import CachedLaunch, cdiv, grid_dependency_wait, interpreting, sm_count


@triton.jit
def _decode_linear_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, part_ptr, count_ptr,
    M, N, K, k_per_split,
    s_x_m, s_x_k, s_w_n, s_w_k, s_y_m, s_y_n,
    HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr, EVEN_K: tl.constexpr, LAST_ARRIVER_SUMS: tl.constexpr = True,
    PDL: tl.constexpr = False,
):
    grid_dependency_wait(PDL)
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    m_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_idx = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_idx = tl.arange(0, BLOCK_K)
    mask_m, mask_n = m_idx < M, n_idx < N
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)

    x_ptrs = x_ptr + m_idx.to(tl.int64)[:, None] * s_x_m + (k_start + k_idx)[None, :] * s_x_k  # (BLOCK_M, BLOCK_K)
    w_ptrs = w_ptr + n_idx.to(tl.int64)[None, :] * s_w_n + (k_start + k_idx)[:, None] * s_w_k  # (BLOCK_K, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        if EVEN_K:  # every K range a whole number of BLOCK_K steps: no mask along K, so the loads vectorize
            a = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
            b = tl.load(w_ptrs, mask=mask_n[None, :], other=0.0)
        else:
            mask_k = (k0 + k_idx) < k_end
            a = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if FP32_DOT:
            # fp32 inputs, and the interpreter (a 16-bit tl.dot is wrong under triton 3.6's: errors ~1e10)
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_K * s_x_k
        w_ptrs += BLOCK_K * s_w_k

    mask_mn = mask_m[:, None] & mask_n[None, :]
    y_ptrs = y_ptr + m_idx.to(tl.int64)[:, None] * s_y_m + n_idx[None, :] * s_y_n
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + n_idx, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_mn)
    else:
        # scratch: SPLIT_K slots of (M, N) fp32
        slot = part_ptr + m_idx.to(tl.int64)[:, None] * N + n_idx[None, :]
        tl.store(slot + pid_k * M * N, acc, mask=mask_mn)
        # (without LAST_ARRIVER_SUMS, the two-pass split: _decode_linear_sum_kernel sums the slots next)
        if LAST_ARRIVER_SUMS:
            # Every thread's partial is written before one thread counts the program in (release at GPU scope);
            # the program that sees SPLIT_K - 1 earlier arrivals acquires their partials.
            tl.debug_barrier()
            tile = pid_m * tl.num_programs(0) + pid_n
            arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLIT_K - 1:
                total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for s in tl.static_range(SPLIT_K):  # slot order, whoever came last: a repeatable sum
                    total += tl.load(slot + s * M * N, mask=mask_mn, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    total += tl.load(bias_ptr + n_idx, mask=mask_n, other=0.0).to(tl.float32)[None, :]
                tl.store(y_ptrs, total.to(y_ptr.dtype.element_ty), mask=mask_mn)
                tl.atomic_xchg(count_ptr + tile, 0, sem="relaxed", scope="gpu")  # zero for the next launch


@triton.jit
def _decode_linear_sum_kernel(
    part_ptr, bias_ptr, y_ptr, M, N, s_y_m, s_y_n,
    HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
):
    """The two-pass split's second pass: y = the SPLIT_K (M, N) fp32 slots summed in slot order (+ bias), for BLOCK
    outputs per program; the same additions in the same order as the last arriver's sum, so the same bits."""
    grid_dependency_wait(PDL)
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < M * N
    m, n = idx // N, idx % N
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        total += tl.load(part_ptr + s * M * N + idx, mask=mask, other=0.0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + n, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * s_y_m + n * s_y_n, total.to(y_ptr.dtype.element_ty), mask=mask)


class Config(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int = 4
    num_stages: int = 3
    # two_pass: the split's partials are summed by a second launch over all outputs (sum_block outputs per
    # program) instead of by the last program of each tile to arrive, one tile's slots through one SM. From 64 rows
    # it wins (H200, 1.4B, bench_decode_kernels.py, BENCHMARKS.md nineteenth session): x_proj at batch 128 4.49 us
    # against 7.61 for the last arriver (cuBLAS 7.70), at batch 64 3.69 against 5.52; out_proj at 64 8.36 / 9.63.
    two_pass: bool = False
    sum_block: int = 256


# Set False to keep F.linear for every decode projection under backend="auto" (the benchmarks' baseline).
ENABLED = True
# backend="auto" takes the kernel where ``kernel_wins`` says it beat cuBLAS on the H200 (1.4B and 130M
# projections, weights from HBM, bench_decode_kernels.py --kernels linear; BENCHMARKS.md "fourteenth session"):
# - up to 16 rows, on every projection but in_proj (4 outputs per input: enough output tiles for cuBLAS). Batch 1,
#   1.4B: out_proj 7.70 vs 9.72 us, x_proj 4.51 vs 6.98, dt_proj 2.47 vs 2.99; in_proj lost, 11.38 vs 10.66.
# - 17-32 rows, on the narrow x_proj (outputs <= inputs / 4) and the short-K dt_proj (K <= 256). Batch 32:
#   x_proj 5.56 vs 7.44 (1.4B), 3.96 vs 4.23 (130M); out_proj even (9.78 vs 10.13, 5.22 vs 5.14).
# - 33-64 rows, on dt_proj (3.00 vs 3.33, 1.97 vs 2.36 at batch 64) and, with the two-pass sum (nineteenth
#   session), on x_proj (1.4B 3.69 vs 7.68; 130M 3.01 vs 4.26, where the last arriver's sum had lost, 4.51 vs
#   4.27) and out_proj (8.36 vs 10.53; 130M 4.07 vs 5.16).
# - 65-128 rows, on x_proj (two-pass, 4.49 vs 7.70 at batch 128; 130M 3.97 vs 4.31) and dt_proj (2.65 vs 3.59;
#   2.02 vs 2.42). out_proj and in_proj lose at 1.4B (10.32 vs 9.67 two-pass; 14.9 vs 11.8 before): with 128-row
#   tiles each program re-reads x from L2, and the split's fp32 partials cost as much as the weight.
# - past 128 rows, never (not measured).
MAX_ROWS = 128


def kernel_wins(M: int, N: int, K: int) -> bool:
    """Whether the kernel beat cuBLAS at M rows of an (N outputs, K inputs) projection (the measurements above)."""
    if M <= 16:
        return N <= 2 * K or K <= 256
    if M <= 32:
        return 4 * N <= K or K <= 256
    if M <= 64:
        return 2 * N <= K or K <= 256
    return M <= MAX_ROWS and (4 * N <= K or K <= 256)


# Launch configs chosen by a sweep, keyed by (rows bucket, N, K); the rows bucket is BLOCK_M's choice:
# max(16, next power of two of the rows), at most 128. Shapes not listed take ``heuristic_config``, which picks
# the sweep's best or within 2% of it at the 1.4B shapes at batch 1.
CONFIGS: Dict[Tuple[int, int, int], Config] = {
    # 1.4B's dt_proj (4096 outputs from rank 128): 32-wide output tiles, one K step (H200, nineteenth session):
    # batch 64 2.21 us (the heuristic's 64-wide tiles 2.41), batch 128 2.65 (3.00).
    (64, 4096, 128): Config(64, 32, 128, 1),
    (128, 4096, 128): Config(128, 32, 128, 1, num_warps=8),
}
# The heuristic aims at this many programs per SM (output tiles x K splits): 2 beat 1 at batch 1 (out_proj split
# 8 at 7.70-7.79 us against split 4 at 8.24-8.70).
PROGRAMS_PER_SM = 2


def block_rows(M: int) -> int:
    return min(128, max(16, triton.next_power_of_2(M)))


def k_step(K: int) -> int:
    """The K step: 128, or K rounded up to a power of two (at least 16, tl.dot's smallest side) below 256."""
    return 128 if K >= 256 else max(16, triton.next_power_of_2(K))


def heuristic_config(M: int, N: int, K: int, device_index: int = 0, sms: Optional[int] = None) -> Config:
    """Output tiles of (rows, 64) (32 for outputs narrower than 1024), K split in powers of two while tiles x
    splits stay within PROGRAMS_PER_SM per SM and each split is at least two BLOCK_K steps long. From 64 rows a
    split is summed by the second launch (``two_pass``); 128-row tiles take 8 warps (on 4, the 128 x 32 x 128 tile
    compiles to 255 registers and spills: sm_90, eighteenth session)."""
    block_m, step = block_rows(M), k_step(K)
    block_n = 64 if N >= 1024 else 32
    tiles = cdiv(M, block_m) * cdiv(N, block_n)
    sms = sms if sms is not None else sm_count(device_index)
    split = 1
    while tiles * split * 2 <= sms * PROGRAMS_PER_SM and K // (split * 2) >= 2 * step:
        split *= 2
    return Config(block_m, block_n, step, split, num_warps=8 if block_m >= 128 else 4,
                  two_pass=split > 1 and block_m >= 64)


def launch_config(M: int, N: int, K: int, device: torch.device) -> Config:
    config = CONFIGS.get((block_rows(M), N, K))
    if config is not None:
        return config
    if device.type != "cuda":  # the interpreter: a few splits still exercise the sum
        return Config(block_rows(M), 32, 32, min(4, max(1, K // 64)))
    return heuristic_config(M, N, K, device.index or 0)


def use_kernel(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """backend="auto"'s rule: CUDA, 16-bit x and weight of one dtype, no autograd, and a shape where the kernel
    was measured faster than cuBLAS (``kernel_wins``)."""
    return (ENABLED and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
            and (bias is None or bias.dtype == x.dtype) and kernel_wins(x.shape[0], *weight.shape)
            and not records_autograd(x, weight, bias))


# (device, scratch elements, tiles) -> (fp32 scratch, int32 counters), allocated once and kept: a CUDA graph
# keeps the addresses it captured, so nothing here is ever freed or replaced.
_SCRATCH: Dict[Tuple[int, int, int], Tuple[torch.Tensor, torch.Tensor]] = {}


def _scratch(device: torch.device, part_numel: int, tiles: int) -> Tuple[torch.Tensor, torch.Tensor]:
    key = (device.index if device.type == "cuda" else -1, part_numel, tiles)
    found = _SCRATCH.get(key)
    if found is not None:
        return found
    part = empty((part_numel,), device, torch.float32)
    count = torch.zeros(tiles, device=device, dtype=torch.int32)
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # First seen inside a graph capture (no warm-up call before it): the counters' zero fill is captured
        # and runs before the kernel at every replay, but has not run now, so eager calls must not share them.
        return part, count
    _SCRATCH[key] = (part, count)
    return part, count


_launch = CachedLaunch(_decode_linear_kernel, pdl=True)
_launch_sum = CachedLaunch(_decode_linear_sum_kernel, pdl=True)


def decode_linear_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         config: Optional[Config] = None) -> torch.Tensor:
    """y = x @ weight^T (+ bias) in x's dtype, fp32 accumulation; ``config`` overrides the launch config."""
    M, K = x.shape
    N = weight.shape[0]
    y = empty((M, N), x.device, x.dtype)
    if M == 0 or N == 0:
        return y
    if K == 0:
        return y.zero_() if bias is None else y.copy_(bias.expand(M, N))
    cfg = config or launch_config(M, N, K, x.device)
    block_m = max(16, cfg.block_m)  # tl.dot's smallest tile side
    block_n, block_k = max(16, cfg.block_n), max(16, cfg.block_k)
    k_per_split = cdiv(cdiv(K, cfg.split_k), block_k) * block_k
    split = cdiv(K, k_per_split)
    grid = (cdiv(N, block_n), split, cdiv(M, block_m))
    if split > 1:
        part, count = _scratch(x.device, split * M * N, grid[0] * grid[2])
    else:
        part, count = y, y  # unused
    two_pass = split > 1 and cfg.two_pass
    _launch(grid, (x, weight, bias if bias is not None else weight, y, part, count),
            (M, N, K, k_per_split, *x.stride(), *weight.stride(), *y.stride()),
            dict(HAS_BIAS=bias is not None, SPLIT_K=split, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                 FP32_DOT=interpreting() or x.dtype == torch.float32 or weight.dtype == torch.float32,
                 EVEN_K=K % block_k == 0, LAST_ARRIVER_SUMS=not two_pass),
            cfg.num_warps, options={"num_stages": cfg.num_stages})
    if two_pass:
        block = max(16, triton.next_power_of_2(cfg.sum_block))
        _launch_sum((cdiv(M * N, block),), (part, bias if bias is not None else weight, y), (M, N, *y.stride()),
                    dict(HAS_BIAS=bias is not None, SPLIT_K=split, BLOCK=block), 4)
    return y

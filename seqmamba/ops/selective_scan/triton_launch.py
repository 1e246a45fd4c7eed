"""Host side of the Triton selective scan: launch configs and their rules, and the launches of the forward and
backward kernels (``scan_forward`` / ``scan_backward``) with the buffers they fill. Kernels: triton_kernels.py;
autograd and torch.compile: triton_autograd.py."""
from __future__ import annotations

import functools
import math
import os
from typing import Optional

import torch
import triton

from ..buffers import empty, empty_like
from ..launch import CachedLaunch, cdiv, interpreting, zeroed_views
from ..launch import sm_count as _sm_count  # a module name the launch-rule tests replace
from .lane_kernels import _segment_end_states_lanes_kernel, _selective_scan_fwd_lanes_kernel
from .triton_kernels import (_segment_delta_sum_kernel, _segment_end_state_kernel, _segment_start_grad_kernel,
                             _selective_scan_bwd_kernel, _selective_scan_dstate_kernel, _selective_scan_fwd_kernel)

# Tests set this to force short chunks (several chunks at tiny L, so the carries between chunks are exercised).
FORCE_CHUNK_T: Optional[int] = None

# Repeat launches skip Triton's JITFunction.run (seqmamba/ops/launch.py).
_launch_fwd = CachedLaunch(_selective_scan_fwd_kernel, pdl=True)
_launch_bwd = CachedLaunch(_selective_scan_bwd_kernel, pdl=True)
_launch_dstate = CachedLaunch(_selective_scan_dstate_kernel, pdl=True)
_launch_fwd_lanes = CachedLaunch(_selective_scan_fwd_lanes_kernel, pdl=True)
_launch_segment_ends_lanes = CachedLaunch(_segment_end_states_lanes_kernel, pdl=True)
_launch_segment_delta_sum = CachedLaunch(_segment_delta_sum_kernel)
_launch_segment_end_state = CachedLaunch(_segment_end_state_kernel)
_launch_segment_start_grad = CachedLaunch(_segment_start_grad_kernel)


def _bc_as_4d(X: torch.Tensor, dim: int):
    """B or C -> (is_time_varying, G, strides (batch, group, n, l)) without copying.

    (dim, N) is time-invariant with one row per channel (group = channel); (batch, N, L) is one group;
    (batch, G, N, L) is G groups of dim // G channels.
    """
    if X.dim() == 2:
        return False, dim, (0, X.stride(0), X.stride(1), 0)
    if X.dim() == 3:
        return True, 1, (X.stride(0), 0, X.stride(1), X.stride(2))
    return True, X.shape[1], (X.stride(0), X.stride(1), X.stride(2), X.stride(3))


def _bc_layout(B: torch.Tensor, C: torch.Tensor, dim: int):
    """(B_var, G_B, B strides, C_var, G_C, C strides, channels per group) for a launch: ``_bc_as_4d`` of both,
    and how many neighbouring channels share one group of both B and C (a program's channels must lie in one)."""
    B_var, G_B, sB = _bc_as_4d(B, dim)
    C_var, G_C, sC = _bc_as_4d(C, dim)
    return B_var, G_B, sB, C_var, G_C, sC, math.gcd(dim // G_B if B_var else dim, dim // G_C if C_var else dim)


# Launch configs: channels per program (block_d), chunk length (T), warps, and the rules below. Picked on an H100
# (the measurements, config by config: notes/triton_scan.md "Launch tables"): one warp and one channel per
# program, forward 512 steps per chunk, backward 256, so every scan and reduction stays inside the warp and many
# small programs keep the SMs full. Rules, applied on CUDA only:
# - min_programs_per_sm: fewer programs than this many per SM -> one channel per program;
# - maxnreg: cap registers at this many when there are at least min_programs_per_sm programs per SM and
#   L >= maxnreg_min_L (12 instead of 8 resident warps per SM for the backward); with maxnreg_inference_only,
#   only when the forward saves no states. Off since the thirty-second session: the training forward under the
#   cap of 96 took 0.848 -> 0.794 ms at (8, 1536, 4096) and 3.388 -> 3.193 at 16384 (kernel times, H200), the
#   scan's fwd+bwd 3.600 -> 3.551 / 13.762 -> 13.491 ms;
# - split_programs_per_sm / split_min_len: cut L across programs while batch x channels is below that many
#   programs per SM (segments of at least split_min_len steps; scan_forward_split / scan_forward_split_train),
#   only below split_below_programs_per_sm to begin with (the split adds a pass with no carry: the forward's
#   segment end states, and in training the state gradients).
# - prefetch: True, or "latency" = only with fewer than prefetch_max_programs_per_sm programs per SM and no states
#   to save, there with chunks of latency_T steps on latency_num_warps warps;
# - masked_last: the chunk's last state stored by the thread holding it (else extracted by a where-sum);
# - fast_flip (backward and state-gradient kernels): the reverse scans as forward scans over chunks flipped with one
#   shuffle per register (_fast_flip_ok says when the layout allows it). Compiled for sm_90 on the CPU it cuts the
#   backward's loop from 517 to 422 instructions and the state-gradient kernel's from 206 to 138 (benchmarks/
#   sass_scan.py --fast-flip; GPU tests: tests/test_gpu_ops.py -k fast_flip);
#   "shift" also moves a one step later in-register (one shuffle per 8 steps), so the reverse scan takes two
#   operands, not three: SASS 422 -> 409 (backward loop), 138 -> 134 (state gradient); H200: no faster (1.00x);
# - dout_copy (backward): copy a dout with non-adjacent steps to L-contiguous first (backward_dout).
# - gluon (forward): the Gluon kernel (gluon_kernels.py: one layout of T / 32 consecutive steps per lane,
#   one warp scan per component, bf16 B / C widened in pairs; sm_90 SASS 13.3 per state element against 17.1), where
#   _gluon_forward_ok allows it. H200 (eighth session): 0.97x at (8, 1536, 4096 / 16384), 1.07-1.21x at
#   (16, 2048, 2048), 1.09x at (2, 1536, 65536), 0.84x at (1, 1536, 2^18): off until a shape rule is measured.
# H200 (BENCHMARKS.md, sixth session): the inference forward's cap of 96 registers (17 -> 21 resident warps per SM,
# some spilling) is 9-11% faster at (8, 1536, 1024-16384), neutral at (16, 2048, 2048) and 20-34% slower in the
# latency mode (< 32 programs per SM), hence min_programs_per_sm 32. The training split at (1, 256, 2^20) (1.9
# programs per SM): forward + backward 102.8 ms in one pass, 40.2 ms in 16 segments, 37.9 in 64; at (1, 1536, 2^18)
# (11.6 per SM) 2 segments were 1.9x slower than one pass (32.8 -> 60.9 ms), hence split_below_programs_per_sm.
# H200, seventh session (bench_scan_backward_configs.py --dout contiguous layer --dout-copy off on --fast-flip off on):
# fast_flip makes forward + backward 1.05-1.18x faster with an L-contiguous dout; with the Mamba layer's dout it
# applies only after dout_copy, and the two together are 1.10-1.21x faster (the copy alone 1.04-1.05x).
# - lanes (forward): the one-channel-per-lane kernel (lane_kernels.py: each lane walks its channel's steps with all
#   N states in registers; no shuffles) for channels-first inputs with N <= lanes_max_n, lanes_num_warps warps
#   (32 channels each) per program, where _lanes_forward_ok allows it: from lanes_min_warps_per_sm of its warps per
#   SM, in training too with lanes_training (on since the thirty-second session: fwd+bwd 4.85 -> 4.45 ms at
#   (16, 2048, 2048), 6.53 -> 6.13 at (32, 1536, 2048), 13.68 -> 12.32 at (64, 1536, 2048), H200, two runs
#   each way: 1.19 / 1.31 / 1.24x mamba_ssm -> 1.29 / 1.39 / 1.38x). H200 (ninth session, forward): 1.12x at
#   (16, 2048, 2048), 1.03x at (32, 1536, 2048), 1.12x at (64, 1536, 2048) (7.8-23 warps per SM); 0.55-0.65x at
#   (8, 1536, 4096 / 16384) and (64, 128, 4112) (1.9-2.9 per SM: one warp per sub-partition cannot hide its
#   loads); forward + backward 0.96-1.01x at the large shapes, hence inference only then. lanes_fast_math: softplus
#   and SiLU without libdevice's exp / log or IEEE divisions (lane_kernels._softplus_fast; sm_90 SASS 14.8 -> 13.0
#   instructions per element), accurate to ~1e-7 relative, tiny deltas included; lanes_bc_pairs: bf16 B / C read
#   as int32 pairs of steps and widened by one bit operation per value (lane_kernels._bc_columns; with fast math ->
#   10.9 per element, no spill).
#   H200, tenth session: both on, 1.39x the chunked forward at (16, 2048, 2048) (7.8 warps per SM; plain lanes
#   1.10x), 1.16x at (12, 2048, 2048) (5.8), 0.99x at (10, 2048, 2048) (4.8), 0.88x at (8, 1536, 4096) (2.9),
#   hence from 5 warps per SM; twenty-fourth session, with the 8-step pairs kernel (gpu_check.sh lanescross): 1.06x
#   at 4.8, 0.93x at 2.9 (8, 1536, 2048 / 4096 / 16384), 0.74x at 1.9 (64, 128, 4112), hence from 4. Tried and
#   dropped the tenth session: a channel's components over 2 / 4 lanes for more
#   warps at small batch (0.81-0.94x the chunked forward wherever it would run: the per-step work is repeated per
#   lane) and the same fast math in the chunked forward (0.88-0.98x: more registers under its cap of 96) and
#   backward (1.00x).
# - lanes_maxnreg (off): a register cap for the lanes kernel where its grid has at least
#   lanes_maxnreg_min_warps_per_sm warps per SM. Uncapped it takes 253 registers (sm_90 SASS with fast math and
#   pairs), 8 resident warps per SM. H200, twenty-second session (gpu_check.sh lanesreg): caps of 200 / 184 / 168
#   (10-12 warps, 24-248 bytes of spill) were 0.79-0.88x at (16, 2048, 2048), (32, 1536, 2048) and (64, 1536, 2048)
#   (1.07x once); 224 (9 warps, no spill) 1.01x / 1.16x / 1.01x; the 130M prefill at batch 64 97 -> 106 ms at 200.
#   Kept as a switch; more warps are not what this kernel lacks.
# - lanes_chunk: the lanes kernel's steps per loop iteration (TC; 2, 4 or 8), and lanes_seq_pairs: u / delta / z
#   read and carried through the loop as int32 pairs of bf16 steps, widened by bit operations like B / C. Nsight
#   Compute on the H200 (twenty-third session, (64, 1536, 2048), TC 4) put the kernel's stalls on its loads (long
#   scoreboard 0.71 and wait 0.61 per issued instruction, math-pipe throttle 0.07): 13% of the samples on the PRMTs
#   that repacked each prefetched bf16 tile into the loop's registers (consuming the load as it was issued), 8% on
#   the first B / C tile of each chunk (ptxas sinks the next chunk's B / C loads to the end of the loop). Halving the
#   loop's trips halves those waits per element. sm_90 SASS, loop instructions per state element: TC 4 10.9 (253
#   registers), 4 + pairs 10.7 (251), 8 10.7 (208-byte spill), 8 + pairs 10.2 (168-byte spill); 2: 12.3 (168
#   registers, 12 warps per SM). H200, ms at (16, 2048, 2048) / (64, 1536, 2048): TC 4 0.669 / 1.955; 4 + pairs
#   0.684 / 1.997 (0.98x: the stalls moved to the loop's register moves); 8 0.599 / 1.771 (1.09-1.11x); **8 + pairs
#   0.585 / 1.704 (1.14-1.15x, the default)**; 2 (twenty-second session) 0.65-0.84x. The 130M prefill at batch 64:
#   97.4-97.6 -> 91.7-92.6 ms (1.40-1.41x -> 1.33-1.35x the GPT's). Pairs need bf16, unit time stride, even L and
#   4-byte aligned rows (_bf16_pair_rows); otherwise the plain tiles run. Tried and taken out the twenty-fourth
#   session: each B / C tile loaded where its component is used instead of one chunk ahead in registers (168
#   registers, no spill, 12 warps per SM; with or without an inline-PTX prefetch.global.L1 of the next chunk's rows):
#   correct, and 0.50-0.66x at (16, 2048, 2048) / (64, 1536, 2048) (0.39-0.54x with the L1 prefetch), the 130M
#   prefill 91 -> 126 ms. The L2 latency of each load lands on the chunk's path; the register prefetch hides it.
# H200, thirteenth session (bench_selective_scan.py --split-l --split-forward-only, the no-carry pass as a reduction):
# the inference forward at (1, 256, 2^20) (1.9 programs per SM) 13.02 ms in one pass, 9.28 in 16 segments (1.40x),
# 8.24 in 32 (1.58x), 7.85 in 64 (1.66x); at (1, 768, 2^18) (5.8 per SM) and (1, 1536, 2^18 / 2^20), (2, 1536,
# 2^16) (11.6, 23 per SM) 2-8 segments were 0.37-0.66x: split only below 4 programs per SM, up to 64 per SM.
# - lanes_split_* (inference; lanes_split_segments, the thirtieth session): the lanes forward with L split in
#   segments, where neither it nor the chunked forward has work enough per SM. A first pass
#   (lane_kernels._segment_end_states_lanes_kernel: one channel per lane, per state element one exp2, two
#   multiplies and an FMA; sm_90 168 registers, 6.98 instructions per element; under lanes_split_ends_maxnreg 152
#   a 72-byte spill and 1.03-1.07x faster) writes every segment's end state from zero and its delta sum; the lanes
#   forward then carries each segment's entering state through them in its prologue. H200, forward ms against no
#   split (bench_scan_forward_configs.py, BENCHMARKS.md thirtieth session): (2, 1536, 2^16) 3.00 vs 3.81, (1, 1536,
#   2^18) 5.98 vs 7.52, (1, 1536, 2^20) 24.1 vs 30.3, (2, 768, 2^16) 1.60 vs 1.90, (1, 256, 2^16) 0.47 vs 0.65,
#   (1, 256, 2^20) 4.43 vs 8.12 (the old split); the first pass is ~40% of the time. It loses where the chunked
#   forward has 93 programs per SM ((8, 1536, 4096 / 16384): 0.83-1.01x), hence lanes_split_below_programs_per_sm
#   32, and at short L, where a lone warp walking a 1024-step segment twice is the time ((1, 1536, 2048 / 4096 /
#   16384): 0.389 / 0.428 / 0.562 ms against 0.066 / 0.127 / 0.483), hence lanes_split_min_total_len 32768. The warp
#   target: 12 per SM was within 1-3% of the best of 8-32 everywhere; 1024 segments (512 steps each) took 8.0 ms at
#   (1, 256, 2^20) against 4.7 at 256 (the prologue's serial carry), hence lanes_split_max_segments 256.
# - fast_softplus (the chunked forward; on since the thirty-first session): the softplus as
#   _softplus_one_mufu instead of libdevice's log and an IEEE division (triton_kernels._softplus). sm_90 SASS at
#   (8, 1536, 4096): 1752 -> 1192 instructions in the kernel (the division's slow path and the log; the loop over
#   state components 305 -> 301) and no spill under the cap of 96 (72 bytes before). H200, forward ms:
#   (8, 1536, 4096) 0.746 -> 0.713 (SDPA flash 0.742 in the same run), (8, 1536, 16384) 2.980 -> 2.846: 1.05x.
#   The tenth session's two-MUFU fast math lost here (0.88-0.98x, registers under the cap). fast_softplus_training
#   (on since the thirty-second session): the training forward too; the backward recomputes delta with libdevice's
#   (~1e-7 relative apart, as after the lanes training forward). H200, with the training forward's cap of 96: its
#   kernel 0.794 -> 0.787 ms at (8, 1536, 4096), 3.193 -> 3.173 at 16384, 4.341 -> 4.215 at (2, 1536, 65536); the
#   scan's fwd+bwd 3.551 -> 3.542, 13.491 -> 13.483, 14.893 -> 14.601 ms. The time-major block layout's config
#   (FWD_CONFIG_CHANNEL_LAST) has neither key and is not timed. Timed and taken out (thirty-second session, H200):
#   a switch for the output's SiLU as _silu_fast (exp2 and div.full; sm_90 SASS 1136 -> 1048 instructions): forward
#   0.85x against fast_softplus alone, (8, 1536, 4096) 0.713 -> 0.840 ms, (8, 1536, 16384) 2.814 -> 3.331 ms; in
#   git history at commit b931c28.
# - lanes_fast_math "one_mufu" (the default since the thirty-first session; True is the two-MUFU softplus before it):
#   log1p(exp(-|x|)) as exp(-|x|) times a degree-8 polynomial (lane_kernels._softplus_one_mufu) instead of
#   2 atanh(e / (2 + e)), whose division costs a MUFU reciprocal. sm_90 SASS: the forward's loop 10.18 -> 9.74
#   instructions per element (1.25 -> 1.1875 MUFU), the split's first pass 6.98 -> 6.54 (1.125 -> 1.0625). H200
#   (BENCHMARKS.md, thirty-first session), forward ms one / two MUFU: (2, 1536, 2^16) 2.888 / 3.001, (1, 1536, 2^18)
#   5.759 / 5.978, (1, 1536, 2^20) 23.40 / 24.21, (1, 256, 2^20) 4.276 / 4.417, (16, 2048, 2048) 0.569 / 0.585,
#   (64, 1536, 2048) 1.666 / 1.705: 1.02-1.04x wherever a lanes kernel runs. Timed and taken out the same session:
#   some of the first pass's exps as FMA-pipe polynomials (FlashAttention-4's trick; 1-3 of 16 components:
#   0.92-0.98x: the pass is not SFU-bound, though its SASS has 9 SFU cycles per element-warp against 7 of issue) and
#   B / C widened to fp32 in memory first (no bit operations in the loop, 9.2 instructions per element at 4-step
#   chunks: 0.65-0.77x; at 8 steps the tiles spill 968 bytes: 0.18-0.23x).
FWD_CONFIG = dict(block_d=1, T=512, num_warps=1, masked_last=True, prefetch="latency",
                  prefetch_max_programs_per_sm=32, latency_T=1024, latency_num_warps=2,
                  min_programs_per_sm=32, maxnreg=96, maxnreg_inference_only=False, gluon=False,
                  lanes=True, lanes_num_warps=1, lanes_max_n=16, lanes_min_warps_per_sm=4, lanes_training=True,
                  lanes_fast_math="one_mufu", lanes_bc_pairs=True, lanes_seq_pairs=True, lanes_chunk=8,
                  lanes_maxnreg=None,
                  lanes_maxnreg_min_warps_per_sm=10, lanes_split_warps_per_sm=12, lanes_split_min_len=1024,
                  lanes_split_below_programs_per_sm=32, lanes_split_max_segments=256, lanes_split_min_total_len=32768,
                  lanes_split_ends_chunk=None, lanes_split_ends_maxnreg=152, fast_softplus=True,
                  fast_softplus_training=True,
                  split_below_programs_per_sm=4,
                  split_programs_per_sm=64, split_min_len=4096)
# tail_launch (training, see tail_start): a length just past a whole number of forward chunks runs as two launches
# per pass, the whole chunks and then the short tail with chunks of its own size. Off: on the H200 (sixteenth
# session) it gave 1.01x on the scan's fwd+bwd at (64, 128, 4112), and the selective-copying step moved within noise.
BWD_CONFIG = dict(block_d=1, T=256, num_warps=1, prefetch=True, min_programs_per_sm=8, maxnreg=168, maxnreg_min_L=0,
                  split_below_programs_per_sm=4, split_programs_per_sm=16, split_min_len=4096, fast_flip=True,
                  dout_copy=True, tail_launch=False, batch_fastest=False)
# batch_fastest (off; built the thirty-second session, not timed): the backward's grid as (batch, channel blocks)
# instead of (channel blocks, batch), as mamba_ssm orders its backward blocks. With one channel per program, the
# ~1584 programs resident at once on an H200 (12 per SM) are today one batch row's 1536 channels, all walking the
# same chunk and adding into the same dB / dC sums of that row (~1536 atomic adds per address per chunk); ordered
# batch first they spread over every row. Profile (8, 1536, 4096): backward 2.78 ms against mamba_ssm's 3.45, the
# row that misses issue 9's fwd+bwd 1.3x; time it with gpu_check.sh batchfast.
# Timed and taken out (thirty-second session, H200): a fast-math switch, the backward's softplus as _softplus_one_mufu
# and its sigmoids / SiLU through exp2 and div.full, with the chunked training forward's alike (sm_90 SASS at T 256:
# 1840 -> 1456 instructions, the loop unchanged, 168 registers with a 40-byte spill). Level or lost, fwd+bwd ms off
# (two runs) vs on (two runs): (8, 1536, 4096) 3.616 / 3.617 vs 3.613 / 3.610; (8, 1536, 16384) 13.443 / 13.425
# vs 13.560 / 13.550 (0.99x); (16, 2048, 2048) 4.781 / 4.779 vs 4.792 / 4.790; (8, 1536, 1024) host-bound, noisy.
# In git history at commit b931c28.
# The Mamba block's layout: u / delta / z are transposed views of (batch, L, dim) tensors, so a one-channel
# program would use 2 bytes of every 32-byte sector it loads. A program of 16-32 neighbouring channels reads
# whole sectors; the chunk shrinks to keep the (BLOCK_D, T) tile affordable in registers. The backward's prefetch
# was 3-4% slower in this layout.
FWD_CONFIG_CHANNEL_LAST = dict(block_d=32, T=32, num_warps=1, prefetch=True)
BWD_CONFIG_CHANNEL_LAST = dict(block_d=16, T=32, num_warps=1)


def _config_from_env(config: dict, variable: str) -> None:
    """Developer switch for benchmarks: ``SEQMAMBA_SCAN_FWD_CONFIG="lanes=1,maxnreg=none"`` overrides FWD_CONFIG
    entries (and SEQMAMBA_SCAN_BWD_CONFIG BWD_CONFIG's) at import; values parse as int, then true / false / none,
    else stay strings. An unknown key is an error naming it."""
    text = os.environ.get(variable, "").strip()
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or key not in config:
            raise ValueError(f"{variable}: {item!r} is not key=value with a key of {sorted(config)}")
        low = raw.strip().lower()
        try:
            value = int(low)
        except ValueError:
            value = {"true": True, "false": False, "none": None}.get(low, raw.strip())
        config[key] = value


_config_from_env(FWD_CONFIG, "SEQMAMBA_SCAN_FWD_CONFIG")
_config_from_env(BWD_CONFIG, "SEQMAMBA_SCAN_BWD_CONFIG")


def _is_channel_last(t: Optional[torch.Tensor]) -> bool:
    """(batch, dim, L) with the channels adjacent in memory and the steps not: a (batch, L, dim) layout."""
    return t is not None and t.shape[2] > 1 and t.stride(1) == 1 and t.stride(2) != 1


def is_block_layout(u, delta, z) -> bool:
    """True when the sequence inputs are (mostly) laid out time-major, as the Mamba block passes them."""
    tensors = [t for t in (u, delta, z) if t is not None]
    return 2 * sum(_is_channel_last(t) for t in tensors) >= len(tensors)


def _config(backward: bool, block_layout: bool) -> dict:
    if block_layout:
        return BWD_CONFIG_CHANNEL_LAST if backward else FWD_CONFIG_CHANNEL_LAST
    return BWD_CONFIG if backward else FWD_CONFIG


def _sms(device: torch.device) -> int:
    """SMs of a CUDA device (its index, or the current device's for a bare "cuda")."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _register_cap(cap: Optional[int], count: int, min_per_sm: int, sms: int) -> dict:
    """Triton's maxnreg = ``cap`` on NVIDIA GPUs when ``count`` programs / warps reach ``min_per_sm`` per SM (a cap
    pays only where more of them wait than fit uncapped); no options otherwise (no cap asked for, ROCm)."""
    if cap is None or torch.version.hip is not None or count < min_per_sm * sms:
        return {}
    return {"maxnreg": cap}


def _launch_config(dim: int, N: int, L: int, channels_per_group: int, backward: bool, block_layout: bool = False,
                   batch: Optional[int] = None, device: Optional[torch.device] = None, save_states: bool = False):
    """(BLOCK_D, T, num_warps, compiler options, prefetch) for one launch.

    With ``batch`` and a CUDA ``device``, the config's occupancy rules apply (see BWD_CONFIG): one channel
    per program below min_programs_per_sm programs per SM, the Triton option maxnreg (the
    register cap only on NVIDIA, with enough programs and L >= maxnreg_min_L), and the prefetch rule.
    Elsewhere (the interpreter, or only T wanted) the options are empty and prefetch is on only when the
    config says True. Cached per shape and config (host time matters at small shapes)."""
    on_cuda = batch is not None and device is not None and device.type == "cuda"
    sms = _sms(device) if on_cuda else 0
    cfg = tuple(sorted(_config(backward, block_layout).items()))
    return _launch_config_cached(cfg, dim, L, channels_per_group, batch if on_cuda else None, sms, FORCE_CHUNK_T,
                                 save_states)


@functools.lru_cache(maxsize=4096)
def _launch_config_cached(cfg_items, dim, L, channels_per_group, batch, sms, force_chunk_t, save_states):
    cfg = dict(cfg_items)
    BLOCK_D = cfg["block_d"]
    on_cuda = batch is not None
    min_per_sm = cfg.get("min_programs_per_sm", 0)
    if on_cuda and batch * cdiv(dim, BLOCK_D) < min_per_sm * sms:
        BLOCK_D = 1  # too few programs to fill the SMs: more, smaller ones
    while BLOCK_D > 1 and channels_per_group % BLOCK_D != 0:
        BLOCK_D //= 2  # a block must not straddle two groups of B / C
    T = min(cfg["T"], max(16, triton.next_power_of_2(max(L, 1))))
    if force_chunk_t is not None:
        T = force_chunk_t
    options = {}
    if on_cuda and L >= cfg.get("maxnreg_min_L", 0) and not (save_states and cfg.get("maxnreg_inference_only", False)):
        options = _register_cap(cfg.get("maxnreg"), batch * cdiv(dim, BLOCK_D), min_per_sm, sms)
    num_warps = cfg["num_warps"]
    rule = cfg.get("prefetch", False)
    if rule == "latency":  # few programs per SM and no states to save
        prefetch = (on_cuda and not save_states
                    and batch * cdiv(dim, BLOCK_D) < cfg.get("prefetch_max_programs_per_sm", 0) * sms)
        if prefetch and force_chunk_t is None:  # the latency-bound launch's own chunk and warps, if the config has them
            T = min(cfg.get("latency_T", T), max(16, triton.next_power_of_2(max(L, 1))))
            num_warps = cfg.get("latency_num_warps", num_warps)
    else:
        prefetch = bool(rule)
    return BLOCK_D, T, num_warps, options, prefetch


def tail_launch_on() -> bool:
    """BWD_CONFIG tail_launch, or FORCE_TAIL where a test or benchmark sets it (``tail_start`` decides where)."""
    return bool(BWD_CONFIG.get("tail_launch", False) if FORCE_TAIL is None else FORCE_TAIL)


def backward_chunk_len(u, delta, z, A, B, C) -> int:
    """T of the backward's chunks for these inputs (the training forward saves the state entering each)."""
    dim = u.shape[1]
    return _launch_config(dim, A.shape[1], u.shape[2], _bc_layout(B, C, dim)[-1], backward=True,
                          block_layout=is_block_layout(u, delta, z))[1]


def saved_states_shape(u, delta, z, A, B, C) -> tuple:
    """The training forward's saved states, (batch, dim, chunks, N) fp32: the state entering each of the backward's
    chunks (what ``scan_forward`` allocates, for the custom ops' fake implementations)."""
    batch, dim, L = u.shape
    return batch, dim, _n_chunks(L, backward_chunk_len(u, delta, z, A, B, C)), A.shape[1]


def _n_chunks(L: int, T: int) -> int:
    """Chunks of T steps covering L steps; at least one, so L = 0 still has a state slot."""
    return max(cdiv(L, T), 1)


def _empty_like_layout(ref: torch.Tensor, channel_last: bool, dtype=None) -> torch.Tensor:
    """A new (batch, dim, L) tensor, stored (batch, L, dim) when channel_last (so .transpose(1, 2) of it is
    contiguous: the Mamba block's out_proj and the autograd transposes then need no copy)."""
    batch, dim, L = ref.shape
    dtype = ref.dtype if dtype is None else dtype
    if channel_last:
        return empty((batch, L, dim), ref.device, dtype).transpose(1, 2)
    return empty((batch, dim, L), ref.device, dtype)


def _saving_chunk(T: int, T_bwd: int) -> int:
    """The training forward's chunk: its own T when that is a whole number of the backward's chunks (it then saves
    the state entering each of them, SAVES_PER_CHUNK per chunk), else the backward's."""
    return T if T >= T_bwd and T % T_bwd == 0 else T_bwd


def _dummy(ref: torch.Tensor) -> torch.Tensor:
    return empty((1,), ref.device, torch.float32)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states, out=None):
    """Runs the forward kernel. Returns (out, last_state, chunk_states); chunk_states holds the state
    entering each of the backward's chunks when save_states, else a placeholder. ``out``: a (batch, dim, L)
    tensor (any strides) to write into instead of a new one."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B_var, G_B, sB, C_var, G_C, sC, cpg = _bc_layout(B, C, dim)
    block_layout = is_block_layout(u, delta, z)
    BLOCK_D, T, num_warps, options, prefetch = _launch_config(dim, N, L, cpg, backward=False,
                                                              block_layout=block_layout, batch=batch, device=u.device,
                                                              save_states=bool(save_states))
    saves_per_chunk, n_saved = 1, 1
    T_bwd = _launch_config(dim, N, L, cpg, backward=True, block_layout=block_layout)[1] if save_states else 0
    if not save_states:
        segments = lanes_split_segments(u, N, block_layout)
        if segments > 1:
            return _scan_forward_lanes(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, 0, out,
                                       (B_var, sB, C_var, sC, cpg), segments)
    if _lanes_forward_ok(u, N, block_layout, T_bwd):
        return _scan_forward_lanes(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, T_bwd, out,
                                   (B_var, sB, C_var, sC, cpg))
    if save_states:  # save the state entering each of the backward's chunks
        T = _saving_chunk(T, T_bwd)
        saves_per_chunk, n_saved = T // T_bwd, _n_chunks(L, T_bwd)
    n_chunks = _n_chunks(L, T)
    if out is None:
        out = _empty_like_layout(u, block_layout)
    # Two slots that carry the state between chunks inside the kernel (slot 0 starts as the initial state);
    # the last state ends in slot n_chunks % 2.
    state = torch.zeros((2, batch, dim, N), device=u.device, dtype=torch.float32)
    if initial_state is not None:
        state[0].copy_(initial_state)
    chunk_states = (empty((batch, dim, n_saved, N), u.device, torch.float32)
                    if save_states else _dummy(u))
    dummy = _dummy(u)
    zz = z if z is not None else u
    grid = (cdiv(dim, BLOCK_D), batch)
    tensors = (u, delta, A, B, C, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
               out, state, chunk_states)
    ints = (dim, L, N, cpg, n_chunks, n_saved, batch * dim * N,
            *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *sB, *sC, *out.stride())
    if _gluon_forward_ok(u.device, BLOCK_D, T, num_warps, B_var, C_var):
        _launch_fwd_gluon(grid, tensors, ints,
                          dict(T=T, WARPS=num_warps, HAS_D=D is not None, HAS_Z=z is not None,
                               HAS_DBIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                               SAVE_STATES=bool(save_states), SAVES_PER_CHUNK=saves_per_chunk,
                               BC_PAIRS=_bf16_pairs_ok(B, C, L, T, num_warps)),
                          num_warps, options)
        return out, state[n_chunks % 2], chunk_states
    cfg = _config(False, block_layout)
    fast_softplus = cfg.get("fast_softplus") and (not save_states or cfg.get("fast_softplus_training"))
    _launch_fwd(
        grid, tensors, ints,
        dict(BLOCK_D=BLOCK_D, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), B_VAR=B_var, C_VAR=C_var, SAVE_STATES=bool(save_states),
             SAVES_PER_CHUNK=saves_per_chunk, MASKED_LAST=bool(cfg.get("masked_last", False)), PREFETCH=prefetch,
             FAST_SOFTPLUS=bool(delta_softplus and fast_softplus)),
        num_warps, options)
    return out, state[n_chunks % 2], chunk_states


def _lane_chunk() -> int:
    """Steps per chunk of the lanes kernel, FWD_CONFIG lanes_chunk (default 8: a lane's loads are 16 bytes of bf16;
    its registers hold the next chunk's N B / C tiles too, with a 168-byte spill that pays: the comment above)."""
    chunk = FWD_CONFIG.get("lanes_chunk", 8)
    if chunk not in (2, 4, 8):
        raise ValueError(f"FWD_CONFIG lanes_chunk={chunk!r}: the lanes kernel takes 2, 4 or 8 steps per chunk")
    return chunk


def _lanes_forward_ok(u: torch.Tensor, N: int, block_layout: bool, T_save: int) -> bool:
    """Whether the forward runs as the one-channel-per-lane kernel (FWD_CONFIG lanes): asked for, channels-first
    inputs (time-major ones read a channel's steps 2 bytes per sector; the chunked block-layout config serves
    them), N <= lanes_max_n (the N states are unrolled in registers); when states are saved (training) only with
    lanes_training and the backward's chunk a whole number of the kernel's load chunks; and with
    lanes_min_warps_per_sm > 0 only on CUDA with at least that many of its warps per SM (its latency hides behind
    other warps only there: BENCHMARKS.md, ninth session)."""
    cfg = FWD_CONFIG
    if not _lanes_layout_ok(N, block_layout):
        return False
    if T_save and (not cfg.get("lanes_training") or T_save % _lane_chunk() != 0):
        return False
    min_warps = cfg.get("lanes_min_warps_per_sm", 0)
    if not min_warps:
        return True
    if u.device.type != "cuda":
        return False
    return _lanes_warps(u) >= min_warps * _sms(u.device)


def _lanes_layout_ok(N: int, block_layout: bool) -> bool:
    """FWD_CONFIG lanes on, channels-first inputs and N <= lanes_max_n (the N states are unrolled in registers)."""
    return bool(FWD_CONFIG.get("lanes")) and not block_layout and N <= FWD_CONFIG.get("lanes_max_n", 16)


def _lanes_warps(u: torch.Tensor) -> int:
    """Warps in the unsplit lanes forward's grid: 32 channels each, lanes_num_warps per program."""
    batch, dim, _ = u.shape
    warps_per_program = FWD_CONFIG.get("lanes_num_warps", 1)
    return batch * cdiv(dim, 32 * warps_per_program) * warps_per_program


# Tests and benchmarks set this to force the lanes forward's L split into that many segments (None: the rule in
# lanes_split_segments; 1: never).
FORCE_LANES_SEGMENTS: Optional[int] = None


def lanes_split_segments(u: torch.Tensor, N: int, block_layout: bool) -> int:
    """Segments for the lanes forward with L split across programs (inference only; 1 = don't split).

    Where the lanes forward has too few warps to hide its loads (below lanes_min_warps_per_sm per SM) and the
    chunked forward that runs there unsplit has too few programs too (below lanes_split_below_programs_per_sm
    channels per SM), cut L into the smallest power of two of segments that gives the lanes forward
    lanes_split_warps_per_sm warps per SM, each at least lanes_split_min_len steps, at most
    lanes_split_max_segments (the forward carries each segment's entering state through the earlier segments one
    by one, in its prologue: a serial chain as long as the segment's index), and only from
    lanes_split_min_total_len steps: a lone warp walks a segment at ~0.2 us per step (H200), so each pass takes at
    least ~0.2 ms per 1024 steps of segment whatever the parallelism. The split adds one pass (each
    segment's end state from zero, lane_kernels._segment_end_states_lanes_kernel: one exp per state element, no
    output), so it costs up to twice the forward's exps on segments times the warps. FORCE_LANES_SEGMENTS
    overrides the rule (not the layout conditions: channels-first, N <= lanes_max_n, whole lanes chunks per
    segment)."""
    cfg = FWD_CONFIG
    if not _lanes_layout_ok(N, block_layout):
        return 1
    batch, dim, L = u.shape
    if FORCE_LANES_SEGMENTS is not None:
        segments = FORCE_LANES_SEGMENTS
    else:
        target = cfg.get("lanes_split_warps_per_sm", 0)
        if not target or u.device.type != "cuda":
            return 1
        sms = _sms(u.device)
        warps = _lanes_warps(u)
        if warps >= cfg.get("lanes_min_warps_per_sm", 0) * sms:
            return 1  # the unsplit lanes forward has warps enough
        if batch * dim >= cfg.get("lanes_split_below_programs_per_sm", 32) * sms:
            return 1  # the chunked forward (one channel per program) has programs enough
        if L < cfg.get("lanes_split_min_total_len", 32768):
            return 1  # each pass is at least a segment's steps walked by one warp: short L is latency, not work
        segments = 1
        while (warps * segments < target * sms and L // (2 * segments) >= cfg.get("lanes_split_min_len", 1024)
               and 2 * segments <= cfg.get("lanes_split_max_segments", 256)):
            segments *= 2
    # every segment but the last a whole number of the kernel's chunks (at least one)
    return segments if segments > 1 and L // segments >= _lane_chunk() else 1


def _lanes_options(warps: int, sms: int, on_cuda: bool) -> dict:
    """The lanes kernel's compiler options for a grid of ``warps`` warps on ``sms`` SMs: FWD_CONFIG lanes_maxnreg
    from lanes_maxnreg_min_warps_per_sm warps per SM (_register_cap); none off CUDA."""
    if not on_cuda:
        return {}
    return _register_cap(FWD_CONFIG.get("lanes_maxnreg"), warps, FWD_CONFIG.get("lanes_maxnreg_min_warps_per_sm", 0),
                         sms)


def _lanes_fast_math() -> int:
    """The lanes kernels' FAST_MATH from FWD_CONFIG lanes_fast_math: 0 (libdevice), 1 (True: _softplus_fast,
    _silu_fast) or 2 ("one_mufu": the softplus as _softplus_one_mufu)."""
    value = FWD_CONFIG.get("lanes_fast_math", False)
    return 2 if value in (2, "one_mufu") else int(bool(value))


def _scan_forward_lanes(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, T_save, out, bc,
                        segments: int = 1):
    """scan_forward through lane_kernels: (out, last_state, chunk_states); with T_save > 0 the state entering
    every T_save steps is saved (batch, dim, n_saved, N) for the backward. ``bc``: (B_var, B strides, C_var,
    C strides, channels per group) from scan_forward's _bc_layout. ``segments`` > 1 (inference only): L split
    across programs (lanes_split_segments), segments of L // segments steps rounded down to whole chunks, the last
    one taking the rest; their end states from zero first (_segment_end_states_lanes_kernel), then the forward,
    each segment carrying its entering state through them."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B_var, sB, C_var, sC, cpg = bc
    num_warps = FWD_CONFIG.get("lanes_num_warps", 1)
    BLOCK_D = 32 * num_warps
    on_cuda = u.device.type == "cuda"
    sms = _sms(u.device) if on_cuda else 1
    TC = _lane_chunk()
    if segments > 1 and T_save:
        raise ValueError("the lanes forward splits L only without saved states (inference)")
    seg_len = (L // segments) // TC * TC if segments > 1 else L
    if segments > 1 and seg_len == 0:
        raise ValueError(f"lanes forward split: {segments} segments of L = {L} leave none a whole {TC}-step chunk")
    options = _lanes_options(batch * cdiv(dim, BLOCK_D) * num_warps * segments, sms, on_cuda)
    fast_math = _lanes_fast_math()
    bc_pairs = bool(FWD_CONFIG.get("lanes_bc_pairs", False) and B_var and C_var and _bf16_pairs_ok(B, C, L))
    seq_pairs = bool(FWD_CONFIG.get("lanes_seq_pairs", False) and L % 2 == 0 and _bf16_pair_rows(u, delta, z))
    if out is None:
        out = _empty_like_layout(u, False)
    last = empty((batch, dim, N), u.device, torch.float32)
    n_saved = _n_chunks(L, T_save) if T_save else 1
    chunk_states = empty((batch, dim, n_saved, N), u.device, torch.float32) if T_save else _dummy(u)
    dummy = _dummy(u)
    init = initial_state.to(torch.float32).contiguous() if initial_state is not None else dummy
    zz = z if z is not None else u
    seg_h = seg_dsum = dummy
    if segments > 1:  # pass 1: the end state and delta sum of every segment but the last, from zero
        seg_h = empty((batch, segments - 1, dim, N), u.device, torch.float32)
        seg_dsum = empty((batch, segments - 1, dim), u.device, torch.float32)
        ends_tc = FWD_CONFIG.get("lanes_split_ends_chunk") or TC
        if TC % ends_tc:
            raise ValueError(f"FWD_CONFIG lanes_split_ends_chunk={ends_tc!r} must divide lanes_chunk={TC}")
        ends_options = dict(options)
        if on_cuda and FWD_CONFIG.get("lanes_split_ends_maxnreg"):
            ends_options["maxnreg"] = FWD_CONFIG["lanes_split_ends_maxnreg"]
        _launch_segment_ends_lanes(
            (cdiv(dim, BLOCK_D), batch * (segments - 1)),
            (u, delta, A, B, delta_bias if delta_bias is not None else dummy, seg_h, seg_dsum),
            (dim, seg_len, segments - 1, cpg, *u.stride(), *delta.stride(), *A.stride(), *sB),
            dict(N=N, BLOCK_D=BLOCK_D, TC=ends_tc, HAS_DBIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                 B_VAR=B_var, FAST_MATH=fast_math, BC_PAIRS=bc_pairs, SEQ_PAIRS=seq_pairs),
            num_warps, ends_options)
    tensors = (u, delta, A, B, C, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
               init, out, last, chunk_states, seg_h, seg_dsum)
    ints = (dim, L, cpg, n_saved, seg_len, segments, *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *sB,
            *sC, *out.stride())
    _launch_fwd_lanes(
        (cdiv(dim, BLOCK_D), batch * segments), tensors, ints,
        dict(N=N, BLOCK_D=BLOCK_D, TC=TC, T_SAVE=max(T_save, 1), HAS_D=D is not None,
             HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), B_VAR=B_var,
             C_VAR=C_var, HAS_INIT=initial_state is not None, SAVE_STATES=T_save > 0, FAST_MATH=fast_math,
             BC_PAIRS=bc_pairs, SEQ_PAIRS=seq_pairs, SPLIT=segments > 1),
        num_warps, options)
    return out, last, chunk_states


def _gluon_forward_ok(device: torch.device, BLOCK_D: int, T: int, num_warps: int, B_var: bool, C_var: bool) -> bool:
    """Whether the forward runs as the Gluon kernel (gluon_kernels.py): FWD_CONFIG asks for it, Triton has Gluon,
    an NVIDIA GPU runs it (Gluon has no interpreter), the config is one channel per program with T a multiple of
    64 x warps (the kernel always lays out the chunk's T / 2 bf16 pairs, at least one per lane: a 32-step chunk
    on one warp fails to compile, as the H200 tests at L = 17 showed), and B / C vary in time (the Mamba layer's
    case). Inference and training forwards alike; shorter chunks run the Triton kernel."""
    if not FWD_CONFIG.get("gluon") or device.type != "cuda" or torch.version.hip is not None:
        return False
    if interpreting():
        return False
    from . import gluon_kernels

    return gluon_kernels.AVAILABLE and BLOCK_D == 1 and T % (64 * num_warps) == 0 and B_var and C_var


def _bf16_pairs_ok(B: torch.Tensor, C: torch.Tensor, L: int, T: Optional[int] = None, num_warps: int = 1) -> bool:
    """Whether a forward may read B / C as int32 pairs of bf16 steps (gluon_kernels._bf16_row_pairs,
    lane_kernels._bc_tile): both bf16 (the widening is a bf16 bit trick) with unit time strides, every other stride
    even and the data 4-byte aligned (each pair one aligned int32), L even (a pair never straddles the end); with a
    chunk T (the Gluon kernel's layout of pairs over lanes), T / 2 a multiple of 32 x warps."""
    return (L % 2 == 0 and (T is None or T % (64 * num_warps) == 0)
            and _bf16_pair_rows(B, C))


def _bf16_pair_rows(*tensors) -> bool:
    """Whether every tensor (None skipped) is bf16 with unit time stride, every other stride even and the data
    4-byte aligned: each pair of steps one aligned int32 (with L even, checked by the caller)."""
    return all(t.dtype == torch.bfloat16 and t.stride(-1) == 1 and t.data_ptr() % 4 == 0
               and all(st % 2 == 0 for st in t.stride()[:-1]) for t in tensors if t is not None)


class _GluonLaunch:
    """CachedLaunch of the Gluon forward, built on first use (the import stays off the CPU path)."""

    def __init__(self):
        self.launch = None

    def __call__(self, *args):
        if self.launch is None:
            from .gluon_kernels import _selective_scan_fwd_gluon

            self.launch = CachedLaunch(_selective_scan_fwd_gluon)
        self.launch(*args)


_launch_fwd_gluon = _GluonLaunch()


def _split_rule(config: dict, programs: int, L: int, device: torch.device) -> int:
    """The split rule both scans share, by ``config``'s keys: 1 (don't split) without ``split_programs_per_sm``
    (or 0), off CUDA, or from ``split_below_programs_per_sm`` programs per SM up; else the smallest power of two
    of segments that reaches ``split_programs_per_sm`` programs per SM, each at least ``split_min_len`` steps."""
    target = config.get("split_programs_per_sm", 0)
    if not target or device.type != "cuda":
        return 1
    sms = _sms(device)
    if programs >= config.get("split_below_programs_per_sm", target) * sms:
        return 1  # enough programs: the split's no-carry pass would cost more than its parallelism gains
    segments = 1
    while programs * segments < target * sms and L // (2 * segments) >= config.get("split_min_len", 4096):
        segments *= 2
    return segments


def split_segments(batch: int, dim: int, L: int, device: torch.device, save_states: bool) -> int:
    """How many segments ``scan_forward_split`` cuts each sequence into (1: don't split): FWD_CONFIG's
    ``_split_rule``, ``FORCE_SEGMENTS`` overriding it. Only without saved states (the inference forward)."""
    if save_states:
        return 1
    if FORCE_SEGMENTS is not None:
        return FORCE_SEGMENTS
    return _split_rule(FWD_CONFIG, batch * dim, L, device)


# Tests and benchmarks set this to force a number of segments (None: the rule above).
FORCE_SEGMENTS: Optional[int] = None


def inference_split_segments(u, delta, A, z) -> int:
    """Segments of ``scan_forward_split`` for an inference forward (1: don't use it): ``split_segments``, unless
    the lanes forward's own split (``lanes_split_segments``, inside scan_forward) serves the shape; FORCE_SEGMENTS
    keeps the older split."""
    segments = split_segments(u.shape[0], u.shape[1], u.shape[2], u.device, False)
    if (segments > 1 and FORCE_SEGMENTS is None
            and lanes_split_segments(u, A.shape[1], is_block_layout(u, delta, z)) > 1):
        return 1
    return segments


def _segment_view(t: torch.Tensor, row: int, segments: int, seg_len: int) -> torch.Tensor:
    """Batch row ``row`` of a (batch, ..., L) tensor as (segments, ..., seg_len): segment s holds steps
    [s seg_len, (s + 1) seg_len) (a strided view, no copy)."""
    size = (segments, *t.shape[1:-1], seg_len)
    stride = (seg_len * t.stride(-1), *t.stride()[1:])
    return t.as_strided(size, stride, t.storage_offset() + row * t.stride(0))


def scan_forward_split(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, segments):
    """The inference forward with L split across programs, for when batch x channels cannot fill the GPU.

    Each sequence is cut into ``segments`` equal segments (a shorter tail runs last, on its own), scanned as a
    batch of independent sequences: (1) from a zero state, for each segment's end state h0_s; (2) the states
    entering the segments follow by h_{s+1} = P_s h_s + h0_s with P_s = exp(A sum_{t in s} delta_t) (a short
    loop over segments on (dim, N) tensors); (3) scanned again from those states, writing out. Twice the forward's
    arithmetic, on segments times as many programs. Returns (out, last_state) like ``scan_forward``."""
    out, last, _ = _split_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, segments,
                                  u.shape[2] // segments, save_states=False)
    return out, last


# Tests and benchmarks set this to force the training split (None: the rule in split_segments_train).
FORCE_TRAIN_SEGMENTS: Optional[int] = None


def split_segments_train(u: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_t: int) -> int:
    """Segments for the training scan (``scan_forward_split_train``), 1 = don't split: BWD_CONFIG's
    ``_split_rule`` (``FORCE_TRAIN_SEGMENTS`` overrides it), each segment a whole number of the backward's chunks
    (``chunk_t``). Variable B / C only (the Mamba layer's case)."""
    batch, dim, L = u.shape
    if B.dim() < 3 or C.dim() < 3:
        return 1
    segments = train_split_rule(batch, dim, L, u.device)
    return segments if segments > 1 and L // segments >= chunk_t else 1


def train_split_rule(batch: int, dim: int, L: int, device: torch.device) -> int:
    """The training split's segments by shape alone: FORCE_TRAIN_SEGMENTS, else BWD_CONFIG's ``_split_rule``."""
    if FORCE_TRAIN_SEGMENTS is not None:
        return FORCE_TRAIN_SEGMENTS
    return _split_rule(BWD_CONFIG, batch * dim, L, device)


def _segments_of(t, row: int, segments: int, seg_len: int):
    """Batch row ``row`` of a sequence tensor as ``segments`` rows (``_segment_view``); others (A, D, None) as given."""
    return _segment_view(t, row, segments, seg_len) if t is not None and t.dim() >= 3 else t


def _steps(t, start: int, stop: Optional[int] = None, row: Optional[int] = None):
    """Steps ``start .. stop`` of a sequence tensor (a view), of batch row ``row`` alone (a batch of one) if given;
    others (A, D, a constant B / C, None) as given."""
    if t is None or t.dim() < 3:
        return t
    return t[..., start:stop] if row is None else t[row:row + 1, ..., start:stop]


def _split_layout(L: int, segments: int, chunk_t: int):
    """(segment length: a multiple of chunk_t, start of the tail = segments * segment length)."""
    seg_len = (L // segments) // chunk_t * chunk_t
    return seg_len, segments * seg_len


# _segment_delta_sum_kernel's tiles: (channels, steps, warps) per program. The sums were PyTorch ops on the whole
# row (fp32 copy, bias add, softplus, sum: 25 ms of the 561-ms DNA step at (1, 256, 2^20), H200, twelfth session).
SEGMENT_SUM_LAUNCH = (4, 256, 4)


def _segment_decay(delta, delta_bias, delta_softplus, A32, row, segments, seg_len):
    """P_s = exp(A sum_{t in segment s} delta_t), (segments, dim, N): what a segment's start state is multiplied
    by on the way to its end (delta after bias and softplus, summed by _segment_delta_sum_kernel)."""
    dim = delta.shape[1]
    sums = empty((segments, dim), delta.device, torch.float32)
    block_d, block_l, num_warps = SEGMENT_SUM_LAUNCH
    d = delta[row]
    _launch_segment_delta_sum(
        (cdiv(dim, block_d), segments), (d, delta_bias if delta_bias is not None else A32, sums),
        (dim, seg_len, *d.stride()),
        dict(BLOCK_D=block_d, BLOCK_L=block_l, HAS_DBIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus)),
        num_warps)
    return torch.exp(sums[:, :, None] * A32)


# Whether the split scans' per-segment passes with no carry (the forward's end states from zero and segment decays,
# the backward's state gradients with no gradient entering at the end) run as reductions over each segment
# (_segment_end_state_kernel / _segment_start_grad_kernel: one exp per element, no scan, no output) or as the scan
# kernels themselves (a whole forward that writes an output pass (3) overwrites, _segment_delta_sum_kernel, and
# _selective_scan_dstate_kernel's reverse recurrence; kept as the baseline bench_split_passes.py times).
# H200, thirteenth session (bench_split_passes.py, gpu_check.sh splitpasses; 16 segments), reductions against the
# scan passes: the forward pass 6.11 -> 3.71 ms at (1, 256, 2^20) (1.65x), 1.43x at (1, 512, 2^18), 1.62x at
# (2, 256, 2^19); the backward pass 4.24 -> 2.85 ms (1.48x), 1.35x, 1.47x; the whole scan forward + backward 1.15x,
# 1.09x, 1.13x; the 1.4M DNA step at (1, 2^20) 481 -> 437 ms. Reducing over the steps inside every chunk instead of
# once per program made both passes slower than the scans (0.66-0.92x).
SPLIT_REDUCTION_PASSES = True
# Their tiles: (channels, steps, warps) per program (all channels of a program in one B / C group), the best of 8
# per pass in that sweep.
SEGMENT_PASS_LAUNCH = {"end_state": (8, 32, 4), "start_grad": (4, 64, 4)}


def _segment_pass_grid(kernel: str, dim: int, N: int, channels_per_group: int, segments: int):
    """(grid, BLOCK_D, BLOCK_N, BLOCK_L, num_warps) of a segment reduction: BLOCK_D the largest power of two
    up to SEGMENT_PASS_LAUNCH[kernel]'s that divides the channels per group (a program's channels share B / C)."""
    block_d, block_l, num_warps = SEGMENT_PASS_LAUNCH[kernel]
    while channels_per_group % block_d:
        block_d //= 2
    return (cdiv(dim, block_d), segments), block_d, triton.next_power_of_2(N), block_l, num_warps


def _segment_end_states(u, delta, A, B, delta_bias, delta_softplus, row, segments, seg_len):
    """Batch row ``row``'s segments scanned from zero, as a reduction (_segment_end_state_kernel): (their end
    states (segments, dim, N) fp32, their decays P_s = exp(A sum_{t in s} delta_t), (segments, dim, N))."""
    dim, N = u.shape[1], A.shape[1]
    B_var, G, (_, s_g, s_n, s_l) = _bc_as_4d(B, dim)
    h = empty((segments, dim, N), u.device, torch.float32)
    sums = empty((segments, dim), u.device, torch.float32)
    grid, block_d, block_n, block_l, num_warps = _segment_pass_grid(
        "end_state", dim, N, dim // G if B_var else dim, segments)
    uu, d = u[row], delta[row]
    _launch_segment_end_state(
        grid, (uu, d, delta_bias if delta_bias is not None else A, A, B[row] if B_var else B, h, sums),
        (dim, seg_len, N, dim // G, *uu.stride(), *d.stride(), *A.stride(), s_g, s_n, s_l),
        dict(BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), B_VAR=B_var),
        num_warps)
    return h, torch.exp(sums[:, :, None] * A.float())


def _segment_start_grads(delta, A, C, z, dout, delta_bias, delta_softplus, row, segments, seg_len):
    """dL/d(the state entering each of batch row ``row``'s segments) with no gradient entering at its end, as a
    reduction (_segment_start_grad_kernel): (segments, dim, N) fp32."""
    dim, N = delta.shape[1], A.shape[1]
    C_var, G, (_, s_g, s_n, s_l) = _bc_as_4d(C, dim)
    g = empty((segments, dim, N), delta.device, torch.float32)
    grid, block_d, block_n, block_l, num_warps = _segment_pass_grid(
        "start_grad", dim, N, dim // G if C_var else dim, segments)
    d, do = delta[row], dout[row]
    zz = z[row] if z is not None else d
    _launch_segment_start_grad(
        grid, (d, delta_bias if delta_bias is not None else A, A, C[row] if C_var else C, zz, do, g),
        (dim, seg_len, N, dim // G, *d.stride(), *A.stride(), s_g, s_n, s_l, *zz.stride(), *do.stride()),
        dict(BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, HAS_Z=z is not None,
             HAS_DBIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), C_VAR=C_var),
        num_warps)
    return g


def segment_end_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, row, segments, seg_len, out,
                       reduction: Optional[bool] = None):
    """The split forward's pass (1) for batch row ``row``: (each segment's end state from a zero state, each
    segment's decay P_s), both (segments, dim, N) fp32. As a reduction (``_segment_end_states``) or, with
    ``reduction`` False (default: SPLIT_REDUCTION_PASSES), by the scan kernels: a forward over the segments that
    writes an output into ``out``'s segments (the next pass overwrites it), and the delta sums."""
    if SPLIT_REDUCTION_PASSES if reduction is None else reduction:
        return _segment_end_states(u, delta, A, B, delta_bias, delta_softplus, row, segments, seg_len)
    seg = [_segments_of(t, row, segments, seg_len) for t in (u, delta, A, B, C, D, z)]
    _, h0, _ = scan_forward(*seg, delta_bias, delta_softplus, None, False, out=_segments_of(out, row, segments,
                                                                                             seg_len))
    return h0, _segment_decay(delta, delta_bias, delta_softplus, A.float(), row, segments, seg_len)


def segment_start_grads(u, delta, A, B, C, z, dout, delta_bias, delta_softplus, row, segments, seg_len,
                        reduction: Optional[bool] = None):
    """The split backward's local pass for batch row ``row``: dL/d(the state entering each segment) with no
    gradient entering at its end, (segments, dim, N) fp32. As a reduction (``_segment_start_grads``) or, with
    ``reduction`` False (default: SPLIT_REDUCTION_PASSES), by the state-gradient recurrence over the segments as a
    batch (``scan_state_grad``, ~ a third of a backward)."""
    if SPLIT_REDUCTION_PASSES if reduction is None else reduction:
        return _segment_start_grads(delta, A, C, z, dout, delta_bias, delta_softplus, row, segments, seg_len)
    seg_u, seg_delta, seg_B, seg_C, seg_z, seg_dout = (_segments_of(t, row, segments, seg_len)
                                                       for t in (u, delta, B, C, z, dout))
    return scan_state_grad(seg_u, seg_delta, A, seg_B, seg_C, seg_z, delta_bias, delta_softplus, seg_dout)


def _split_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, segments, seg_len,
                   save_states):
    """Both split forwards: per batch row, segment end states from zero (1), the carry h_{s+1} = P_s h_s + h0_s
    (2), the forward again from the true entering states (3), then the tail (L - segments * seg_len steps) on its
    own. Returns (out, last_state, [(segment chunk states, tail chunk states, P) per row]); the chunk states are
    placeholders without ``save_states``."""
    batch, dim, L = u.shape
    main = segments * seg_len
    out = _empty_like_layout(u, is_block_layout(u, delta, z))
    last = empty((batch, dim, A.shape[1]), u.device, torch.float32)
    rows = []
    for row in range(batch):
        seg = [_segments_of(t, row, segments, seg_len) for t in (u, delta, A, B, C, D, z)]
        args = seg + [delta_bias, delta_softplus]
        seg_out = _segments_of(out, row, segments, seg_len)
        h0, decay = segment_end_states(u, delta, A, B, C, D, z, delta_bias, delta_softplus, row,   # (1) from zero
                                       segments, seg_len, out)
        h_in = empty(h0.shape, u.device, torch.float32)                                 # (2) carry across
        h = initial_state[row].float() if initial_state is not None else torch.zeros_like(h0[0])
        for s in range(segments):
            h_in[s] = h
            h = torch.addcmul(h0[s], decay[s], h)
        _, h_seg, states = scan_forward(*args, h_in, save_states, out=seg_out)       # (3) out from the true states
        h_last, tail_states = h_seg[segments - 1], None
        if main < L:  # the tail
            tail = [_steps(t, main, row=row) for t in (u, delta, A, B, C, D, z)]
            _, h_tail, tail_states = scan_forward(*tail, delta_bias, delta_softplus, h_last[None], save_states,
                                                  out=_steps(out, main, row=row))
            h_last = h_tail[0]
        last[row] = h_last
        rows.append((states, tail_states, decay))
    return out, last, rows


def scan_forward_split_train(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, segments):
    """The training forward with L split across programs (issue 9: long sequences at small batch x channels):
    ``_split_forward`` with segments of whole backward chunks and the backward's chunk states saved. Returns
    (out, last_state, saved), ``saved`` being what ``scan_backward_split`` needs."""
    chunk_t = _launch_config(u.shape[1], A.shape[1], u.shape[2], _bc_layout(B, C, u.shape[1])[-1], backward=True,
                             block_layout=is_block_layout(u, delta, z))[1]
    seg_len, _ = _split_layout(u.shape[2], segments, chunk_t)
    out, last, rows = _split_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, segments,
                                     seg_len, save_states=True)
    return out, last, {"segments": segments, "seg_len": seg_len, "rows": rows}


# Both kernels that take FAST_FLIP have their chunk count at this position of their integer arguments.
_CHUNK_COUNT_ARG = 4


def _fast_flip_ok(BLOCK_D: int, T: int, num_warps: int, device: torch.device, sequences, tensors, ints) -> bool:
    """Whether the backward / state-gradient kernels may flip chunks with one shuffle per register (FAST_FLIP).

    BWD_CONFIG asks for it, an NVIDIA GPU runs the kernel (not the interpreter: the flip is inline PTX), and the
    launch specialises the kernel as tests/test_triton_ops.py compiles it for sm_90 and checks the chunk layout
    _fast_flip assumes (one warp, one channel, 8 consecutive steps per lane): every time-varying sequence tensor
    (``sequences``; None and constant ones skipped) with 2-byte elements on a stride-1 time axis, T = 32 x 8, every
    tensor 16-byte aligned and every integer argument of the launch (``ints``; the chunk count, at
    _CHUNK_COUNT_ARG, may be anything) 1 or a multiple of 16. Another specialisation could get another layout from
    Triton, where the flip would be wrong: those run the plain reverse scans."""
    if not BWD_CONFIG.get("fast_flip") or device.type != "cuda" or torch.version.hip is not None:
        return False
    if interpreting():
        return False
    if BLOCK_D != 1 or num_warps != 1 or T != 32 * 8:
        return False
    if not all(t.element_size() == 2 and t.stride(-1) == 1 for t in sequences if t is not None and t.dim() >= 3):
        return False
    return (all(t.data_ptr() % 16 == 0 for t in tensors)
            and all(v == 1 or v % 16 == 0 for i, v in enumerate(ints) if i != _CHUNK_COUNT_ARG))


def _fast_flip_mode(BLOCK_D: int, T: int, num_warps: int, device: torch.device, sequences, tensors, ints) -> int:
    """The kernels' FAST_FLIP: 0 (Triton's reverse scans), 1 (fast flips, three-operand scan) or 2 (BWD_CONFIG
    fast_flip "shift": fast flips and a one-step shift, two-operand scan), where _fast_flip_ok allows it."""
    if not _fast_flip_ok(BLOCK_D, T, num_warps, device, sequences, tensors, ints):
        return 0
    return 2 if BWD_CONFIG.get("fast_flip") == "shift" else 1


def scan_state_grad(u, delta, A, B, C, z, delta_bias, delta_softplus, dout):
    """dL/d(initial state) of the scan, (batch, dim, N) fp32, with no gradient on its last state: the state
    gradient the backward would return, from a kernel that computes nothing else (reads delta, z, dout, C)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    _, _, _, C_var, _, sC, cpg = _bc_layout(B, C, dim)
    BLOCK_D, T, num_warps, options, _ = _launch_config(dim, N, L, cpg, backward=True,
                                                       block_layout=is_block_layout(u, delta, z), batch=batch,
                                                       device=u.device)
    dstate = torch.zeros((batch, dim, N), device=u.device, dtype=torch.float32)
    dummy = _dummy(u)
    zz = z if z is not None else u
    tensors = (delta, A, C, zz, delta_bias if delta_bias is not None else dummy, dout, dstate)
    ints = (dim, L, N, cpg, _n_chunks(L, T), *delta.stride(), *zz.stride(), *A.stride(), *sC, *dout.stride())
    _launch_dstate(
        (cdiv(dim, BLOCK_D), batch), tensors, ints,
        dict(BLOCK_D=BLOCK_D, T=T, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), C_VAR=C_var,
             FAST_FLIP=_fast_flip_mode(BLOCK_D, T, num_warps, u.device, (delta, C, z, dout), tensors, ints)),
        num_warps, options)
    return dstate


def scan_backward_split(u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved, dout, dlast):
    """Backward of ``scan_forward_split_train``; returns what ``scan_backward`` returns.

    Per batch row, last to first: the tail with the caller's dlast; every segment's gradient at its start with a
    zero carry at its end (``local_s``: ``scan_state_grad`` over the segments as a batch, the state-gradient
    recurrence alone); the true carries by g_{s-1} = local_s + P_s g_s (g_last from the tail or dlast); then the
    backward over the segments with those carries, whose gradients are the result. One backward plus the
    state-gradient pass, on ``segments`` times the programs."""
    batch, dim, L = u.shape
    segments, seg_len, main = saved["segments"], saved["seg_len"], saved["segments"] * saved["seg_len"]
    du, ddelta, dz = _input_grads_like(u, delta, z)
    dB, dC = empty_like(B), empty_like(C)  # every element written: the tail and the segments cover L
    dA = torch.zeros(A.shape, device=u.device, dtype=torch.float32)
    dD = torch.zeros(D.shape, device=u.device, dtype=torch.float32) if D is not None else None
    ddbias = torch.zeros(delta_bias.shape, device=u.device, dtype=torch.float32) if delta_bias is not None else None
    dh0 = empty((batch, dim, A.shape[1]), u.device, torch.float32)

    def collect(grads):
        """One call's small gradients summed into the full ones (du, ddelta, dz, dB and dC it wrote in place: the
        views ``grads_out`` gave it)."""
        for full, part in ((dA, grads[2]), (dD, grads[5]), (ddbias, grads[7])):
            if full is not None:
                full.add_(part)

    for row in range(batch):
        states, tail_states, decay = saved["rows"][row]
        g = dlast[row].float() if dlast is not None else torch.zeros_like(decay[0])
        if tail_states is not None:
            tail = [_steps(t, main, row=row) for t in (u, delta, A, B, C, D, z)]
            grads = scan_backward(*tail, delta_bias, delta_softplus, tail_states, _steps(dout, main, row=row), g[None],
                                  grads_out=tuple(_steps(t, main, row=row) for t in (du, ddelta, dz, dB, dC)))
            collect(grads)
            g = grads[8][0]
        seg = [_segments_of(t, row, segments, seg_len) for t in (u, delta, A, B, C, D, z)]
        seg_dout = _segments_of(dout, row, segments, seg_len)
        # dL/dh_in_s with no carry into the segment's end
        local = segment_start_grads(u, delta, A, B, C, z, dout, delta_bias, delta_softplus, row, segments, seg_len)
        carry = empty(local.shape, u.device, torch.float32)
        for s in range(segments - 1, -1, -1):
            carry[s] = g
            g = torch.addcmul(local[s], decay[s], g)
        # the true carries; du / ddelta / dz / dB / dC straight into the segments' views of the whole (no copy
        # back: at (1, 256, 2^20) in 16 segments the copies of du / ddelta / dz took 36 ms of a 561-ms DNA step,
        # H200, twelfth session; those of dB / dC 6.2 ms of 485, thirteenth)
        grads = scan_backward(*seg, delta_bias, delta_softplus, states, seg_dout, carry,
                              grads_out=tuple(_segments_of(t, row, segments, seg_len)
                                              for t in (du, ddelta, dz, dB, dC)))
        collect(grads)
        dh0[row] = grads[8][0]
    return du, ddelta, dA, dB, dC, dD, dz, ddbias, dh0


# Tests and benchmarks set this to force the tail launch on or off (None: BWD_CONFIG's tail_launch).
FORCE_TAIL: Optional[bool] = None


def tail_start(u, delta, z, A, B, C) -> int:
    """Where the training scan's tail launch starts; 0 for one launch.

    The kernels walk whole chunks, and a masked step costs what a valid one does. So a length just past a whole
    number of forward chunks pays a whole chunk for a few steps. The paper's selective copying (L = 4112 = 8 x 512
    + 16) spends 9 forward chunks and 17 backward chunks where 8.03 and 16.06 hold data: 12% and 6% of the work.
    With BWD_CONFIG tail_launch (or FORCE_TAIL), the whole chunks run as one launch and the tail as a second. The
    second launch's chunks are sized to the tail (``_launch_config`` clamps T to the length). That happens when
    the tail fills at most half of a forward chunk and the padding it saves is at least 1/32 of L (a longer
    sequence would not gain the second launch's cost)."""
    if not tail_launch_on():
        return 0
    batch, dim, L = u.shape
    N, cpg, block_layout = A.shape[1], _bc_layout(B, C, dim)[-1], is_block_layout(u, delta, z)
    T_bwd = _launch_config(dim, N, L, cpg, backward=True, block_layout=block_layout)[1]
    T_fwd = _saving_chunk(_launch_config(dim, N, L, cpg, backward=False, block_layout=block_layout, batch=batch,
                                         device=u.device, save_states=True)[1], T_bwd)
    start = L // T_fwd * T_fwd
    padding = start + T_fwd - L
    return start if start > 0 and 0 < L - start <= T_fwd // 2 and 32 * padding >= L else 0


def scan_forward_tail(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, start):
    """The training forward as two launches: steps ``0 .. start`` (whole chunks), then the rest from the state the
    first leaves. Returns (out, last_state, saved), ``saved`` being what ``scan_backward_tail`` needs."""
    out = _empty_like_layout(u, is_block_layout(u, delta, z))
    parts, state, saved = ((0, start), (start, None)), initial_state, [start]
    for a, b in parts:
        _, state, chunk_states = scan_forward(*(_steps(t, a, b) for t in (u, delta, A, B, C, D, z)), delta_bias,
                                              delta_softplus, state, True, out=_steps(out, a, b))
        saved.append(chunk_states)
    return out, state, tuple(saved)


def scan_backward_tail(u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved, dout, dlast):
    """Backward of ``scan_forward_tail``: the tail with the caller's dlast, then the whole chunks with the
    gradient of the state entering the tail. du / ddelta / dz / dB / dC are written into views of the whole;
    dA / dD / ddelta_bias are the two launches' sums. Returns what ``scan_backward`` returns."""
    start, states_head, states_tail = saved
    du, ddelta, dz = _input_grads_like(u, delta, z)
    dB_out, dC_out = (empty(t.shape, t.device, t.dtype) if t.dim() >= 3 else None for t in (B, C))
    grads = []
    for (a, b), states in (((start, None), states_tail), ((0, start), states_head)):
        grads.append(scan_backward(
            *(_steps(t, a, b) for t in (u, delta, A, B, C, D, z)), delta_bias, delta_softplus, states,
            _steps(dout, a, b), dlast,
            grads_out=tuple(_steps(t, a, b) for t in (du, ddelta, dz, dB_out, dC_out))))
        dlast = grads[-1][8]  # the gradient of the state entering the tail, carried into the whole chunks
    tail, head = grads
    # a constant B / C's gradient comes back per launch in B / C's dtype; dA / dD / ddelta_bias in fp32
    dB = dB_out if dB_out is not None else head[3] + tail[3]
    dC = dC_out if dC_out is not None else head[4] + tail[4]
    return du, ddelta, head[2] + tail[2], dB, dC, head[5] + tail[5], dz, head[7] + tail[7], head[8]


def backward_dout(u, delta, z, dout):
    """dout as the backward kernels get it. With BWD_CONFIG dout_copy, a dout whose steps are not adjacent (what
    out_proj's backward hands the Mamba layer on CUDA: (batch, L, dim) storage seen as (batch, dim, L)) beside
    L-contiguous inputs is copied to L-contiguous first: B x D x L x 2 bytes read and written once, against the
    kernels reading 2 useful bytes of every 32-byte sector it loads (and their fast flip needing unit time
    strides). On the H200 the copy alone made forward + backward 1.04-1.05x faster, 1.10-1.21x with the fast flip
    (bench_scan_backward_configs.py --dout layer --dout-copy off on)."""
    if (BWD_CONFIG.get("dout_copy") and dout is not None and dout.dim() == 3 and dout.shape[-1] > 1
            and dout.stride(-1) != 1 and not is_block_layout(u, delta, z)):
        return dout.contiguous()
    return dout


def _input_grads_like(u, delta, z):
    """Empty du, ddelta, dz (None without z), each stored like its input when that input is time-major, so
    the gradient flowing back through the block's transposes is already in (batch, L, dim) order."""
    return (_empty_like_layout(u, _is_channel_last(u)), _empty_like_layout(delta, _is_channel_last(delta)),
            _empty_like_layout(z, _is_channel_last(z)) if z is not None else None)


def scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, dout, dlast, grads_out=None):
    """Runs the backward kernel. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state).
    ``grads_out``: (du, ddelta, dz, dB, dC) to write into (any strides; dz None without z; dB / dC shaped like a
    time-varying B / C, the fp32 sums cast into them in one pass), e.g. the segments' views of the whole
    sequence's gradients in ``scan_backward_split``; else they are allocated."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B_var, G_B, sB, C_var, G_C, sC, cpg = _bc_layout(B, C, dim)
    block_layout = is_block_layout(u, delta, z)
    BLOCK_D, T, num_warps, options, prefetch = _launch_config(dim, N, L, cpg, backward=True,
                                                              block_layout=block_layout, batch=batch, device=u.device)
    n_chunks = chunk_states.shape[2]
    assert n_chunks == _n_chunks(L, T), "forward and backward chunking disagree"
    dummy = _dummy(u)
    du, ddelta, dz, dB_out, dC_out = grads_out if grads_out is not None else (*_input_grads_like(u, delta, z),
                                                                               None, None)
    dz = dz if z is not None else dummy
    # The atomically accumulated gradients come from two zeroed buffers (one fill each instead of one per
    # gradient: host time): dB / dC, and the small per-channel ones. Kept apart so that a small gradient (a view)
    # does not hold the fp32 dB / dC alive once they are converted to B / C's dtype.
    dB, dC = zeroed_views(u.device, [(batch, G_B, N, L) if B_var else (dim, N),
                                      (batch, G_C, N, L) if C_var else (dim, N)])
    dA, dD, ddbias, dstate = zeroed_views(u.device, [
        (dim, N), (dim,) if D is not None else (1,),
        (dim,) if delta_bias is not None else (1,), (batch, dim, N)])
    # dstate carries the state gradient between chunks and ends as the initial state's gradient.
    if dlast is not None:
        dstate.copy_(dlast)
    zz = z if z is not None else u
    batch_fastest = _batch_fastest(batch, cdiv(dim, BLOCK_D), B_var or C_var, block_layout)
    grid = (batch, cdiv(dim, BLOCK_D)) if batch_fastest else (cdiv(dim, BLOCK_D), batch)
    tensors = (u, delta, A, B, C, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
               chunk_states, dout, dstate, du, ddelta, dz, dA, dB, dC, dD, ddbias)
    ints = (dim, L, N, cpg, n_chunks, G_B, G_C,
            *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *sB, *sC, *dout.stride(),
            *du.stride(), *ddelta.stride(), *(dz.stride() if z is not None else du.stride()))
    fast_flip = _fast_flip_mode(BLOCK_D, T, num_warps, u.device, (u, delta, B, C, z, dout), tensors, ints)
    _launch_bwd(
        grid, tensors, ints,
        dict(BLOCK_D=BLOCK_D, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), B_VAR=B_var, C_VAR=C_var, PREFETCH=prefetch, FAST_FLIP=fast_flip,
             BATCH_FASTEST=batch_fastest),
        num_warps, options)
    dB = _cast_into(dB, B, B_var, dB_out)
    dC = _cast_into(dC, C, C_var, dC_out)
    return du, ddelta, dA, dB, dC, dD, dz, ddbias, dstate


def _batch_fastest(batch: int, channel_blocks: int, bc_var: bool, block_layout: bool) -> bool:
    """BWD_CONFIG batch_fastest for one backward launch: only with more than one batch row and time-varying B or C
    (their gradients are the atomics it spreads), channels-first (the block layout's config has no such key), and
    with the channel blocks within a grid's second axis (65535)."""
    return (bool(_config(True, block_layout).get("batch_fastest")) and batch > 1 and bc_var
            and channel_blocks <= 65535)


def _cast_into(grad32, like, time_varying, out):
    """The fp32 dB / dC sum as ``like``'s dtype: written into ``out`` (shaped like ``like``, any strides; used only
    for a time-varying one) in one cast-and-copy pass, else a new tensor of ``like``'s shape."""
    if time_varying and out is not None:
        return out.copy_(grad32.reshape(out.shape))
    return grad32.to(like.dtype).reshape(like.shape) if time_varying else grad32.to(like.dtype)

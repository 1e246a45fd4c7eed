"""Triton forward and backward kernels of the selective scan.

Design (measurements behind each choice: notes/triton_scan.md):

* One program (one warp by default) per (batch, block of BLOCK_D channels). It walks the sequence in
  chunks of T time steps. Each chunk loads whole (BLOCK_D, T) tiles of u / delta / z at once, then loops
  over the N state components: per component it loads the (T,) rows of B and C, builds the decays
  a = exp(delta A_n) and inputs b = delta B_n u in registers, and scans them along T with
  ``tl.associative_scan`` and the combine (a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2). The state entering
  the chunk is folded into the first element, so the scan yields h_t directly; y accumulates C_n h_n in
  registers. A warp holds 256-512 consecutive steps of a channel, so scans and reductions stay in the warp
  (the latency-bound forward: 1024 steps on 2 warps).
* The state leaving a chunk (one fp32 per channel and component) is carried through a (batch, dim, N)
  buffer that also returns the last state. The expanded state (batch, dim, L, N) never reaches memory:
  with autograd on, the forward saves only the state entering each backward chunk.
* The backward walks the chunks in reverse: it recomputes h inside the chunk from the saved state, then
  runs a reverse scan for dh_t = C_t dy_t + a_{t+1} dh_{t+1}, carrying a_t dh_t of the chunk's first step
  into the previous chunk (it ends as the initial state's gradient). a_t h_{t-1} is h_t - b_t, so no shifted
  state is needed; a_{t+1} enters through a 3-tuple combine (rev3), so no second exp either.
* Latency: with ``prefetch`` the loads of state component n + 1 (A, the B / C rows, the saved state, the
  carried gradient) are issued before component n's scans; the launch rules (``_launch_config``) pick the
  chunk length, warps, register cap and prefetch from the number of programs per SM.
* Time-varying B / C shared by the block's channels: dB / dC are summed over the block's channels and
  added to an fp32 (batch, G, N, L) buffer with atomics. dA, dD, ddelta_bias and time-invariant (dim, N)
  dB / dC are summed over time and added with atomics once per chunk or program.
* exp is exp2 with A pre-scaled by log2(e). Offsets are int64 and strides arbitrary (the Mamba block
  passes transposed views of (batch, L, dim) tensors; no copies are made).
* Eager calls run through a plain autograd.Function; under torch.compile the same kernels are the custom ops
  ``seqmamba::selective_scan_fwd`` / ``_bwd`` (the dispatcher's round trips cost host time at small shapes).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ..backend import records_autograd
from ..buffers import empty
from ..launch import CachedLaunch, cdiv, zeroed_views
from ..launch import sm_count as _sm_count  # a module name the launch-rule tests replace

# Tests set this to force short chunks (several chunks at tiny L, so the carries between chunks are exercised).
FORCE_CHUNK_T: Optional[int] = None


@triton.jit
def _first_order_combine(a_left, b_left, a_right, b_right):
    # Composition of h -> a_left h + b_left followed by h -> a_right h + b_right.
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _shifted_reverse_combine(f_later, g_later, p_later, f_earlier, g_earlier, p_earlier):
    # Reverse scan of dh_t = g_t + a_{t+1} dh_{t+1} without a_{t+1} at step t: a segment [s..e] is
    # (F = a_s, G, P = a_{s+1} ... a_e) with dh_s = G + P a_{e+1} dh_{e+1}; joining the earlier segment
    # to the later one multiplies the later one's G and P by P_earlier F_later.
    k = p_earlier * f_later
    return f_earlier, g_earlier + k * g_later, k * p_later


@triton.jit
def _softplus(x):
    # log(1 + exp(x)), exact to fp32 for large x (mamba_ssm uses the same threshold of 20).
    return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)


@triton.jit
def _load_delta(delta_row_ptr, dbias, t_idx, s_dt_l, mask_dt,
                HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Returns (delta after bias + softplus, zeroed outside the mask; the pre-softplus value)."""
    raw = tl.load(delta_row_ptr + t_idx[None, :].to(tl.int64) * s_dt_l, mask=mask_dt, other=0.0).to(tl.float32)
    if HAS_DBIAS:
        raw = raw + dbias[:, None]
    delta = raw
    if SOFTPLUS:
        delta = _softplus(raw)
    # Padded steps must be the identity map (a = 1, b = 0) so the chunk's last column is the true state.
    delta = tl.where(mask_dt, delta, 0.0)
    return delta, raw


@triton.jit
def _program_channels(dim, channels_per_group, D_ptr, dbias_ptr, B_ptr, s_B_b, s_B_g, C_ptr, s_C_b, s_C_g,
                      BLOCK_D: tl.constexpr, HAS_D: tl.constexpr, HAS_DBIAS: tl.constexpr):
    """A program's batch row and block of channels, as both kernels start: (batch index, channels (int64),
    channel mask, D, delta_bias (zeros when absent), the B / C group, B / C of that batch row and group)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    d64 = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    mask_d = d64 < dim
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d64, mask=mask_d, other=0.0)
    dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DBIAS:
        dbias = tl.load(dbias_ptr + d64, mask=mask_d, other=0.0)
    # All channels of the block share one group of time-varying B / C (the wrapper picks BLOCK_D so).
    group = ((pid_d * BLOCK_D) // channels_per_group).to(tl.int64)
    return (pid_b, d64, mask_d, Dv, dbias, group, B_ptr + pid_b * s_B_b + group * s_B_g,
            C_ptr + pid_b * s_C_b + group * s_C_g)


@triton.jit
def _rows(ptr, pid_b, d64, s_b, s_d):
    """Pointers to the program's (BLOCK_D, 1) channel rows of a (batch, dim, L) tensor at step 0."""
    return ptr + pid_b * s_b + d64[:, None] * s_d


@triton.jit
def _fwd_component_loads(n, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base, s_B_g, s_B_n, s_B_l,
                         C_ptr, C_base, s_C_g, s_C_n, s_C_l, state_in, B_VAR: tl.constexpr, C_VAR: tl.constexpr):
    """State component n's inputs: A_n log2(e), the B / C rows and the state entering the chunk (zeros for
    n >= N, so a prefetch one past the last component is harmless)."""
    ok = n < N
    md = mask_d & ok
    A2 = tl.load(A_ptr + d64 * s_A_d + n * s_A_n, mask=md, other=0.0) * 1.4426950408889634
    if B_VAR:
        Bn = tl.load(B_base + n * s_B_n + t64 * s_B_l, mask=mask_t & ok, other=0.0).to(tl.float32)[None, :]
    else:  # (dim, N): constant in time, one row per channel
        Bn = tl.load(B_ptr + d64 * s_B_g + n * s_B_n, mask=md, other=0.0).to(tl.float32)[:, None]
    if C_VAR:
        Cn = tl.load(C_base + n * s_C_n + t64 * s_C_l, mask=mask_t & ok, other=0.0).to(tl.float32)[None, :]
    else:
        Cn = tl.load(C_ptr + d64 * s_C_g + n * s_C_n, mask=md, other=0.0).to(tl.float32)[:, None]
    h_prev = tl.load(state_in + n, mask=md, other=0.0)
    return A2, Bn, Cn, h_prev


@triton.jit
def _fwd_state_component(n, c, y, A2, Bn, Cn, h_prev, delta, delta_u, mask_d,
                         state_out, chunk_row, N, n_saved, t_loc2, is_first, is_last, SAVE_STATES: tl.constexpr,
                         SAVES_PER_CHUNK: tl.constexpr, T_SAVE: tl.constexpr, MASKED_LAST: tl.constexpr):
    """Scans state component n over one chunk; returns y + C_n h_n."""
    if SAVE_STATES:
        tl.store(chunk_row + (c * SAVES_PER_CHUNK) * N + n, h_prev, mask=mask_d)
    a = tl.exp2(delta * A2[:, None])
    b = delta_u * Bn
    b = tl.where(is_first, b + a * h_prev[:, None], b)
    _, h = tl.associative_scan((a, b), axis=1, combine_fn=_first_order_combine)
    y += h * Cn
    if MASKED_LAST:
        # The chunk's last state, stored by the thread that holds it (a masked store of the whole tile to one
        # address per channel: no cross-lane reduction; H100 forward 4-5% faster at batch 1-2 than a where-sum).
        zero_t = t_loc2.to(tl.int64) * 0
        tl.store(state_out[:, None] + n + zero_t, h, mask=mask_d[:, None] & is_last)
    else:
        tl.store(state_out + n, tl.sum(tl.where(is_last, h, 0.0), axis=1), mask=mask_d)
    if SAVE_STATES:
        # The backward may walk shorter chunks than this forward: save the states entering those too.
        for k in tl.static_range(1, SAVES_PER_CHUNK):
            saved = c * SAVES_PER_CHUNK + k
            if MASKED_LAST:
                tl.store(chunk_row[:, None] + saved * N + n + zero_t, h,
                         mask=mask_d[:, None] & (saved < n_saved) & (t_loc2 == k * T_SAVE - 1))
            else:
                h_k = tl.sum(tl.where(t_loc2 == k * T_SAVE - 1, h, 0.0), axis=1)
                tl.store(chunk_row + saved * N + n, h_k, mask=mask_d & (saved < n_saved))
    return y


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dbias_ptr,
    out_ptr, state_ptr, chunk_states_ptr,
    dim, L, N, channels_per_group, n_chunks, n_saved, state_slot,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_o_b, s_o_d, s_o_l,
    BLOCK_D: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, SAVE_STATES: tl.constexpr,
    SAVES_PER_CHUNK: tl.constexpr, RELOAD: tl.constexpr, MASKED_LAST: tl.constexpr, PREFETCH: tl.constexpr,
):
    """state_ptr: two (batch, dim, N) fp32 slots, state_slot elements apart; slot 0 holds the initial state.
    Chunk c reads the state from slot c % 2 and writes the one it leaves to the other (so no thread can
    overwrite a state another thread has yet to read); the last state ends in slot n_chunks % 2.
    With SAVE_STATES, the state entering every T / SAVES_PER_CHUNK steps goes to chunk_states
    (batch, dim, n_saved, N)."""
    pid_b, d64, mask_d, Dv, dbias, group, B_base, C_base = _program_channels(
        dim, channels_per_group, D_ptr, dbias_ptr, B_ptr, s_B_b, s_B_g, C_ptr, s_C_b, s_C_g,
        BLOCK_D, HAS_D, HAS_DBIAS)
    t_loc = tl.arange(0, T)
    u_row = _rows(u_ptr, pid_b, d64, s_u_b, s_u_d)
    dt_row = _rows(delta_ptr, pid_b, d64, s_dt_b, s_dt_d)
    z_row = _rows(z_ptr, pid_b, d64, s_z_b, s_z_d)
    o_row = _rows(out_ptr, pid_b, d64, s_o_b, s_o_d)
    state_row = state_ptr + (pid_b * dim + d64) * N
    chunk_row = chunk_states_ptr + (pid_b * dim + d64) * n_saved * N
    t_loc2 = t_loc[None, :]
    is_first = (t_loc == 0)[None, :]
    is_last = (t_loc == T - 1)[None, :]

    for c in range(0, n_chunks):
        state_in = state_row + (c % 2) * state_slot
        state_out = state_row + ((c + 1) % 2) * state_slot
        t_idx = c * T + t_loc
        mask_t = t_idx < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        t64 = t_idx.to(tl.int64)
        u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        delta, _ = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        delta_u = delta * u
        y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        # One state component at a time: (BLOCK_D, T) tiles keep every reduction inside a thread.
        if PREFETCH:  # component n + 1's loads are issued before component n's scan (their latency hides)
            A2, Bn, Cn, h_prev = _fwd_component_loads(
                0, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base, s_B_g, s_B_n, s_B_l,
                C_ptr, C_base, s_C_g, s_C_n, s_C_l, state_in, B_VAR, C_VAR)
        for n in range(0, N):
            loaded = _fwd_component_loads(
                n + 1 if PREFETCH else n, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base, s_B_g,
                s_B_n, s_B_l, C_ptr, C_base, s_C_g, s_C_n, s_C_l, state_in, B_VAR, C_VAR)
            if not PREFETCH:
                A2, Bn, Cn, h_prev = loaded
            y = _fwd_state_component(n, c, y, A2, Bn, Cn, h_prev, delta, delta_u, mask_d, state_out, chunk_row,
                                     N, n_saved, t_loc2, is_first, is_last, SAVE_STATES, SAVES_PER_CHUNK,
                                     T // SAVES_PER_CHUNK, MASKED_LAST)
            if PREFETCH:
                A2, Bn, Cn, h_prev = loaded
        if HAS_D:
            if RELOAD:  # read u again rather than keep it live across the loop over N (registers)
                u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
            y += Dv[:, None] * u
        if HAS_Z:
            zv = tl.load(z_row + t64[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
            y *= zv * tl.sigmoid(zv)
        tl.store(o_row + t64[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask_dt)
        # The state written above is read by other threads in the next chunk.
        tl.debug_barrier()


@triton.jit
def _bwd_component_loads(n, c, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base, s_B_g, s_B_n,
                         s_B_l, C_ptr, C_base, s_C_g, s_C_n, s_C_l, chunk_row, dstate_row,
                         B_VAR: tl.constexpr, C_VAR: tl.constexpr):
    """State component n's inputs to the backward of chunk c: A_n, the B / C rows, the saved state entering
    the chunk and the state gradient carried in from the next chunk (zeros for n >= N)."""
    ok = n < N
    md = mask_d & ok
    A = tl.load(A_ptr + d64 * s_A_d + n * s_A_n, mask=md, other=0.0)
    if B_VAR:
        Bn = tl.load(B_base + n * s_B_n + t64 * s_B_l, mask=mask_t & ok, other=0.0).to(tl.float32)[None, :]
    else:
        Bn = tl.load(B_ptr + d64 * s_B_g + n * s_B_n, mask=md, other=0.0).to(tl.float32)[:, None]
    if C_VAR:
        Cn = tl.load(C_base + n * s_C_n + t64 * s_C_l, mask=mask_t & ok, other=0.0).to(tl.float32)[None, :]
    else:
        Cn = tl.load(C_ptr + d64 * s_C_g + n * s_C_n, mask=md, other=0.0).to(tl.float32)[:, None]
    h_start = tl.load(chunk_row + c * N + n, mask=md, other=0.0)
    carry = tl.load(dstate_row + n, mask=md, other=0.0)
    return A, Bn, Cn, h_start, carry


@triton.jit
def _bwd_state_component(n, y, sum_dh_B, sum_w_A, A, Bn, Cn, h_start, carry, delta, delta_next, delta_u, dy,
                         t64, mask_t, mask_d, d64, dstate_row, dA_ptr, dB_ptr, dB_base, dC_ptr, dC_base, N, L,
                         is_first, is_last, B_VAR: tl.constexpr, C_VAR: tl.constexpr, REV3: tl.constexpr,
                         DA_SLOTS: tl.constexpr):
    """Backward of state component n over one chunk; returns the updated (y, sum_n dh B, sum_n dh a h_{t-1} A)."""
    A2 = A * 1.4426950408889634
    # Recompute the chunk's states from the saved boundary state.
    a = tl.exp2(delta * A2[:, None])
    b = delta_u * Bn
    ah_first = a * h_start[:, None]
    x = tl.where(is_first, b + ah_first, b)
    _, h = tl.associative_scan((a, x), axis=1, combine_fn=_first_order_combine)
    y += h * Cn
    # Reverse scan: dh_t = C_t dy_t + a_{t+1} dh_{t+1}.
    g = Cn * dy
    g = tl.where(is_last, g + carry[:, None], g)
    if REV3:  # a_{t+1} enters through the combine: no second exp, no shifted delta
        _, dh, _ = tl.associative_scan((a, g, tl.full(a.shape, 1.0, tl.float32)), axis=1,
                                       combine_fn=_shifted_reverse_combine, reverse=True)
    else:
        a_next = tl.exp2(delta_next * A2[:, None])
        _, dh = tl.associative_scan((a_next, g), axis=1, combine_fn=_first_order_combine, reverse=True)
    tl.store(dstate_row + n, tl.sum(tl.where(is_first, a * dh, 0.0), axis=1), mask=mask_d)
    sum_dh_B += dh * Bn
    # dh_t a_t h_{t-1}, with a_t h_{t-1} = h_t - b_t inside the chunk (no shifted state needed) but a_0 h_start at
    # its first step: there h_t - b_t is pure cancellation, and the GPU compiler contracts it into
    # fma(-delta_u, B, h) = the rounding error of delta_u B rather than 0 when h_start = 0. That made dA at L = 1
    # (where its true value is exactly 0 without an initial state) rounding noise: relative error ~1e20 on the
    # H200 (issue 9); the interpreter does not contract and got 0.
    w = dh * tl.where(is_first, ah_first, h - b)
    sum_w_A += w * A[:, None]
    if DA_SLOTS > 1:
        # dA: partial sums over groups of T / DA_SLOTS steps (any grouping: can_reorder lets the compiler keep
        # each group inside one thread), added to DA_SLOTS slots per (channel, n) and summed by the wrapper:
        # no cross-lane reduction per (chunk, n).
        wd = w * delta
        part = tl.sum(tl.reshape(wd, (wd.shape[0], DA_SLOTS, wd.shape[1] // DA_SLOTS), can_reorder=True), axis=2)
        slot = tl.arange(0, DA_SLOTS)
        # (the mask spelled out at the pointers' full shape: the interpreter's atomic_add does not broadcast it)
        tl.atomic_add(dA_ptr + (d64[:, None] * N + n) * DA_SLOTS + slot[None, :], part,
                      mask=mask_d[:, None] & (slot[None, :] < DA_SLOTS), sem="relaxed")
    else:
        tl.atomic_add(dA_ptr + d64 * N + n, tl.sum(w * delta, axis=1), mask=mask_d, sem="relaxed")
    if B_VAR:
        tl.atomic_add(dB_base + n * L + t64, tl.sum(dh * delta_u, axis=0), mask=mask_t, sem="relaxed")
    else:
        tl.atomic_add(dB_ptr + d64 * N + n, tl.sum(dh * delta_u, axis=1), mask=mask_d, sem="relaxed")
    if C_VAR:
        tl.atomic_add(dC_base + n * L + t64, tl.sum(h * dy, axis=0), mask=mask_t, sem="relaxed")
    else:
        tl.atomic_add(dC_ptr + d64 * N + n, tl.sum(h * dy, axis=1), mask=mask_d, sem="relaxed")

    return y, sum_dh_B, sum_w_A


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dbias_ptr, chunk_states_ptr,
    dout_ptr, dstate_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, ddbias_ptr,
    dim, L, N, channels_per_group, n_chunks, G_B, G_C,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_do_b, s_do_d, s_do_l,
    s_du_b, s_du_d, s_du_l,
    s_ddt_b, s_ddt_d, s_ddt_l,
    s_dz_b, s_dz_d, s_dz_l,
    BLOCK_D: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, REV3: tl.constexpr, RELOAD: tl.constexpr,
    DA_SLOTS: tl.constexpr, PREFETCH: tl.constexpr,
):
    """dstate_ptr: (batch, dim, N) fp32 holding dL/d(last state); it carries a_t dh_t of each chunk's
    first step into the previous chunk and ends holding dL/d(initial state)."""
    pid_b, d64, mask_d, Dv, dbias, group, B_base, C_base = _program_channels(
        dim, channels_per_group, D_ptr, dbias_ptr, B_ptr, s_B_b, s_B_g, C_ptr, s_C_b, s_C_g,
        BLOCK_D, HAS_D, HAS_DBIAS)
    t_loc = tl.arange(0, T)
    dB_base = dB_ptr + (pid_b * G_B + group) * N * L
    dC_base = dC_ptr + (pid_b * G_C + group) * N * L
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    ddbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)

    u_row = _rows(u_ptr, pid_b, d64, s_u_b, s_u_d)
    dt_row = _rows(delta_ptr, pid_b, d64, s_dt_b, s_dt_d)
    z_row = _rows(z_ptr, pid_b, d64, s_z_b, s_z_d)
    do_row = _rows(dout_ptr, pid_b, d64, s_do_b, s_do_d)
    # du / ddelta / dz are written in the layout of u / delta / z (the wrapper allocates them so).
    du_row = _rows(du_ptr, pid_b, d64, s_du_b, s_du_d)
    ddt_row = _rows(ddelta_ptr, pid_b, d64, s_ddt_b, s_ddt_d)
    dz_row = _rows(dz_ptr, pid_b, d64, s_dz_b, s_dz_d)
    dstate_row = dstate_ptr + (pid_b * dim + d64) * N
    chunk_row = chunk_states_ptr + (pid_b * dim + d64) * n_chunks * N
    is_first = (t_loc == 0)[None, :]
    is_last = (t_loc == T - 1)[None, :]

    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t_idx = c * T + t_loc
        mask_t = t_idx < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        t64 = t_idx.to(tl.int64)
        u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        delta, delta_pre = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        # delta one step ahead, for a_{t+1}; zero past the end makes a_L = 1 (dh_L is the carry).
        mask_next = mask_d[:, None] & ((t_idx + 1) < L)[None, :]
        if REV3:
            delta_next = delta
        else:
            delta_next, _ = _load_delta(dt_row, dbias, t_idx + 1, s_dt_l, mask_next, HAS_DBIAS, SOFTPLUS)
        dout = tl.load(do_row + t64[None, :] * s_do_l, mask=mask_dt, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_row + t64[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
            sig_z = tl.sigmoid(zv)
            dy = dout * zv * sig_z
        else:
            dy = dout
        delta_u = delta * u
        sum_dh_B = tl.zeros([BLOCK_D, T], dtype=tl.float32)      # sum_n dh B
        sum_w_A = tl.zeros([BLOCK_D, T], dtype=tl.float32)       # sum_n dh a h_{t-1} A
        y = tl.zeros([BLOCK_D, T], dtype=tl.float32)
        if PREFETCH:  # component n + 1's loads are issued before component n's scans (their latency hides)
            A, Bn, Cn, h_start, carry = _bwd_component_loads(
                0, c, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base, s_B_g, s_B_n, s_B_l,
                C_ptr, C_base, s_C_g, s_C_n, s_C_l, chunk_row, dstate_row, B_VAR, C_VAR)
        for n in range(0, N):
            loaded = _bwd_component_loads(
                n + 1 if PREFETCH else n, c, N, t64, mask_t, mask_d, d64, A_ptr, s_A_d, s_A_n, B_ptr, B_base,
                s_B_g, s_B_n, s_B_l, C_ptr, C_base, s_C_g, s_C_n, s_C_l, chunk_row, dstate_row, B_VAR, C_VAR)
            if not PREFETCH:
                A, Bn, Cn, h_start, carry = loaded
            y, sum_dh_B, sum_w_A = _bwd_state_component(
                n, y, sum_dh_B, sum_w_A, A, Bn, Cn, h_start, carry, delta, delta_next, delta_u, dy, t64, mask_t,
                mask_d, d64, dstate_row, dA_ptr, dB_ptr, dB_base, dC_ptr, dC_base, N, L, is_first, is_last,
                B_VAR, C_VAR, REV3, DA_SLOTS)
            if PREFETCH:
                A, Bn, Cn, h_start, carry = loaded
        if RELOAD:
            # Read u / z / dout / delta again (L1 / L2 hits) rather than keep them live across the loop over
            # N: the backward otherwise needs more than 255 registers per thread and spills (H100, T 256).
            u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
            dout = tl.load(do_row + t64[None, :] * s_do_l, mask=mask_dt, other=0.0).to(tl.float32)
            if HAS_Z:
                zv = tl.load(z_row + t64[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
                sig_z = tl.sigmoid(zv)
            if SOFTPLUS:
                _, delta_pre = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        du = sum_dh_B * delta
        ddelta = sum_dh_B * u + sum_w_A
        if HAS_D:
            y += Dv[:, None] * u
            du += Dv[:, None] * dy
            dD_acc += tl.sum(dy * u, axis=1)
        if HAS_Z:
            dz = dout * y * sig_z * (1.0 + zv * (1.0 - sig_z))
            tl.store(dz_row + t64[None, :] * s_dz_l, dz.to(dz_ptr.dtype.element_ty), mask=mask_dt)
        if SOFTPLUS:
            ddelta = ddelta * tl.sigmoid(delta_pre)
        ddelta = tl.where(mask_dt, ddelta, 0.0)
        if HAS_DBIAS:
            ddbias_acc += tl.sum(ddelta, axis=1)
        tl.store(du_row + t64[None, :] * s_du_l, du.to(du_ptr.dtype.element_ty), mask=mask_dt)
        tl.store(ddt_row + t64[None, :] * s_ddt_l, ddelta.to(ddelta_ptr.dtype.element_ty), mask=mask_dt)
        tl.debug_barrier()  # the carried dstate is read by other threads in the next chunk

    if HAS_D:
        tl.atomic_add(dD_ptr + d64, dD_acc, mask=mask_d, sem="relaxed")
    if HAS_DBIAS:
        tl.atomic_add(ddbias_ptr + d64, ddbias_acc, mask=mask_d, sem="relaxed")


# ----------------------------------------------------------------------------------------------------
# Host side

# Repeat launches skip Triton's JITFunction.run (seqmamba/ops/launch.py).
_launch_fwd = CachedLaunch(_selective_scan_fwd_kernel)
_launch_bwd = CachedLaunch(_selective_scan_bwd_kernel)


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


# Channels per program, chunk length and warps; picked on an H100 (notes/triton_scan.md): one warp and one
# channel per program, forward 512 steps per chunk, backward 256, so every scan and reduction stays inside
# the warp and many small programs keep the SMs full.
# Backward (H100, notes/triton_scan.md "Registers"): rev3 = the 3-tuple reverse scan (no second exp);
# reload = read u / z / dout again after the loop over N (without it the kernel needs > 255 registers and
# spills). Occupancy rules, applied on CUDA only:
# - min_programs_per_sm: fewer programs than this many per SM -> one channel per program (for configs with
#   block_d > 1; the two-channel backward of session 2 used it at batch 1);
# - maxnreg: cap registers at this many when there are at least min_programs_per_sm programs per SM and
#   L >= maxnreg_min_L: 12 instead of 8 resident warps per SM (without it the programs take two waves).
# da_slots (off): dA as per-slot partial sums instead of a cross-lane reduction per chunk; within run-to-run
# spread on the H100.
# prefetch: component n + 1's loads issued before component n's scans (their latency hidden, registers spent).
# H100 (notes/triton_scan.md "Session 3"), backward with one-channel programs, register cap and prefetch against
# the two-channel backward without it: fwd+bwd 40.0 -> 33.4 ms at (1, 1536, 262144), 17.5 -> 16.7 at
# (2, 1536, 65536), 5.37 -> 5.14 at (16, 2048, 2048), 4.25 -> 4.18 at (8, 1536, 4096), 1.07 -> 1.04 at
# (8, 1536, 1024) (two-channel programs with prefetch spill: 4-22% slower). Forward "latency" = prefetch with
# fewer than prefetch_max_programs_per_sm programs per SM and no states to save (forward 8.70 -> 8.22 ms at
# batch 1, 4.37 -> 4.10 at (2, 1536, 65536); 4-9% slower with many programs, and slower when the forward saves
# the backward's states), there with chunks of latency_T steps on latency_num_warps warps (7.96 -> 7.25 ms at
# batch 1, 3.96 -> 3.64 at (2, 1536, 65536)).
FWD_CONFIG = dict(block_d=1, T=512, num_warps=1, masked_last=True, prefetch="latency",
                  prefetch_max_programs_per_sm=32, latency_T=1024, latency_num_warps=2)
BWD_CONFIG = dict(block_d=1, T=256, num_warps=1, rev3=True, reload=True, prefetch=True,
                  min_programs_per_sm=8, maxnreg=168, maxnreg_min_L=0)
# The Mamba block's layout: u / delta / z are transposed views of (batch, L, dim) tensors, so consecutive
# steps of one channel are dim elements apart and a one-channel program would use 2 bytes of every 32-byte
# sector it loads (16x the DRAM traffic at bf16). A program of 16-32 neighbouring channels reads whole
# sectors (16 x 2 bytes per step); the chunk shrinks to keep the (BLOCK_D, T) tile affordable in registers.
# H100 sweep at (64, 1536, 2048) (notes/triton_scan.md): forward 32 x 32 5.20 ms (16 x 32 6.60, 16 x 64 6.70,
# 8 x 64 7.61); backward 16 x 32 27.4 ms fwd+bwd (8 x 64 32.9, 16 x 64 on 2 warps 39.6).
# prefetch (notes/triton_scan.md "Session 3"): forward 2.49 -> 2.29 ms at (8, 1536, 4096), 5.21 -> 5.14 at
# (64, 1536, 2048); the backward's prefetch was 3-4% slower in this layout.
FWD_CONFIG_CHANNEL_LAST = dict(block_d=32, T=32, num_warps=1, prefetch=True)
BWD_CONFIG_CHANNEL_LAST = dict(block_d=16, T=32, num_warps=1, rev3=True, reload=True)


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


def _launch_config(dim: int, N: int, L: int, channels_per_group: int, backward: bool, block_layout: bool = False,
                   batch: Optional[int] = None, device: Optional[torch.device] = None, save_states: bool = False):
    """(BLOCK_D, T, num_warps, compiler options, prefetch) for one launch.

    With ``batch`` and a CUDA ``device``, the config's occupancy rules apply (see BWD_CONFIG): one channel
    per program below min_programs_per_sm programs per SM, the Triton options num_stages / maxnreg (the
    register cap only on NVIDIA, with enough programs and L >= maxnreg_min_L), and the prefetch rule.
    Elsewhere (the interpreter, or only T wanted) the options are empty and prefetch is on only when the
    config says True. Cached per shape and config (host time matters at small shapes)."""
    on_cuda = batch is not None and device is not None and device.type == "cuda"
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) if on_cuda else 0
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
    if on_cuda:
        if cfg.get("num_stages") is not None:
            options["num_stages"] = cfg["num_stages"]
        if (cfg.get("maxnreg") is not None and torch.version.hip is None
                and batch * cdiv(dim, BLOCK_D) >= min_per_sm * sms and L >= cfg.get("maxnreg_min_L", 0)):
            options["maxnreg"] = cfg["maxnreg"]
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


def _dummy(ref: torch.Tensor) -> torch.Tensor:
    return empty((1,), ref.device, torch.float32)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states):
    """Runs the forward kernel. Returns (out, last_state, chunk_states); chunk_states holds the state
    entering each of the backward's chunks when save_states, else a placeholder."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B_var, G_B, sB, C_var, G_C, sC, cpg = _bc_layout(B, C, dim)
    block_layout = is_block_layout(u, delta, z)
    BLOCK_D, T, num_warps, options, prefetch = _launch_config(dim, N, L, cpg, backward=False,
                                                              block_layout=block_layout, batch=batch, device=u.device,
                                                              save_states=bool(save_states))
    saves_per_chunk, n_saved = 1, 1
    if save_states:  # save the state entering each of the backward's chunks
        T_bwd = _launch_config(dim, N, L, cpg, backward=True, block_layout=block_layout)[1]
        if T < T_bwd or T % T_bwd != 0:
            T = T_bwd
        saves_per_chunk, n_saved = T // T_bwd, _n_chunks(L, T_bwd)
    n_chunks = _n_chunks(L, T)
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
    _launch_fwd(
        grid,
        (u, delta, A, B, C, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
         out, state, chunk_states),
        (dim, L, N, cpg, n_chunks, n_saved, batch * dim * N,
         *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *sB, *sC, *out.stride()),
        dict(BLOCK_D=BLOCK_D, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), B_VAR=B_var, C_VAR=C_var, SAVE_STATES=bool(save_states),
             SAVES_PER_CHUNK=saves_per_chunk, RELOAD=bool(_config(False, block_layout).get("reload", False)),
             MASKED_LAST=bool(_config(False, block_layout).get("masked_last", False)), PREFETCH=prefetch),
        num_warps, options)
    return out, state[n_chunks % 2], chunk_states


def _input_grads_like(u, delta, z):
    """Empty du, ddelta, dz (None without z), each stored like its input when that input is time-major, so
    the gradient flowing back through the block's transposes is already in (batch, L, dim) order."""
    return (_empty_like_layout(u, _is_channel_last(u)), _empty_like_layout(delta, _is_channel_last(delta)),
            _empty_like_layout(z, _is_channel_last(z)) if z is not None else None)


def scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, dout, dlast):
    """Runs the backward kernel. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    B_var, G_B, sB, C_var, G_C, sC, cpg = _bc_layout(B, C, dim)
    block_layout = is_block_layout(u, delta, z)
    BLOCK_D, T, num_warps, options, prefetch = _launch_config(dim, N, L, cpg, backward=True,
                                                              block_layout=block_layout, batch=batch, device=u.device)
    n_chunks = chunk_states.shape[2]
    assert n_chunks == _n_chunks(L, T), "forward and backward chunking disagree"
    dummy = _dummy(u)
    du, ddelta, dz = _input_grads_like(u, delta, z)
    dz = dz if z is not None else dummy
    # dA in DA_SLOTS partial sums per (channel, n) when the config asks for it (summed below).
    da_slots = min(32, T) if _config(True, block_layout).get("da_slots", False) else 1
    # The atomically accumulated gradients come from two zeroed buffers (one fill each instead of one per
    # gradient: host time): dB / dC, and the small per-channel ones. Kept apart so that a small gradient (a view)
    # does not hold the fp32 dB / dC alive once they are converted to B / C's dtype.
    dB, dC = zeroed_views(u.device, [(batch, G_B, N, L) if B_var else (dim, N),
                                      (batch, G_C, N, L) if C_var else (dim, N)])
    dA, dD, ddbias, dstate = zeroed_views(u.device, [
        (dim, N, da_slots) if da_slots > 1 else (dim, N), (dim,) if D is not None else (1,),
        (dim,) if delta_bias is not None else (1,), (batch, dim, N)])
    # dstate carries the state gradient between chunks and ends as the initial state's gradient.
    if dlast is not None:
        dstate.copy_(dlast)
    zz = z if z is not None else u
    grid = (cdiv(dim, BLOCK_D), batch)
    _launch_bwd(
        grid,
        (u, delta, A, B, C, D if D is not None else dummy, zz, delta_bias if delta_bias is not None else dummy,
         chunk_states, dout, dstate, du, ddelta, dz, dA, dB, dC, dD, ddbias),
        (dim, L, N, cpg, n_chunks, G_B, G_C,
         *u.stride(), *delta.stride(), *zz.stride(), *A.stride(), *sB, *sC, *dout.stride(),
         *du.stride(), *ddelta.stride(), *(dz.stride() if z is not None else du.stride())),
        dict(BLOCK_D=BLOCK_D, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None,
             SOFTPLUS=bool(delta_softplus), B_VAR=B_var, C_VAR=C_var,
             REV3=bool(_config(True, block_layout).get("rev3", False)),
             RELOAD=bool(_config(True, block_layout).get("reload", False)), DA_SLOTS=da_slots, PREFETCH=prefetch),
        num_warps, options)
    if da_slots > 1:
        dA = dA.sum(-1)
    dB = dB.to(B.dtype).reshape(B.shape) if B_var else dB.to(B.dtype)
    dC = dC.to(C.dtype).reshape(C.shape) if C_var else dC.to(C.dtype)
    return du, ddelta, dA, dB, dC, dD, dz, ddbias, dstate


# ----------------------------------------------------------------------------------------------------
# torch.library custom ops, so torch.compile traces through the scan without graph breaks.

@torch.library.custom_op("seqmamba::selective_scan_fwd", mutates_args=())
def _selective_scan_fwd_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, initial_state: Optional[torch.Tensor], save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states)


def _backward_chunk_len(u, delta, z, A, B, C):
    return _launch_config(u.shape[1], A.shape[1], u.shape[2], _bc_layout(B, C, u.shape[1])[-1], backward=True,
                          block_layout=is_block_layout(u, delta, z))[1]


@_selective_scan_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states):
    batch, dim, L = u.shape
    N = A.shape[1]
    out = _empty_like_layout(u, is_block_layout(u, delta, z))
    last_state = u.new_empty((batch, dim, N), dtype=torch.float32)
    if save_states:
        n_saved = _n_chunks(L, _backward_chunk_len(u, delta, z, A, B, C))
        chunk_states = u.new_empty((batch, dim, n_saved, N), dtype=torch.float32)
    else:
        chunk_states = u.new_empty((1,), dtype=torch.float32)
    return out, last_state, chunk_states


@torch.library.custom_op("seqmamba::selective_scan_bwd", mutates_args=())
def _selective_scan_bwd_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, chunk_states: torch.Tensor, dout: torch.Tensor, dlast: Optional[torch.Tensor],
    want_dh0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor, torch.Tensor]:
    du, ddelta, dA, dB, dC, dD, dz, ddbias, dstate = scan_backward(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, dout, dlast)
    # A custom op's outputs must not share storage; scan_backward carves the small gradients (and fp32 dB / dC)
    # from shared zeroed buffers.
    dA, dD, ddbias, dstate = (t.clone() for t in (dA, dD, ddbias, dstate))
    if dB.untyped_storage().data_ptr() == dC.untyped_storage().data_ptr():
        dC = dC.clone()
    # Absent gradients come back as empty (0,) tensors: custom ops cannot return None.
    empty = u.new_empty((0,), dtype=torch.float32)
    return (du, ddelta, dA, dB, dC, dD if D is not None else empty, dz if z is not None else empty.clone(),
            ddbias if delta_bias is not None else empty.clone(), dstate)


@_selective_scan_bwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, dout, dlast, want_dh0):
    f32 = torch.float32
    empty = u.new_empty((0,), dtype=f32)
    du, ddelta, dz = _input_grads_like(u, delta, z)
    return (
        du,
        ddelta,
        A.new_empty(A.shape, dtype=f32),
        B.new_empty(B.shape),
        C.new_empty(C.shape),
        D.new_empty(D.shape, dtype=f32) if D is not None else empty,
        dz if z is not None else empty.clone(),
        delta_bias.new_empty(delta_bias.shape, dtype=f32) if delta_bias is not None else empty.clone(),
        u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=f32),
    )


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states = inputs
    _, _, chunk_states = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, chunk_states)
    ctx.delta_softplus = delta_softplus
    ctx.has_initial_state = initial_state is not None
    ctx.initial_state_dtype = initial_state.dtype if initial_state is not None else None


def _gradients(ctx, dout, dlast, backward_fn):
    """The autograd backward of the scan, shared by the custom op (torch.compile) and the eager Function."""
    u, delta, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
    if chunk_states.dim() != 4:
        raise RuntimeError("selective_scan: backward needs the chunk states; the forward ran without grad")
    du, ddelta, dA, dB, dC, dD, dz, ddbias, dh0 = backward_fn(
        u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, chunk_states, dout, dlast)
    dD = dD if D is not None else None
    dz = dz if z is not None else None
    ddbias = ddbias if delta_bias is not None else None
    dh0 = dh0.to(ctx.initial_state_dtype) if ctx.has_initial_state else None
    return du, ddelta, dA, dB, dC, dD, dz, ddbias, None, dh0, None


def _backward(ctx, dout, dlast, _dchunk_states):
    return _gradients(ctx, dout, dlast, lambda *args: _selective_scan_bwd_op(*args, ctx.has_initial_state))


_selective_scan_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _SelectiveScanEager(torch.autograd.Function):
    """The same forward / backward as the custom ops, without the dispatcher round trips of torch.library in
    eager mode (host time is most of a small scan's cost: H100, (8, 1536, 1024) fwd+bwd took 1.04-1.37 ms of
    host time for 1.07 ms of GPU time through the custom ops; notes/triton_scan.md "Session 3")."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states):
        out, last_state, chunk_states = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                     initial_state, save_states)
        _setup_context(ctx, (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states),
                       (out, last_state, chunk_states))
        ctx.set_materialize_grads(False)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        if dout is None:  # only the last state was used
            dout = torch.zeros_like(ctx.saved_tensors[0])
        return _gradients(ctx, dout, dlast, scan_backward)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None):
    """Triton selective scan with the contract of ``selective_scan_ref`` (arguments already validated).

    Under torch.compile it runs as the custom ops ``seqmamba::selective_scan_fwd`` / ``_bwd`` (traced without
    graph breaks); in eager mode the same kernels run through a plain autograd.Function."""
    needs_grad = records_autograd(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if torch.compiler.is_compiling():
        out, last_state, _ = _selective_scan_fwd_op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                    initial_state, needs_grad)
    elif needs_grad:
        out, last_state = _SelectiveScanEager.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                    initial_state, True)
    else:
        out, last_state, _ = scan_forward(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                          initial_state, False)
    return (out, last_state) if return_last_state else out

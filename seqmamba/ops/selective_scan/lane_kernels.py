"""The selective scan's forward with one channel per lane (FWD_CONFIG ``lanes``; host side: triton_launch.py).

The chunked kernels (triton_kernels.py) put a channel's time steps across the 32 lanes of a warp and scan them
with warp shuffles: ~17 instructions per state element at (8, 1536, 4096), five shuffle levels per component and
chunk, 4x the exp floor. Here a lane owns one channel and all N of its state components in registers and walks
time step by step: per state element one exp2 (the SFU), one multiply for the exponent, one for B delta u and two
FMAs (h and y). No shuffles, no shared memory, no barriers; a warp's 32 lanes are 32 neighbouring channels.

* Memory: a lane reads its channel's rows of u / delta / z and writes y in chunks of TC consecutive steps (FWD_CONFIG
  lanes_chunk, 8 by default: one 16-byte vector for bf16), then takes the chunk apart column by column with
  ``tl.split`` (register renaming: the load's layout gives each lane the whole row). B / C rows are the same for
  all lanes of a group: each lane loads the same bytes (one broadcast transaction per warp). bf16 B / C (and with
  lanes_seq_pairs u / delta / z) are read and carried as int32 pairs of steps and widened by bit operations.
* Latency: a warp is often alone on its SM sub-partition (batch x dim / 32 warps in all), so its loads must hide
  behind its own work: u / delta / z are loaded two chunks ahead, B / C one chunk ahead (loop-carried tiles).
* The N states, N exponents A_n log2(e) and the chunk's TC columns are tuples of (BLOCK_D,) vectors unrolled at
  compile time (N x TC independent chains per chunk).
* Padded steps (beyond L) have delta = 0 and B = 0: the identity map, so the last state is exact. Full chunks load
  without masks (lanes past dim read channel dim - 1 and store nothing); only the partial last chunk is masked.
* With SAVE_STATES the state entering every T_SAVE steps (the backward's chunks) goes to chunk_states
  (batch, dim, n_saved, N), as the chunked forward saves it; the backward kernels are shared.
* With SPLIT (inference at one or two long sequences, triton_launch.lanes_split_segments) L is cut into segments
  for warps enough: _segment_end_states_lanes_kernel first scans each segment but the last from zero for its end
  state and delta sum, then each program of the forward carries its segment's entering state through them.

Fast math (FWD_CONFIG lanes_fast_math): the softplus as _softplus_one_mufu by default since the thirty-first session
(one MUFU per step; 1.02-1.04x over _softplus_fast's two on the H200), SiLU as _silu_fast.
H200 (BENCHMARKS.md, tenth session), with fast math (_softplus_fast, _silu_fast) and bf16 B / C as int32 pairs,
both on by default: 1.16x the chunked forward at 5.8 of its warps per SM, 1.39x at 7.8 (1.73x mamba_ssm's), level
at 4.8, 0.88x at 2.9, where one warp per sub-partition cannot hide its loads. Twenty-third session: its stalls are on
its loads (Nsight Compute), and 8-step chunks with u / delta / z as pairs make it 1.14-1.15x faster than 4-step
chunks (triton_launch.py, the lanes_chunk comment); with them it is 1.06x the chunked forward at 4.8 warps per SM,
so the launch (triton_launch._lanes_forward_ok) runs it from 4 (5 before), for the inference forward only.
"""
import triton
import triton.language as tl

from ..launch import grid_dependency_wait
from ..tile_columns import _columns, _join_columns
from .triton_kernels import _silu_fast, _softplus, _softplus_one_mufu


@triton.jit
def _softplus_fast(x):
    """log(1 + exp(x)) without libdevice's exp / log or an IEEE division (FWD_CONFIG lanes_fast_math): with
    e = exp(-|x|) <= 1, softplus(x) = max(x, 0) + log1p(e) and log1p(e) = 2 atanh(s), s = e / (2 + e) <= 1/3, as
    2 s (1 + s^2 / 3 + s^4 / 5 + ... + s^14 / 15): truncation below (1/9)^8 / 17 = 1.4e-9 relative, and relative
    accuracy kept for tiny e (s = e / 2 (1 + O(e))), where log(1 + e) in fp32 rounds to 0 (notes/extrapolation.md).
    Two MUFU (exp2, the approximate reciprocal of div.full) and ~12 FMA-pipe instructions instead of ~35."""
    e = tl.exp2(tl.abs(x) * -1.4426950408889634)
    s = tl.fdiv(e, 2.0 + e, ieee_rounding=False)
    s2 = s * s
    p = 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return tl.maximum(x, 0.0) + 2.0 * s * p


@triton.jit
def _step_delta(raw, dbias, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_MATH: tl.constexpr):
    """One step's delta from its loaded value: + delta_bias, then softplus (fast or libdevice's)."""
    delta = raw
    if HAS_DBIAS:
        delta = delta + dbias
    if SOFTPLUS:
        if FAST_MATH == 2:
            delta = _softplus_one_mufu(delta)
        elif FAST_MATH:
            delta = _softplus_fast(delta)
        else:
            delta = _softplus(delta)
    return delta


@triton.jit
def _tile(rows, t0, L, s_l, TC: tl.constexpr, MASKED: tl.constexpr):
    """(ROWS, TC) raw tile of steps t0 .. t0 + TC - 1 (``rows``: (ROWS,) in-bounds pointers at step 0); MASKED:
    zeros past L."""
    t64 = (t0 + tl.arange(0, TC)).to(tl.int64)
    ptrs = rows[:, None] + t64[None, :] * s_l
    if MASKED:
        return tl.load(ptrs, mask=(t64 < L)[None, :], other=0.0)
    return tl.load(ptrs)


@triton.jit
def _bc_tile(rows, n, s_n, t0, L, s_l, TC: tl.constexpr, MASKED: tl.constexpr, PAIRS: tl.constexpr):
    """Component n's raw tile of a time-varying B or C for steps t0 .. t0 + TC - 1: (ROWS, TC) of its dtype, or with
    PAIRS (bf16, unit time stride, even offsets, 4-byte aligned, L even: the launch checks) (ROWS, TC / 2) int32,
    each holding two consecutive steps."""
    if PAIRS:
        pair = (t0 // 2 + tl.arange(0, TC // 2)).to(tl.int64)
        ptrs = (rows.to(tl.pointer_type(tl.int32)) + (n * s_n) // 2)[:, None] + pair[None, :]
        if MASKED:
            tile = tl.load(ptrs, mask=(2 * pair < L)[None, :], other=0)
        else:
            tile = tl.load(ptrs)
    else:
        tile = _tile(rows + n * s_n, t0, L, s_l, TC, MASKED)
    return tile


@triton.jit
def _bc_columns(tile, ROWS: tl.constexpr, TC: tl.constexpr, PAIRS: tl.constexpr):
    """The TC fp32 columns of a raw tile (_bc_tile, or _sequence_tile for u / delta / z). Pairs widen by bit
    operations, one per value (x << 16 for the earlier step, x & 0xffff0000 for the later one) where the bf16
    conversion of packed halves costs ptxas ~2."""
    if PAIRS:
        early = _columns((tile << 16).to(tl.float32, bitcast=True), ROWS, TC // 2)
        late = _columns((tile & -65536).to(tl.float32, bitcast=True), ROWS, TC // 2)
        cols = ()
        for k in tl.static_range(TC // 2):
            cols = cols + (early[k], late[k])
    else:
        cols = _columns(tile.to(tl.float32), ROWS, TC)
    return cols


@triton.jit
def _component_tiles(rows, s_n, t0, L, s_l, N: tl.constexpr, TC: tl.constexpr, MASKED: tl.constexpr,
                     PAIRS: tl.constexpr):
    """The N raw tiles (_bc_tile) of a time-varying B or C for steps t0 .. t0 + TC - 1."""
    tiles = ()
    for n in tl.static_range(N):
        tiles = tiles + (_bc_tile(rows, n, s_n, t0, L, s_l, TC, MASKED, PAIRS),)
    return tiles


@triton.jit
def _sequence_tile(row, t0, L, s_l, TC: tl.constexpr, MASKED: tl.constexpr, PAIRS: tl.constexpr):
    """One sequence tensor's raw tile of steps t0 .. t0 + TC - 1: (ROWS, TC) of its dtype, or with PAIRS (bf16,
    unit time stride, rows 4-byte aligned, L even: the launch checks) (ROWS, TC / 2) int32 pairs of steps, which
    the loop carries as loaded (_bc_columns widens them)."""
    if PAIRS:
        tile = _bc_tile(row, 0, 0, t0, L, s_l, TC, MASKED, True)
    else:
        tile = _tile(row, t0, L, s_l, TC, MASKED)
    return tile


@triton.jit
def _sequence_tiles(u_row, dt_row, z_row, t0, L, s_u_l, s_dt_l, s_z_l, TC: tl.constexpr, MASKED: tl.constexpr,
                    HAS_Z: tl.constexpr, PAIRS: tl.constexpr = False):
    """The raw (u, delta, z) tiles of steps t0 .. t0 + TC - 1 (_sequence_tile); without z its slot holds u's tile
    (never read)."""
    u = _sequence_tile(u_row, t0, L, s_u_l, TC, MASKED, PAIRS)
    dt = _sequence_tile(dt_row, t0, L, s_dt_l, TC, MASKED, PAIRS)
    z = u
    if HAS_Z:
        z = _sequence_tile(z_row, t0, L, s_z_l, TC, MASKED, PAIRS)
    return u, dt, z


@triton.jit
def _bc_component_tiles(B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, t0, L, placeholder, N: tl.constexpr,
                        TC: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr, PAIRS: tl.constexpr):
    """(B's, C's) N masked component tiles of steps t0 .. t0 + TC - 1 (_component_tiles); a constant B or C gets
    ``placeholder`` (never read: its (dim, N) values were loaded once)."""
    B_t = placeholder
    C_t = placeholder
    if B_VAR:
        B_t = _component_tiles(B_rows, s_B_n, t0, L, s_B_l, N, TC, True, PAIRS)
    if C_VAR:
        C_t = _component_tiles(C_rows, s_C_n, t0, L, s_C_l, N, TC, True, PAIRS)
    return B_t, C_t


@triton.jit
def _save_states(row_ptr, slot, hs, mask_d, N: tl.constexpr):
    for n in tl.static_range(N):
        tl.store(row_ptr + slot * N + n, hs[n], mask=mask_d)


@triton.jit
def _save_states_entering(row_ptr, t0, hs, mask_d, N: tl.constexpr, T_SAVE: tl.constexpr):
    """The states entering step t0 > 0 when it starts a backward chunk (step 0's are saved before the loop)."""
    if t0 > 0 and t0 % T_SAVE == 0:
        _save_states(row_ptr, t0 // T_SAVE, hs, mask_d, N)


@triton.jit
def _chunk(t0, L, hs, A2s, Bs, Cs, Dv, dbias, u_t, dt_t, z_t, B_t, C_t, o_row, s_o_l, mask_d,
           B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, t_next, N: tl.constexpr,
           BLOCK_D: tl.constexpr, TC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
           HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr,
           MASKED: tl.constexpr, PREFETCH: tl.constexpr, FAST_MATH: tl.constexpr, PAIRS: tl.constexpr,
           SEQ_PAIRS: tl.constexpr = False):
    """Steps t0 .. t0 + TC - 1 of the program's channels from their loaded tiles (u, delta, z; the N B / C tiles
    when time-varying): writes y, returns (the N states after them, the next chunk's B / C tiles). MASKED: steps
    past L are the identity. PREFETCH: as component n's tiles are used up, the next chunk's (steps t_next ..,
    in bounds, unmasked) are loaded into their registers; else the returned tiles are the ones given."""
    us = _bc_columns(u_t, BLOCK_D, TC, SEQ_PAIRS)
    raw = _bc_columns(dt_t, BLOCK_D, TC, SEQ_PAIRS)
    dls = ()
    dus = ()
    ys = ()
    for j in tl.static_range(TC):
        delta = _step_delta(raw[j], dbias, HAS_DBIAS, SOFTPLUS, FAST_MATH)
        if MASKED:
            delta = tl.where(t0 + j < L, delta, 0.0)  # padded steps: a = 1, b = 0
        dls = dls + (delta,)
        dus = dus + (delta * us[j],)
        if HAS_D:
            ys = ys + (Dv * us[j],)
        else:
            ys = ys + (tl.zeros([BLOCK_D], dtype=tl.float32),)
    new_hs = ()
    B_next = ()
    C_next = ()
    for n in tl.static_range(N):
        if B_VAR:
            bn = _bc_columns(B_t[n], BLOCK_D, TC, PAIRS)
            if PREFETCH:
                B_next = B_next + (_bc_tile(B_rows, n, s_B_n, t_next, L, s_B_l, TC, False, PAIRS),)
        if C_VAR:
            cn = _bc_columns(C_t[n], BLOCK_D, TC, PAIRS)
            if PREFETCH:
                C_next = C_next + (_bc_tile(C_rows, n, s_C_n, t_next, L, s_C_l, TC, False, PAIRS),)
        h = hs[n]
        a2 = A2s[n]
        new_ys = ()
        for j in tl.static_range(TC):
            if B_VAR:
                b = bn[j]
            else:
                b = Bs[n]
            if C_VAR:
                cc = cn[j]
            else:
                cc = Cs[n]
            h = tl.exp2(dls[j] * a2) * h + b * dus[j]
            new_ys = new_ys + (ys[j] + cc * h,)
        ys = new_ys
        new_hs = new_hs + (h,)
    if HAS_Z:
        zs = _bc_columns(z_t, BLOCK_D, TC, SEQ_PAIRS)
        gated = ()
        for j in tl.static_range(TC):
            if FAST_MATH:
                gated = gated + (ys[j] * _silu_fast(zs[j]),)
            else:
                gated = gated + (ys[j] * (zs[j] * tl.sigmoid(zs[j])),)
        ys = gated
    t64 = (t0 + tl.arange(0, TC)).to(tl.int64)
    ptrs = o_row[:, None] + t64[None, :] * s_o_l
    y = _join_columns(ys, BLOCK_D, TC).to(o_row.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, y, mask=mask_d[:, None] & (t64 < L)[None, :])
    else:
        tl.store(ptrs, y, mask=mask_d[:, None])
    if not PREFETCH or not B_VAR:
        B_next = B_t
    if not PREFETCH or not C_VAR:
        C_next = C_t
    return new_hs, B_next, C_next


@triton.jit
def _selective_scan_fwd_lanes_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dbias_ptr, state_in_ptr,
    out_ptr, last_ptr, chunk_states_ptr, seg_h_ptr, seg_dsum_ptr,
    dim, L, channels_per_group, n_saved, seg_len, n_segments,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_o_b, s_o_d, s_o_l,
    N: tl.constexpr, BLOCK_D: tl.constexpr, TC: tl.constexpr, T_SAVE: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, HAS_INIT: tl.constexpr, SAVE_STATES: tl.constexpr,
    FAST_MATH: tl.constexpr, BC_PAIRS: tl.constexpr, SEQ_PAIRS: tl.constexpr = False,
    SPLIT: tl.constexpr = False, PDL: tl.constexpr = False,
):
    """One program: batch row program_id(1), channels program_id(0) * BLOCK_D + lane. state_in / last:
    (batch, dim, N) fp32 (state_in read only with HAS_INIT). B / C: time-varying through (batch, group, n, l)
    strides, the group of channel d being d // channels_per_group; else (dim, N) through (group = channel, n).

    SPLIT (the inference forward with L split, no saved states): program_id(1) = row x n_segments + segment; segment
    s takes steps [s seg_len, (s + 1) seg_len), the last one the rest of L. Its entering state is carried here from
    the initial state through the earlier segments' end states from zero (seg_h, (batch, n_segments - 1, dim, N))
    and delta sums (seg_dsum, (batch, n_segments - 1, dim); _segment_end_states_lanes_kernel writes both):
    h <- exp2(A log2(e) sum delta) h + h_end, segment by segment. Only the last segment stores the last state."""
    grid_dependency_wait(PDL)
    pid_d = tl.program_id(0)
    if SPLIT:
        seg = tl.program_id(1) % n_segments
        pid_b = (tl.program_id(1) // n_segments).to(tl.int64)
        t_base = seg.to(tl.int64) * seg_len
        L = tl.where(seg == n_segments - 1, L - seg * seg_len, seg_len)
    else:
        seg = 0
        pid_b = tl.program_id(1).to(tl.int64)
        t_base = 0
    d64 = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    mask_d = d64 < dim
    # Lanes past dim read channel dim - 1 (in bounds, so the loads need no mask) and store nothing.
    d_in = tl.minimum(d64, dim - 1)
    Dv = 0.0
    if HAS_D:
        Dv = tl.load(D_ptr + d_in)
    dbias = 0.0
    if HAS_DBIAS:
        dbias = tl.load(dbias_ptr + d_in)
    group = d_in // channels_per_group
    B_rows = B_ptr + pid_b * s_B_b + group * s_B_g + t_base * s_B_l
    C_rows = C_ptr + pid_b * s_C_b + group * s_C_g + t_base * s_C_l
    state_row = (pid_b * dim + d64) * N
    A2s = ()
    hs = ()
    Bs = ()
    Cs = ()
    for n in tl.static_range(N):
        A2s = A2s + (tl.load(A_ptr + d64 * s_A_d + n * s_A_n, mask=mask_d, other=0.0) * 1.4426950408889634,)
        if HAS_INIT:
            hs = hs + (tl.load(state_in_ptr + state_row + n, mask=mask_d, other=0.0),)
        else:
            hs = hs + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        if not B_VAR:  # (dim, N): one value per channel and component for all steps
            Bs = Bs + (tl.load(B_ptr + d64 * s_B_g + n * s_B_n, mask=mask_d, other=0.0).to(tl.float32),)
        if not C_VAR:
            Cs = Cs + (tl.load(C_ptr + d64 * s_C_g + n * s_C_n, mask=mask_d, other=0.0).to(tl.float32),)
    if SPLIT:  # the state entering this segment, carried through the earlier ones
        ends = n_segments - 1
        for k in range(0, seg):
            slot = (pid_b * ends + k) * dim + d64
            dsum = tl.load(seg_dsum_ptr + slot, mask=mask_d, other=0.0)
            carried = ()
            for n in tl.static_range(N):
                h_end = tl.load(seg_h_ptr + slot * N + n, mask=mask_d, other=0.0)
                carried = carried + (tl.exp2(dsum * A2s[n]) * hs[n] + h_end,)
            hs = carried
    chunk_row = chunk_states_ptr + (pid_b * dim + d64) * n_saved * N
    if SAVE_STATES:
        _save_states(chunk_row, 0, hs, mask_d, N)
    u_row = u_ptr + pid_b * s_u_b + d_in * s_u_d + t_base * s_u_l
    dt_row = delta_ptr + pid_b * s_dt_b + d_in * s_dt_d + t_base * s_dt_l
    z_row = z_ptr + pid_b * s_z_b + d_in * s_z_d + t_base * s_z_l
    o_row = out_ptr + pid_b * s_o_b + d64 * s_o_d + t_base * s_o_l

    # Software pipeline (one warp per SM sub-partition is common here, so latency must hide behind this warp's own
    # work): u / delta / z are loaded two chunks ahead (DRAM), B / C one chunk ahead (L2), component by component
    # into the registers the current chunk's tile of that component has just freed. Prefetches past the last full
    # chunk re-read it (in bounds, unmasked); the partial last chunk loads its own, masked.
    n_full = L // TC
    last_full = tl.maximum(n_full - 1, 0)
    u_n, dt_n, z_n = _sequence_tiles(u_row, dt_row, z_row, 0, L, s_u_l, s_dt_l, s_z_l, TC, True, HAS_Z, SEQ_PAIRS)
    u_nn, dt_nn, z_nn = _sequence_tiles(u_row, dt_row, z_row, tl.minimum(1, last_full) * TC, L, s_u_l, s_dt_l,
                                        s_z_l, TC, True, HAS_Z, SEQ_PAIRS)
    B_n, C_n = _bc_component_tiles(B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, 0, L, A2s, N, TC, B_VAR, C_VAR,
                                   BC_PAIRS)
    for c in range(0, n_full):
        if SAVE_STATES:
            _save_states_entering(chunk_row, c * TC, hs, mask_d, N, T_SAVE)
        u_t, dt_t, z_t, B_t, C_t = u_n, dt_n, z_n, B_n, C_n  # B / C: _chunk loads the next ones as it goes
        u_n, dt_n, z_n = u_nn, dt_nn, z_nn
        u_nn, dt_nn, z_nn = _sequence_tiles(u_row, dt_row, z_row, tl.minimum(c + 2, last_full) * TC, L, s_u_l,
                                            s_dt_l, s_z_l, TC, False, HAS_Z, SEQ_PAIRS)
        hs, B_n, C_n = _chunk(c * TC, L, hs, A2s, Bs, Cs, Dv, dbias, u_t, dt_t, z_t, B_t, C_t, o_row, s_o_l,
                              mask_d, B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l,
                              tl.minimum(c + 1, last_full) * TC, N, BLOCK_D, TC, HAS_D, HAS_Z, HAS_DBIAS,
                              SOFTPLUS, B_VAR, C_VAR, False, True, FAST_MATH, BC_PAIRS, SEQ_PAIRS)
    if n_full * TC < L:  # the last, partial chunk
        t0 = n_full * TC
        if SAVE_STATES:
            _save_states_entering(chunk_row, t0, hs, mask_d, N, T_SAVE)
        B_t, C_t = _bc_component_tiles(B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, t0, L, A2s, N, TC, B_VAR, C_VAR,
                                       BC_PAIRS)
        u_t, dt_t, z_t = _sequence_tiles(u_row, dt_row, z_row, t0, L, s_u_l, s_dt_l, s_z_l, TC, True, HAS_Z,
                                         SEQ_PAIRS)
        hs, B_t, C_t = _chunk(t0, L, hs, A2s, Bs, Cs, Dv, dbias, u_t, dt_t, z_t, B_t, C_t, o_row, s_o_l, mask_d,
                              B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, t0, N, BLOCK_D, TC, HAS_D, HAS_Z,
                              HAS_DBIAS, SOFTPLUS, B_VAR, C_VAR, True, False, FAST_MATH, BC_PAIRS, SEQ_PAIRS)
    if SPLIT:
        mask_d = mask_d & (seg == n_segments - 1)
    for n in tl.static_range(N):
        tl.store(last_ptr + state_row + n, hs[n], mask=mask_d)


@triton.jit
def _end_chunk(hs, dsum, A2s, Bs, dbias, u_t, dt_t, B_t, B_rows, s_B_n, s_B_l, t_next, L, N: tl.constexpr,
               BLOCK_D: tl.constexpr, TC: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               B_VAR: tl.constexpr, FAST_MATH: tl.constexpr, PAIRS: tl.constexpr, SEQ_PAIRS: tl.constexpr):
    """_chunk without C, D, z or an output, all TC steps in bounds: (the N states after them, the delta sum so
    far, the next chunk's B tiles, loaded at step t_next as each component's are used up)."""
    us = _bc_columns(u_t, BLOCK_D, TC, SEQ_PAIRS)
    raw = _bc_columns(dt_t, BLOCK_D, TC, SEQ_PAIRS)
    dls = ()
    dus = ()
    for j in tl.static_range(TC):
        delta = _step_delta(raw[j], dbias, HAS_DBIAS, SOFTPLUS, FAST_MATH)
        dsum = dsum + delta
        dls = dls + (delta,)
        dus = dus + (delta * us[j],)
    new_hs = ()
    B_next = ()
    for n in tl.static_range(N):
        if B_VAR:
            bn = _bc_columns(B_t[n], BLOCK_D, TC, PAIRS)
            B_next = B_next + (_bc_tile(B_rows, n, s_B_n, t_next, L, s_B_l, TC, False, PAIRS),)
        h = hs[n]
        a2 = A2s[n]
        for j in tl.static_range(TC):
            if B_VAR:
                b = bn[j]
            else:
                b = Bs[n]
            h = tl.exp2(dls[j] * a2) * h + b * dus[j]
        new_hs = new_hs + (h,)
    if not B_VAR:
        B_next = B_t
    return new_hs, dsum, B_next


@triton.jit
def _segment_end_states_lanes_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, dbias_ptr, seg_h_ptr, seg_dsum_ptr,
    dim, seg_len, n_ends, channels_per_group,
    s_u_b, s_u_d, s_u_l,
    s_dt_b, s_dt_d, s_dt_l,
    s_A_d, s_A_n,
    s_B_b, s_B_g, s_B_n, s_B_l,
    N: tl.constexpr, BLOCK_D: tl.constexpr, TC: tl.constexpr,
    HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr,
    FAST_MATH: tl.constexpr, BC_PAIRS: tl.constexpr, SEQ_PAIRS: tl.constexpr = False,
    PDL: tl.constexpr = False,
):
    """The L-split forward's first pass, one channel per lane like the forward: program_id(1) = row x n_ends +
    segment, segment s being steps [s seg_len, (s + 1) seg_len) (seg_len a whole number of TC-step chunks), scanned
    from a zero state. Writes its end state to seg_h (batch, n_ends, dim, N) and its sum of delta (after bias and
    softplus) to seg_dsum (batch, n_ends, dim), fp32: the segment maps an entering state h to
    exp2(A log2(e) sum delta) h + h_end. Per state element one exp2, two multiplies and an FMA: no C, y or z."""
    grid_dependency_wait(PDL)
    pid_d = tl.program_id(0)
    seg = tl.program_id(1) % n_ends
    pid_b = (tl.program_id(1) // n_ends).to(tl.int64)
    t_base = seg.to(tl.int64) * seg_len
    d64 = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    mask_d = d64 < dim
    d_in = tl.minimum(d64, dim - 1)
    dbias = 0.0
    if HAS_DBIAS:
        dbias = tl.load(dbias_ptr + d_in)
    group = d_in // channels_per_group
    B_rows = B_ptr + pid_b * s_B_b + group * s_B_g + t_base * s_B_l
    A2s = ()
    hs = ()
    Bs = ()
    for n in tl.static_range(N):
        A2s = A2s + (tl.load(A_ptr + d_in * s_A_d + n * s_A_n) * 1.4426950408889634,)
        hs = hs + (tl.zeros([BLOCK_D], dtype=tl.float32),)
        if not B_VAR:
            Bs = Bs + (tl.load(B_ptr + d_in * s_B_g + n * s_B_n).to(tl.float32),)
    u_row = u_ptr + pid_b * s_u_b + d_in * s_u_d + t_base * s_u_l
    dt_row = delta_ptr + pid_b * s_dt_b + d_in * s_dt_d + t_base * s_dt_l
    dsum = tl.zeros([BLOCK_D], dtype=tl.float32)
    # the forward's software pipeline: u / delta two chunks ahead, B one chunk ahead; every chunk is whole
    last_full = seg_len // TC - 1
    u_n, dt_n, _ = _sequence_tiles(u_row, dt_row, u_row, 0, seg_len, s_u_l, s_dt_l, s_u_l, TC, False, False,
                                   SEQ_PAIRS)
    u_nn, dt_nn, _ = _sequence_tiles(u_row, dt_row, u_row, tl.minimum(1, last_full) * TC, seg_len, s_u_l, s_dt_l,
                                     s_u_l, TC, False, False, SEQ_PAIRS)
    B_n = A2s
    if B_VAR:
        B_n = _component_tiles(B_rows, s_B_n, 0, seg_len, s_B_l, N, TC, False, BC_PAIRS)
    for c in range(0, last_full + 1):
        u_t, dt_t, B_t = u_n, dt_n, B_n
        u_n, dt_n = u_nn, dt_nn
        u_nn, dt_nn, _ = _sequence_tiles(u_row, dt_row, u_row, tl.minimum(c + 2, last_full) * TC, seg_len, s_u_l,
                                         s_dt_l, s_u_l, TC, False, False, SEQ_PAIRS)
        hs, dsum, B_n = _end_chunk(hs, dsum, A2s, Bs, dbias, u_t, dt_t, B_t, B_rows, s_B_n, s_B_l,
                                   tl.minimum(c + 1, last_full) * TC, seg_len, N, BLOCK_D, TC, HAS_DBIAS, SOFTPLUS,
                                   B_VAR, FAST_MATH, BC_PAIRS, SEQ_PAIRS)
    slot = (pid_b * n_ends + seg) * dim + d64
    tl.store(seg_dsum_ptr + slot, dsum, mask=mask_d)
    for n in tl.static_range(N):
        tl.store(seg_h_ptr + slot * N + n, hs[n], mask=mask_d)

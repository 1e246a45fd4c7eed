"""The selective scan's forward with one channel per lane (FWD_CONFIG ``lanes``; host side: triton_launch.py).

The chunked kernels (triton_kernels.py) put a channel's time steps across the 32 lanes of a warp and scan them
with warp shuffles: ~17 instructions per state element at (8, 1536, 4096), five shuffle levels per component and
chunk, 4x the exp floor. Here a lane owns one channel and all N of its state components in registers and walks
time step by step: per state element one exp2 (the SFU), one multiply for the exponent, one for B delta u and two
FMAs (h and y). No shuffles, no shared memory, no barriers; a warp's 32 lanes are 32 neighbouring channels.

* Memory: a lane reads its channel's rows of u / delta / z and writes y in chunks of TC consecutive steps (one
  16-byte vector for bf16), then takes the chunk apart column by column with ``tl.split`` (register renaming:
  the load's layout gives each lane the whole row). B / C rows are the same for all lanes of a group: each lane
  loads the same 16 bytes (one broadcast transaction per warp).
* The N states, N exponents A_n log2(e) and the chunk's TC columns are tuples of (BLOCK_D,) vectors unrolled at
  compile time (N x TC independent chains per chunk: the latency is hidden by ILP, not by resident warps).
* Padded steps (beyond L) have delta = 0 and B = 0: the identity map, so the last state is exact.
* With SAVE_STATES the state entering every T_SAVE steps (the backward's chunks) goes to chunk_states
  (batch, dim, n_saved, N), as the chunked forward saves it; the backward kernels are shared.

Parallelism is batch x dim / 32 warps: with few sequences the launch splits L (triton_launch.split_segments).
"""
import triton
import triton.language as tl

from .triton_kernels import _softplus


@triton.jit
def _columns(x, ROWS: tl.constexpr, TC: tl.constexpr):
    """(ROWS, TC) -> the TC (ROWS,) columns in order (TC in 1, 2, 4, 8), by halving splits."""
    tl.static_assert(TC == 1 or TC == 2 or TC == 4 or TC == 8, "TC must be 1, 2, 4 or 8")
    if TC == 1:
        return (tl.reshape(x, (ROWS,)),)
    elif TC == 2:
        c0, c1 = tl.split(x)
        return (c0, c1)
    elif TC == 4:
        e, o = tl.split(tl.reshape(x, (ROWS, 2, 2)))  # columns 0, 2 | 1, 3
        c0, c2 = tl.split(e)
        c1, c3 = tl.split(o)
        return (c0, c1, c2, c3)
    else:
        e, o = tl.split(tl.reshape(x, (ROWS, 4, 2)))  # 0 2 4 6 | 1 3 5 7
        e0, e1 = tl.split(tl.reshape(e, (ROWS, 2, 2)))  # 0 4 | 2 6
        o0, o1 = tl.split(tl.reshape(o, (ROWS, 2, 2)))  # 1 5 | 3 7
        c0, c4 = tl.split(e0)
        c2, c6 = tl.split(e1)
        c1, c5 = tl.split(o0)
        c3, c7 = tl.split(o1)
        return (c0, c1, c2, c3, c4, c5, c6, c7)


@triton.jit
def _join_columns(c, ROWS: tl.constexpr, TC: tl.constexpr):
    """The inverse of _columns: a tuple of TC (ROWS,) columns -> (ROWS, TC)."""
    if TC == 1:
        return tl.reshape(c[0], (ROWS, 1))
    elif TC == 2:
        return tl.join(c[0], c[1])
    elif TC == 4:
        e = tl.join(c[0], c[2])
        o = tl.join(c[1], c[3])
        return tl.reshape(tl.join(e, o), (ROWS, 4))
    else:
        e = tl.reshape(tl.join(tl.join(c[0], c[4]), tl.join(c[2], c[6])), (ROWS, 4))
        o = tl.reshape(tl.join(tl.join(c[1], c[5]), tl.join(c[3], c[7])), (ROWS, 4))
        return tl.reshape(tl.join(e, o), (ROWS, 8))


@triton.jit
def _load_columns(rows, t0, L, s_l, ROWS: tl.constexpr, TC: tl.constexpr, MASKED: tl.constexpr):
    """Steps t0 .. t0 + TC - 1 of ROWS rows (``rows``: (ROWS,) pointers at step 0, all in bounds) as TC fp32 (ROWS,)
    columns, loaded in 16-byte pieces so each lane holds whole rows (fp32 B / C: two pieces of 4 steps). MASKED:
    zeros past L (the last chunk); else every step is below L and the loads carry no mask."""
    PIECE: tl.constexpr = min(TC, 128 // rows.dtype.element_ty.primitive_bitwidth)
    cols = ()
    for k in tl.static_range(TC // PIECE):
        t64 = (t0 + k * PIECE + tl.arange(0, PIECE)).to(tl.int64)
        ptrs = rows[:, None] + t64[None, :] * s_l
        if MASKED:
            tile = tl.load(ptrs, mask=(t64 < L)[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
        cols = cols + _columns(tile.to(tl.float32), ROWS, PIECE)
    return cols


@triton.jit
def _save_states(row_ptr, slot, hs, mask_d, N: tl.constexpr):
    for n in tl.static_range(N):
        tl.store(row_ptr + slot * N + n, hs[n], mask=mask_d)


@triton.jit
def _chunk(t0, L, hs, A2s, Bs, Cs, Dv, dbias, u_row, s_u_l, dt_row, s_dt_l, z_row, s_z_l, o_row, s_o_l,
           B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, mask_d, N: tl.constexpr, BLOCK_D: tl.constexpr,
           TC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr,
           SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr, C_VAR: tl.constexpr, MASKED: tl.constexpr):
    """Steps t0 .. t0 + TC - 1 of the program's channels: writes y, returns the N states after them."""
    us = _load_columns(u_row, t0, L, s_u_l, BLOCK_D, TC, MASKED)
    raw = _load_columns(dt_row, t0, L, s_dt_l, BLOCK_D, TC, MASKED)
    dls = ()
    dus = ()
    ys = ()
    for j in tl.static_range(TC):
        delta = raw[j]
        if HAS_DBIAS:
            delta = delta + dbias
        if SOFTPLUS:
            delta = _softplus(delta)
        if MASKED:
            delta = tl.where(t0 + j < L, delta, 0.0)  # padded steps: a = 1, b = 0
        dls = dls + (delta,)
        dus = dus + (delta * us[j],)
        if HAS_D:
            ys = ys + (Dv * us[j],)
        else:
            ys = ys + (tl.zeros([BLOCK_D], dtype=tl.float32),)
    new_hs = ()
    for n in tl.static_range(N):
        if B_VAR:
            bn = _load_columns(B_rows + n * s_B_n, t0, L, s_B_l, BLOCK_D, TC, MASKED)
        if C_VAR:
            cn = _load_columns(C_rows + n * s_C_n, t0, L, s_C_l, BLOCK_D, TC, MASKED)
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
        zs = _load_columns(z_row, t0, L, s_z_l, BLOCK_D, TC, MASKED)
        gated = ()
        for j in tl.static_range(TC):
            gated = gated + (ys[j] * (zs[j] * tl.sigmoid(zs[j])),)
        ys = gated
    t64 = (t0 + tl.arange(0, TC)).to(tl.int64)
    ptrs = o_row[:, None] + t64[None, :] * s_o_l
    y = _join_columns(ys, BLOCK_D, TC).to(o_row.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, y, mask=mask_d[:, None] & (t64 < L)[None, :])
    else:
        tl.store(ptrs, y, mask=mask_d[:, None])
    return new_hs


@triton.jit
def _selective_scan_fwd_lanes_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dbias_ptr, state_in_ptr,
    out_ptr, last_ptr, chunk_states_ptr,
    dim, L, channels_per_group, n_saved,
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
):
    """One program: batch row program_id(1), channels program_id(0) * BLOCK_D + lane. state_in / last:
    (batch, dim, N) fp32 (state_in read only with HAS_INIT). B / C: time-varying through (batch, group, n, l)
    strides, the group of channel d being d // channels_per_group; else (dim, N) through (group = channel, n)."""
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
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
    B_rows = B_ptr + pid_b * s_B_b + group * s_B_g
    C_rows = C_ptr + pid_b * s_C_b + group * s_C_g
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
    chunk_row = chunk_states_ptr + (pid_b * dim + d64) * n_saved * N
    if SAVE_STATES:
        _save_states(chunk_row, 0, hs, mask_d, N)
    u_row = u_ptr + pid_b * s_u_b + d_in * s_u_d
    dt_row = delta_ptr + pid_b * s_dt_b + d_in * s_dt_d
    z_row = z_ptr + pid_b * s_z_b + d_in * s_z_d
    o_row = out_ptr + pid_b * s_o_b + d64 * s_o_d

    n_full = L // TC
    for c in range(0, n_full):
        if SAVE_STATES:
            if c > 0 and (c * TC) % T_SAVE == 0:
                _save_states(chunk_row, (c * TC) // T_SAVE, hs, mask_d, N)
        hs = _chunk(c * TC, L, hs, A2s, Bs, Cs, Dv, dbias, u_row, s_u_l, dt_row, s_dt_l, z_row, s_z_l, o_row, s_o_l,
                    B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, mask_d, N, BLOCK_D, TC, HAS_D, HAS_Z, HAS_DBIAS,
                    SOFTPLUS, B_VAR, C_VAR, False)
    if n_full * TC < L:  # the last, partial chunk
        if SAVE_STATES:
            if n_full > 0 and (n_full * TC) % T_SAVE == 0:
                _save_states(chunk_row, (n_full * TC) // T_SAVE, hs, mask_d, N)
        hs = _chunk(n_full * TC, L, hs, A2s, Bs, Cs, Dv, dbias, u_row, s_u_l, dt_row, s_dt_l, z_row, s_z_l, o_row,
                    s_o_l, B_rows, s_B_n, s_B_l, C_rows, s_C_n, s_C_l, mask_d, N, BLOCK_D, TC, HAS_D, HAS_Z,
                    HAS_DBIAS, SOFTPLUS, B_VAR, C_VAR, True)
    for n in tl.static_range(N):
        tl.store(last_ptr + state_row + n, hs[n], mask=mask_d)

"""Triton forward and backward kernels of the selective scan (the host side: triton_launch.py; autograd and
torch.compile: triton_autograd.py; measurements behind each choice: notes/triton_scan.md).

* One program (one warp by default) per (batch, block of BLOCK_D channels). It walks the sequence in
  chunks of T time steps. Each chunk loads whole (BLOCK_D, T) tiles of u / delta / z at once, then loops
  over the N state components: per component it loads the (T,) rows of B and C, builds the decays
  a = exp(delta A_n) and inputs b = delta B_n u in registers, and scans them along T with
  ``tl.associative_scan`` and the combine (a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2). The state entering
  the chunk is folded into the first element, so the scan yields h_t directly; y accumulates C_n h_n in
  registers. A warp holds 256-1024 consecutive steps of a channel, so scans and reductions stay in the warp.
* The state leaving a chunk (one fp32 per channel and component) is carried through a (batch, dim, N)
  buffer that also returns the last state. The expanded state (batch, dim, L, N) never reaches memory:
  with autograd on, the forward saves only the state entering each backward chunk.
* The backward walks the chunks in reverse: it recomputes h inside the chunk from the saved state, then
  runs a reverse scan for dh_t = C_t dy_t + a_{t+1} dh_{t+1}, carrying a_t dh_t of the chunk's first step
  into the previous chunk (it ends as the initial state's gradient). a_t h_{t-1} is h_t - b_t inside the
  chunk (no shifted state needed) and a_0 h_start at its first step; a_{t+1} enters through a 3-tuple
  combine, so no second exp either. u / z / dout / delta are read again after the loop over N (registers).
* Latency: with ``PREFETCH`` the loads of state component n + 1 (A, the B / C rows, the saved state, the
  carried gradient) are issued before component n's scans.
* Time-varying B / C shared by the block's channels: dB / dC are summed over the block's channels and
  added to an fp32 (batch, G, N, L) buffer with atomics. dA, dD, ddelta_bias and time-invariant (dim, N)
  dB / dC are summed over time and added with atomics once per chunk or program.
* exp is exp2 with A pre-scaled by log2(e). Offsets are int64 and strides arbitrary (the Mamba block
  passes transposed views of (batch, L, dim) tensors; no copies are made).
"""
import triton
import triton.language as tl

from ..launch import grid_dependency_wait


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
def _lane_flip(x):
    """Each lane gets lane 31 - l's register at the same index (one shfl.bfly per register; NVIDIA only)."""
    return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 31, 31, -1;", "=r,r", [x], dtype=tl.float32,
                                     is_pure=True, pack=1)


@triton.jit
def _fast_flip(x, R: tl.constexpr):
    """x (1, 32 R) reversed along its steps, for the layout of one warp holding R consecutive steps per lane
    (the launch checks that it is the one Triton picks: triton_launch._fast_flip_ok, and a compile test): the lanes
    swap mirror-wise, then each lane reverses its R registers (tl.flip on an in-thread axis moves no data across
    lanes). Triton's own flip (and its reverse scans, which flip in and out) costs log2(32) butterfly shuffles per
    register instead of one: 120 shuffles for a 256-step, two-operand reverse scan against 24 here."""
    y = tl.reshape(_lane_flip(x), (32, R))
    return tl.reshape(tl.flip(y, 1), (1, 32 * R))


@triton.jit
def _shift_one_step(x, R: tl.constexpr):
    """x (1, 32 R) moved one step later: out_s = x_{s-1} (step 0 keeps x_0), for the layout _fast_flip assumes
    (one warp, R consecutive steps per lane; inline asm with pack=8 gets a lane's 8 steps in order). Inside a lane
    it is a renaming of registers; the lane's first step is the previous lane's last (one shfl.up per 8 steps)."""
    tl.static_assert(R == 8, "_shift_one_step is written for 8 steps per lane")
    return tl.inline_asm_elementwise(
        "shfl.sync.up.b32 $0, $15, 1, 0, -1; mov.b32 $1, $8; mov.b32 $2, $9; mov.b32 $3, $10; mov.b32 $4, $11; "
        "mov.b32 $5, $12; mov.b32 $6, $13; mov.b32 $7, $14;",
        "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r,r", [x], dtype=tl.float32, is_pure=True, pack=8)


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) to fp32 accuracy: x itself above 20 (mamba_ssm's threshold), and log1p(e) for e = exp(x)
    computed as log(1 + e) * e / ((1 + e) - 1), which cancels the rounding of 1 + e (Goldberg's log1p). The plain
    log(1 + e) is 0 below x ~ -16.6 and 17% off at -15, so small deltas (long memories) came out shorter on the
    GPU than on the CPU (notes/extrapolation.md); mamba_ssm's CUDA scan uses log1pf."""
    e = tl.exp(x)
    u = 1.0 + e
    d = u - 1.0
    log1p_e = tl.where(d == 0.0, e, tl.log(u) * (e / tl.where(d == 0.0, 1.0, d)))
    return tl.where(x <= 20.0, log1p_e, x)


@triton.jit
def _softplus_one_mufu(x):
    """softplus(x) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], with one MUFU (the exp2): log1p(e) as e q(e), q a
    degree-8 polynomial (least squares for relative error on [0, 1], fp32 coefficients: 1.8e-7 relative at most,
    evaluated in fp32), so tiny e keeps its relative accuracy (log1p(e) = e (1 - e / 2 + ...)). No reciprocal
    (lane_kernels._softplus_fast has one) and no log: ~11 FMA-pipe instructions. The lanes kernels' FAST_MATH 2
    (FWD_CONFIG lanes_fast_math "one_mufu") and the chunked forward's FAST_SOFTPLUS."""
    e = tl.exp2(tl.abs(x) * -1.4426950408889634)
    q = 0.0052326880395412445
    q = q * e - 0.029505213722586632
    q = q * e + 0.07822591066360474
    q = q * e - 0.13663242757320404
    q = q * e + 0.19106005132198334
    q = q * e - 0.2484298199415207
    q = q * e + 0.3331909775733948
    q = q * e - 0.4999949336051941
    q = q * e + 0.9999999403953552
    return tl.maximum(x, 0.0) + e * q


@triton.jit
def _silu_fast(z):
    """z sigmoid(z) = z / (1 + exp(-z)) with exp2 and div.full (FWD_CONFIG lanes_fast_math); the division by an
    infinite 1 + exp(-z) (z < -88) gives -0, the limit."""
    return tl.fdiv(z, 1.0 + tl.exp2(z * -1.4426950408889634), ieee_rounding=False)


@triton.jit
def _load_delta(delta_row_ptr, dbias, t_idx, s_dt_l, mask_dt,
                HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST_SOFTPLUS: tl.constexpr = False):
    """Returns (delta after bias + softplus, zeroed outside the mask; the pre-softplus value). FAST_SOFTPLUS:
    _softplus_one_mufu instead of libdevice's log and an IEEE division (FWD_CONFIG fast_softplus; in training with
    fast_softplus_training too: the backward recomputes delta with libdevice's, ~1e-7 relative apart)."""
    raw = tl.load(delta_row_ptr + t_idx[None, :].to(tl.int64) * s_dt_l, mask=mask_dt, other=0.0).to(tl.float32)
    if HAS_DBIAS:
        raw = raw + dbias[:, None]
    delta = raw
    if SOFTPLUS:
        if FAST_SOFTPLUS:
            delta = _softplus_one_mufu(raw)
        else:
            delta = _softplus(raw)
    # Padded steps must be the identity map (a = 1, b = 0) so the chunk's last column is the true state.
    delta = tl.where(mask_dt, delta, 0.0)
    return delta, raw


@triton.jit
def _segment_delta_sum_kernel(delta_ptr, dbias_ptr, out_ptr, dim, seg_len, s_dt_d, s_dt_l,
                              BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, HAS_DBIAS: tl.constexpr,
                              SOFTPLUS: tl.constexpr):
    """out[s, d] = sum over segment s's steps of delta[d, t] after bias + softplus, as the scan kernels form it
    (_load_delta): the split scans' segment decays exp(A out[s, d]) (triton_launch._segment_decay). delta is one
    batch row (dim, L) with any strides; program (channel block, segment)."""
    pid_d, seg = tl.program_id(0), tl.program_id(1)
    d_idx = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d_idx < dim
    dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DBIAS:
        dbias = tl.load(dbias_ptr + d_idx, mask=mask_d, other=0.0).to(tl.float32)
    row = delta_ptr + d_idx[:, None].to(tl.int64) * s_dt_d + seg.to(tl.int64) * seg_len * s_dt_l
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for t0 in range(0, seg_len, BLOCK_L):
        t_idx = t0 + tl.arange(0, BLOCK_L)
        delta, _ = _load_delta(row, dbias, t_idx, s_dt_l, mask_d[:, None] & (t_idx < seg_len)[None, :],
                               HAS_DBIAS, SOFTPLUS)
        acc += delta
    tl.store(out_ptr + seg * dim + d_idx, tl.sum(acc, axis=1), mask=mask_d)


@triton.jit
def _program_channels(dim, channels_per_group, D_ptr, dbias_ptr, B_ptr, s_B_b, s_B_g, C_ptr, s_C_b, s_C_g,
                      BLOCK_D: tl.constexpr, HAS_D: tl.constexpr, HAS_DBIAS: tl.constexpr,
                      BATCH_FASTEST: tl.constexpr = False):
    """A program's batch row and block of channels, as both kernels start: (batch index, channels (int64),
    channel mask, D, delta_bias (zeros when absent), the B / C group, B / C of that batch row and group). The grid is
    (channel blocks, batch), or with BATCH_FASTEST (batch, channel blocks): programs launched one after another then
    belong to different batch rows, as mamba_ssm's backward grid orders its blocks."""
    if BATCH_FASTEST:
        pid_b = tl.program_id(0).to(tl.int64)
        pid_d = tl.program_id(1)
    else:
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
def _chunk_ends(t_loc, T: tl.constexpr):
    """(1, T) masks of a chunk's first and last step."""
    return (t_loc == 0)[None, :], (t_loc == T - 1)[None, :]


@triton.jit
def _chunk_steps(c, T: tl.constexpr, t_loc, L, mask_d):
    """Chunk c's steps: (t_idx, the steps inside L, the (BLOCK_D, T) channel x step mask, t_idx as int64)."""
    t_idx = c * T + t_loc
    mask_t = t_idx < L
    return t_idx, mask_t, mask_d[:, None] & mask_t[None, :], t_idx.to(tl.int64)


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
    SAVES_PER_CHUNK: tl.constexpr, MASKED_LAST: tl.constexpr, PREFETCH: tl.constexpr,
    PDL: tl.constexpr = False, FAST_SOFTPLUS: tl.constexpr = False,
):
    """state_ptr: two (batch, dim, N) fp32 slots, state_slot elements apart; slot 0 holds the initial state.
    Chunk c reads the state from slot c % 2 and writes the one it leaves to the other (so no thread can
    overwrite a state another thread has yet to read); the last state ends in slot n_chunks % 2.
    With SAVE_STATES, the state entering every T / SAVES_PER_CHUNK steps goes to chunk_states
    (batch, dim, n_saved, N)."""
    grid_dependency_wait(PDL)
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
    is_first, is_last = _chunk_ends(t_loc, T)

    for c in range(0, n_chunks):
        state_in = state_row + (c % 2) * state_slot
        state_out = state_row + ((c + 1) % 2) * state_slot
        t_idx, mask_t, mask_dt, t64 = _chunk_steps(c, T, t_loc, L, mask_d)
        u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        delta, _ = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS, FAST_SOFTPLUS)
        delta_u = delta * u
        # y starts as D u, so u is dead before the loop over N (16 fewer live registers at T = 512 on one warp)
        if HAS_D:
            y = Dv[:, None] * u
        else:
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
def _load_dy(do_row, z_row, t64, s_do_l, s_z_l, mask_dt, HAS_Z: tl.constexpr):
    """dy = dout * silu(z) of one chunk (dout without z): the gradient reaching y = C h + D u."""
    dy = tl.load(do_row + t64[None, :] * s_do_l, mask=mask_dt, other=0.0).to(tl.float32)
    if HAS_Z:
        zv = tl.load(z_row + t64[None, :] * s_z_l, mask=mask_dt, other=0.0).to(tl.float32)
        dy = dy * zv * tl.sigmoid(zv)
    return dy


@triton.jit
def _chunk_state_grad(n, a, Cn, dy, carry, dstate_row, mask_d, is_first, is_last,
                      FAST_FLIP: tl.constexpr, R: tl.constexpr):
    """Reverse scan of state component n over one chunk: dh_t = C_t dy_t + a_{t+1} dh_{t+1}, with the gradient
    carried in from the next chunk at the last step; a_{t+1} enters through the combine (no second exp).
    Stores a_t dh_t of the chunk's first step (the carry into the previous chunk) and returns dh.
    FAST_FLIP 1: the same scan run forward over the flipped chunk (_fast_flip: Triton's reverse scan flips too, at
    five times the shuffles); the combine is the same function, its first operand still the later segment.
    FAST_FLIP 2: over the flipped chunk dh'_s = g'_s + a'_{s-1} dh'_{s-1}, a first-order scan of (a' one step
    later, g'): two operands instead of three (sm_90 SASS: the backward's loop 422 -> 409 instructions, the
    state-gradient kernel's 138 -> 134). The first step's a' is never used: its state enters through g."""
    g = Cn * dy
    g = tl.where(is_last, g + carry[:, None], g)
    ones = tl.full(a.shape, 1.0, tl.float32)
    if FAST_FLIP == 2:
        _, dh = tl.associative_scan((_shift_one_step(_fast_flip(a, R), R), _fast_flip(g, R)), axis=1,
                                    combine_fn=_first_order_combine)
        dh = _fast_flip(dh, R)
    elif FAST_FLIP:
        _, dh, _ = tl.associative_scan((_fast_flip(a, R), _fast_flip(g, R), ones), axis=1,
                                       combine_fn=_shifted_reverse_combine)
        dh = _fast_flip(dh, R)
    else:
        _, dh, _ = tl.associative_scan((a, g, ones), axis=1, combine_fn=_shifted_reverse_combine, reverse=True)
    tl.store(dstate_row + n, tl.sum(tl.where(is_first, a * dh, 0.0), axis=1), mask=mask_d)
    return dh


@triton.jit
def _bwd_state_component(n, y, sum_dh_B, sum_w_A, A, Bn, Cn, h_start, carry, delta, delta_u, dy,
                         t64, mask_t, mask_d, d64, dstate_row, dA_ptr, dB_ptr, dB_base, dC_ptr, dC_base, N, L,
                         is_first, is_last, B_VAR: tl.constexpr, C_VAR: tl.constexpr, FAST_FLIP: tl.constexpr,
                         R: tl.constexpr):
    """Backward of state component n over one chunk; returns the updated (y, sum_n dh B, sum_n dh a h_{t-1} A)."""
    A2 = A * 1.4426950408889634
    # Recompute the chunk's states from the saved boundary state.
    a = tl.exp2(delta * A2[:, None])
    b = delta_u * Bn
    ah_first = a * h_start[:, None]
    x = tl.where(is_first, b + ah_first, b)
    _, h = tl.associative_scan((a, x), axis=1, combine_fn=_first_order_combine)
    y += h * Cn
    dh = _chunk_state_grad(n, a, Cn, dy, carry, dstate_row, mask_d, is_first, is_last, FAST_FLIP, R)
    sum_dh_B += dh * Bn
    # dh_t a_t h_{t-1}, with a_t h_{t-1} = h_t - b_t inside the chunk (no shifted state needed) but a_0 h_start at
    # its first step: there h_t - b_t is pure cancellation, and the GPU compiler contracts it into
    # fma(-delta_u, B, h) = the rounding error of delta_u B rather than 0 when h_start = 0. That made dA at L = 1
    # (where its true value is exactly 0 without an initial state) rounding noise: relative error ~1e20 on the
    # H200 (issue 9); the interpreter does not contract and got 0.
    w = dh * tl.where(is_first, ah_first, h - b)
    sum_w_A += w * A[:, None]
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
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, PREFETCH: tl.constexpr, FAST_FLIP: tl.constexpr = False,
    PDL: tl.constexpr = False, BATCH_FASTEST: tl.constexpr = False,
):
    """dstate_ptr: (batch, dim, N) fp32 holding dL/d(last state); it carries a_t dh_t of each chunk's
    first step into the previous chunk and ends holding dL/d(initial state). BATCH_FASTEST (BWD_CONFIG
    batch_fastest): the grid is (batch, channel blocks), so the programs resident at once spread their dB / dC
    atomics over every batch row's sums instead of piling them on one row's (see _program_channels)."""
    grid_dependency_wait(PDL)
    pid_b, d64, mask_d, Dv, dbias, group, B_base, C_base = _program_channels(
        dim, channels_per_group, D_ptr, dbias_ptr, B_ptr, s_B_b, s_B_g, C_ptr, s_C_b, s_C_g,
        BLOCK_D, HAS_D, HAS_DBIAS, BATCH_FASTEST)
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
    is_first, is_last = _chunk_ends(t_loc, T)

    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t_idx, mask_t, mask_dt, t64 = _chunk_steps(c, T, t_loc, L, mask_d)
        u = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        delta, delta_pre = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        dy = _load_dy(do_row, z_row, t64, s_do_l, s_z_l, mask_dt, HAS_Z)
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
                n, y, sum_dh_B, sum_w_A, A, Bn, Cn, h_start, carry, delta, delta_u, dy, t64, mask_t,
                mask_d, d64, dstate_row, dA_ptr, dB_ptr, dB_base, dC_ptr, dC_base, N, L, is_first, is_last,
                B_VAR, C_VAR, FAST_FLIP, T // 32)
            if PREFETCH:
                A, Bn, Cn, h_start, carry = loaded
        # Read u / z / dout / delta again (L1 / L2 hits) rather than keep them live across the loop over N: the
        # backward otherwise needs more than 255 registers per thread and spills (H100, T 256).
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


@triton.jit
def _selective_scan_dstate_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, dbias_ptr, dout_ptr, dstate_ptr,
    dim, L, N, channels_per_group, n_chunks,
    s_dt_b, s_dt_d, s_dt_l,
    s_z_b, s_z_d, s_z_l,
    s_A_d, s_A_n,
    s_C_b, s_C_g, s_C_n, s_C_l,
    s_do_b, s_do_d, s_do_l,
    BLOCK_D: tl.constexpr, T: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, C_VAR: tl.constexpr,
    FAST_FLIP: tl.constexpr = False,
    PDL: tl.constexpr = False,
):
    """dL/d(initial state) alone, with no gradient on the last state: the backward's reverse recurrence
    dh_t = C_t dy_t + a_{t+1} dh_{t+1} and nothing else (no recomputed states, no other gradient, no atomics).
    What the training split needs per segment (triton_launch.scan_backward_split). Same operations as the
    backward kernel's, so the same numbers. dstate_ptr: (batch, dim, N) fp32 zeros; it carries a_t dh_t of each
    chunk's first step into the previous chunk and ends holding the result."""
    grid_dependency_wait(PDL)
    # (Triton: a name bound before the loop must keep its type inside it, so no '_' reused for two values.)
    pid_b, d64, mask_d, _no_D, dbias, group, _no_B, C_base = _program_channels(
        dim, channels_per_group, dbias_ptr, dbias_ptr, C_ptr, s_C_b, s_C_g, C_ptr, s_C_b, s_C_g,
        BLOCK_D, False, HAS_DBIAS)
    t_loc = tl.arange(0, T)
    dt_row = _rows(delta_ptr, pid_b, d64, s_dt_b, s_dt_d)
    z_row = _rows(z_ptr, pid_b, d64, s_z_b, s_z_d)
    do_row = _rows(dout_ptr, pid_b, d64, s_do_b, s_do_d)
    dstate_row = dstate_ptr + (pid_b * dim + d64) * N
    is_first, is_last = _chunk_ends(t_loc, T)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t_idx, mask_t, mask_dt, t64 = _chunk_steps(c, T, t_loc, L, mask_d)
        delta, _raw = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        dy = _load_dy(do_row, z_row, t64, s_do_l, s_z_l, mask_dt, HAS_Z)
        for n in range(0, N):
            A2 = tl.load(A_ptr + d64 * s_A_d + n * s_A_n, mask=mask_d, other=0.0) * 1.4426950408889634
            if C_VAR:
                Cn = tl.load(C_base + n * s_C_n + t64 * s_C_l, mask=mask_t, other=0.0).to(tl.float32)[None, :]
            else:
                Cn = tl.load(C_ptr + d64 * s_C_g + n * s_C_n, mask=mask_d, other=0.0).to(tl.float32)[:, None]
            carry = tl.load(dstate_row + n, mask=mask_d, other=0.0)
            _chunk_state_grad(n, tl.exp2(delta * A2[:, None]), Cn, dy, carry, dstate_row, mask_d, is_first, is_last,
                              FAST_FLIP, T // 32)
        tl.debug_barrier()  # the carried dstate is read by other threads in the next chunk


@triton.jit
def _segment_program(dim, seg_len, N, channels_per_group, A_ptr, s_A_d, s_A_n, dbias_ptr, BC_ptr, s_BC_g, s_BC_n,
                     s_BC_l, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DBIAS: tl.constexpr,
                     BC_VAR: tl.constexpr):
    """What both segment reductions start from, for program (block of BLOCK_D channels, segment): (the segment's
    index and first step (int64), the channels (int64) and their mask, the states and their mask, A log2(e)
    (BLOCK_D, BLOCK_N), delta_bias (zeros when absent), the B or C rows of the program's group at the segment's
    first step ((BLOCK_N, 1) pointers; with BC_VAR), that B or C constant in time as (BLOCK_D, BLOCK_N, 1)
    (without BC_VAR; zeros otherwise))."""
    pid_d, seg = tl.program_id(0), tl.program_id(1)
    d64 = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    mask_d = d64 < dim
    n_idx = tl.arange(0, BLOCK_N)
    mask_n = n_idx < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A2 = tl.load(A_ptr + d64[:, None] * s_A_d + n_idx[None, :] * s_A_n, mask=mask_dn,
                 other=0.0).to(tl.float32) * 1.4426950408889634
    dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_DBIAS:
        dbias = tl.load(dbias_ptr + d64, mask=mask_d, other=0.0).to(tl.float32)
    start = seg.to(tl.int64) * seg_len
    group = ((pid_d * BLOCK_D) // channels_per_group).to(tl.int64)
    bc_rows = BC_ptr + group * s_BC_g + start * s_BC_l + n_idx[:, None].to(tl.int64) * s_BC_n
    bc_const = tl.zeros([BLOCK_D, BLOCK_N, 1], dtype=tl.float32)
    if not BC_VAR:
        bc_const = tl.load(BC_ptr + d64[:, None] * s_BC_g + n_idx[None, :] * s_BC_n, mask=mask_dn,
                           other=0.0).to(tl.float32)[:, :, None]
    return seg, start, d64, mask_d, n_idx, mask_n, A2, dbias, bc_rows, bc_const


@triton.jit
def _segment_bc_chunk(bc_rows, bc_const, t64, mask_n, mask_t, s_BC_l, BC_VAR: tl.constexpr):
    """One chunk's B or C as a (1 or BLOCK_D, BLOCK_N, BLOCK_L) factor: the time-varying rows' steps, or the
    constant (BLOCK_D, BLOCK_N, 1)."""
    if BC_VAR:
        chunk = tl.load(bc_rows + t64[None, :] * s_BC_l, mask=mask_n[:, None] & mask_t[None, :],
                        other=0.0).to(tl.float32)[None, :, :]
    else:
        chunk = bc_const
    return chunk


@triton.jit
def _segment_store(ptr, value, seg, dim, N, d64, n_idx, mask_d, mask_n):
    """A segment reduction's (BLOCK_D, BLOCK_N) result into its (segments, dim, N) output."""
    tl.store(ptr + (seg.to(tl.int64) * dim + d64)[:, None] * N + n_idx[None, :], value,
             mask=mask_d[:, None] & mask_n[None, :])


@triton.jit
def _segment_end_state_kernel(u_ptr, delta_ptr, dbias_ptr, A_ptr, B_ptr, h_ptr, sums_ptr,
                              dim, seg_len, N, channels_per_group,
                              s_u_d, s_u_l, s_dt_d, s_dt_l, s_A_d, s_A_n, s_B_g, s_B_n, s_B_l,
                              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
                              HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_VAR: tl.constexpr):
    """The split scans' first pass as a reduction: h[s, d, n] = the state after segment s of channel d from a
    zero state, sum_t exp(A_n (S_end - S_t)) delta_t u_t B_t[n] with S the running sum of delta (after bias and
    softplus: _load_delta), and sums[s, d] = S_end (the segment's decay is exp(A S_end)).

    Chunk by chunk of BLOCK_L steps: h <- exp(A sum_chunk) h + sum_t exp(A rest_t) delta_t u_t B_t, rest_t the
    sum of the chunk's later steps' deltas (a reverse cumsum), h kept as per-column partial sums until the end.
    One exp per (channel, state, step), as the scan's recurrence has, but no sequential scan and no output.
    One batch row: u / delta (dim, L) and B (G, N, L), any strides, or B (dim, N) constant in time (B_VAR
    False); program (block of BLOCK_D channels of one B group, segment); (BLOCK_D, BLOCK_N, BLOCK_L) tiles."""
    seg, start, d64, mask_d, n_idx, mask_n, A2, dbias, B_rows, B_const = _segment_program(
        dim, seg_len, N, channels_per_group, A_ptr, s_A_d, s_A_n, dbias_ptr, B_ptr, s_B_g, s_B_n, s_B_l,
        BLOCK_D, BLOCK_N, HAS_DBIAS, B_VAR)
    dt_row = delta_ptr + d64[:, None] * s_dt_d + start * s_dt_l
    u_row = u_ptr + d64[:, None] * s_u_d + start * s_u_l
    # Per (channel, state, step column) partial sums, rescaled by each chunk's decay; reduced over the columns
    # once at the end (a reduction across threads per chunk cost more than the whole scan).
    acc = tl.zeros([BLOCK_D, BLOCK_N, BLOCK_L], dtype=tl.float32)
    total = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_loc = tl.arange(0, BLOCK_L)
    for t0 in range(0, seg_len, BLOCK_L):
        t_idx, mask_t, mask_dt, t64 = _chunk_steps(t0 // BLOCK_L, BLOCK_L, t_loc, seg_len, mask_d)
        delta, _raw = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        uu = tl.load(u_row + t64[None, :] * s_u_l, mask=mask_dt, other=0.0).to(tl.float32)
        rest = tl.cumsum(delta, axis=1, reverse=True) - delta
        chunk = tl.sum(delta, axis=1)
        Bt = _segment_bc_chunk(B_rows, B_const, t64, mask_n, mask_t, s_B_l, B_VAR)
        w = tl.exp2(A2[:, :, None] * rest[:, None, :])
        acc = acc * tl.exp2(A2 * chunk[:, None])[:, :, None] + w * Bt * (delta * uu)[:, None, :]
        total += chunk
    _segment_store(h_ptr, tl.sum(acc, axis=2), seg, dim, N, d64, n_idx, mask_d, mask_n)
    tl.store(sums_ptr + seg.to(tl.int64) * dim + d64, total, mask=mask_d)


@triton.jit
def _segment_start_grad_kernel(delta_ptr, dbias_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, g_ptr,
                               dim, seg_len, N, channels_per_group,
                               s_dt_d, s_dt_l, s_A_d, s_A_n, s_C_g, s_C_n, s_C_l, s_z_d, s_z_l, s_do_d, s_do_l,
                               BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
                               HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                               C_VAR: tl.constexpr):
    """The split backward's local pass as a reduction: g[s, d, n] = dL/d(the state entering segment s) with no
    gradient entering at the segment's end, sum_t exp(A_n S_t) C_t[n] dy_t, S_t the running sum of delta from
    the segment's start to step t inclusive and dy = dout silu(z) (_load_dy). The same number as the reverse
    recurrence dh_t = C_t dy_t + a_{t+1} dh_{t+1} gives, as one reduction over the segment: one exp per (channel,
    state, step) and no scan. One batch row: delta / z / dout (dim, L), C (G, N, L), any strides, or C (dim, N)
    constant in time (C_VAR False); program (block of BLOCK_D channels of one C group, segment)."""
    seg, start, d64, mask_d, n_idx, mask_n, A2, dbias, C_rows, C_const = _segment_program(
        dim, seg_len, N, channels_per_group, A_ptr, s_A_d, s_A_n, dbias_ptr, C_ptr, s_C_g, s_C_n, s_C_l,
        BLOCK_D, BLOCK_N, HAS_DBIAS, C_VAR)
    dt_row = delta_ptr + d64[:, None] * s_dt_d + start * s_dt_l
    z_row = z_ptr + d64[:, None] * s_z_d + start * s_z_l
    do_row = dout_ptr + d64[:, None] * s_do_d + start * s_do_l
    g = tl.zeros([BLOCK_D, BLOCK_N, BLOCK_L], dtype=tl.float32)  # per step column, reduced at the end
    before = tl.zeros([BLOCK_D], dtype=tl.float32)  # the deltas' sum over the segment's earlier chunks
    t_loc = tl.arange(0, BLOCK_L)
    for t0 in range(0, seg_len, BLOCK_L):
        t_idx, mask_t, mask_dt, t64 = _chunk_steps(t0 // BLOCK_L, BLOCK_L, t_loc, seg_len, mask_d)
        delta, _raw = _load_delta(dt_row, dbias, t_idx, s_dt_l, mask_dt, HAS_DBIAS, SOFTPLUS)
        dy = _load_dy(do_row, z_row, t64, s_do_l, s_z_l, mask_dt, HAS_Z)
        S = before[:, None] + tl.cumsum(delta, axis=1)
        Ct = _segment_bc_chunk(C_rows, C_const, t64, mask_n, mask_t, s_C_l, C_VAR)
        g += tl.exp2(A2[:, :, None] * S[:, None, :]) * Ct * dy[:, None, :]
        before += tl.sum(delta, axis=1)
    _segment_store(g_ptr, tl.sum(g, axis=2), seg, dim, N, d64, n_idx, mask_d, mask_n)

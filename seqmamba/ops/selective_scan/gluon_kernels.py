"""The forward of the selective scan in Gluon (Triton's explicit-layout dialect), for NVIDIA GPUs.

Same arguments, state slots, saved states and results as ``triton_kernels._selective_scan_fwd_kernel`` (FWD_CONFIG
``gluon``; the launch decides where: ``triton_launch._gluon_forward_ok``). What Gluon changes is the
layout, which Triton infers from the loads: 16-byte bf16 vectors give each lane runs of 8 steps, so a 512-step
chunk takes two warp scans per state component, and the masked store of the chunk's last state goes through
shared memory with a barrier. Here every (T,) vector of a chunk has one layout, ``T / (32 x warps)`` consecutive
steps per lane, so one warp scan per component and a plain predicated store; and bf16 B / C rows are read as
int32 pairs and widened by bit operations (``_bf16_row_pairs``). Compiled for sm_90 on a CPU
(``benchmarks/sass_scan.py --gluon-report``), the loop over state components issues 13.3 instructions per state
element at T = 512 against 17.1 for the Triton kernel (14.3 without the pairs), at 112 registers (Triton: 116).

Gluon kernels do not run under TRITON_INTERPRET: the GPU tests check this one against the float64 reference
(tests/test_gpu_ops.py), and a CPU test compiles it for sm_90.
"""
from __future__ import annotations

import os

import triton

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    HAVE_GLUON = True
except ImportError:  # an older Triton: the launch keeps the Triton kernel
    HAVE_GLUON = False

# Under TRITON_INTERPRET Gluon cannot decorate kernels (and could not run them): none are defined, AVAILABLE is False.
AVAILABLE = HAVE_GLUON and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and not triton.knobs.runtime.interpret

if AVAILABLE:
    # shared with the Triton kernels (Gluon inlines @triton.jit helpers)
    from .triton_kernels import _first_order_combine, _softplus

    @gluon.jit
    def _bf16_row_pairs(row_ptr, pair, mask_pair, layout: gl.constexpr):
        """A bf16 row's steps 2 pair .. 2 pair + 1 read as one int32 each and widened by bit operations (the low
        step shifted left 16, the high one with its low 16 bits cleared: one SHF / LOP3 each, where a bf16's
        conversion costs its high half a PRMT and a SHF), interleaved back into ``layout``."""
        pairs = gl.load(row_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + pair, mask=mask_pair, other=0)
        lo = (pairs << 16).to(gl.float32, bitcast=True)
        hi = (pairs & -65536).to(gl.float32, bitcast=True)
        both = gl.join(lo, hi)  # (T / 2, 2): a lane's pairs, then low / high
        return gl.convert_layout(gl.reshape(both, [both.shape[0] * 2]), layout, assert_trivial=True)

    @gluon.jit
    def _selective_scan_fwd_gluon(
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
        T: gl.constexpr, WARPS: gl.constexpr,
        HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_DBIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
        SAVE_STATES: gl.constexpr, SAVES_PER_CHUNK: gl.constexpr, BC_PAIRS: gl.constexpr = False,
    ):
        """One channel per program, T steps per chunk on WARPS warps; time-varying B / C (shared by groups of
        channels_per_group channels). state_ptr: two (batch, dim, N) fp32 slots state_slot elements apart, slot 0
        the initial state; chunk c reads slot c % 2 and writes the other (the last state ends in n_chunks % 2).
        With SAVE_STATES (the training forward) the state entering every T / SAVES_PER_CHUNK steps goes to
        chunk_states (batch, dim, n_saved, N), as the Triton kernel saves it for the backward."""
        layout: gl.constexpr = gl.BlockedLayout([T // (32 * WARPS)], [32], [WARPS], [0])
        d = gl.program_id(0).to(gl.int64)
        b = gl.program_id(1).to(gl.int64)
        t_loc = gl.arange(0, T, layout=layout)
        pair_layout: gl.constexpr = gl.BlockedLayout([T // (64 * WARPS)], [32], [WARPS], [0])
        p_loc = gl.arange(0, T // 2, layout=pair_layout)
        is_first = t_loc == 0
        is_last = t_loc == T - 1
        group = d // channels_per_group
        u_row = u_ptr + b * s_u_b + d * s_u_d
        dt_row = delta_ptr + b * s_dt_b + d * s_dt_d
        z_row = z_ptr + b * s_z_b + d * s_z_d
        o_row = out_ptr + b * s_o_b + d * s_o_d
        B_row = B_ptr + b * s_B_b + group * s_B_g
        C_row = C_ptr + b * s_C_b + group * s_C_g
        state_row = state_ptr + (b * dim + d) * N
        chunk_row = chunk_states_ptr + (b * dim + d) * n_saved * N
        T_SAVE: gl.constexpr = T // SAVES_PER_CHUNK
        Dv = 0.0
        if HAS_D:
            Dv = gl.load(D_ptr + d)
        dbias = 0.0
        if HAS_DBIAS:
            dbias = gl.load(dbias_ptr + d)
        for c in range(0, n_chunks):
            state_in = state_row + (c % 2) * state_slot
            state_out = state_row + ((c + 1) % 2) * state_slot
            t = c * T + t_loc
            mask = t < L
            t64 = t.to(gl.int64)
            pair = c * (T // 2) + p_loc
            mask_pair = pair < L // 2
            u = gl.load(u_row + t64 * s_u_l, mask=mask, other=0.0).to(gl.float32)
            delta = gl.load(dt_row + t64 * s_dt_l, mask=mask, other=0.0).to(gl.float32)
            if HAS_DBIAS:
                delta = delta + dbias
            if SOFTPLUS:
                delta = _softplus(delta)
            # padded steps must be the identity (a = 1, b = 0): the chunk's last step then holds the true state
            delta = gl.where(mask, delta, 0.0)
            delta_u = delta * u
            y = Dv * u  # u is dead before the loop over N
            for n in range(0, N):
                A2 = gl.load(A_ptr + d * s_A_d + n * s_A_n) * 1.4426950408889634
                if BC_PAIRS:
                    Bn = _bf16_row_pairs(B_row + n * s_B_n, pair, mask_pair, layout)
                    Cn = _bf16_row_pairs(C_row + n * s_C_n, pair, mask_pair, layout)
                else:
                    Bn = gl.load(B_row + n * s_B_n + t64 * s_B_l, mask=mask, other=0.0).to(gl.float32)
                    Cn = gl.load(C_row + n * s_C_n + t64 * s_C_l, mask=mask, other=0.0).to(gl.float32)
                h_prev = gl.load(state_in + n)
                if SAVE_STATES:
                    gl.store(chunk_row + (c * SAVES_PER_CHUNK) * N + n, h_prev)
                a = gl.exp2(delta * A2)
                x = delta_u * Bn
                x = gl.where(is_first, x + a * h_prev, x)
                _, h = gl.associative_scan((a, x), 0, _first_order_combine)
                y += h * Cn
                # the chunk's last state, stored by the thread holding it (same layout: no data movement)
                gl.store(state_out + n + t_loc * 0, h, mask=is_last)
                if SAVE_STATES:  # the backward walks shorter chunks: the states entering those too
                    for k in gl.static_range(1, SAVES_PER_CHUNK):
                        saved = c * SAVES_PER_CHUNK + k
                        gl.store(chunk_row + saved * N + n + t_loc * 0, h,
                                 mask=(t_loc == k * T_SAVE - 1) & (saved < n_saved))
            if HAS_Z:
                zv = gl.load(z_row + t64 * s_z_l, mask=mask, other=0.0).to(gl.float32)
                y = y * zv / (1.0 + gl.exp(-zv))
            gl.store(o_row + t64 * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)
            # the state written above is read by other threads in the next chunk
            gl.thread_barrier()

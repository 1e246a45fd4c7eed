"""Fast pure-PyTorch selective scan for the CPU: chunked over time, one kernel launch per step.

Why this shape. The sequential reference spends almost all its time in the dispatcher: every time
step issues ~7 small ops on a (batch, dim, N) state. Parallel-scan rewrites that materialise the
whole (batch, dim, L, N) state are memory-bound and barely beat the loop on a CPU. This path
keeps the loop (the recurrence is cheap: one multiply-add per state element) but gives it exactly
ONE op per step, and moves everything else into a few bulk ops per chunk of T steps:

  per chunk, time-major buffers of shape (T, batch, dim, N), a few MB each, reused by every chunk:
    decay[t]    = exp(delta_t A)                         one mul + one exp_ for the whole chunk
    state[t+1]  = delta_t u_t B_t                        one mul for the whole chunk
    state[t+1] += decay[t] * state[t]   (t = 0 .. T-1)   one addcmul_ per step (state[0]: carried in)
    y           = sum_N state[1:] * C                    one mul and one sum for the whole chunk

Only the chunk-boundary states are kept for the backward, which recomputes each chunk's states,
unless all of them fit in SAVE_STATES_BYTES (small models, short sequences: the CPU tasks' defaults):
then the forward keeps every chunk's decays and states and the backward skips the recompute. The
backward runs the adjoint recurrence in reverse, again one addcmul_ per step:
    g_t = C_t dy_t + decay_{t+1} g_{t+1}          (g_t = dLoss/dh_t)
then every parameter gradient is a bulk contraction over the chunk.

Whole-length per-channel tensors (u, delta, y, their gradients) stay (batch, dim, L) and are read
per chunk through strided time-major views: transposing them whole costs more than that.

B and C come in three layouts. "shared" (batch, N, L) is treated as "grouped" (batch, G, N, L)
with G = 1, so there are two code paths: varying (grouped) and constant (dim, N).
Math is done in fp32 (float64 if an input is float64, so gradcheck can run), returned in u's dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..buffers import empty

# Target size of one per-chunk (T, batch, dim, N) buffer (the workspace holds 2 in the forward, 4 in
# the backward). Bigger chunks amortise the ~10 bulk ops each chunk costs (and their thread fork/join);
# at (2, 256, 16), L = 4096, 1 and 2 threads, 1 MB was 20-35% slower than 4 MB (= 128 steps), 8 MB
# ~5% faster, 16 MB slower again. Tests shrink it to force many chunks.
CHUNK_BYTES = 4 * 1024 * 1024
# With autograd recording, a call whose decays and states for the whole length (2 x L x batch x dim x N
# elements) fit in this many bytes keeps them from the forward instead of recomputing them in the backward:
# the recompute (a mul, an exp and a mul per chunk, one addcmul_ per step) is about a third of the backward.
# Beyond it, memory stays at the chunk-boundary states. The budget is per call, so a model holds up to n_layer x
# this much more until its backward; 0 turns the saving off. It covers the default CPU tasks (induction_heads:
# 34 MB a layer; selective_copying: 85 MB). BENCHMARKS.md "CPU selective scan": with it and the contraction below,
# their training steps ran 1.12-1.30x and 1.18x faster (2-core AMD EPYC, 2 threads); selective_copying under a
# 64 MB budget (recomputing) gained nothing.
SAVE_STATES_BYTES = 128 * 1024 * 1024


def default_chunk_size(batch: int, dim: int, d_state: int, L: int, element_size: int = 4) -> int:
    """Steps per chunk such that one (T, batch, dim, N) buffer is about CHUNK_BYTES."""
    per_step = max(1, batch * dim * d_state * element_size)
    return max(1, min(max(L, 1), CHUNK_BYTES // per_step))


class _BCLayout:
    """B or C moved to time-major compute layout, plus the contractions the scan needs on it.

    varying: stored as (L, batch, G, N); the state (T, batch, dim, N) is viewed (T, batch, G, dim/G, N).
    constant: stored as (dim, N), the same for every step and batch element.
    """

    def __init__(self, X: torch.Tensor, batch: int, dim: int, dtype: torch.dtype):
        self.input_shape = X.shape
        self.input_dtype = X.dtype
        self.constant = X.dim() == 2
        if self.constant:
            self.groups = 1
            self.data = X.to(dtype).contiguous()  # (dim, N)
        else:
            if X.dim() == 3:  # (batch, N, L) is one group shared by all channels
                X = X.unsqueeze(1)
            self.groups = X.shape[1]
            self.data = X.to(dtype).permute(3, 0, 1, 2).contiguous()  # (L, batch, G, N)
        self.batch, self.dim = batch, dim
        self.per_group = dim // self.groups

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        return self.data if self.constant else self.data[start:stop]

    def broadcast(self, chunk: torch.Tensor) -> torch.Tensor:
        """The chunk shaped to broadcast against a state viewed by `state_view`."""
        return chunk if self.constant else chunk.unsqueeze(3)  # (T, b, G, 1, N)

    def state_view(self, S: torch.Tensor) -> torch.Tensor:
        """(T, batch, dim, N) -> a view that broadcasts against `broadcast(chunk)`."""
        if self.constant:
            return S
        T, N = S.shape[0], S.shape[-1]
        return S.view(T, self.batch, self.groups, self.per_group, N)

    def vector_view(self, v: torch.Tensor) -> torch.Tensor:
        """(T, batch, dim) -> a view that broadcasts against `state_view`."""
        if self.constant:
            return v.unsqueeze(-1)
        T = v.shape[0]
        return v.view(T, self.batch, self.groups, self.per_group, 1)

    def contract_state(self, S: torch.Tensor, chunk: torch.Tensor, out: torch.Tensor,
                       scratch: torch.Tensor) -> torch.Tensor:
        """out[t, b, d] = sum_n S[t, b, d, n] * X[t, b, group(d), n]   (out: (T, batch, dim)); scratch: a
        (T, batch, dim, N) buffer for the product.

        A product into scratch, then a sum over N, rather than a batched matrix-vector product: torch.bmm with
        (dim x N) @ (N x 1) blocks ran on one thread, and at 2 threads took 2x the time (1.07-1.11 ms against
        0.51-0.56 at (T, batch, dim) = (16, 32, 128), (128, 2, 256), (8, 64, 128), N 16; BENCHMARKS.md "CPU
        selective scan").
        """
        torch.mul(self.state_view(S), self.broadcast(chunk), out=self.state_view(scratch))
        return torch.sum(scratch, dim=-1, out=out)

    def grad_from(self, S: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Gradient of X from terms S[t, b, d, n] * v[t, b, d] * X[.., n], summed over what X is shared by.

        S: (T, batch, dim, N), v: (T, batch, dim). constant -> (dim, N), summed over time and batch;
        varying -> (T, batch, G, N), summed over the channels of each group.
        """
        T, N = S.shape[0], S.shape[-1]
        if self.constant:
            return (S * v.unsqueeze(-1)).sum(dim=(0, 1))
        rows = T * self.batch * self.groups
        out = torch.bmm(v.reshape(rows, 1, self.per_group), S.view(rows, self.per_group, N))
        return out.view(T, self.batch, self.groups, N)

    def add_chunk_grad(self, grad: torch.Tensor, chunk_grad: torch.Tensor, start: int, stop: int) -> None:
        """Adds one chunk's `grad_from` to the whole gradient (compute layout): constant X sums over
        chunks, varying X owns steps [start, stop)."""
        if self.constant:
            grad += chunk_grad
        else:
            grad[start:stop] = chunk_grad

    def to_input_layout(self, grad_time_major: torch.Tensor) -> torch.Tensor:
        """Gradient in compute layout -> the caller's shape and dtype."""
        if self.constant:
            return grad_time_major.to(self.input_dtype)
        grad = grad_time_major.permute(1, 2, 3, 0)  # (batch, G, N, L)
        if len(self.input_shape) == 3:
            grad = grad.squeeze(1)
        return grad.to(self.input_dtype).contiguous()


def _steps(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(batch, dim, L) -> time-major view (T, batch, dim) of steps [start, stop), no copy.

    Whole-length per-channel tensors stay in the caller's (batch, dim, L) layout: transposing all of
    them up front costs more than reading each chunk through a strided view.
    """
    return x[:, :, start:stop].permute(2, 0, 1)


def _compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """fp32, or float64 when any input is float64 (gradcheck)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


class _ChunkWorkspace:
    """Per-chunk buffers, allocated once and reused by every chunk.

    The per-step views are made once here: `unbind` costs ~0.5 us a row, an eighth of a step.
    """

    def __init__(self, T: int, batch: int, dim: int, N: int, dtype: torch.dtype, adjoint: bool,
                 device: torch.device, states: bool = True):
        if states:  # (the backward of a call that saved its states reads theirs instead)
            self.decay = empty((T, batch, dim, N), device, dtype)  # exp(delta_t A)
            self.state = empty((T + 1, batch, dim, N), device, dtype)  # [0]: carried in; [t+1]: after step t
            self._decays = self.decay.unbind(0)
            self._states = self.state.unbind(0)
        self.per_channel = empty((T, batch, dim), device, dtype)  # one contraction over N
        if adjoint:
            self.adjoint = empty((T, batch, dim, N), device, dtype)  # dLoss/dh_t
            self.work = empty((T, batch, dim, N), device, dtype)
            self._adjoints = self.adjoint.unbind(0)

    def run_states(self, T, h0, delta_steps, delta_u_steps, A, B_layout, B_chunk):
        """States of one chunk of T steps starting from h0: returns (decay[:T], state[:T+1])."""
        decay, state = self.decay[:T], self.state[: T + 1]
        torch.mul(delta_steps.unsqueeze(-1), A, out=decay)
        decay.exp_()
        state[0].copy_(h0)
        torch.mul(
            B_layout.vector_view(delta_u_steps), B_layout.broadcast(B_chunk), out=B_layout.state_view(state[1:])
        )
        states, decays = self._states, self._decays
        for t in range(T):  # the only per-step work: one op on a (batch, dim, N) state
            states[t + 1].addcmul_(decays[t], states[t])
        return decay, state

    def run_adjoint(self, T, carry, dy_steps, C_layout, C_chunk, decay):
        """g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}, with g_{T-1} also receiving `carry`; ``decay``: the
        chunk's (T, batch, dim, N) decays (from `run_states`, or kept by the forward)."""
        adjoint = self.adjoint[:T]
        torch.mul(C_layout.vector_view(dy_steps), C_layout.broadcast(C_chunk), out=C_layout.state_view(adjoint))
        if carry is not None:
            adjoint[T - 1].add_(carry)
        adjoints, decays = self._adjoints, decay.unbind(0)
        for t in range(T - 2, -1, -1):
            adjoints[t].addcmul_(decays[t + 1], adjoints[t + 1])
        return adjoint


class _ChunkedSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, chunk_size, save_states):
        ctx.set_materialize_grads(False)
        batch, dim, L = u.shape
        N = A.shape[1]
        dtype = _compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
        T_max = chunk_size or default_chunk_size(batch, dim, N, L, torch.finfo(dtype).bits // 8)
        num_chunks = -(-L // T_max)

        u32 = u.to(dtype)
        delta_pre = delta.to(dtype)
        if delta_bias is not None:
            delta_pre = delta_pre + delta_bias.to(dtype)[:, None]
        delta32 = F.softplus(delta_pre) if delta_softplus else delta_pre
        delta_u = delta32 * u32
        A32 = A.to(dtype).contiguous()
        D32 = D.to(dtype) if D is not None else None
        B_layout = _BCLayout(B, batch, dim, dtype)
        C_layout = _BCLayout(C, batch, dim, dtype)

        device = u32.device
        h = initial_state.to(dtype) if initial_state is not None else torch.zeros(batch, dim, N, dtype=dtype,
                                                                                   device=device)
        y = empty((batch, dim, L), device, dtype)
        # the state entering each chunk, for the backward's recompute (not kept when no backward will run); also when
        # every chunk's states are kept below, for a second backward through a retained graph (the first frees them)
        boundaries = empty((num_chunks, batch, dim, N), device, dtype) if save_states else None
        # every chunk's (decay, state) for the backward, each chunk in its own workspace (see SAVE_STATES_BYTES)
        saved = [] if save_states and 2 * (L + 1) * batch * dim * N * u32.element_size() <= SAVE_STATES_BYTES else None
        if L > 0:
            scratch = empty((min(T_max, L), batch, dim, N), device, dtype)  # contract_state's product
            if saved is None:  # one workspace for every chunk
                ws = _ChunkWorkspace(min(T_max, L), batch, dim, N, dtype, adjoint=False, device=device)
        for index in range(num_chunks):
            start, stop = index * T_max, min((index + 1) * T_max, L)
            T = stop - start
            if saved is not None:
                ws = _ChunkWorkspace(T, batch, dim, N, dtype, adjoint=False, device=device)
            if boundaries is not None:
                boundaries[index].copy_(h)
            _, state = ws.run_states(
                T, h, _steps(delta32, start, stop), _steps(delta_u, start, stop),
                A32, B_layout, B_layout.chunk(start, stop),
            )
            y_steps = C_layout.contract_state(state[1:], C_layout.chunk(start, stop), ws.per_channel[:T],
                                              scratch[:T])
            y[:, :, start:stop].copy_(y_steps.permute(1, 2, 0))
            h = state[T]
            if saved is not None:
                saved.append((ws.decay, ws.state))
        last_state = h.clone()  # h is a view into the workspace (or the caller's initial_state)

        if D32 is not None:
            y.addcmul_(u32, D32[:, None])
        z32 = z.to(dtype) if z is not None else None
        out = y * F.silu(z32) if z is not None else y

        ctx.delta_softplus = delta_softplus
        ctx.T_max = T_max
        # Intermediate buffers of this call only (no input or output aliases them): kept on ctx, not through
        # save_for_backward, which exists to check inputs and outputs for in-place changes.
        ctx.saved_chunks = saved
        ctx.layouts = (B_layout, C_layout)
        ctx.input_dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
        # B, C (in compute layout) go through save_for_backward like every other tensor, so autograd
        # checks them for in-place modification; the layout objects keep only their metadata.
        ctx.save_for_backward(
            u32, delta_pre if delta_softplus else None, delta32, delta_u, A32, D32, z32,
            y if z is not None else None, boundaries, B_layout.data, C_layout.data,
        )
        B_layout.data = C_layout.data = None
        return out.to(u.dtype), last_state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_last_state):
        u32, delta_pre, delta32, delta_u, A32, D32, z32, y, boundaries, B_data, C_data = ctx.saved_tensors
        B_layout, C_layout = ctx.layouts
        B_layout.data, C_layout.data = B_data, C_data
        batch, dim, L = u32.shape
        N = A32.shape[1]
        dtype = delta32.dtype
        T_max = ctx.T_max
        needs = ctx.needs_input_grad  # u, delta, A, B, C, D, z, delta_bias, initial_state, -, -, -
        input_dtypes = ctx.input_dtypes

        device = u32.device
        grad_out = grad_out.to(dtype) if grad_out is not None else torch.zeros(batch, dim, L, dtype=dtype,
                                                                               device=device)
        # dy: gradient w.r.t. y + D u, i.e. before the silu(z) gate.
        grad_z = None
        if z32 is not None:
            z_sigmoid = torch.sigmoid(z32)
            dy = grad_out * z32 * z_sigmoid
            if needs[6]:
                silu_slope = z_sigmoid * (1 + z32 * (1 - z_sigmoid))
                grad_z = (grad_out * y * silu_slope).to(input_dtypes[6])
        else:
            dy = grad_out

        grad_delta = torch.zeros(batch, dim, L, dtype=dtype, device=device)  # w.r.t. delta after bias and softplus
        grad_u = dy * D32[:, None] if D32 is not None else torch.zeros(batch, dim, L, dtype=dtype, device=device)
        grad_A = torch.zeros_like(A32)
        grad_B = torch.zeros_like(B_layout.data)
        grad_C = torch.zeros_like(C_layout.data)

        # dLoss/dh after the current chunk's last step, from the later chunks (or from last_state).
        carry = grad_last_state.to(dtype) if grad_last_state is not None else None
        saved, ctx.saved_chunks = ctx.saved_chunks, None
        if L > 0:
            ws = _ChunkWorkspace(min(T_max, L), batch, dim, N, dtype, adjoint=True, device=device,
                                 states=saved is None)
        for index in reversed(range(boundaries.shape[0])):
            start, stop = index * T_max, min((index + 1) * T_max, L)
            T = stop - start
            delta_steps, delta_u_steps, dy_steps = (_steps(x, start, stop) for x in (delta32, delta_u, dy))
            B_chunk, C_chunk = B_layout.chunk(start, stop), C_layout.chunk(start, stop)
            if saved is not None:
                decay, state = saved.pop()  # this chunk's, kept by the forward (freed as the backward goes)
            else:
                decay, state = ws.run_states(T, boundaries[index], delta_steps, delta_u_steps, A32, B_layout,
                                             B_chunk)
            adjoint = ws.run_adjoint(T, carry, dy_steps, C_layout, C_chunk, decay)
            carry = decay[0] * adjoint[0]

            # y_t = C_t . h_t
            grad_C_chunk = C_layout.grad_from(state[1:], dy_steps)
            # h_t receives (delta_t u_t) B_t
            grad_B_chunk = B_layout.grad_from(adjoint, delta_u_steps)
            B_layout.add_chunk_grad(grad_B, grad_B_chunk, start, stop)
            C_layout.add_chunk_grad(grad_C, grad_C_chunk, start, stop)
            # (ws.work is free until grad_delta_A below)
            grad_delta_u = B_layout.contract_state(adjoint, B_chunk, ws.per_channel[:T], ws.work[:T]).permute(
                1, 2, 0)
            grad_delta[:, :, start:stop].addcmul_(grad_delta_u, u32[:, :, start:stop])
            grad_u[:, :, start:stop].addcmul_(grad_delta_u, delta32[:, :, start:stop])
            # h_t receives exp(delta_t A) h_{t-1}: dLoss/d(delta_t A) = g_t h_{t-1} exp(delta_t A)
            # (the adjoint and per_channel buffers are consumed by now and serve as scratch)
            grad_delta_A = ws.work[:T]
            torch.mul(adjoint, state[:T], out=grad_delta_A)
            grad_delta_A.mul_(decay)
            grad_A += torch.mul(grad_delta_A, delta_steps.unsqueeze(-1), out=adjoint).sum(dim=(0, 1))
            grad_delta_A.mul_(A32)
            grad_delta[:, :, start:stop] += torch.sum(grad_delta_A, dim=-1, out=ws.per_channel[:T]).permute(1, 2, 0)

        grad_initial_state = None
        if needs[8]:
            grad_initial_state = carry if carry is not None else torch.zeros(batch, dim, N, dtype=dtype, device=device)
            grad_initial_state = grad_initial_state.to(input_dtypes[8])
        if ctx.delta_softplus:
            grad_delta.mul_(torch.sigmoid(delta_pre))
        return (
            grad_u.to(input_dtypes[0]) if needs[0] else None,
            grad_delta.to(input_dtypes[1]) if needs[1] else None,
            grad_A.to(input_dtypes[2]) if needs[2] else None,
            B_layout.to_input_layout(grad_B) if needs[3] else None,
            C_layout.to_input_layout(grad_C) if needs[4] else None,
            (dy * u32).sum(dim=(0, 2)).to(input_dtypes[5]) if needs[5] else None,
            grad_z,
            grad_delta.sum(dim=(0, 2)).to(input_dtypes[7]) if needs[7] else None,
            grad_initial_state,
            None,
            None,
            None,
        )


# Not traced by torch.compile (a deliberate graph break: the scan runs eagerly between compiled graphs). Traced,
# its per-step loop unrolls into L ops per chunk, and its autograd.Function frees the forward's saved chunks as the
# backward goes (a side effect Dynamo refuses, after tracing the whole unrolled forward first).
@torch.compiler.disable
def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Optional[torch.Tensor] = None,
    chunk_size: Optional[int] = None,
):
    """Same contract as `selective_scan_ref` (arguments already validated by the interface).

    chunk_size: steps per chunk; by default chosen so one (chunk, batch, dim, N) buffer is about
    CHUNK_BYTES. Tests pass a small value to exercise the multi-chunk paths at tiny shapes.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"selective_scan_torch: chunk_size must be >= 1, got {chunk_size}")
    # Keep the chunk states for the backward only when one will run (autograd recording, an input needing grad).
    save_states = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    out, last_state = _ChunkedSelectiveScan.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), chunk_size, save_states
    )
    return (out, last_state) if return_last_state else out

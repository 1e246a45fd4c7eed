"""Autograd layer of the Triton selective scan: in eager mode a plain autograd.Function, under torch.compile the
custom ops ``seqmamba::selective_scan_fwd`` / ``_bwd`` (traced without graph breaks; the dispatcher's round trips
cost host time at small shapes, so eager calls skip them). Launches: triton_launch.py."""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import records_autograd
from .triton_launch import (_empty_like_layout, _input_grads_like, backward_chunk_len, backward_dout,
                            inference_split_segments, is_block_layout, saved_states_shape, scan_backward,
                            scan_backward_split, scan_backward_tail, scan_forward, scan_forward_split,
                            scan_forward_split_train, scan_forward_tail, split_segments_train, tail_start)

# torch.library custom ops, so torch.compile traces through the scan without graph breaks.

@torch.library.custom_op("seqmamba::selective_scan_fwd", mutates_args=())
def _selective_scan_fwd_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    delta_softplus: bool, initial_state: Optional[torch.Tensor], save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out, last_state, chunk_states = scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                                 save_states)
    if last_state.storage_offset():  # one of scan_forward's two state slots; the fake (what Inductor plans with)
        last_state = last_state.clone()  # has no storage offset
    return out, last_state, chunk_states


@_selective_scan_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, save_states):
    batch, dim, _ = u.shape
    N = A.shape[1]
    out = _empty_like_layout(u, is_block_layout(u, delta, z))
    last_state = u.new_empty((batch, dim, N), dtype=torch.float32)
    if save_states:
        chunk_states = u.new_empty(saved_states_shape(u, delta, z, A, B, C), dtype=torch.float32)
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


def _gradients(ctx, dout, dlast, backward_fn, states=None):
    """The autograd backward of the scan, shared by the custom op (torch.compile) and the eager Function.
    ``states``: what ``backward_fn`` takes in place of the saved chunk states (the training split's)."""
    u, delta, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
    if states is None and chunk_states.dim() != 4:
        raise RuntimeError("selective_scan: backward needs the chunk states; the forward ran without grad")
    chunk_states = chunk_states if states is None else states
    dout = backward_dout(u, delta, z, dout)
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
        # few programs for the GPU (small batch x channels, long L): L split across programs, forward and backward
        segments = split_segments_train(u, B, C, backward_chunk_len(u, delta, z, A, B, C)) if save_states else 1
        start = tail_start(u, delta, z, A, B, C) if save_states and segments == 1 else 0
        # A forward of several launches keeps what its backward needs in ctx.launches: (backward, saved states)
        ctx.launches = None
        if segments > 1:
            out, last_state, saved = scan_forward_split_train(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                              initial_state, segments)
            ctx.launches = (scan_backward_split, saved)
        elif start:  # whole chunks, then a short tail: two launches (BWD_CONFIG tail_launch)
            out, last_state, saved = scan_forward_tail(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                       initial_state, start)
            ctx.launches = (scan_backward_tail, saved)
        if ctx.launches is not None:
            chunk_states = u.new_empty((1,), dtype=torch.float32)  # the saved states are in ctx.launches
        else:
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
        if ctx.launches is not None:
            (backward, saved), ctx.launches = ctx.launches, None  # the saved states are freed with the gradients
            return _gradients(ctx, dout, dlast, backward, states=saved)
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
        segments = inference_split_segments(u, delta, A, z)
        if segments > 1:  # few programs for the GPU: L split across programs
            out, last_state = scan_forward_split(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                 initial_state, segments)
        else:
            out, last_state, _ = scan_forward(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                              initial_state, False)
    return (out, last_state) if return_last_state else out

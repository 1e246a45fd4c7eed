"""The Mamba block's inner path in training as one autograd node (as mamba_ssm's ``mamba_inner_fn``): from the x / z
halves of in_proj's output to the scan's output, i.e. causal conv + SiLU, x_proj, dt_proj and the selective scan,
with Triton kernels, channels-first (L contiguous).

Why one node: as separate autograd nodes, the backward formed two sums and two concatenations that one node avoids.
- The gradient of in_proj's output was ``cat(dx, dz)`` of the conv's and the scan's gradients, a copy of
  (batch, 2 d_inner, L). Here the scan writes dz and the conv's backward dx straight into the halves of one buffer.
- The conv output's gradient was du (scan) + x_proj's input gradient, an elementwise pass. Here x_proj's backward
  GEMM adds into du (``baddbmm_``, beta 1).
- x_proj's output gradient was ``cat(d dt, dB, dC)``. Here the scan casts dB / dC into its rows and dt_proj's
  backward writes d dt into the rest: for a dt_rank of at most 16 as one pass over ddelta that also sums dt_proj's
  weight gradient (ops/channel_linear.py: 1.8-2.2x the two GEMMs and batch sum it replaces at the paper's
  selective-copying shape), otherwise by the GEMMs.
The arithmetic is that of the separate ops (the same kernels and GEMMs in the same dtypes) except for two sums kept
in fp32 longer: du inside x_proj's backward GEMM rather than after it in bf16, and dt_proj's weight gradient over the
batch without a 16-bit rounding per batch row.

Eager mode runs a plain autograd.Function; under torch.compile the custom ops ``seqmamba::mamba_inner_fwd`` /
``_bwd`` (opaque to Inductor, no graph break). ``applies`` says when the block may use it.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import buffers
from .backend import records_autograd

# The Triton modules are imported where used, as the rest of seqmamba.ops does: importing the Mamba block does not
# import Triton.

#: whether the Mamba block's training forward on the Triton backend runs its inner path as this one node.
ENABLED = True


@torch.compiler.assume_constant_result
def applies(batch: int, d_inner: int, L: int, device: torch.device) -> bool:
    """Whether the inner node serves this training shape: ENABLED, and the Triton scan would run as one launch per
    pass (no L split across programs for a small batch x channels, no tail launch), which is what it calls."""
    from .selective_scan.triton_launch import tail_launch_on, train_split_rule
    return ENABLED and not tail_launch_on() and train_split_rule(batch, d_inner, L, device) <= 1


def _rows(x_dbl: torch.Tensor, dt_rank: int, d_state: int):
    """dt, B, C: row blocks of x_proj's (batch, dt_rank + 2 N, L) output."""
    return (x_dbl[:, :dt_rank], x_dbl[:, dt_rank:dt_rank + d_state], x_dbl[:, dt_rank + d_state:])


def _forward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, dt_rank: int, d_state: int, save: bool):
    """(y, x_conv, x_dbl, delta, chunk_states); the GEMMs in xz's dtype (autocast's, as the separate ops ran)."""
    from . import channel_linear
    from .causal_conv1d.triton_kernels import _conv_forward
    from .selective_scan.triton_launch import scan_forward
    batch, width2, L = xz.shape
    d_inner = width2 // 2
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    x_conv = _conv_forward(x, conv_w, conv_b, True)
    dtype = x_conv.dtype
    x_dbl = torch.bmm(x_proj_w.to(dtype).expand(batch, -1, -1), x_conv)
    dt, B, C = _rows(x_dbl, dt_rank, d_state)
    if channel_linear.FORWARD and channel_linear.applies(dt_proj_w, dt):
        delta = channel_linear.linear_forward(dt_proj_w, dt)
    else:
        delta = torch.bmm(dt_proj_w.to(dtype).expand(batch, -1, -1), dt)
    y, _, chunk_states = scan_forward(x_conv, delta, A, B, C, D, z, dt_bias, True, None, save)
    return y, x_conv, x_dbl, delta, chunk_states


def _weight_grad(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum over the batch of g @ x^T, accumulated in fp32, in the weight's dtype."""
    return torch.bmm(g, x.transpose(1, 2)).sum(0, dtype=torch.float32).to(weight.dtype)


def _backward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, x_conv, x_dbl, delta, chunk_states, dy,
              dt_rank: int, d_state: int):
    """(dxz, dconv_w, dconv_b, dx_proj_w, ddt_proj_w, dA, dD, ddt_bias): see the module docstring for where each
    gradient is written."""
    from . import channel_linear
    from .causal_conv1d.triton_kernels import _conv_gradients
    from .selective_scan.triton_launch import _input_grads_like, backward_dout, scan_backward
    batch, width2, L = xz.shape
    d_inner = width2 // 2
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    dt, B, C = _rows(x_dbl, dt_rank, d_state)
    dxz = buffers.empty_like(xz, memory_format=torch.contiguous_format)
    dx_dbl = buffers.empty_like(x_dbl, memory_format=torch.contiguous_format)
    d_dt, dB, dC = _rows(dx_dbl, dt_rank, d_state)
    du, ddelta, _ = _input_grads_like(x_conv, delta, None)
    dy = backward_dout(x_conv, delta, z, dy)
    du, ddelta, dA, _, _, dD, _, ddt_bias, _ = scan_backward(
        x_conv, delta, A, B, C, D, z, dt_bias, True, chunk_states, dy, None,
        grads_out=(du, ddelta, dxz[:, d_inner:], dB, dC))
    dtype = x_conv.dtype
    if channel_linear.applies(dt_proj_w, ddelta):
        _, ddt_proj_w = channel_linear.linear_backward(dt_proj_w, ddelta, dt, dx=d_dt)
    else:
        torch.bmm(dt_proj_w.to(dtype).t().expand(batch, -1, -1), ddelta, out=d_dt)
        ddt_proj_w = _weight_grad(ddelta, dt, dt_proj_w)
    du.baddbmm_(x_proj_w.to(dtype).t().expand(batch, -1, -1), dx_dbl)  # the conv output's whole gradient
    dx_proj_w = _weight_grad(dx_dbl, x_conv, x_proj_w)
    _, dconv_w, dconv_b = _conv_gradients(x, conv_w, conv_b, True, du, dx_out=dxz[:, :d_inner])
    return dxz, dconv_w, dconv_b, dx_proj_w, ddt_proj_w, dA, dD, ddt_bias


def _setup_context(ctx, inputs, output):
    """What both autograd paths (the eager Function, the custom op) keep for the backward."""
    xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, dt_rank, d_state = inputs
    _, x_conv, x_dbl, delta, chunk_states = output
    ctx.save_for_backward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, x_conv, x_dbl, delta,
                          chunk_states)
    ctx.ranks = (dt_rank, d_state)
    ctx.has_conv_bias = conv_b is not None


def _input_grads(ctx, grads):
    """_backward's gradients as autograd takes them: None for an absent conv bias and for the two ranks."""
    dconv_b = grads[2] if ctx.has_conv_bias else None
    return (*grads[:2], dconv_b, *grads[3:], None, None)


class _MambaInnerEager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = _forward(*inputs, True)
        _setup_context(ctx, inputs, output)
        return output[0]

    @staticmethod
    def backward(ctx, dy):
        return _input_grads(ctx, _backward(*ctx.saved_tensors, dy, *ctx.ranks))


@torch.library.custom_op("seqmamba::mamba_inner_fwd", mutates_args=())
def _mamba_inner_fwd_op(xz: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor],
                        x_proj_w: torch.Tensor, dt_proj_w: torch.Tensor, A: torch.Tensor, D: torch.Tensor,
                        dt_bias: torch.Tensor, dt_rank: int, d_state: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, dt_rank, d_state, True)


@_mamba_inner_fwd_op.register_fake
def _(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, dt_rank, d_state):
    from .selective_scan.triton_launch import saved_states_shape
    batch, width2, L = xz.shape
    d_inner = width2 // 2
    x_conv, delta = xz.new_empty((batch, d_inner, L)), xz.new_empty((batch, d_inner, L))
    x_dbl = xz.new_empty((batch, x_proj_w.shape[0], L))
    _, B, C = _rows(x_dbl, dt_rank, d_state)
    chunk_states = xz.new_empty(saved_states_shape(x_conv, delta, xz[:, d_inner:], A, B, C), dtype=torch.float32)
    return xz.new_empty((batch, d_inner, L)), x_conv, x_dbl, delta, chunk_states


@torch.library.custom_op("seqmamba::mamba_inner_bwd", mutates_args=())
def _mamba_inner_bwd_op(xz: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor],
                        x_proj_w: torch.Tensor, dt_proj_w: torch.Tensor, A: torch.Tensor, D: torch.Tensor,
                        dt_bias: torch.Tensor, x_conv: torch.Tensor, x_dbl: torch.Tensor, delta: torch.Tensor,
                        chunk_states: torch.Tensor, dy: torch.Tensor, dt_rank: int, d_state: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                   torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _backward(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, x_conv, x_dbl, delta, chunk_states,
                      dy, dt_rank, d_state)
    # a custom op's outputs must not share storage with each other (the conv's dweight / dbias come from one zeroed
    # buffer, dA / dD / ddt_bias from another)
    return tuple(g.clone() if i in (1, 2, 5, 6, 7) else g for i, g in enumerate(grads))


@_mamba_inner_bwd_op.register_fake
def _(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, x_conv, x_dbl, delta, chunk_states, dy, dt_rank,
      d_state):
    f32 = torch.float32
    return (xz.new_empty(xz.shape), conv_w.new_empty(conv_w.shape),
            conv_w.new_empty(conv_b.shape if conv_b is not None else (conv_w.shape[0],),
                             dtype=conv_b.dtype if conv_b is not None else f32),
            x_proj_w.new_empty(x_proj_w.shape), dt_proj_w.new_empty(dt_proj_w.shape),
            A.new_empty(A.shape, dtype=f32), D.new_empty(D.shape, dtype=f32), dt_bias.new_empty(dt_bias.shape,
                                                                                               dtype=f32))


def _backward_op(ctx, dy, _dx_conv, _dx_dbl, _ddelta, _dchunk_states):
    return _input_grads(ctx, _mamba_inner_bwd_op(*ctx.saved_tensors, dy, *ctx.ranks))


_mamba_inner_fwd_op.register_autograd(_backward_op, setup_context=_setup_context)


def mamba_inner(xz: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor], x_proj_w: torch.Tensor,
                dt_proj_w: torch.Tensor, A: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor, dt_rank: int,
                d_state: int) -> torch.Tensor:
    """y = selective_scan(x_conv, dt_proj(dt), A, B, C, D, z, dt_bias, softplus) with x, z = xz's halves,
    x_conv = silu(conv(x)), (dt, B, C) = x_proj(x_conv): the Mamba block's inner path, channels-first.

    xz: (batch, 2 d_inner, L), L contiguous (in_proj's output); conv_w (d_inner, width); x_proj_w
    (dt_rank + 2 N, d_inner); dt_proj_w (d_inner, dt_rank); A (d_inner, N) fp32; D, dt_bias (d_inner,) fp32.
    Returns y (batch, d_inner, L)."""
    args = (xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias)
    if torch.compiler.is_compiling():
        return _mamba_inner_fwd_op(*args, dt_rank, d_state)[0]
    if records_autograd(*args):
        return _MambaInnerEager.apply(*args, dt_rank, d_state)
    return _forward(*args, dt_rank, d_state, False)[0]

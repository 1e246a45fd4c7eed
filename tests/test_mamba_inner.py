"""The Mamba block's inner path as one autograd node (seqmamba/ops/mamba_inner.py) against the separate ops it
replaces: the block's output and every gradient, under the Triton interpreter at tiny shapes."""
import importlib

import pytest
import torch

from seqmamba.modules.mamba import Mamba
from seqmamba.ops import mamba_inner

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # conftest.py: the wrappers' buffers start as NaN


def _block_and_grads(m, h, dout):
    for p in m.parameters():
        p.grad = None
    h = h.detach().clone().requires_grad_(True)
    out = m(h)
    out.backward(dout)
    return out.detach(), {"h": h.grad, **{n: p.grad for n, p in m.named_parameters()}}


@pytest.mark.parametrize("L,conv_bias,one_kernel_conv", [(40, True, True), (1 + 8, False, True), (3, True, True),
                                                        (40, True, False)])
def test_mamba_inner_node_matches_the_separate_ops(monkeypatch, L, conv_bias, one_kernel_conv):
    """Lengths around the conv's 8-step column groups (the one-kernel conv backward's next-group recompute) and
    below its width; with and without the conv's bias; and with the two-kernel conv backward, whose dx is copied
    into the in_proj gradient's x half. The node must actually run (once forward, once backward)."""
    conv = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    monkeypatch.setattr(conv, "FUSED_BACKWARD", one_kernel_conv)
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=4, expand=2, conv_bias=conv_bias, scan_backend="triton")
    m.channels_first = True  # the CUDA layout, here on the CPU under the interpreter
    h = torch.randn(2, L, 16)
    dout = torch.randn(2, L, 16)
    monkeypatch.setattr(mamba_inner, "ENABLED", True)
    calls = []
    forward, backward = mamba_inner._forward, mamba_inner._backward
    monkeypatch.setattr(mamba_inner, "_forward", lambda *a: calls.append("fwd") or forward(*a))
    monkeypatch.setattr(mamba_inner, "_backward", lambda *a: calls.append("bwd") or backward(*a))
    out, grads = _block_and_grads(m, h, dout)
    assert calls == ["fwd", "bwd"]
    monkeypatch.setattr(mamba_inner, "ENABLED", False)
    ref_out, ref_grads = _block_and_grads(m, h, dout)
    assert calls == ["fwd", "bwd"]
    assert torch.allclose(out, ref_out, atol=1e-6, rtol=1e-5)
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        r = ref_grads[name]
        assert g is not None and r is not None, name
        assert torch.isfinite(g).all(), name
        assert (g - r).norm() <= 1e-5 * r.norm() + 1e-7, (name, ((g - r).norm() / r.norm()).item())


def test_mamba_inner_applies_only_where_the_scan_runs_in_one_launch(monkeypatch):
    from seqmamba.ops.selective_scan import triton_launch
    cpu = torch.device("cpu")
    assert mamba_inner.applies(64, 128, 4112, cpu)
    monkeypatch.setattr(triton_launch, "FORCE_TRAIN_SEGMENTS", 4)  # the L split: the separate ops serve it
    assert not mamba_inner.applies(64, 128, 4112, cpu)
    monkeypatch.setattr(triton_launch, "FORCE_TRAIN_SEGMENTS", None)
    monkeypatch.setattr(triton_launch, "FORCE_TAIL", True)
    assert not mamba_inner.applies(64, 128, 4112, cpu)
    monkeypatch.setattr(triton_launch, "FORCE_TAIL", None)
    monkeypatch.setattr(mamba_inner, "ENABLED", False)
    assert not mamba_inner.applies(64, 128, 4112, cpu)


def test_mamba_inner_custom_ops_fake_implementations_match_the_kernels(monkeypatch):
    """What torch.compile traces with (the ops' fake implementations: shapes, dtypes, strides, the saved states'
    chunk count: two 16-step chunks here) against what the kernels return, forward and backward
    (torch.library.opcheck)."""
    monkeypatch.setattr(importlib.import_module("seqmamba.ops.selective_scan.triton_launch"), "FORCE_CHUNK_T", 16)
    torch.manual_seed(0)
    m = Mamba(d_model=16, d_state=4, d_conv=4, expand=2, scan_backend="triton")
    A, D, dt_bias = (t.detach() for t in m._ssm_constants())
    weights = (m.conv1d.weight.squeeze(1).detach(), m.conv1d.bias.detach(), m.x_proj.weight.detach(),
               m.dt_proj.weight.detach())
    args = (torch.randn(2, 2 * m.d_inner, 20), *weights, A, D, dt_bias, m.dt_rank, m.d_state)
    torch.library.opcheck(mamba_inner._mamba_inner_fwd_op, args, test_utils="test_faketensor")
    _, x_conv, x_dbl, delta, chunk_states = mamba_inner._mamba_inner_fwd_op(*args)
    bwd_args = (*args[:8], x_conv, x_dbl, delta, chunk_states, torch.randn(2, m.d_inner, 20), m.dt_rank, m.d_state)
    torch.library.opcheck(mamba_inner._mamba_inner_bwd_op, bwd_args, test_utils="test_faketensor")

"""The chunked pure-PyTorch CPU selective scan against the sequential reference.

Tolerance: 1e-5 norm-wise relative error (||a - b|| / ||b||) in fp32. Both paths accumulate the
same recurrence in fp32 in a different order (chunked bulk ops vs one step at a time); measured
differences are ~1e-7, so 1e-5 leaves two orders of margin yet catches any wrong term (a dropped
or misrouted gradient contribution is O(1) relative).
"""
from __future__ import annotations

import importlib

import pytest
import torch

from seqmamba.ops import selective_scan, selective_scan_ref
from helpers import rel_err

# `seqmamba.ops.selective_scan` is the function; import the module by its full dotted name.
torch_chunked = importlib.import_module("seqmamba.ops.selective_scan.torch_chunked")
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # conftest.py
selective_scan_torch = torch_chunked.selective_scan_torch

RTOL_FP32 = 1e-5
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch=2, dim=4, N=3, L=10, layout="shared", D=True, z=True, delta_bias=True,
                initial_state=True, groups=2, dtype=torch.float32, seed=0):
    """Random inputs for selective_scan as a dict of the nine tensor arguments (None = absent)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    if layout == "constant":
        bc_shape = (dim, N)
    elif layout == "shared":
        bc_shape = (batch, N, L)
    elif layout == "grouped":
        bc_shape = (batch, groups, N, L)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return {
        "u": randn(batch, dim, L),
        "delta": 0.5 * randn(batch, dim, L),
        "A": -torch.rand(dim, N, generator=g, dtype=dtype) - 0.1,
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(dim) if D else None,
        "z": randn(batch, dim, L) if z else None,
        "delta_bias": randn(dim) if delta_bias else None,
        "initial_state": randn(batch, dim, N) if initial_state else None,
    }


def run_with_grads(fn, inputs, delta_softplus, return_last_state, seed=1, **kwargs):
    """Forward, then gradients of a random linear function of out (and last_state) w.r.t. every input."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    result = fn(*(leaves[k] for k in ARG_NAMES[:8]), delta_softplus, return_last_state, leaves["initial_state"], **kwargs)
    out, last = result if return_last_state else (result, None)
    g = torch.Generator().manual_seed(seed)
    loss = (out.float() * torch.randn(out.shape, generator=g)).sum()
    if last is not None:
        loss = loss + (last * torch.randn(last.shape, generator=g)).sum()
    present = [k for k in ARG_NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(loss, [leaves[k] for k in present])
    return out, last, dict(zip(present, grads))


OPTION_SETS = {
    # name: (D, z, delta_bias, initial_state, delta_softplus, return_last_state)
    "bare": (False, False, False, False, False, False),
    "all": (True, True, True, True, True, True),
    "gated_softplus_no_state": (True, True, True, False, True, False),
    "state_only": (False, False, False, True, False, True),
    "bias_no_softplus": (True, False, True, False, False, True),
}


@pytest.mark.parametrize("saved", [True, False], ids=["states-saved", "states-recomputed"])
@pytest.mark.parametrize("layout", ["constant", "shared", "grouped"])
@pytest.mark.parametrize("L, chunk_size", [(1, 4), (7, 3), (10, 4), (12, 4), (9, None)])
@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_forward_and_all_gradients_match_reference(monkeypatch, layout, L, chunk_size, options, saved):
    """Both backward paths: the chunk states kept by the forward (within SAVE_STATES_BYTES, as these tiny shapes
    are by default) and recomputed per chunk (SAVE_STATES_BYTES = 0)."""
    if not saved:
        monkeypatch.setattr(torch_chunked, "SAVE_STATES_BYTES", 0)
    D, z, bias, init, softplus, ret_last = OPTION_SETS[options]
    inputs = make_inputs(L=L, layout=layout, D=D, z=z, delta_bias=bias, initial_state=init)
    out_ref, last_ref, grads_ref = run_with_grads(selective_scan_ref, inputs, softplus, ret_last)
    out, last, grads = run_with_grads(selective_scan_torch, inputs, softplus, ret_last, chunk_size=chunk_size)

    assert out.shape == out_ref.shape and out.dtype == out_ref.dtype
    assert rel_err(out, out_ref) < RTOL_FP32
    if ret_last:
        assert last.shape == last_ref.shape and last.dtype == torch.float32
        assert rel_err(last, last_ref) < RTOL_FP32
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads[name].shape == inputs[name].shape, name
        assert rel_err(grads[name], grads_ref[name]) < RTOL_FP32, f"gradient of {name}"


def test_gradient_flows_from_last_state_alone():
    """Only last_state enters the loss, so the backward sees no gradient for out."""
    inputs = make_inputs(L=9, initial_state=True)
    results = {}
    for name, fn, kwargs in (("ref", selective_scan_ref, {}), ("torch", selective_scan_torch, {"chunk_size": 2})):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        _, last = fn(*(leaves[k] for k in ARG_NAMES[:8]), True, True, leaves["initial_state"], **kwargs)
        results[name] = torch.autograd.grad(last.square().sum(), [leaves[k] for k in ARG_NAMES], allow_unused=True)
    for name, g, g_ref in zip(ARG_NAMES, results["torch"], results["ref"]):
        if g_ref is None:  # C, D and z only act on the output, not on the state
            assert name in ("C", "D", "z")
            assert g is None or g.abs().max() == 0, name
        else:
            assert rel_err(g, g_ref) < RTOL_FP32, name


def test_non_contiguous_inputs_and_upstream_gradient_match_reference():
    batch, dim, N, L = 2, 6, 4, 11
    g = torch.Generator().manual_seed(3)
    # as a Mamba block produces them: (batch, L, dim) activations transposed to (batch, dim, L)
    u = torch.randn(batch, L, dim, generator=g).transpose(1, 2)
    delta = torch.randn(batch, L, dim, generator=g).transpose(1, 2)
    z = torch.randn(batch, L, 2 * dim, generator=g).transpose(1, 2)[:, ::2]
    B = torch.randn(batch, L, N, generator=g).transpose(1, 2)
    C = torch.randn(batch, 2, L, N, generator=g).permute(0, 1, 3, 2)  # grouped, non-contiguous
    A = -torch.rand(N, dim, generator=g).t()
    D, bias = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    h0 = torch.randn(batch, N, dim, generator=g).transpose(1, 2)
    for t in (u, delta, z, B, C, A, h0):
        assert not t.is_contiguous()
    inputs = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, initial_state=h0)
    grad_out = torch.randn(batch, L, dim, generator=g).transpose(1, 2)  # non-contiguous upstream

    def grads(fn, **kwargs):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}  # clone keeps strides
        out = fn(*(leaves[k] for k in ARG_NAMES[:8]), True, False, leaves["initial_state"], **kwargs)
        return out, torch.autograd.grad(out, [leaves[k] for k in ARG_NAMES], grad_out)

    out_ref, g_ref = grads(selective_scan_ref)
    out, g_torch = grads(selective_scan_torch, chunk_size=4)
    assert rel_err(out, out_ref) < RTOL_FP32
    for name, a, b in zip(ARG_NAMES, g_torch, g_ref):
        assert rel_err(a, b) < RTOL_FP32, name


@pytest.mark.parametrize("layout", ["shared", "grouped"])
def test_bfloat16_input_returns_bfloat16_close_to_fp32_reference(layout):
    inputs = make_inputs(L=33, layout=layout)
    for k in ("u", "delta", "z", "B", "C"):
        inputs[k] = inputs[k].to(torch.bfloat16)
    args = [inputs[k] for k in ARG_NAMES[:8]]
    out, last = selective_scan_torch(*args, True, True, inputs["initial_state"], chunk_size=8)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    upcast = [a.float() if a is not None else None for a in args]
    out_ref, last_ref = selective_scan_ref(*upcast, True, True, inputs["initial_state"])
    # the scan runs in fp32 on the same (bf16-rounded) inputs; only the output rounding differs:
    # bf16 has an 8-bit mantissa, so ~2^-9 relative per element.
    assert rel_err(out, out_ref) < 1e-2
    assert rel_err(last, last_ref) < RTOL_FP32

    leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    out = selective_scan_torch(*leaves, True, False, None, chunk_size=8)
    out.float().sum().backward()
    for name, leaf in zip(ARG_NAMES, leaves):
        if leaf is not None:
            assert leaf.grad.dtype == leaf.dtype, name


@pytest.mark.parametrize("layout", ["constant", "shared", "grouped"])
def test_gradcheck_float64(layout):
    inputs = make_inputs(batch=1, dim=2, N=2, L=5, layout=layout, groups=2, dtype=torch.float64, seed=4)
    leaves = [inputs[k].requires_grad_() for k in ARG_NAMES]

    def fn(*tensors):
        return selective_scan_torch(*tensors[:8], True, True, tensors[8], chunk_size=2)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_state_carried_over_two_halves_equals_one_pass():
    inputs = make_inputs(L=14, layout="grouped", initial_state=True)
    full_out, full_last = selective_scan_torch(
        *(inputs[k] for k in ARG_NAMES[:8]), True, True, inputs["initial_state"], chunk_size=3
    )

    def half(x, part):
        if x is None or x.dim() < 3:  # (dim, N), (dim,) and initial_state-free args are not per-step
            return x
        return x[..., :7] if part == 0 else x[..., 7:]

    h = inputs["initial_state"]
    outs = []
    for part in (0, 1):
        args = [half(inputs[k], part) if k not in ("A", "D", "delta_bias") else inputs[k] for k in ARG_NAMES[:8]]
        out, h = selective_scan_torch(*args, True, True, h, chunk_size=3)
        outs.append(out)
    assert rel_err(torch.cat(outs, dim=-1), full_out) < RTOL_FP32
    assert rel_err(h, full_last) < RTOL_FP32


def test_public_entry_point_dispatches_to_the_chunked_path(monkeypatch):
    """backend='torch' and backend='auto' (CPU) agree with the reference, here with multi-chunk buffers."""
    inputs = make_inputs(L=19, layout="shared")
    # force tiny chunks through the module attribute: one (T, batch, dim, N) buffer = 4 steps
    monkeypatch.setattr(torch_chunked, "CHUNK_BYTES", 4 * 2 * 4 * 3 * 4)
    assert torch_chunked.default_chunk_size(2, 4, 3, 19) == 4
    args = [inputs[k] for k in ARG_NAMES[:8]]
    ref_out, ref_last = selective_scan(*args, True, True, inputs["initial_state"], backend="reference")
    for backend in ("torch", "auto"):
        out, last = selective_scan(*args, True, True, inputs["initial_state"], backend=backend)
        assert rel_err(out, ref_out) < RTOL_FP32
        assert rel_err(last, ref_last) < RTOL_FP32


def test_default_chunk_buffer_stays_within_budget_for_long_sequences():
    batch, dim, N, L = 2, 256, 16, 16384
    T = torch_chunked.default_chunk_size(batch, dim, N, L)
    assert 1 <= T < L
    assert T * batch * dim * N * 4 <= torch_chunked.CHUNK_BYTES


def test_empty_sequence_returns_empty_output_and_initial_state():
    inputs = make_inputs(L=0, layout="shared")
    out, last = selective_scan_torch(*(inputs[k] for k in ARG_NAMES[:8]), False, True, inputs["initial_state"])
    assert out.shape == (2, 4, 0)
    assert torch.equal(last, inputs["initial_state"])


@pytest.mark.parametrize(
    "name, bad_shape, expected",
    [
        ("u", (2, 4), "(batch, dim, L)"),
        ("delta", (2, 4, 9), "(2, 4, 10)"),
        ("A", (5, 3), "(4, N)"),
        ("B", (2, 3, 9), "(2, 3, 10)"),
        ("C", (2, 3, 3, 10), "(2, G, 3, 10)"),
        ("D", (5,), "(4,)"),
        ("z", (2, 4, 11), "(2, 4, 10)"),
        ("delta_bias", (4, 1), "(4,)"),
        ("initial_state", (2, 4, 2), "(2, 4, 3)"),
    ],
)
def test_mis_shaped_argument_raises_value_error_naming_it(name, bad_shape, expected):
    inputs = make_inputs(L=10, layout="shared")
    inputs[name] = torch.randn(*bad_shape)
    with pytest.raises(ValueError) as info:
        selective_scan(*(inputs[k] for k in ARG_NAMES[:8]), False, False, inputs["initial_state"], backend="torch")
    message = str(info.value)
    assert name in message
    assert str(tuple(bad_shape)) in message
    assert expected in message


def test_chunk_size_below_one_is_rejected():
    inputs = make_inputs(L=4)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        selective_scan_torch(*(inputs[k] for k in ARG_NAMES[:8]), chunk_size=0)


def test_chunk_states_are_kept_only_for_a_backward_that_will_run(monkeypatch):
    """The forward keeps every chunk's states (one workspace per chunk) when autograd records and an input needs a
    gradient, within SAVE_STATES_BYTES; otherwise one workspace serves every chunk. A second backward through a
    retained graph (the kept states are released by the first) recomputes them and gives the same gradients."""
    created = []

    class Counting(torch_chunked._ChunkWorkspace):
        def __init__(self, *args, **kwargs):
            created.append(kwargs.get("adjoint"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch_chunked, "_ChunkWorkspace", Counting)
    inputs = make_inputs(L=10, layout="shared", D=True, z=True, delta_bias=True, initial_state=False)
    args = [inputs[k] for k in ARG_NAMES[:8]]

    with torch.no_grad():
        selective_scan_torch(*args, True, chunk_size=4)
    assert created == [False]  # 3 chunks, one forward workspace
    created.clear()
    leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
    out = selective_scan_torch(*leaves, True, chunk_size=4)
    assert created == [False, False, False]  # one per chunk: kept for the backward
    created.clear()
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    present = [t for t in leaves if t is not None]
    first = torch.autograd.grad(out, present, dout, retain_graph=True)
    second = torch.autograd.grad(out, present, dout)
    assert created == [True, True]  # the backward's adjoint workspace, twice
    for a, b in zip(first, second):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(torch_chunked, "SAVE_STATES_BYTES", 2 * 11 * 2 * 4 * 3 * 4 - 1)  # one byte short
    created.clear()
    selective_scan_torch(*leaves, True, chunk_size=4)
    assert created == [False]


def test_torch_scan_under_torch_compile_runs_eagerly_between_the_compiled_graphs():
    """The PyTorch scan is left out of torch.compile's tracing (torch.compiler.disable): one clean graph break, not
    an attempt that unrolls its per-step loop and then fails on its autograd.Function's side effects (the SC model
    compiled on 2 CPU cores in 422 s that way, 51 s now); the compiled function's outputs and gradients are eager's."""
    inputs = make_inputs(L=12)
    leaves = [inputs[k].detach().clone().requires_grad_() for k in ("u", "delta", "A", "B", "C")]

    def block(u, delta, A, B, C):
        y = selective_scan(torch.tanh(u), delta, A, B, C, delta_softplus=True, backend="torch")
        return (y * 2).square().sum()

    explained = torch._dynamo.explain(block)(*leaves)
    reasons = [str(b.reason) for b in explained.break_reasons]
    assert reasons and all("disable" in r for r in reasons), reasons
    torch._dynamo.reset()
    got = torch.compile(block, backend="aot_eager")(*leaves)
    got_grads = torch.autograd.grad(got, leaves)
    want = block(*leaves)
    assert rel_err(got, want) < 1e-6
    for g, w in zip(got_grads, torch.autograd.grad(want, leaves)):
        assert rel_err(g, w) < 1e-6

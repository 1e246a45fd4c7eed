"""Fused residual-add + RMSNorm / LayerNorm: the Triton kernels against the plain-PyTorch reference.

On the CPU the kernels run under TRITON_INTERPRET=1 (conftest.py) at tiny shapes. Tolerances: fp32 1e-4
relative, bf16 1e-2 relative (outputs rounded to bf16; sums and statistics are fp32 in both paths).
"""
from __future__ import annotations

import os

import pytest
import torch

from seqmamba.ops import layer_norm_fn, rms_norm_fn
from seqmamba.ops.layer_norm import layer_norm_ref
from helpers import cuda_only, rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # conftest.py
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
needs_triton = pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="no CUDA and TRITON_INTERPRET is not set (conftest.py sets it)")


def make_inputs(shape, dtype, with_residual, residual_dtype, with_bias, device=DEVICE, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = shape[-1]
    x = (torch.randn(shape, generator=g) * 2 + 0.5).to(device=device, dtype=dtype).requires_grad_()
    weight = (1 + 0.3 * torch.randn(N, generator=g)).to(device=device, dtype=dtype).requires_grad_()
    bias = (0.1 * torch.randn(N, generator=g)).to(device=device, dtype=dtype).requires_grad_() if with_bias else None
    residual = None
    if with_residual:
        residual = torch.randn(shape, generator=g).to(device=device, dtype=residual_dtype).requires_grad_()
    return x, weight, bias, residual


def run_both(fn_kwargs, inputs, seed=1):
    """Forward both backends, backprop the same random cotangents, return outputs and grads of each."""
    results = []
    for backend in ("reference", "triton"):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
        x, weight, bias, residual = leaves
        out = layer_norm_fn(x, weight, bias, residual, backend=backend, **fn_kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        g = torch.Generator().manual_seed(seed)
        loss = sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outs)
        loss.backward()
        grads = [t.grad for t in leaves if t is not None]
        results.append((outs, grads))
    return results


@needs_triton
@pytest.mark.parametrize("is_rms_norm", [True, False], ids=["rms", "layernorm"])
@pytest.mark.parametrize("dtype,residual_dtype,residual_in_fp32", [
    (torch.float32, torch.float32, False),
    (torch.bfloat16, torch.float32, True),
    (torch.bfloat16, torch.bfloat16, False),
])
@pytest.mark.parametrize("with_residual,prenorm", [(True, True), (True, False), (False, True), (False, False)])
def test_triton_add_norm_matches_reference_forward_and_grads(is_rms_norm, dtype, residual_dtype, residual_in_fp32,
                                                             with_residual, prenorm):
    inputs = make_inputs((2, 5, 40), dtype, with_residual, residual_dtype, with_bias=not is_rms_norm)
    kwargs = dict(eps=1e-5, prenorm=prenorm, residual_in_fp32=residual_in_fp32, is_rms_norm=is_rms_norm)
    (ref_outs, ref_grads), (tri_outs, tri_grads) = run_both(kwargs, inputs)
    tol = TOL[dtype]
    for ref, tri in zip(ref_outs, tri_outs):
        assert tri.dtype == ref.dtype and tri.shape == ref.shape
        assert rel_err(tri, ref) < tol
    assert len(ref_grads) == len(tri_grads)
    for ref, tri in zip(ref_grads, tri_grads):
        assert tri.dtype == ref.dtype
        assert rel_err(tri, ref) < tol


@needs_triton
@pytest.mark.parametrize("is_rms_norm", [True, False], ids=["rms", "layernorm"])
@pytest.mark.parametrize("shape", [(3, 37, 40), (1, 17, 256), (1, 3, 1100)], ids=["16-row-tiles", "4-row", "1-row"])
def test_triton_add_norm_row_tiles_match_reference(is_rms_norm, shape):
    """Programs normalise tiles of 1024 // next_power_of_2(N) rows: 111 rows in 16-row tiles (the last one partial,
    and in the backward a program whose second tile is past the end), 17 in 4-row tiles, and one-row tiles at
    N = 1100. Buffers start as NaN, so a row or partial dweight left unwritten fails."""
    inputs = make_inputs(shape, torch.bfloat16, True, torch.float32, with_bias=not is_rms_norm)
    kwargs = dict(eps=1e-5, prenorm=True, residual_in_fp32=True, is_rms_norm=is_rms_norm)
    (ref_outs, ref_grads), (tri_outs, tri_grads) = run_both(kwargs, inputs)
    for ref, tri in list(zip(ref_outs, tri_outs)) + list(zip(ref_grads, tri_grads)):
        assert rel_err(tri, ref) < TOL[torch.bfloat16]


def test_prenorm_residual_dtype_follows_mamba_ssm_rule():
    x, weight, _, _ = make_inputs((3, 8), torch.bfloat16, False, None, False, device="cpu")
    _, residual = rms_norm_fn(x, weight, prenorm=True, residual_in_fp32=True)
    assert residual.dtype == torch.float32
    _, residual = rms_norm_fn(x, weight, prenorm=True, residual_in_fp32=False)
    assert residual.dtype == torch.bfloat16
    given = torch.randn(3, 8, dtype=torch.float32)
    _, residual = rms_norm_fn(x, weight, residual=given, prenorm=True)
    assert residual.dtype == torch.float32
    assert torch.allclose(residual, x.float() + given)


@pytest.mark.parametrize("seed", range(5))
def test_reference_rms_norm_is_the_formula(seed):
    """The reference computes in fp32 (its contract), so float64 formulas agree to fp32 rounding: an absolute
    1e-6 on outputs of order 1 (the default atol of 1e-8 failed for ~2% of unseeded draws, on outputs near 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 16, dtype=torch.float64, generator=g)
    weight = torch.randn(16, dtype=torch.float64, generator=g)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    assert torch.allclose(rms_norm_fn(x, weight), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(layer_norm_ref(x, weight), torch.nn.functional.layer_norm(x, (16,), weight, eps=1e-5),
                          rtol=1e-5, atol=1e-6)


def test_bad_shapes_and_backend_are_named():
    x, weight = torch.randn(2, 8), torch.ones(8)
    with pytest.raises(ValueError, match=r"weight has shape \(7,\)"):
        rms_norm_fn(x, torch.ones(7))
    with pytest.raises(ValueError, match="residual has shape"):
        rms_norm_fn(x, weight, residual=torch.randn(2, 4))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        rms_norm_fn(x, weight, backend="cuda")
    with pytest.raises(ValueError, match="eps must be > 0"):
        rms_norm_fn(x, weight, eps=0.0)


@cuda_only
@pytest.mark.parametrize("is_rms_norm", [True, False], ids=["rms", "layernorm"])
def test_triton_add_norm_on_cuda_in_row_tiles_at_the_synthetic_tasks_width(is_rms_norm):
    # d_model 64 (the paper's synthetic models): 16-row tiles, 16 x 4112 + 5 rows (the last tile partial), the
    # backward's programs walking many tiles each
    inputs = make_inputs((16 * 4112 + 5, 64), torch.bfloat16, True, torch.float32, with_bias=not is_rms_norm)
    kwargs = dict(eps=1e-5, prenorm=True, residual_in_fp32=True, is_rms_norm=is_rms_norm)
    (ref_outs, ref_grads), (tri_outs, tri_grads) = run_both(kwargs, inputs)
    for ref, tri in list(zip(ref_outs, tri_outs)) + list(zip(ref_grads, tri_grads)):
        assert rel_err(tri, ref) < 1e-2


@cuda_only
@pytest.mark.parametrize("is_rms_norm", [True, False], ids=["rms", "layernorm"])
def test_triton_add_norm_on_cuda_at_model_width_matches_reference(is_rms_norm):
    # 130M width, a non-power-of-two row count and a strided (non-contiguous rows) x.
    inputs = make_inputs((3, 37, 768), torch.bfloat16, True, torch.float32, with_bias=not is_rms_norm)
    kwargs = dict(eps=1e-5, prenorm=True, residual_in_fp32=True, is_rms_norm=is_rms_norm)
    (ref_outs, ref_grads), (tri_outs, tri_grads) = run_both(kwargs, inputs)
    for ref, tri in list(zip(ref_outs, tri_outs)) + list(zip(ref_grads, tri_grads)):
        assert rel_err(tri, ref) < 1e-2
    x = torch.randn(4, 768 * 2, device="cuda", dtype=torch.bfloat16)[:, :768]  # row stride 1536
    weight = torch.randn(768, device="cuda", dtype=torch.bfloat16)
    assert rel_err(rms_norm_fn(x, weight), rms_norm_fn(x, weight, backend="reference")) < 1e-2


def test_add_norm_under_torch_compile_is_one_graph_with_the_reference_semantics():
    """Under torch.compile the Triton backend defers to the traced reference (Inductor fuses it): one graph, no
    break at the kernels' launcher, the same outputs and gradients as the reference with the first block's fp32
    residual. (A break there recompiled inside a CUDA-graph capture of the compiled training step.)"""
    x, weight, _, residual = make_inputs((2, 5, 8), torch.bfloat16, True, torch.float32, False)

    def block(x, weight, residual):
        out, res = rms_norm_fn(x, weight, residual=residual, prenorm=True, residual_in_fp32=True, backend="triton")
        return out.float().square().sum() + res.sum()

    explained = torch._dynamo.explain(block)(x, weight, residual)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, residual)]
    got = torch.compile(block, backend="aot_eager", fullgraph=True)(*leaves)
    got_grads = torch.autograd.grad(got, leaves)
    ref_leaves = [t.detach().clone().requires_grad_() for t in (x, weight, residual)]
    out, res = layer_norm_ref(ref_leaves[0], ref_leaves[1], None, ref_leaves[2], 1e-5, True, True, True)
    want = out.float().square().sum() + res.sum()
    assert res.dtype == torch.float32 and rel_err(got, want) < 1e-6
    for g, w in zip(got_grads, torch.autograd.grad(want, ref_leaves)):
        assert rel_err(g, w) < 1e-6

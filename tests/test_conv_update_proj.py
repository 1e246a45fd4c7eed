"""The decode step's conv update fused with x_proj (ops/causal_conv1d ``causal_conv1d_update_proj``): the conv
state, the conv output and the projection against the two ops it replaces, in float64.

On a CPU-only machine the kernel runs under TRITON_INTERPRET=1 (conftest.py) at tiny shapes; on a GPU compiled,
at the 1.4B model's shapes too and under a CUDA graph.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from seqmamba.ops import causal_conv1d_update_proj
from seqmamba.ops.causal_conv1d.reference import causal_conv1d_update_ref
from helpers import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not set (conftest.py sets it)", allow_module_level=True)

conv = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
buffers = importlib.import_module("seqmamba.ops.buffers")
gpu = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
# out, proj and the split scratch start as NaN: a slot summed before it was written, or an output element never
# stored, shows up.
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def operands(batch, dim, width, n_out, dtype, bias=True, x_row_stride=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    # x as the decode step passes it: the first half of in_proj's (batch, 2 dim) output, a strided view
    x = r(batch, x_row_stride or dim)[:, :dim].to(dtype).to(DEVICE)
    state = r(batch, dim, width).to(dtype).to(DEVICE)
    weight = (r(dim, width) * 0.5).to(dtype).to(DEVICE)
    b = (r(dim) * 0.1).to(dtype).to(DEVICE) if bias else None
    proj_weight = (r(n_out, dim) * dim ** -0.5).to(dtype).to(DEVICE)
    return x, state, weight, b, proj_weight


def check(x, state, weight, b, proj_weight, config=None, activation="silu"):
    """Runs the fused kernel on a copy of the state and the reference on another; returns (out, proj)."""
    state_ref = state.clone()
    out, proj = conv.causal_conv1d_update_proj_triton(x, state, weight, b, activation, proj_weight, config)
    out_ref = causal_conv1d_update_ref(x, state_ref, weight, b, activation)
    assert torch.equal(state, state_ref), "the conv state differs from the reference's"
    assert out.dtype == x.dtype and proj.dtype == x.dtype and proj.shape == (x.shape[0], proj_weight.shape[0])
    assert rel_err(out, out_ref) < TOL[x.dtype]
    # x_proj of the stored (rounded) conv output, in float64
    proj_ref = F.linear(out.double(), proj_weight.double())
    assert rel_err(proj, proj_ref) < TOL[x.dtype]
    assert all(int(count.abs().sum()) == 0 for _, count in buffers.SPLIT_SCRATCH.values()), "a counter left non-zero"
    return out, proj


# (batch, dim, width, n_out, config): one row; 17 rows (a second row block, mostly padding); 70 channels (the last
# program's channels partly past dim); width 3 (a padded state column); 20 outputs (padded to 32); one split only
CASES = [
    (1, 64, 4, 20, conv.ProjConfig(16, 16, 2, 4)),
    (17, 70, 4, 36, conv.ProjConfig(16, 16, 2, 4)),
    (5, 70, 3, 20, conv.ProjConfig(16, 32, 1, 2)),
    (3, 48, 4, 40, conv.ProjConfig(16, 64, 1, 4)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,dim,width,n_out,config", CASES)
def test_conv_update_proj_matches_the_conv_update_then_the_projection(batch, dim, width, n_out, config, dtype):
    x, state, weight, b, proj_weight = operands(batch, dim, width, n_out, dtype, bias=batch % 2 == 1,
                                                x_row_stride=2 * dim)
    check(x, state, weight, b, proj_weight, config)


def test_conv_update_proj_is_bitwise_repeatable_and_sums_every_split():
    """The same launch twice gives the same bits (the last program sums the slots in slot order); a projection
    weight that is zero outside one split's channels shows each split's channels reach the sum."""
    config = conv.ProjConfig(16, 16, 1, 4)  # 4 splits of 16 channels
    x, state, weight, b, proj_weight = operands(6, 64, 4, 24, torch.float32)
    _, first = check(x, state.clone(), weight, b, proj_weight, config)
    _, again = check(x, state.clone(), weight, b, proj_weight, config)
    assert torch.equal(first, again)
    for split in range(4):
        only = torch.zeros_like(proj_weight)
        only[:, split * 16:(split + 1) * 16] = proj_weight[:, split * 16:(split + 1) * 16]
        _, proj = check(x, state.clone(), weight, b, only, config)
        assert proj.abs().max() > 0


def test_conv_update_proj_without_activation():
    x, state, weight, b, proj_weight = operands(2, 32, 4, 16, torch.float32)
    check(x, state, weight, b, proj_weight, conv.ProjConfig(16, 16, 1, 4), activation=None)


def test_the_op_runs_the_two_ops_unless_fused_and_checks_its_weight():
    """backend="torch", or the rule saying no (CPU): the conv update then F.linear / decode_linear, the same values;
    fused=True forces the kernel; a projection weight of the wrong width is an error naming both shapes."""
    x, state, weight, b, proj_weight = operands(3, 32, 4, 16, torch.float32)
    s1, s2 = state.clone(), state.clone()
    out1, proj1 = causal_conv1d_update_proj(x, s1, weight, b, "silu", proj_weight, backend="torch")
    out2, proj2 = causal_conv1d_update_proj(x, s2, weight, b, "silu", proj_weight, backend="triton", fused=True)
    assert torch.equal(s1, s2)
    assert rel_err(out2, out1) < 1e-5 and rel_err(proj2, proj1) < 1e-5
    if DEVICE == "cpu":
        assert not conv.use_update_proj(x, weight, proj_weight)
    with pytest.raises(ValueError, match=r"proj_weight has shape \(16, 31\), expected \(outputs, 32\)"):
        causal_conv1d_update_proj(x, state, weight, b, "silu", proj_weight[:, :31])


def test_rule_takes_the_kernel_only_at_large_batch_on_cuda(monkeypatch):
    monkeypatch.setattr(conv, "PROJ_ENABLED", True)
    x = torch.zeros(conv.PROJ_MIN_ROWS, 8, dtype=torch.bfloat16)
    w, pw = torch.zeros(8, 4, dtype=torch.bfloat16), torch.zeros(4, 8, dtype=torch.bfloat16)
    assert not conv.use_update_proj(x, w, pw)  # CPU
    if DEVICE == "cuda":
        x, w, pw = x.cuda(), w.cuda(), pw.cuda()
        assert conv.use_update_proj(x, w, pw)
        assert not conv.use_update_proj(x[:conv.PROJ_MIN_ROWS - 1], w, pw)
        assert not conv.use_update_proj(x.float(), w.float(), pw.float())
        monkeypatch.setattr(conv, "PROJ_ENABLED", False)
        assert not conv.use_update_proj(x, w, pw)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("config", [None, conv.ProjConfig(16, 64, 2, 4), conv.ProjConfig(32, 32, 4, 8)])
@pytest.mark.parametrize("batch", [1, 128, 130])
def test_gpu_conv_update_proj_at_the_1p4b_shapes(batch, config):
    """The 1.4B model's decode shapes (dim 4096, width 4, x_proj 160 outputs), bf16: batch 130 leaves a row block
    mostly padding; every launch config the benchmark sweeps first."""
    x, state, weight, b, proj_weight = operands(batch, 4096, 4, 160, torch.bfloat16, x_row_stride=8192)
    check(x, state, weight, b, proj_weight, config)


@gpu
@pytest.mark.gpu
def test_gpu_conv_update_proj_under_a_cuda_graph():
    """Captured after one eager warm-up (the scratch and counters then exist), replayed 3 times: each replay's
    state, out and proj equal three eager steps' (counters back at zero after every launch)."""
    x, state, weight, b, proj_weight = operands(128, 4096, 4, 160, torch.bfloat16, x_row_stride=8192)
    eager_state = state.clone()
    conv.causal_conv1d_update_proj_triton(x, state.clone(), weight, b, "silu", proj_weight)  # warm-up
    graph_state = state.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out_g, proj_g = conv.causal_conv1d_update_proj_triton(x, graph_state, weight, b, "silu", proj_weight)
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        graph.replay()
        out_e, proj_e = conv.causal_conv1d_update_proj_triton(x, eager_state, weight, b, "silu", proj_weight)
        torch.cuda.synchronize()
        assert torch.equal(graph_state, eager_state)
        assert torch.equal(out_g, out_e) and torch.equal(proj_g, proj_e)


@pytest.mark.parametrize("batch", [3, 20])
def test_mamba_step_through_the_fused_kernel_matches_the_two_launches(monkeypatch, batch):
    """The Mamba block's decode step with the rule forced on (the fused kernel) and off: the same output and
    states, from the same random states, over three steps (the conv state shifts through the kernel's stores)."""
    from seqmamba.modules.mamba import Mamba

    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    torch.manual_seed(0)
    block = Mamba(d_model=32, d_state=8, scan_backend="triton").to(DEVICE, dtype)
    conv0, ssm0 = block.allocate_inference_cache(batch, 1)
    conv0.normal_()
    ssm0.normal_()
    tokens = torch.randn(3, batch, 1, 32, device=DEVICE, dtype=dtype)
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(conv, "use_update_proj", lambda *args, fused=fused: fused)
        conv_state, ssm_state = conv0.clone(), ssm0.clone()
        with torch.no_grad():
            outs = [block.step(t, conv_state, ssm_state)[0] for t in tokens]
        results[fused] = (torch.stack(outs), conv_state, ssm_state)
    (o1, c1, s1), (o2, c2, s2) = results[False], results[True]
    assert torch.equal(c1, c2)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert rel_err(o2, o1) < tol and rel_err(s2, s1) < tol


def test_proj_config_from_the_environment():
    assert conv._proj_config_from_env("32,64,2,8") == conv.ProjConfig(32, 64, 2, 8)
    assert conv._proj_config_from_env("32") == conv.ProjConfig(32, 64, 4, 4)
    with pytest.raises(ValueError, match=r"'16,x' is not 1-4 comma-separated integers \(block_m, block_d"):
        conv._proj_config_from_env("16,x")
    with pytest.raises(ValueError, match="SEQMAMBA_CONV_PROJ_CONFIG"):
        conv._proj_config_from_env("1,2,3,4,5")

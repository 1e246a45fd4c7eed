"""Every Triton kernel against its plain-PyTorch reference, forward and every gradient.

On a CPU-only machine these run under TRITON_INTERPRET=1 (set in conftest.py) at tiny shapes; on a GPU
they run compiled. Tolerances: fp32 1e-4 relative, bf16 / fp16 1e-2 relative (outputs are rounded to
the input dtype; state and accumulation are fp32 in both the kernel and the reference).
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from seqmamba.ops import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update
from seqmamba.ops.causal_conv1d.reference import causal_conv1d_ref, causal_conv1d_update_ref
from seqmamba.ops.selective_scan.reference import selective_scan_ref
from seqmamba.ops.selective_state_update.reference import selective_state_update_ref
from helpers import force_lanes_forward, record_launch_flags, rel_err
import triton
import triton.language as tl

from seqmamba.ops.selective_scan import triton_kernels as scan_kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not set (conftest.py sets it)", allow_module_level=True)

scan_launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")  # configs and launch rules
scan_autograd = importlib.import_module("seqmamba.ops.selective_scan.triton_autograd")
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # conftest.py
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.fixture
def short_chunks(monkeypatch):
    """Chunks of 16 steps, so tiny sequences still cross several chunk boundaries."""
    monkeypatch.setattr(scan_launch, "FORCE_CHUNK_T", 16)


def make_scan_inputs(batch, dim, L, N, bc_layout, dtype, groups=2, time_major=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale)

    def seq(scale=1.0):
        if time_major:  # the Mamba block's layout: (batch, L, dim) memory viewed as (batch, dim, L)
            return randn(batch, L, dim, scale=scale).to(dtype).transpose(1, 2)
        return randn(batch, dim, L, scale=scale).to(dtype)

    u, delta, z = seq(), seq(0.5), seq()
    A = -(torch.rand(dim, N, generator=g) + 0.3)
    if bc_layout == "variable":
        B, C = randn(batch, N, L).to(dtype), randn(batch, N, L).to(dtype)
    elif bc_layout == "grouped":
        B, C = randn(batch, groups, N, L).to(dtype), randn(batch, groups, N, L).to(dtype)
    else:
        B, C = randn(dim, N), randn(dim, N)
    D, delta_bias = randn(dim), randn(dim, scale=0.1)
    initial_state = randn(batch, dim, N)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)


def run_scan_with_grads(fn, inputs, use, dout, dlast):
    args = {k: (v.detach().to(DEVICE).requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    for name in ("D", "z", "delta_bias", "initial_state"):
        if name not in use:
            args[name] = None
    out, last = fn(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"], args["z"],
                   args["delta_bias"], "delta_bias" in use, True, args["initial_state"])
    loss = (out.float() * dout.to(DEVICE)).sum() + (last * dlast.to(DEVICE)).sum()
    names = [k for k, v in args.items() if v is not None]
    grads = torch.autograd.grad(loss, [args[k] for k in names])
    return out, last, dict(zip(names, grads))


def triton_and_reference_scans(inputs, use, dout, dlast, tol):
    """Run the Triton scan and the reference with gradients; assert out, last state and every gradient
    agree to ``tol`` (norm-wise relative). Returns the Triton results for further checks."""
    ref = run_scan_with_grads(selective_scan_ref, inputs, use, dout, dlast)
    tri = run_scan_with_grads(scan_autograd.selective_scan_triton, inputs, use, dout, dlast)
    assert rel_err(tri[0], ref[0]) < tol, "out"
    assert rel_err(tri[1], ref[1]) < tol, "last_state"
    assert set(tri[2]) == set(ref[2])
    for name in ref[2]:
        assert tri[2][name].shape == ref[2][name].shape, name
        assert rel_err(tri[2][name], ref[2][name]) < tol, f"gradient of {name}"
    return tri


ALL_OPTIONAL = ("D", "z", "delta_bias", "initial_state")
SCAN_CASES = [
    # (bc_layout, dtype, optional inputs used, time_major)
    ("variable", torch.float32, ALL_OPTIONAL, False),
    ("variable", torch.float32, (), True),
    ("grouped", torch.float32, ALL_OPTIONAL, True),
    ("constant", torch.float32, ("D", "z", "initial_state"), False),
    ("variable", torch.bfloat16, ("D", "z", "delta_bias"), True),
    ("grouped", torch.float16, ("z", "delta_bias", "initial_state"), False),
]


@pytest.mark.parametrize("bc_layout,dtype,use,time_major", SCAN_CASES)
def test_triton_scan_forward_and_every_gradient_match_reference(short_chunks, bc_layout, dtype, use, time_major):
    batch, dim, L, N = 2, 4, 37, 4  # 37 = two full chunks of 16 and a partial one
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, dtype, time_major=time_major)
    # A non-contiguous upstream gradient (every other element of a wider tensor).
    dout = torch.randn(batch, dim, 2 * L)[:, :, ::2]
    dlast = torch.randn(batch, dim, N)
    tri = triton_and_reference_scans(inputs, use, dout, dlast, TOL[dtype])
    assert tri[0].dtype == dtype and tri[1].dtype == torch.float32


def test_triton_scan_large_state_and_single_step():
    """N = 256 (the largest supported) with L = 1, and N = 5 (not a power of two) with L = 3."""
    for (batch, dim, L, N) in ((1, 2, 1, 256), (1, 3, 3, 5)):
        inputs = make_scan_inputs(batch, dim, L, N, "variable", torch.float32, seed=N)
        dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
        triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


def test_triton_backend_dispatch_matches_reference():
    inputs = make_scan_inputs(1, 3, 20, 4, "variable", torch.float32)
    args = {k: v.to(DEVICE) for k, v in inputs.items()}
    out = selective_scan(**args, delta_softplus=True, backend="triton")
    ref = selective_scan_ref(**args, delta_softplus=True)
    assert rel_err(out, ref) < 1e-4


def test_triton_scan_without_grad_returns_state_only_when_asked():
    inputs = make_scan_inputs(1, 2, 10, 4, "constant", torch.float32)
    args = {k: v.to(DEVICE) for k, v in inputs.items()}
    with torch.no_grad():
        out = scan_autograd.selective_scan_triton(*[args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")],
                                                 True, False, args["initial_state"])
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 10)


@pytest.mark.parametrize("bad,match", [
    (dict(A=torch.randn(4, 4, dtype=torch.float64)), "A must be float32"),
    (dict(D=torch.randn(4, dtype=torch.bfloat16)), "D must be float32"),
    (dict(A=-torch.rand(4, 257), B=torch.randn(2, 257, 8), C=torch.randn(2, 257, 8)), "N=257"),
    (dict(delta=torch.randn(2, 4, 9)), "delta"),
    (dict(z=torch.randn(3, 4, 8)), "z"),
    (dict(B=torch.randn(3, 4, 8)), "B"),
    (dict(C=torch.randn(4)), "C"),
    (dict(initial_state=torch.randn(2, 4, 5)), "initial_state"),
])
def test_triton_scan_bad_input_raises_value_error_naming_the_argument(bad, match):
    args = dict(u=torch.randn(2, 4, 8), delta=torch.randn(2, 4, 8), A=-torch.rand(4, 4), B=torch.randn(2, 4, 8),
                C=torch.randn(2, 4, 8), D=torch.randn(4), z=torch.randn(2, 4, 8))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        selective_scan(**{k: v.to(DEVICE) for k, v in args.items()}, backend="triton")


def test_causal_conv1d_and_its_update_reject_an_unknown_activation_naming_it():
    from seqmamba.ops import causal_conv1d, causal_conv1d_update

    x, weight = torch.randn(1, 3, 6), torch.randn(3, 4)
    with pytest.raises(ValueError, match="causal_conv1d: activation .* got 'relu'"):
        causal_conv1d(x, weight, activation="relu")
    with pytest.raises(ValueError, match="causal_conv1d_update: activation .* got 'relu'"):
        causal_conv1d_update(x[:, :, 0], torch.zeros(1, 3, 4), weight, activation="relu")


@pytest.mark.parametrize("column_taps", [True, "two-kernels", False],
                         ids=["column-taps", "column-taps-two-kernel-backward", "shifted-loads"])
@pytest.mark.parametrize("time_cap", [None, 4], ids=["backward-tiles-as-set", "backward-time-tiles-capped"])
@pytest.mark.parametrize("launch", [None, (4, 32, 1), (8, 256, 8)], ids=["default-tiles", "4x32-tiles", "8x256-tiles"])
@pytest.mark.parametrize("dtype,activation,width,time_major", [
    (torch.float32, "silu", 4, False), (torch.float32, None, 3, True), (torch.bfloat16, "silu", 4, True)])
def test_triton_causal_conv1d_forward_and_gradients_match_reference(monkeypatch, dtype, activation, width, time_major,
                                                                    launch, time_cap, column_taps):
    """Forward and every gradient; the default tiles, 4 x 32 tiles (5 channels over two channel blocks, 150 steps
    over five time tiles, the last partial) and one tile of 8 x 256 covering everything (LAUNCH sets the forward's
    and the backward's). With BWD_MAX_TIME_TILES = 4 the backward's time tile grows past the forward's (4 x 32:
    2 x 5 tiles -> 64 steps -> 128 steps, 2 x 2 tiles), so its two kernels run other tiles than the forward's.
    Both ways to the taps: the columns of aligned loads and shifted loads; with columns, the backward as one kernel
    (FUSED_BACKWARD) and as two."""
    _check_triton_conv(monkeypatch, dtype, activation, width, time_major, launch, time_cap, column_taps)


@pytest.mark.parametrize("time_cap", [None, 4], ids=["backward-tiles-as-set", "backward-time-tiles-capped"])
@pytest.mark.parametrize("launch", [None, (4, 32, 1)], ids=["default-tiles", "4x32-tiles"])
def test_triton_causal_conv1d_column_taps_reach_a_whole_group_back(monkeypatch, launch, time_cap):
    """Width 9: the first tap is 8 steps back, a whole group, all of it from the previous group's columns."""
    _check_triton_conv(monkeypatch, torch.float32, "silu", 9, False, launch, time_cap, True)


def _check_triton_conv(monkeypatch, dtype, activation, width, time_major, launch, time_cap, column_taps):
    module = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    monkeypatch.setattr(module, "FUSED_BACKWARD", column_taps is True)
    column_taps = bool(column_taps)
    monkeypatch.setattr(module, "COLUMN_TAPS", column_taps)
    assert module._column_taps(width, (launch or module.LAUNCH["fwd"])[1]) == column_taps
    if time_cap is not None:
        monkeypatch.setattr(module, "BWD_MAX_TIME_TILES", time_cap)
    if launch is not None:
        monkeypatch.setitem(module.LAUNCH, "fwd", launch)
        monkeypatch.setitem(module.LAUNCH, "bwd", launch)
    batch, dim, L = 2, 5, 150
    g = torch.Generator().manual_seed(1)
    if time_major:
        x = torch.randn(batch, L, dim, generator=g).to(dtype).transpose(1, 2)
    else:
        x = torch.randn(batch, dim, L, generator=g).to(dtype)
    weight = torch.randn(dim, width, generator=g).to(dtype)
    bias = torch.randn(dim, generator=g).to(dtype)
    dout = torch.randn(batch, dim, 2 * L, generator=g)[:, :, ::2].to(dtype)
    results = []
    for fn in (causal_conv1d_ref, lambda *a: causal_conv1d(*a, backend="triton")):
        xs, ws, bs = (t.detach().to(DEVICE).requires_grad_(True) for t in (x, weight, bias))
        out = fn(xs, ws, bs, activation)
        grads = torch.autograd.grad(out, (xs, ws, bs), dout.to(DEVICE))
        results.append((out, *grads))
    tol = TOL[dtype]
    for name, tri, ref in zip(("out", "dx", "dweight", "dbias"), results[1], results[0]):
        assert tri.dtype == ref.dtype, name
        assert rel_err(tri, ref) < tol, name


def test_conv_column_taps_rule(monkeypatch):
    """The column taps run where a tile is whole 8-step groups and a tap reaches back at most one group."""
    module = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    assert module._column_taps(4, 256) and module._column_taps(9, 8)
    assert not module._column_taps(10, 256)  # a tap 9 steps back is past the previous group
    assert not module._column_taps(4, 4)  # a 4-step tile is not a whole group
    monkeypatch.setattr(module, "COLUMN_TAPS", False)
    assert not module._column_taps(4, 256)


def test_conv_backward_time_tile_grows_past_the_atomic_cap(monkeypatch):
    """The backward's time tile doubles while batch x time tiles passes BWD_MAX_TIME_TILES, and stops at 1024."""
    module = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    monkeypatch.setitem(module.LAUNCH, "bwd", (4, 256, 4))
    monkeypatch.setattr(module, "BWD_MAX_TIME_TILES", 2048)
    assert module._backward_launch(64, 4112) == (4, 256, 4)  # 64 x 17 tiles: under the cap
    assert module._backward_launch(1, 2 ** 20) == (4, 512, 4)  # 4096 tiles at 256 steps, 2048 at 512
    assert module._backward_launch(2, 2 ** 20) == (4, 1024, 4)
    assert module._backward_launch(64, 2 ** 20) == (4, 1024, 4)  # past the cap even at 1024: 1024 is the most
    assert module._backward_launch(1, 1) == (4, 256, 4)


@pytest.mark.parametrize("large", [False, True], ids=["small-launch", "large-launch"])
@pytest.mark.parametrize("width", [4, 3, 2, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_causal_conv1d_update_matches_reference_and_updates_state(monkeypatch, dtype, width, large):
    """Both launches of the decode step's conv (UPDATE_CONFIGS, chosen by batch x dim) at widths 2 to 8; width 3
    leaves a padded lane in the (channels, 4) tile; 70 channels are not a multiple of the block."""
    module = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    monkeypatch.setattr(module, "UPDATE_LARGE_FROM", 0 if large else 10 ** 9)
    batch, dim = 3, 70
    x = torch.randn(batch, dim).to(dtype).to(DEVICE)
    state = torch.randn(batch, dim, width).to(dtype).to(DEVICE)
    weight, bias = torch.randn(dim, width).to(DEVICE), torch.randn(dim).to(DEVICE)
    state_ref = state.clone()
    out = causal_conv1d_update(x, state, weight, bias, "silu", backend="triton")
    ref = causal_conv1d_update_ref(x, state_ref, weight, bias, "silu")
    assert torch.equal(state, state_ref)
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("grouped,dtype,state_dtype", [
    (False, torch.float32, torch.float32), (True, torch.float32, torch.float32),
    (False, torch.bfloat16, torch.float32), (True, torch.bfloat16, torch.bfloat16)])
def test_triton_selective_state_update_matches_reference_in_place(grouped, dtype, state_dtype):
    batch, dim, N, G = 3, 12, 8, 3
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    state = r(batch, dim, N).to(state_dtype).to(DEVICE)
    x, dt, z = (r(batch, dim).to(dtype).to(DEVICE) for _ in range(3))
    A = -(torch.rand(dim, N, generator=g) + 0.3).to(DEVICE)
    shape = (batch, G, N) if grouped else (batch, N)
    B, C = r(*shape).to(dtype).to(DEVICE), r(*shape).to(dtype).to(DEVICE)
    D, dt_bias = r(dim).to(DEVICE), r(dim).to(DEVICE)
    state_ref = state.clone()
    y = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, True, backend="triton")
    y_ref = selective_state_update_ref(state_ref, x, dt, A, B, C, D, z, dt_bias, True)
    tol = TOL[dtype] if state_dtype == torch.float32 else 2e-2
    assert y.dtype == dtype
    assert rel_err(state, state_ref) < TOL[state_dtype]
    assert rel_err(y, y_ref) < tol


@pytest.mark.parametrize("block_d,max_bytes", [(None, None), (8, None), (None, 0)],
                         ids=["inside", "inside-8", "gemm-first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_state_update_with_the_dt_projection_inside_matches_projecting_first(monkeypatch, dtype, block_d,
                                                                                        max_bytes):
    """dt_proj_weight (dim, R): the kernel forms dt = W @ dt_low itself (rank R = 5, padded to 8; dt_low a
    strided slice as in Mamba.step), or, past DECODE_DT_PROJ_MAX_BYTES (0 here), the op forms it with one GEMM
    first (dt in the input dtype). Same state and y as projecting first and passing the full dt, both against the
    reference given the projection, and the reference against itself."""
    module = importlib.import_module("seqmamba.ops.selective_state_update.triton_kernels")
    monkeypatch.setattr(module, "DECODE_BLOCK_D", block_d)
    monkeypatch.setattr(module, "DECODE_DT_PROJ_MAX_BYTES", max_bytes)
    inside, launch = [], module._launch
    monkeypatch.setattr(module, "_launch", lambda *a: inside.append(a[3]["DT_PROJ"]) or launch(*a))
    batch, dim, N, R = 3, 12, 8, 5
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    state = r(batch, dim, N).to(DEVICE)
    x, z = (r(batch, dim).to(dtype).to(DEVICE) for _ in range(2))
    x_dbl = r(batch, R + 2 * N).to(dtype).to(DEVICE)
    dt_low, B, C = torch.split(x_dbl, [R, N, N], dim=-1)
    W = (0.5 * r(dim, R)).to(dtype).to(DEVICE)
    A = -(torch.rand(dim, N, generator=g) + 0.3).to(DEVICE)
    D, dt_bias = r(dim).to(DEVICE), r(dim).to(DEVICE)
    dt_full = dt_low.float() @ W.float().t()
    states = [state.clone() for _ in range(3)]
    y = selective_state_update(states[0], x, dt_low, A, B, C, D, z, dt_bias, True, backend="triton",
                               dt_proj_weight=W)
    y_ref = selective_state_update_ref(states[1], x, dt_low, A, B, C, D, z, dt_bias, True, dt_proj_weight=W)
    y_full = selective_state_update_ref(states[2], x, dt_full, A, B, C, D, z, dt_bias, True)
    assert rel_err(y_ref, y_full) < 1e-6 and rel_err(states[1], states[2]) < 1e-6
    assert inside == [max_bytes is None]
    state_tol = 1e-5 if max_bytes is None or dtype == torch.float32 else TOL[dtype]  # dt rounded to bf16 first
    assert rel_err(states[0], states[1]) < state_tol and rel_err(y, y_ref) < TOL[dtype]
    with pytest.raises(ValueError, match="dt_proj_weight"):
        selective_state_update(state, x, dt_low, A, B, C, D, z, dt_bias, True, dt_proj_weight=W[:4])
    with pytest.raises(ValueError, match="dt has shape"):
        selective_state_update(state, x, dt_full, A, B, C, D, z, dt_bias, True, dt_proj_weight=W)


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,dim,rows", [(3, 40, (16, 32, 4)), (20, 12, (16, 16, 2))],
                         ids=["3-rows-40-channels", "20-rows-12-channels"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_state_update_row_blocks_with_the_dt_projection_match_the_reference(monkeypatch, dtype, batch, dim,
                                                                                      rows, state_dtype):
    """DECODE_DT_PROJ_ROWS: past DECODE_DT_PROJ_MAX_BYTES (0 here) the step runs (batch rows x channels) blocks
    and forms dt = dt_low @ W^T by one tensor-core product per block (rank R = 5, padded to 16). Against the
    reference given the projection: a batch smaller than one row block (3 of 16; 40 channels over two blocks of
    32, the second partial) and one over two row blocks (20 = 16 + 4) with channels in one partial block. Rows and
    channels past the ends must stay untouched (one more state row in the buffer is checked)."""
    module = importlib.import_module("seqmamba.ops.selective_state_update.triton_kernels")
    monkeypatch.setattr(module, "DECODE_DT_PROJ_MAX_BYTES", 0)
    monkeypatch.setattr(module, "DECODE_DT_PROJ_ROWS", rows)
    monkeypatch.setattr(module, "DECODE_DT_PROJ_ROWS_FP32_STATE", True)  # fp32 states take the GEMM by default
    used, launch = [], module._launch_rows
    monkeypatch.setattr(module, "_launch_rows", lambda *a, **k: used.append(1) or launch(*a, **k))
    N, R = 16, 5
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    buffer = r(batch + 1, dim, N).to(state_dtype).to(DEVICE)
    state, past = buffer[:batch], buffer[batch].clone()
    x, z = (r(batch, dim).to(dtype).to(DEVICE) for _ in range(2))
    x_dbl = r(batch, R + 2 * N).to(dtype).to(DEVICE)
    dt_low, B, C = torch.split(x_dbl, [R, N, N], dim=-1)  # strided slices, as Mamba.step passes them
    W = (0.5 * r(dim, R)).to(dtype).to(DEVICE)
    A = -(torch.rand(dim, N, generator=g) + 0.3).to(DEVICE)
    D, dt_bias = r(dim).to(DEVICE), r(dim).to(DEVICE)
    state_ref = state.clone()
    y = selective_state_update(state, x, dt_low, A, B, C, D, z, dt_bias, True, backend="triton", dt_proj_weight=W)
    y_ref = selective_state_update_ref(state_ref, x, dt_low, A, B, C, D, z, dt_bias, True, dt_proj_weight=W)
    assert used == [1]
    assert y.dtype == dtype
    assert rel_err(state, state_ref) < TOL[state_dtype] and rel_err(y, y_ref) < TOL[dtype]
    assert torch.equal(buffer[batch], past)
    # by default (DECODE_DT_PROJ_ROWS_FP32_STATE off) only 16-bit states take the row blocks
    monkeypatch.setattr(module, "DECODE_DT_PROJ_ROWS_FP32_STATE", False)
    selective_state_update(state, x, dt_low, A, B, C, D, z, dt_bias, True, backend="triton", dt_proj_weight=W)
    assert used == [1, 1] if state_dtype == torch.bfloat16 else used == [1]


@pytest.mark.parametrize("bc_layout", ["variable", "grouped", "constant"])
def test_triton_scan_with_several_channels_per_program_matches_reference(monkeypatch, bc_layout):
    """BLOCK_D = 2 on 4 warps: B / C shared by the block's channels, dB / dC reduced over them."""
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", dict(block_d=2, T=16, num_warps=4))
    monkeypatch.setattr(scan_launch, "BWD_CONFIG", dict(block_d=2, T=16, num_warps=4))
    batch, dim, L, N = 2, 6, 40, 4  # dim 6 with groups of 3 channels exercises the BLOCK_D fallback to 1
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, groups=3 if bc_layout == "grouped" else 2)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


@pytest.mark.parametrize("block_d", [1, 2])
def test_triton_scan_backward_with_one_or_two_channels_per_program_matches_reference(monkeypatch, block_d):
    """L = 37 with 16-step chunks: carries across two chunk boundaries and a padded last chunk; with two channels
    per program dB / dC are reduced over the program's channels before the atomics."""
    monkeypatch.setattr(scan_launch, "BWD_CONFIG", dict(block_d=block_d, T=16, num_warps=1))
    batch, dim, L, N = 2, 4, 37, 4
    inputs = make_scan_inputs(batch, dim, L, N, "variable", torch.float32, seed=7)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


@pytest.mark.parametrize("masked_last", [False, True])
def test_triton_scan_forward_config_options_match_reference(monkeypatch, masked_last):
    """masked_last: the chunk's last state stored by the thread holding it, or extracted by a where-sum."""
    monkeypatch.setattr(scan_launch, "FWD_CONFIG",
                        dict(block_d=1, T=16, num_warps=1, masked_last=masked_last))
    batch, dim, L, N = 2, 3, 37, 4
    inputs = make_scan_inputs(batch, dim, L, N, "variable", torch.float32, seed=11)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


@pytest.mark.parametrize("bc_layout", ["variable", "constant"])
def test_triton_scan_with_prefetched_component_loads_matches_reference(monkeypatch, bc_layout):
    """prefetch: component n + 1's A / B / C / saved-state / carry loads issued before component n's scans, in
    the forward and the backward; the prefetch past the last component is masked."""
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", dict(block_d=1, T=16, num_warps=1, prefetch=True,
                                                         masked_last=True))
    monkeypatch.setattr(scan_launch, "BWD_CONFIG", dict(block_d=2, T=16, num_warps=1, prefetch=True))
    batch, dim, L, N = 2, 4, 37, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=5)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


def test_triton_scan_backward_with_shorter_chunks_than_forward(monkeypatch):
    """Forward chunks of 32 steps save the state every 16 steps for a backward walking chunks of 16."""
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", dict(block_d=1, T=32, num_warps=1))
    monkeypatch.setattr(scan_launch, "BWD_CONFIG", dict(block_d=1, T=16, num_warps=1))
    batch, dim, L, N = 1, 3, 37, 4  # 37 = 32 + 5: the last forward chunk holds one partial backward chunk
    inputs = make_scan_inputs(batch, dim, L, N, "variable", torch.float32, seed=3)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


def test_triton_scan_mamba_block_layout_matches_reference_and_keeps_the_layout():
    """The Mamba block's layouts: delta / z time-major views of (batch, L, dim), u contiguous (the conv's
    output), B / C transposed slices of one (batch, L, dt_rank + 2N) tensor. dim 20 = a full block of 16
    channels and a partial one. out and the gradients of delta / z come back stored time-major."""
    batch, dim, L, N, dt_rank = 2, 20, 37, 4, 3
    g = torch.Generator().manual_seed(5)
    time_major = lambda scale=1.0: (torch.randn(batch, L, dim, generator=g) * scale).transpose(1, 2)  # noqa: E731
    x_dbl = torch.randn(batch, L, dt_rank + 2 * N, generator=g)
    inputs = dict(u=torch.randn(batch, dim, L, generator=g), delta=time_major(0.5),
                  A=-(torch.rand(dim, N, generator=g) + 0.3),
                  B=x_dbl[..., dt_rank:dt_rank + N].transpose(1, 2), C=x_dbl[..., dt_rank + N:].transpose(1, 2),
                  D=torch.randn(dim, generator=g), z=time_major(), delta_bias=0.1 * torch.randn(dim, generator=g),
                  initial_state=torch.randn(batch, dim, N, generator=g))
    assert scan_launch.is_block_layout(inputs["u"], inputs["delta"], inputs["z"])
    dout = torch.randn(batch, L, dim).transpose(1, 2)  # what out_proj's backward hands back
    dlast = torch.randn(batch, dim, N)
    tri = triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)
    assert tri[0].stride(1) == 1, f"out strides {tri[0].stride()}: expected time-major storage"
    assert tri[2]["delta"].stride(1) == 1 and tri[2]["z"].stride(1) == 1 and tri[2]["u"].stride(2) == 1


def test_backward_launch_rules_follow_occupancy(monkeypatch):
    """The launch rules (H100 measurements in notes/triton_scan.md): one channel per program when a config's
    multi-channel programs would not fill the SMs; the register cap only with enough programs; the forward's
    prefetch only with few programs and no states to save; no CUDA options at all off CUDA."""
    monkeypatch.setattr(scan_launch, "_sm_count", lambda index: 132)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    cfg = scan_launch.BWD_CONFIG
    launch = lambda batch, L, device=cuda, dim=1536: scan_launch._launch_config(  # noqa: E731
        dim, 16, L, dim, backward=True, batch=batch, device=device)
    options = lambda *args, **kwargs: launch(*args, **kwargs)[3]  # noqa: E731
    assert options(8, 4096) == options(8, 1024) == options(1, 262144) == {"maxnreg": cfg["maxnreg"]}
    assert options(1, 262144, dim=512) == {}  # 3.9 programs per SM fit in one wave without the cap
    assert options(8, 4096, cpu) == {}
    assert launch(1, 262144)[4] and launch(8, 4096)[4] == bool(cfg["prefetch"])
    monkeypatch.setattr(scan_launch, "BWD_CONFIG", {**cfg, "block_d": 2, "maxnreg_min_L": 2048})
    assert launch(1, 262144)[0] == 1  # 768 two-channel programs < 8 per SM
    assert launch(8, 4096)[0] == 2
    assert launch(1, 262144, cpu)[0] == 2  # no occupancy rule off CUDA
    assert options(8, 1024) == {}  # below maxnreg_min_L
    fwd = lambda batch, save_states=False: scan_launch._launch_config(  # noqa: E731
        1536, 16, 65536, 1536, backward=False, batch=batch, device=cuda, save_states=save_states)
    fcfg = scan_launch.FWD_CONFIG
    assert fwd(1)[4] and fwd(2)[4] and not fwd(8)[4]  # forward prefetch: 11.6 and 23 programs per SM, not 93
    assert fwd(1)[1:3] == (fcfg["latency_T"], fcfg["latency_num_warps"])  # and its own chunk and warps
    assert fwd(8)[1:3] == fwd(1, save_states=True)[1:3] == (fcfg["T"], fcfg["num_warps"])
    assert not fwd(1, save_states=True)[4]
    # the forward's register cap (H200): inference and, since the thirty-second session (maxnreg_inference_only
    # off), training; not in the latency mode (< 32 programs per SM); with maxnreg_inference_only inference only
    assert fwd(8)[3] == fwd(8, save_states=True)[3] == {"maxnreg": fcfg["maxnreg"]}
    assert fwd(2)[3] == fwd(1)[3] == fwd(2, save_states=True)[3] == {}
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", {**fcfg, "maxnreg_inference_only": True})
    assert fwd(8, save_states=True)[3] == {} and fwd(8)[3] == {"maxnreg": fcfg["maxnreg"]}


def test_training_split_rule_cuts_long_sequences_only_when_the_gpu_is_starved(monkeypatch):
    """BWD_CONFIG's split: (1, 256, 2^20) (the 1.4M DNA model, 1.9 programs per SM) in 16 segments on 132 SMs
    (2112 programs wanted), but not (1, 1536, L) (11.6 per SM, where 2 segments were 1.9x slower on the H200);
    shapes with enough programs, short sequences, constant B / C and the CPU are never split."""
    from types import SimpleNamespace
    monkeypatch.setattr(scan_launch, "_sm_count", lambda index: 132)
    var = torch.empty(1, 16, 1)
    segments = lambda batch, dim, L, device="cuda", B=var: scan_launch.split_segments_train(  # noqa: E731
        SimpleNamespace(shape=(batch, dim, L), device=torch.device(device, 0) if device == "cuda" else
                        torch.device(device)), B, var, 256)
    assert segments(1, 256, 2 ** 20) == 16 and segments(1, 512, 2 ** 20) == 8
    assert segments(1, 1536, 2 ** 18) == 1  # 11.6 programs per SM: the split's extra passes cost more
    assert segments(1, 256, 2 ** 14) == 4 and segments(1, 256, 2 ** 13) == 2  # segments of >= split_min_len (4096)
    assert segments(1, 256, 8191) == 1
    assert segments(8, 1536, 2 ** 20) == segments(64, 128, 4112) == 1  # enough programs / too short
    assert segments(1, 256, 2 ** 20, B=torch.empty(256, 16)) == 1  # time-invariant B
    assert segments(1, 256, 2 ** 20, device="cpu") == 1


def test_inference_split_rule_cuts_long_sequences_only_when_the_gpu_is_starved(monkeypatch):
    """FWD_CONFIG's split of the inference forward: (1, 256, 2^20) (1.9 programs per SM) in 64 segments on 132 SMs
    (8448 programs wanted; 1.66x one pass on the H200), but not (1, 768, L) or (1, 1536, L) (5.8 and 11.6 per SM,
    where 2-8 segments were 0.37-0.66x); segments of >= split_min_len (4096) steps; never with saved states (the
    training forward has its own rule) or on the CPU."""
    monkeypatch.setattr(scan_launch, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)
    segments = lambda batch, dim, L, device=cuda, save_states=False: scan_launch.split_segments(  # noqa: E731
        batch, dim, L, device, save_states)
    assert segments(1, 256, 2 ** 20) == 64 and segments(2, 256, 2 ** 20) == 32 and segments(1, 512, 2 ** 20) == 32
    assert segments(1, 768, 2 ** 18) == segments(1, 1536, 2 ** 20) == segments(2, 1536, 2 ** 16) == 1
    assert segments(1, 256, 2 ** 14) == 4 and segments(1, 256, 2 ** 13) == 2 and segments(1, 256, 8191) == 1
    assert segments(1, 256, 2 ** 20, save_states=True) == 1
    assert segments(1, 256, 2 ** 20, device=torch.device("cpu")) == 1


# ------------------------------------------------------------------------------------------------------------------
# Edge lengths against the float64 reference (every buffer the wrappers allocate NaN-filled, as in every test here).

def float64_and_triton_scans(inputs, use, dout, dlast, tol, softplus=True):
    """The Triton scan (inputs as given) against selective_scan_ref in float64: out, last state and the gradient
    of every input in ``use`` plus u / delta / A / B / C, each to ``tol`` norm-wise relative."""
    def run(fn, cast):
        args = {k: (cast(v).detach().to(DEVICE).requires_grad_(True) if v is not None and (k in use or k in
                "u delta A B C".split()) else None) for k, v in inputs.items()}
        out, last = fn(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"], args["z"],
                       args["delta_bias"], softplus, True, args["initial_state"])
        loss = (out.double() * dout.to(DEVICE).double()).sum() + (last.double() * dlast.to(DEVICE).double()).sum()
        names = [k for k, v in args.items() if v is not None]
        return out, last, dict(zip(names, torch.autograd.grad(loss, [args[k] for k in names])))

    ref = run(selective_scan_ref, lambda t: t.double())
    tri = run(scan_autograd.selective_scan_triton, lambda t: t)
    errors = {"out": rel_err(tri[0], ref[0]), "last_state": rel_err(tri[1], ref[1]),
              **{f"d{name}": rel_err(tri[2][name], ref[2][name]) for name in ref[2]}}
    assert max(errors.values()) < tol, errors
    return tri, ref


# One past each chunk boundary the kernels use here: 16-step chunks (short_chunks), and the default configs'
# chunks under the interpreter (backward 256, forward 512; the Mamba block layout's 32).
EDGE_LENGTHS_SHORT = (1, 2, 3, 17, 33)


@pytest.mark.parametrize("L", EDGE_LENGTHS_SHORT)
@pytest.mark.parametrize("bc_layout,use", [("variable", ALL_OPTIONAL), ("constant", ("D", "z", "delta_bias")),
                                           ("grouped", ("initial_state",))])
def test_triton_scan_edge_lengths_match_float64_reference_with_nan_filled_buffers(short_chunks, L, bc_layout, use):
    batch, dim, N = 2, 4, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=L)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    float64_and_triton_scans(inputs, use, dout, dlast, 1e-4)


@pytest.mark.parametrize("L,time_major", [(257, False), (513, False), (33, True)])
def test_triton_scan_one_past_the_default_chunks_matches_float64_reference_with_nan_filled_buffers(L, time_major):
    batch, dim, N = 1, 2, 2
    inputs = make_scan_inputs(batch, dim, L, N, "variable", torch.float32, seed=L, time_major=time_major)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    float64_and_triton_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)


def test_triton_scan_dA_at_one_step_is_exact_zero_without_state_and_carries_a_tiny_one():
    """At L = 1, dA = dh_0 delta_0 a_0 h_{-1}: exactly 0 without an initial state, and proportional to a state far
    below the step's input (1e-12 of it) with one. Recovering a_0 h_{-1} as h_0 - b_0 gives 0 for the tiny state
    (fp32 absorbs it into h_0) and, with the GPU compiler's FMA contraction, b_0's rounding error instead of 0
    (the issue-9 bug: relative error ~1e20 on the H200)."""
    batch, dim, N = 2, 3, 4
    for scale in (None, 1e-12):
        inputs = make_scan_inputs(batch, dim, 1, N, "variable", torch.float32, seed=3)
        use = ("D", "z", "delta_bias")
        if scale is not None:
            inputs["initial_state"] = inputs["initial_state"] * scale
            use = use + ("initial_state",)
        dout, dlast = torch.randn(batch, dim, 1), torch.randn(batch, dim, N)
        tri, ref = float64_and_triton_scans(inputs, use, dout, dlast, 1e-4)
        if scale is None:
            assert torch.count_nonzero(tri[2]["A"]) == 0 and torch.count_nonzero(ref[2]["A"]) == 0


@pytest.mark.parametrize("softplus,bias,time_major", [(True, True, False), (False, True, True), (True, False, True)])
def test_segment_decay_kernel_sums_each_segments_deltas_as_the_scan_forms_them(monkeypatch, softplus, bias,
                                                                              time_major):
    """_segment_decay (the split scans' P_s = exp(A sum delta)): 3 segments of 300 steps (two 256-step tiles, the
    second partial) of batch row 1, 5 channels over two channel blocks, steps past the segments (a tail) ignored;
    against the same sums in float64. A wrong segment offset, stride or tile mask moves the sums by far more."""
    monkeypatch.setattr(scan_launch, "SEGMENT_SUM_LAUNCH", (4, 256, 1))
    g = torch.Generator().manual_seed(3)
    batch, dim, N, segments, seg_len = 2, 5, 3, 3, 300
    L = segments * seg_len + 7
    delta = torch.randn(batch, L, dim, generator=g).transpose(1, 2) if time_major else \
        torch.randn(batch, dim, L, generator=g)
    delta_bias = torch.randn(dim, generator=g) if bias else None
    A = -torch.rand(dim, N, generator=g) * 0.01
    got = scan_launch._segment_decay(delta.to(DEVICE), delta_bias.to(DEVICE) if bias else None, softplus,
                                     A.to(DEVICE), 1, segments, seg_len)
    d = delta[1, :, :segments * seg_len].double() + (delta_bias.double()[:, None] if bias else 0.0)
    d = torch.nn.functional.softplus(d) if softplus else d
    want = torch.exp(d.reshape(dim, segments, seg_len).sum(-1).t()[:, :, None] * A.double())
    assert got.shape == (segments, dim, N)
    assert rel_err(got.cpu(), want) < 1e-6


@pytest.mark.parametrize("dim,groups,time_major,softplus,use_z,bias", [(8, 1, False, True, True, True),
                                                                       (6, 2, True, True, False, True),
                                                                       (8, 1, True, False, True, False)])
def test_split_segment_reductions_match_the_float64_recurrence(monkeypatch, dim, groups, time_major, softplus, use_z,
                                                               bias):
    """The split scans' per-segment passes as reductions (SPLIT_REDUCTION_PASSES): batch row 1 of 2, 3 segments
    of 150 steps (64-step tiles: two whole and one partial) and 9 tail steps they must not read. The end states
    from zero and the decays exp(A sum delta) (_segment_end_states), and dL/d(segment start state) with no
    gradient entering at the end (_segment_start_grads), against selective_scan_ref run on each segment in
    float64. 8 channels: two 4-channel programs; 6 in 2 B / C groups: one channel per program. Per-step decays
    ~0.95-0.99, so every step of a segment weighs in: an off-by-one step in the running sums (inclusive vs
    exclusive), a wrong segment offset, stride or group moves the results by 1e-3 or more."""
    monkeypatch.setattr(scan_launch, "SEGMENT_PASS_LAUNCH", {"end_state": (4, 64, 1), "start_grad": (4, 64, 1)})
    g = torch.Generator().manual_seed(dim + 10 * groups)
    batch, N, segments, seg_len = 2, 3, 3, 150
    L = segments * seg_len + 9

    def seq(rows):  # (batch, rows, L), stored time-major when asked
        return torch.randn(batch, L, rows, generator=g).transpose(1, 2) if time_major else \
            torch.randn(batch, rows, L, generator=g)

    u, z, dout = seq(dim), seq(dim), seq(dim)
    delta = seq(dim) * 0.5 - 4.0 if softplus else seq(dim).abs() * 0.03
    B = torch.randn(batch, groups, N, L, generator=g) if groups > 1 else torch.randn(batch, N, L, generator=g)
    C = torch.randn(B.shape, generator=g)
    A = -(0.5 + torch.rand(dim, N, generator=g))
    delta_bias = torch.randn(dim, generator=g) * 0.3 if bias else None
    on = lambda t: t.to(DEVICE) if t is not None else None  # noqa: E731
    h, decay = scan_launch._segment_end_states(on(u), on(delta), on(A), on(B), on(delta_bias), softplus, 1,
                                               segments, seg_len)
    grads = scan_launch._segment_start_grads(on(delta), on(A), on(C), on(z) if use_z else None, on(dout),
                                             on(delta_bias), softplus, 1, segments, seg_len)
    assert h.shape == decay.shape == grads.shape == (segments, dim, N)
    for s in range(segments):
        steps = slice(s * seg_len, (s + 1) * seg_len)
        part = lambda t: t[1:2, ..., steps].double()  # noqa: E731
        h0 = torch.zeros(1, dim, N, dtype=torch.float64, requires_grad=True)
        bias64 = delta_bias.double() if bias else None
        out, last = selective_scan_ref(part(u), part(delta), A.double(), part(B), part(C), None,
                                       part(z) if use_z else None, bias64, softplus, initial_state=h0,
                                       return_last_state=True)
        (want_grad,) = torch.autograd.grad((out * part(dout)).sum(), [h0])
        d = part(delta)[0] + (bias64[:, None] if bias else 0.0)
        d = torch.nn.functional.softplus(d) if softplus else d
        assert rel_err(h[s].cpu(), last[0].detach()) < 1e-5, s
        assert rel_err(decay[s].cpu(), torch.exp(d.sum(-1)[:, None] * A.double())) < 1e-5, s
        assert rel_err(grads[s].cpu(), want_grad[0]) < 1e-5, s


@pytest.mark.parametrize("reductions", [True, False], ids=["reduction passes", "scan passes"])
@pytest.mark.parametrize("L,bc_layout,time_major,delta_shift", [(64, "variable", False, 0.0),
                                                                (87, "grouped", True, -6.0),
                                                                (87, "constant", False, -6.0)])
def test_triton_scan_forward_with_L_split_across_programs_matches_float64_reference(monkeypatch, short_chunks, L,
                                                                                    bc_layout, time_major,
                                                                                    delta_shift, reductions):
    """The inference forward cut into 4 segments (16-step chunks inside each), end states from zero, carried
    across segments, scanned again; L = 87 leaves a 3-step tail after 4 x 21 steps. Initial state given. With
    delta shifted by -6 before the softplus a segment's decay is ~0.95, so the carried states matter. The
    segments' first pass both ways (SPLIT_REDUCTION_PASSES)."""
    monkeypatch.setattr(scan_launch, "FORCE_SEGMENTS", 4)
    monkeypatch.setattr(scan_launch, "SPLIT_REDUCTION_PASSES", reductions)
    batch, dim, N = 2, 4, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=L, time_major=time_major)
    inputs["delta"] = inputs["delta"] + delta_shift
    args = {k: v.to(DEVICE) for k, v in inputs.items()}
    assert scan_launch.split_segments(batch, dim, L, args["u"].device, save_states=False) == 4
    with torch.no_grad():
        out, last = scan_autograd.selective_scan_triton(**args, delta_softplus=True, return_last_state=True)
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in args.items()}, delta_softplus=True,
                                           return_last_state=True)
    assert rel_err(out, ref) < 1e-4 and rel_err(last, ref_last) < 1e-4
    assert scan_launch.split_segments(batch, dim, L, args["u"].device, save_states=True) == 1


@pytest.mark.parametrize("reductions", [True, False], ids=["reduction passes", "scan passes"])
@pytest.mark.parametrize("L,bc_layout,time_major,use", [(128, "variable", False, ALL_OPTIONAL),
                                                        (141, "grouped", True, ALL_OPTIONAL),
                                                        (70, "variable", False, ("z", "delta_bias"))])
def test_triton_training_scan_with_L_split_across_programs_matches_float64_reference(monkeypatch, short_chunks, L,
                                                                                     bc_layout, time_major, use,
                                                                                     reductions):
    """The training forward and backward cut into 4 segments of whole 16-step chunks (L = 128: 4 x 32; 141:
    4 x 32 and a 13-step tail; 70: 4 x 16 and a 6-step tail), delta shifted so a segment's decay (~0.9) carries
    state and state gradient across segments: out, last state and every gradient (initial state included). The
    segments' no-carry passes both ways (SPLIT_REDUCTION_PASSES)."""
    monkeypatch.setattr(scan_launch, "FORCE_TRAIN_SEGMENTS", 4)
    monkeypatch.setattr(scan_launch, "SPLIT_REDUCTION_PASSES", reductions)
    batch, dim, N = 2, 4, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=L, time_major=time_major)
    inputs["delta"] = inputs["delta"] - 5.0
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    calls = []
    split = scan_launch.scan_forward_split_train
    monkeypatch.setattr(scan_autograd, "scan_forward_split_train", lambda *a: calls.append(a[-1]) or split(*a))
    float64_and_triton_scans(inputs, use, dout, dlast, 1e-4)
    assert calls == [4], "the split path ran"
    # constant B / C (dim, N) is not split
    assert scan_launch.split_segments_train(inputs["u"], inputs["A"], inputs["A"], 16) == 1


@pytest.mark.parametrize("L,bc_layout,time_major,use,chunk_t", [
    (35, "variable", False, ALL_OPTIONAL, 16),           # 2 x 16 + 3
    (20, "grouped", True, ("z", "initial_state"), 16),   # 16 + 4, the Mamba block's layout
    (24, "constant", False, ("D", "z", "delta_bias"), 16),  # 16 + 8: half a chunk, the largest tail taken
    (520, "variable", False, ALL_OPTIONAL, None),        # the default chunks: 512 + 8, the tail's own 16-step chunk
])
def test_triton_training_scan_with_a_tail_launch_matches_float64_reference(monkeypatch, L, bc_layout, time_major,
                                                                           use, chunk_t):
    """The training scan as two launches per pass (whole chunks, then the short tail from the state the first
    leaves; the tail's state gradient carried back into the first): out, last state and every gradient against
    float64. A backward that dropped the carried gradient fails here (mutation-checked)."""
    monkeypatch.setattr(scan_launch, "FORCE_CHUNK_T", chunk_t)
    monkeypatch.setattr(scan_launch, "FORCE_TAIL", True)
    batch, dim, N = (2, 4, 3) if chunk_t else (1, 2, 2)
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=L, time_major=time_major)
    inputs["delta"] = inputs["delta"] - 4.0  # slow decay: the state and its gradient cross the launch boundary
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    starts, lengths = [], []
    tail_forward, forward = scan_autograd.scan_forward_tail, scan_launch.scan_forward
    monkeypatch.setattr(scan_autograd, "scan_forward_tail", lambda *a: starts.append(a[-1]) or tail_forward(*a))
    monkeypatch.setattr(scan_launch, "scan_forward",
                        lambda u, *a, **k: lengths.append(u.shape[-1]) or forward(u, *a, **k))
    float64_and_triton_scans(inputs, use, dout, dlast, 1e-4)
    start = L // (chunk_t or 512) * (chunk_t or 512)
    assert starts == [start] and lengths == [start, L - start], "the tail ran as its own launch"
    if chunk_t is None:  # the tail's chunks fit the tail, not the default 512 / 256
        args = (dim, N, L - start, dim)
        chunks = [scan_launch._launch_config(*args, backward=backward)[1] for backward in (False, True)]
        assert chunks == [16, 16]


def test_tail_launch_rule():
    """tail_start: whole forward chunks, then a tail of at most half a chunk whose padding is at least L / 32,
    only when switched on."""
    def start(L, chunk_t=None):
        u = torch.zeros(1, 4, L)
        return scan_launch.tail_start(u, u, None, torch.zeros(4, 3), u[:, :3], u[:, :3])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scan_launch, "FORCE_TAIL", True)
        # default chunks on the CPU: forward 512 (a multiple of the backward's 256)
        assert [start(L) for L in (4112, 4096, 4352, 4353, 520, 512, 16, 300, 2**13 + 16, 2**14 + 16)] == \
            [4096, 0, 4096, 0, 512, 0, 0, 0, 2**13, 0]
        mp.setattr(scan_launch, "FORCE_CHUNK_T", 16)
        assert [start(L) for L in (35, 41, 24, 25, 32, 8)] == [32, 0, 16, 0, 0, 0]
        mp.setattr(scan_launch, "FORCE_TAIL", False)
        assert start(35) == 0
    assert scan_launch.BWD_CONFIG["tail_launch"] is False  # off: neutral on the H200 (BENCHMARKS.md, sixteenth session)
    assert scan_launch.tail_start(torch.zeros(1, 4, 4112), torch.zeros(1, 4, 4112), None, torch.zeros(4, 3),
                                  torch.zeros(1, 3, 4112), torch.zeros(1, 3, 4112)) == 0


@pytest.mark.parametrize("bc_layout,time_major,use", [("variable", False, ("z", "delta_bias")),
                                                      ("grouped", True, ("z",)),
                                                      ("constant", False, ("delta_bias",))])
def test_state_gradient_kernel_equals_the_backward_state_gradient_and_the_float64_one(short_chunks, bc_layout,
                                                                                       time_major, use):
    """scan_state_grad (the split's local pass) = dL/d(initial state) of the full backward with no last-state
    gradient, and of the float64 reference; 37 steps = two 16-step chunks and a partial one."""
    batch, dim, L, N = 2, 4, 37, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=5, time_major=time_major)
    args = {k: (v.to(DEVICE) if v is not None else None) for k, v in inputs.items()}
    z = args["z"] if "z" in use else None
    bias = args["delta_bias"] if "delta_bias" in use else None
    dout = torch.randn(batch, dim, L, device=DEVICE)
    states = scan_launch.scan_forward(args["u"], args["delta"], args["A"], args["B"], args["C"], None, z, bias, True,
                                      args["initial_state"], True)[2]
    full = scan_launch.scan_backward(args["u"], args["delta"], args["A"], args["B"], args["C"], None, z, bias, True,
                                     states, dout, None)[8]
    local = scan_launch.scan_state_grad(args["u"], args["delta"], args["A"], args["B"], args["C"], z, bias, True, dout)
    torch.testing.assert_close(local, full, rtol=1e-6, atol=1e-7)
    h0 = args["initial_state"].double().requires_grad_(True)
    out = selective_scan_ref(args["u"].double(), args["delta"].double(), args["A"].double(), args["B"].double(),
                             args["C"].double(), None, z.double() if z is not None else None,
                             bias.double() if bias is not None else None, True, initial_state=h0)
    (expected,) = torch.autograd.grad((out * dout.double()).sum(), [h0])
    assert rel_err(local, expected) < 1e-5


@pytest.mark.parametrize("pre", [-30.0, -18.0, -15.0, -8.0, 0.5, 25.0])
def test_triton_softplus_keeps_tiny_deltas_like_the_reference(pre):
    # delta = softplus(pre): at pre = -18 it is 1.5e-8, where log(1 + exp(pre)) in fp32 gives exactly 0 (and
    # 17% too little at -15); the scan and the decode step must keep such long memories as the CPU path does
    torch.manual_seed(0)
    batch, dim, L, N = 1, 4, 8, 4
    u = torch.randn(batch, dim, L, device=DEVICE)
    delta = torch.zeros(batch, dim, L, device=DEVICE)
    A = -torch.rand(dim, N, device=DEVICE) - 0.5
    B, C = torch.randn(batch, N, L, device=DEVICE), torch.randn(batch, N, L, device=DEVICE)
    bias = torch.full((dim,), pre, device=DEVICE)
    out = selective_scan(u, delta, A, B, C, None, delta_bias=bias, delta_softplus=True, backend="triton")
    ref = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(), None,
                             delta_bias=bias.double(), delta_softplus=True)
    assert rel_err(out, ref) < 1e-5
    state = torch.zeros(batch, dim, N, device=DEVICE)  # from zero, the new state and y are proportional to delta
    state_ref = state.double().clone()
    y = selective_state_update(state, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0], dt_bias=bias,
                               dt_softplus=True, backend="triton")
    y_ref = selective_state_update_ref(state_ref, u[..., 0].double(), delta[..., 0].double(), A.double(),
                                       B[..., 0].double(), C[..., 0].double(), dt_bias=bias.double(), dt_softplus=True)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(state, state_ref) < 1e-5


# ------------------------------------------------------------------------------------------------------------------
# The backward's fast flip (BWD_CONFIG fast_flip) swaps lanes with inline PTX, which is right only in the layout it
# assumes; Triton picks layouts. Compiled for sm_90 on the CPU (Triton's ptxas; no GPU), every specialisation that
# triton_launch._fast_flip_ok lets through must give the shuffled tensors that layout.

def sass_scan_report(flag: str, timeout: int = 600):
    """The JSON rows ``benchmarks/sass_scan.py <flag>`` prints last, compiled in a child process (this one runs
    Triton's interpreter, which cannot compile for a target)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sass_scan.py")
    result = subprocess.run([sys.executable, script, flag], capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fast_flip_shuffles_only_in_the_layout_it_assumes():
    rows = sass_scan_report("--fast-flip-layouts")
    assert len(rows) >= 14 and {row["mode"] for row in rows} == {1, 2}
    for row in rows:
        assert row["layouts"], f"no inline shuffles found in {row['kernel']} {row['variant']}"
        for shape, layout in row["layouts"]:
            assert shape == "1x256", (row["variant"], shape)
            assert ("sizePerThread = [1, 8]" in layout and "threadsPerWarp = [1, 32]" in layout
                    and "warpsPerCTA = [1, 1]" in layout), (row["kernel"], row["variant"], layout)
        # the one-shuffle flips replace Triton's (five butterflies per register)
        assert row["loop_shuffles"] < row["loop_shuffles_plain"] - 48, row


def test_programmatic_launch_kernels_wait_before_any_global_memory_access():
    """Under programmatic dependent launch (launch.PROGRAMMATIC_LAUNCH) a kernel's programs may start while the
    kernel before it still runs, so nothing may touch global memory before the grid dependency wait. Compiled for
    sm_90 (Triton's ptxas, no GPU): with PDL every such kernel (all that CachedLaunch registered) waits (ACQBULK),
    then lets the next kernel start (PREEXIT), and only then loads or stores; without it neither instruction is
    there."""
    *rows, registered = sass_scan_report("--pdl-report")
    # every kernel built with CachedLaunch(..., pdl=True) is checked here, with PDL on (and all but the scan's off)
    assert {row["kernel"] for row in rows if row["pdl"]} == set(registered["registered"])
    assert len(registered["registered"]) >= 13
    for row in rows:
        assert row["launch_pdl"] == row["pdl"], row
        if row["pdl"]:
            assert 0 <= row["wait"] < row["trigger"] < row["first_global"], row
        else:
            assert row["wait"] == row["trigger"] == -1 and row["first_global"] >= 0, row


def test_programmatic_launch_rule(monkeypatch):
    """PDL only when switched on, on NVIDIA devices of compute capability 9.0 or later (not ROCm), and never under
    the interpreter; a kernel built with pdl=True gets its PDL constexpr from the rule at every launch."""
    from seqmamba.ops import launch
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(launch, "_capability_major", lambda index: 9)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(launch, "PROGRAMMATIC_LAUNCH", True)
    assert launch.programmatic_launch(cuda) and not launch.programmatic_launch(cpu)
    monkeypatch.setattr(launch, "_capability_major", lambda index: 8)
    assert not launch.programmatic_launch(cuda)
    monkeypatch.setattr(launch, "_capability_major", lambda index: 9)
    monkeypatch.setattr(torch.version, "hip", "6.4")  # ROCm: MI300 reports capability 9.4
    assert not launch.programmatic_launch(cuda)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not launch.programmatic_launch(cuda)
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(launch, "PROGRAMMATIC_LAUNCH", False)
    assert not launch.programmatic_launch(cuda)

    seen = []

    class Kernel:  # records what CachedLaunch hands Triton
        def __getitem__(self, grid):
            return lambda *args, **kwargs: seen.append(kwargs)

    for enabled in (False, True):
        monkeypatch.setattr(launch, "programmatic_launch", lambda device, enabled=enabled: enabled)
        launch.CachedLaunch(Kernel(), pdl=True)((1,), (torch.zeros(1),), (), dict(X=1))
        launch.CachedLaunch(Kernel())((1,), (torch.zeros(1),), (), dict(X=1))
    off, plain_off, on, plain_on = seen
    assert off["PDL"] is False and "launch_pdl" not in off
    assert on["PDL"] is True and on["launch_pdl"] is True
    assert "PDL" not in plain_off and "PDL" not in plain_on and "launch_pdl" not in plain_on


def test_gluon_forward_compiles_for_sm90_with_fewer_instructions_than_the_triton_forward():
    """The inference forward in Gluon (FWD_CONFIG gluon; no interpreter exists for Gluon, so its results are checked
    by the GPU tests): every specialisation compiles for sm_90 (Triton's ptxas, no GPU), and its loop over state
    components issues fewer instructions per state element than the Triton forward's, without the Triton kernel's
    shared-memory round trip on one warp (its layout is explicit: one run of T / 32 steps per lane)."""
    rows = sass_scan_report("--gluon-report")
    assert len(rows) >= 6
    for row in rows:
        gluon, triton_fwd = row["gluon_fwd"], row["fwd"]
        assert gluon["per_element"] < triton_fwd["per_element"], row
        assert gluon["stack"] <= 64, row
        if row["variant"]["num_warps"] == 1:
            assert gluon["shared"] == 0, row


def test_gluon_forward_rule(monkeypatch):
    """_gluon_forward_ok: only when asked, on CUDA, for one channel per program with time-varying B / C and T a
    multiple of 64 x warps (a 32-step chunk on one warp has no bf16 pair per lane: it does not compile)."""
    # this process runs the interpreter, where no Gluon kernel is defined (imported before the variable goes)
    monkeypatch.setattr(importlib.import_module("seqmamba.ops.selective_scan.gluon_kernels"), "AVAILABLE", True)
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "gluon", True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    ok = scan_launch._gluon_forward_ok
    assert ok(cuda, 1, 512, 1, True, True) and ok(cuda, 1, 1024, 2, True, True)
    assert not ok(cpu, 1, 512, 1, True, True)
    assert not ok(cuda, 2, 512, 1, True, True) and not ok(cuda, 1, 512, 1, False, True)
    assert ok(cuda, 1, 64, 1, True, True) and not ok(cuda, 1, 32, 1, True, True) and not ok(cuda, 1, 64, 2, True, True)
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "gluon", False)
    assert not ok(cuda, 1, 512, 1, True, True)


def test_gluon_bf16_pairs_rule():
    """_bf16_pairs_ok: B / C bf16 with unit time strides, even other strides, 4-byte aligned data, L even, and
    T / 2 a multiple of 32 x warps; anything else reads B / C step by step."""
    ok = scan_launch._bf16_pairs_ok
    B = torch.zeros(2, 16, 64, dtype=torch.bfloat16)
    assert ok(B, B, 64, 512, 1) and ok(B, B, 64, 1024, 2)
    assert not ok(B, B, 63, 512, 1)  # L odd: the last pair would straddle the end
    assert not ok(B.float(), B, 64, 512, 1) and not ok(B, B.half(), 64, 512, 1)
    assert not ok(B.transpose(1, 2).contiguous().transpose(1, 2), B, 64, 512, 1)  # time stride 16
    assert not ok(B.view(-1)[1:1 + 2 * 16 * 63].view(2, 16, 63), B, 63, 512, 1)
    odd = torch.zeros(2, 16, 65, dtype=torch.bfloat16)[..., :64]  # row stride 65
    assert not ok(odd, B, 64, 512, 1)
    assert not ok(B, B, 64, 32, 1)
    assert ok(B, B, 64) and not ok(B, B, 63)  # no chunk given (the lanes kernel): the layout conditions only


def test_fast_flip_rule(monkeypatch):
    """_fast_flip_ok: only when asked, on CUDA, for one-warp one-channel 256-step chunks of 2-byte sequences with
    unit time strides, aligned tensors and integers of 1 or multiples of 16 (the specialisations compiled above)."""
    monkeypatch.setitem(scan_launch.BWD_CONFIG, "fast_flip", True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda = torch.device("cuda", 0)
    seq = torch.zeros(2, 32, 64, dtype=torch.bfloat16)
    ok = lambda *a, device=cuda, seqs=(seq,), ints=(16, 64, 1), **k: scan_launch._fast_flip_ok(  # noqa: E731
        *(a or (1, 256, 1)), device, seqs, seqs, ints)
    assert ok()
    assert not ok(device=torch.device("cpu"))
    assert not ok(2, 256, 1) and not ok(1, 128, 1) and not ok(1, 256, 2)
    assert not ok(seqs=(seq.float(),)) and not ok(seqs=(seq.transpose(1, 2),))
    assert not ok(ints=(16, 65))
    assert ok(ints=(16, 64, 16, 16, 7))  # the chunk count (launch argument 4) may be anything
    assert not ok(seqs=(seq.view(-1)[1:].view(1, 1, -1)[..., :64],))  # 2 bytes off 16-byte alignment
    monkeypatch.setitem(scan_launch.BWD_CONFIG, "fast_flip", False)
    assert not ok()


def test_dout_copy_gives_the_same_gradients_and_only_copies_a_strided_dout(monkeypatch):
    """BWD_CONFIG dout_copy: the Mamba layer's dout ((batch, L, dim) storage, from out_proj's backward) beside
    L-contiguous inputs is copied to L-contiguous before the backward; gradients as without the copy."""
    g = torch.Generator().manual_seed(5)
    batch, dim, L, N = 2, 8, 40, 4
    inputs = dict(u=torch.randn(batch, dim, L, generator=g), delta=0.5 * torch.randn(batch, dim, L, generator=g),
                  A=-torch.rand(dim, N, generator=g) - 0.5, B=torch.randn(batch, N, L, generator=g),
                  C=torch.randn(batch, N, L, generator=g), D=torch.randn(dim, generator=g),
                  z=torch.randn(batch, dim, L, generator=g), delta_bias=0.1 * torch.randn(dim, generator=g))
    dout = torch.randn(batch, L, dim, generator=g).transpose(1, 2)  # steps dim apart

    def grads(copy):
        monkeypatch.setitem(scan_launch.BWD_CONFIG, "dout_copy", copy)
        args = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
        out = selective_scan(**args, delta_softplus=True, backend="triton")
        return torch.autograd.grad(out, list(args.values()), dout)

    for with_copy, without in zip(grads(True), grads(False)):
        assert rel_err(with_copy, without) < 1e-6
    monkeypatch.setitem(scan_launch.BWD_CONFIG, "dout_copy", True)
    u, delta, z = inputs["u"], inputs["delta"], inputs["z"]
    copied = scan_launch.backward_dout(u, delta, z, dout)
    assert copied.stride(-1) == 1 and torch.equal(copied, dout)
    contiguous = dout.contiguous()
    assert scan_launch.backward_dout(u, delta, z, contiguous) is contiguous
    time_major = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta, z)]  # the block layout
    assert scan_launch.backward_dout(*time_major, dout) is dout
    monkeypatch.setitem(scan_launch.BWD_CONFIG, "dout_copy", False)
    assert scan_launch.backward_dout(u, delta, z, dout) is dout


# The lanes forward (FWD_CONFIG lanes: lane_kernels.py, one channel per lane, all N states in registers).

@pytest.fixture
def lanes_forward(monkeypatch):
    """FWD_CONFIG lanes on at any shape, in training too; returns the list of _lanes_forward_ok's answers (which
    forward each call ran)."""
    return force_lanes_forward(monkeypatch)


@pytest.mark.parametrize("bc_layout,dtype,use,time_major", SCAN_CASES)
def test_lanes_forward_then_the_backward_match_reference(short_chunks, lanes_forward, bc_layout, dtype, use,
                                                         time_major):
    """Out, last state and every gradient, the backward reading the states the lanes forward saved every 16 steps
    (short_chunks); time-major inputs keep the chunked forward (the rule), the others must take the lanes one."""
    batch, dim, L, N = 2, 4, 37, 4
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, dtype, time_major=time_major)
    dout, dlast = torch.randn(batch, dim, 2 * L)[:, :, ::2], torch.randn(batch, dim, N)
    triton_and_reference_scans(inputs, use, dout, dlast, TOL[dtype])
    assert lanes_forward and all(ran == (not time_major) for ran in lanes_forward)


@pytest.mark.parametrize("L,bc_layout,use", [
    (1, "variable", ALL_OPTIONAL), (8, "variable", ALL_OPTIONAL), (17, "variable", ALL_OPTIONAL),
    (3, "constant", ("D", "z", "delta_bias")), (5, "constant", ("D", "z", "delta_bias")),
    (4, "grouped", ("initial_state",)), (9, "grouped", ("initial_state",))])
@pytest.mark.parametrize("chunk", [4, 8])
def test_lanes_forward_edge_lengths_match_float64_reference_with_nan_filled_buffers(monkeypatch, short_chunks,
                                                                                  lanes_forward, L, bc_layout, use,
                                                                                  chunk):
    """Around the kernel's 4- and 8-step chunks (FWD_CONFIG lanes_chunk; 8 is the default): only the masked last
    chunk (1, 3; 4, 5 at 8), whole chunks only (4, 8: the prefetches past the last one re-read it), both (5, 9, 17),
    and the saved states' 16-step period (17); 40 channels: two programs of 32 lanes, the second with 24 lanes past
    dim."""
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "lanes_chunk", chunk)
    batch, dim, N = 2, 40, 3
    inputs = make_scan_inputs(batch, dim, L, N, bc_layout, torch.float32, seed=L)
    dout, dlast = torch.randn(batch, dim, L), torch.randn(batch, dim, N)
    float64_and_triton_scans(inputs, use, dout, dlast, 1e-4)
    assert lanes_forward and all(lanes_forward)


@triton.jit
def _softplus_probe_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, scan_kernels._softplus_one_mufu(x), mask=mask)


def test_one_mufu_softplus_matches_float64():
    """triton_kernels._softplus_one_mufu (the lanes kernels' and the chunked inference forward's default softplus)
    within 4e-7 relative of float64 from x = -87 through x ~ 0 to x = 100, plus the rounding of exp2's argument
    |x| log2(e) (1e-7 |x|: _softplus_fast has it too), and below -87, where exp(-|x|) is denormal, below the
    smallest normal number (the GPU's ex2.approx.ftz flushes it to 0, the interpreter keeps it: both fast softplus
    variants do the same); never NaN."""
    g = torch.Generator().manual_seed(0)
    xs = torch.cat([200 * torch.rand(20000, generator=g, dtype=torch.float64) - 100,
                    torch.tensor([-100.0, -87.0, -30.0, -1e-6, 0.0, 1e-6, 20.0, 88.0, 100.0], dtype=torch.float64)])
    xs = xs.float().double()
    x = xs.float().to(DEVICE)
    out = torch.empty_like(x)
    _softplus_probe_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    got, ref = out.double().cpu(), torch.nn.functional.softplus(xs)
    normal = xs > -87  # exp(-|x|) is a normal fp32 number
    assert not got.isnan().any()
    assert ((got / ref - 1).abs()[normal] < 4e-7 + 1e-7 * xs.abs()[normal]).all()
    assert ((got - ref).abs()[~normal] < 2.0 ** -126).all()


def _tiny_delta_scans(pre: float, L: int):
    """(Triton out, float64 reference out, the inputs u, delta, A, B, C, z, delta_bias on DEVICE) of an inference
    scan at (1, 4, L), N 4, whose delta_bias ``pre`` puts the softplus's input where it is hard: tiny deltas (pre
    -100: 3.7e-44, a denormal; -18: 1.5e-8, where fp32's log(1 + exp(x)) is 0) or past the x > 20 cut."""
    g = torch.Generator().manual_seed(0)
    batch, dim, N = 1, 4, 4
    u, z = torch.randn(batch, dim, L, generator=g), 4 * torch.randn(batch, dim, L, generator=g)
    delta = 0.1 * torch.randn(batch, dim, L, generator=g)
    A = -torch.rand(dim, N, generator=g) - 0.5
    B, C = torch.randn(batch, N, L, generator=g), torch.randn(batch, N, L, generator=g)
    args = [t.to(DEVICE) for t in (u, delta, A, B, C, z, torch.full((dim,), pre))]
    u, delta, A, B, C, z, bias = args
    out = selective_scan(u, delta, A, B, C, None, z, bias, delta_softplus=True, backend="triton")
    ref = selective_scan_ref(*[t.double() for t in (u, delta, A, B, C)], None, z.double(), bias.double(),
                             delta_softplus=True)
    return out, ref, args


@pytest.mark.parametrize("pre", [-100.0, -18.0, -0.3, 25.0])
@pytest.mark.parametrize("fast,training", [(True, True), (True, False), (False, True)],
                         ids=["fast_softplus", "inference-only", "libdevice"])
def test_chunked_forward_softplus_keeps_tiny_deltas_like_the_reference(monkeypatch, pre, fast, training):
    """FWD_CONFIG fast_softplus: the chunked forward's softplus as _softplus_one_mufu, libdevice's (Goldberg's log1p)
    otherwise; out against float64 at 1e-5 from delta = 3.7e-44 (pre -100) through x ~ 0 to past the x > 20 cut.
    The training forward (states saved) takes it only with fast_softplus_training too; the backward recomputes delta
    with libdevice's either way, and the gradients agree with the libdevice training forward's within 1e-5 (against
    float64 they do not at pre 25, whatever the softplus: dA there is a sum of terms ~1e-9-1e-5 in fp32)."""
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "lanes", False)
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "fast_softplus", fast)
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "fast_softplus_training", training)
    seen = record_launch_flags(monkeypatch, {"_launch_fwd": ("FAST_SOFTPLUS",)})
    out, ref, args = _tiny_delta_scans(pre, 24)
    assert seen == [(fast,)] and rel_err(out, ref) < 1e-5
    grads = []
    for softplus in (fast, False):
        monkeypatch.setitem(scan_launch.FWD_CONFIG, "fast_softplus", softplus)
        leaves = [t.clone().requires_grad_(True) for t in args]
        u, delta, A, B, C, z, bias = leaves
        selective_scan(u, delta, A, B, C, None, z, bias, delta_softplus=True, backend="triton").sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    assert seen[1:] == [(fast and training,), (False,)]
    for name, got, want in zip(("u", "delta", "A", "B", "C", "z", "delta_bias"), *grads):
        assert rel_err(got, want) < 1e-5, name


@pytest.mark.parametrize("bc_layout,batch,L", [("variable", 3, 17), ("grouped", 2, 40), ("constant", 3, 17),
                                               ("variable", 1, 17)])
def test_backward_batch_fastest_grid_matches_float64_reference(monkeypatch, short_chunks, bc_layout, batch, L):
    """BWD_CONFIG batch_fastest (off by default; not timed yet): the backward's grid as (batch, channel blocks).
    Out, last state and every gradient against float64 at 1e-4 (time-varying / grouped / constant B and C, several
    16-step chunks), and the grid taken only where it applies: more than one batch row and a time-varying B or C."""
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "lanes", False)
    monkeypatch.setitem(scan_launch.BWD_CONFIG, "batch_fastest", True)
    grids = []
    launch = scan_launch._launch_bwd

    def spy(grid, tensors, ints, constexprs, *rest, **kw):
        grids.append((tuple(grid), constexprs["BATCH_FASTEST"]))
        return launch(grid, tensors, ints, constexprs, *rest, **kw)

    monkeypatch.setattr(scan_launch, "_launch_bwd", spy)
    inputs = make_scan_inputs(batch, 4, L, 3, bc_layout, torch.float32, seed=L)
    dout, dlast = torch.randn(batch, 4, L), torch.randn(batch, 4, 3)
    float64_and_triton_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)
    on = batch > 1 and bc_layout != "constant"
    blocks = grids[0][0][1] if on else grids[0][0][0]
    assert grids == [((batch, blocks) if on else (blocks, batch), on)], grids


def test_chunked_forward_fast_softplus_compiles_to_fewer_instructions_for_sm90():
    """FWD_CONFIG fast_softplus in the chunked inference forward's sm_90 SASS (T 512, one warp, the cap of 96; with
    and without the latency prefetch): the kernel a quarter shorter or more (the IEEE division's slow path and
    libdevice's log go: 1752 -> 1192 instructions with the prefetch), 16 fewer MUFU (one per step of a lane's 16),
    no more spill than libdevice's (72 -> 0 bytes, 64 -> 24), the loop over state components within 2%. The training
    forward (states saved every 256 steps) under the same cap: 1688 -> 1168 instructions, and its 40-byte spill gone
    (the thirty-second session's defaults)."""
    rows = sass_scan_report("--softplus-report", timeout=300)
    for save_states, prefetch in ((False, False), (False, True), (True, False)):
        slow, fast = (next(r for r in rows if r["save_states"] == save_states and r["prefetch"] == prefetch
                           and r["fast_softplus"] == f)
                      for f in (False, True))
        assert fast["instructions"] < 0.75 * slow["instructions"], (fast, slow)
        assert fast["mufu"] == slow["mufu"] - 16 and fast["stack"] <= slow["stack"], (fast, slow)
        assert fast["loop_instructions"] <= 1.02 * slow["loop_instructions"], (fast, slow)
        assert fast["registers"] <= 96 and (fast["stack"] == 0 or not save_states), fast


@pytest.mark.parametrize("pre", [-100.0, -30.0, -18.0, -8.0, -0.3, 0.5, 19.0, 25.0])
@pytest.mark.parametrize("fast", [True, "one_mufu", False], ids=["fast", "one_mufu", "libdevice"])
def test_lanes_fast_math_softplus_keeps_tiny_deltas_like_the_reference(monkeypatch, lanes_forward, pre, fast):
    """FWD_CONFIG lanes_fast_math (the default): softplus as max(x, 0) + 2 atanh(e / (2 + e)) with e = exp(-|x|) and
    SiLU through div.full ("one_mufu": log1p(e) as e times a polynomial instead), and without it libdevice's exp /
    log (Goldberg's log1p), against float64: 1e-5 relative
    from delta = 3.7e-44 (pre -100; a denormal) and 1.5e-8 (pre -18, where fp32's log(1 + exp(x)) is 0) through
    x ~ 0 to past the x > 20 cut."""
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "lanes_fast_math", fast)
    out, ref, _ = _tiny_delta_scans(pre, 8)
    assert lanes_forward == [True] and rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("L,bc_layout,pairs", [(8, "variable", True), (18, "grouped", True), (37, "variable", False)])
def test_lanes_bf16_pairs_with_fast_math_match_reference(monkeypatch, short_chunks, lanes_forward, L, bc_layout,
                                                         pairs):
    """FWD_CONFIG lanes_bc_pairs: bf16 B / C read as int32 pairs of steps (even L only: at 37 the pairs are off and
    the plain loads run), with fast math, and lanes_seq_pairs: u / delta / z the same way (the other bf16 lanes
    tests run them as plain tiles); out, last state and every gradient against the reference."""
    for key in ("lanes_fast_math", "lanes_bc_pairs", "lanes_seq_pairs"):
        monkeypatch.setitem(scan_launch.FWD_CONFIG, key, True)
    asked, check = [], scan_launch._bf16_pairs_ok
    monkeypatch.setattr(scan_launch, "_bf16_pairs_ok", lambda *a: asked.append(check(*a)) or asked[-1])
    rows, rows_check = [], scan_launch._bf16_pair_rows
    monkeypatch.setattr(scan_launch, "_bf16_pair_rows", lambda *a: rows.append(rows_check(*a)) or rows[-1])
    inputs = make_scan_inputs(2, 4, L, 4, bc_layout, torch.bfloat16, seed=L)
    dout, dlast = torch.randn(2, 4, L), torch.randn(2, 4, 4)
    triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, TOL[torch.bfloat16])
    assert lanes_forward and all(lanes_forward) and asked and all(a == pairs for a in asked)
    assert pairs == bool(rows) and all(rows)  # B / C and u / delta / z checked as pair rows at even L only


@pytest.mark.parametrize("chunk", [2, 4])
@pytest.mark.parametrize("L,dtype", [(1, torch.float32), (3, torch.float32), (17, torch.float32),
                                     (18, torch.bfloat16)])
def test_lanes_chunk_of_2_and_4_steps_match_float64_reference(monkeypatch, short_chunks, lanes_forward, chunk, L,
                                                             dtype):
    """FWD_CONFIG lanes_chunk (TC, 8 by default; 2 fits 12 warps per SM in registers): at 2 and 4 steps per chunk the
    masked last chunk alone (1, 3), whole and partial chunks with the 16-step saved states (17), and bf16 B / C as
    int32 pairs with fast math (18); out, last state and every gradient through the saved states."""
    monkeypatch.setitem(scan_launch.FWD_CONFIG, "lanes_chunk", chunk)
    for key in ("lanes_fast_math", "lanes_bc_pairs"):
        monkeypatch.setitem(scan_launch.FWD_CONFIG, key, dtype == torch.bfloat16)
    inputs = make_scan_inputs(2, 40, L, 3, "variable", dtype, seed=L)
    dout, dlast = torch.randn(2, 40, L), torch.randn(2, 40, 3)
    if dtype == torch.float32:
        float64_and_triton_scans(inputs, ALL_OPTIONAL, dout, dlast, 1e-4)
    else:
        triton_and_reference_scans(inputs, ALL_OPTIONAL, dout, dlast, TOL[dtype])
    assert lanes_forward and all(lanes_forward)


@pytest.mark.parametrize("L,segments,bc_layout,dtype,use,over", [
    (50, 3, "variable", torch.float32, ALL_OPTIONAL, None),   # 16-step segments, the last one 18
    (64, 4, "grouped", torch.float32, ("D", "z"), None),  # whole segments, no initial state
    (24, 2, "constant", torch.float32, ALL_OPTIONAL, None),   # (dim, N) B / C
    (66, 4, "variable", torch.bfloat16, ALL_OPTIONAL, None),  # B / C and u / delta / z as pairs (even L)
    (41, 5, "variable", torch.bfloat16, ("delta_bias", "initial_state"), None),  # odd L: plain loads, 8-step segments
    # the two-MUFU softplus (the default until the thirty-first session)
    (66, 4, "variable", torch.bfloat16, ALL_OPTIONAL, dict(lanes_fast_math=True))])
def test_lanes_split_forward_matches_float64_reference(monkeypatch, lanes_forward, L, segments, bc_layout, dtype,
                                                      use, over):
    """The lanes forward with L split (inference): each segment's end state from zero
    (_segment_end_states_lanes_kernel), then the forward, each segment carrying its entering state through the
    earlier ones; out and last state against float64, 40 channels (a program with 24 idle lanes)."""
    for key, value in {**dict(lanes_fast_math="one_mufu", lanes_bc_pairs=True, lanes_seq_pairs=True),
                       **(over or {})}.items():
        monkeypatch.setitem(scan_launch.FWD_CONFIG, key, value)
    monkeypatch.setattr(scan_launch, "FORCE_LANES_SEGMENTS", segments)
    split, rule = [], scan_launch.lanes_split_segments
    monkeypatch.setattr(scan_launch, "lanes_split_segments", lambda *a: split.append(rule(*a)) or split[-1])
    inputs = make_scan_inputs(2, 40, L, 4, bc_layout, dtype, seed=L)
    args = {k: (v.to(DEVICE) if k in use or k in "uABC" or k == "delta" else None) for k, v in inputs.items()}
    out, last = selective_scan(**args, delta_softplus=True, return_last_state=True, backend="triton")
    ref, ref_last = selective_scan_ref(**{k: (v.double() if v is not None else None) for k, v in args.items()},
                                       delta_softplus=True, return_last_state=True)
    assert split == [segments] and lanes_forward == []  # split before the unsplit rule is asked
    assert rel_err(out, ref) < TOL[dtype] and rel_err(last, ref_last) < 1e-5


def test_lanes_split_rule(monkeypatch):
    """lanes_split_segments: off without lanes_split_warps_per_sm, on the CPU, for time-major inputs or more than
    lanes_max_n states; where the unsplit lanes forward has lanes_min_warps_per_sm warps per SM, 1; else the
    smallest power of two of segments reaching lanes_split_warps_per_sm per SM (132 SMs faked), each at least
    lanes_split_min_len steps; FORCE_LANES_SEGMENTS overrides the counts, not the layout; and the split forward
    refuses saved states and segments without a whole chunk."""
    rule = scan_launch.lanes_split_segments
    cfg = dict(scan_launch.FWD_CONFIG, lanes=True, lanes_min_warps_per_sm=4, lanes_num_warps=1, lanes_chunk=8,
               lanes_split_warps_per_sm=12, lanes_split_min_len=1024, lanes_split_below_programs_per_sm=32,
               lanes_split_max_segments=256, lanes_split_min_total_len=32768)
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", cfg)
    monkeypatch.setattr(scan_launch, "_sm_count", lambda index: 132)
    fake = type("FakeCuda", (), {"type": "cuda", "index": 0})()

    class Seq:  # shape and device of a CUDA tensor, without a GPU
        def __init__(self, batch, dim, L, device=fake):
            self.shape, self.device = (batch, dim, L), device

    assert rule(Seq(2, 1536, 2 ** 16), 16, False) == 32  # 96 warps (0.7 per SM) -> 3072 (23; 16 segments: 11.6)
    assert rule(Seq(1, 1536, 2 ** 18), 16, False) == 64  # 48 warps -> 3072
    assert rule(Seq(1, 256, 2 ** 20), 16, False) == 256  # 8 warps -> 2048: lanes_split_max_segments
    assert rule(Seq(2, 768, 2 ** 16), 16, False) == 64  # 1024-step segments at least
    assert rule(Seq(1, 256, 2 ** 15), 16, False) == 32
    assert rule(Seq(1, 1536, 2 ** 14), 16, False) == 1  # lanes_split_min_total_len (H200: 0.86x at 16 segments)
    assert rule(Seq(1, 1536, 2048), 16, False) == 1  # (the 130M prefill at batch 1: 0.17x at 2 segments)
    assert rule(Seq(8, 1536, 2 ** 14), 16, False) == 1  # 93 chunked programs per SM (the H200: split 0.97-1.01x)
    assert rule(Seq(64, 1536, 4096), 16, False) == 1  # 23 warps per SM: the unsplit lanes forward
    assert rule(Seq(1, 1536, 2 ** 18), 16, True) == 1 and rule(Seq(1, 1536, 2 ** 18), 17, False) == 1
    assert rule(Seq(1, 1536, 2 ** 18, torch.device("cpu")), 16, False) == 1
    cfg["lanes_split_warps_per_sm"] = 0
    assert rule(Seq(1, 1536, 2 ** 18), 16, False) == 1
    monkeypatch.setattr(scan_launch, "FORCE_LANES_SEGMENTS", 3)
    assert rule(Seq(1, 4, 24), 16, False) == 3 and rule(Seq(1, 4, 23), 16, False) == 1  # 7 steps: no whole chunk
    assert rule(Seq(1, 4, 24), 16, True) == 1
    u = torch.zeros(1, 4, 24)
    bc = (True, (0, 0, 24, 1), True, (0, 0, 24, 1), 4)
    with pytest.raises(ValueError, match="splits L only without saved states"):
        scan_launch._scan_forward_lanes(u, u, u[0], u, u, None, None, None, False, None, 8, None, bc, 2)


def test_scan_config_environment_switch_parses_values_and_names_an_unknown_key(monkeypatch):
    """SEQMAMBA_SCAN_FWD_CONFIG (a benchmark switch read at import): int, true / false / none, else a string; an unknown
    key or an item without '=' is a ValueError naming the variable, the item and the keys."""
    config = dict(lanes=False, maxnreg=96, prefetch=True, mode="a")
    monkeypatch.setenv("SEQMAMBA_SCAN_FWD_CONFIG", " lanes=1, maxnreg=None,prefetch=false , mode=latency")
    scan_launch._config_from_env(config, "SEQMAMBA_SCAN_FWD_CONFIG")
    assert config == dict(lanes=1, maxnreg=None, prefetch=False, mode="latency")
    for bad in ("lane=1", "lanes"):
        monkeypatch.setenv("SEQMAMBA_SCAN_FWD_CONFIG", bad)
        with pytest.raises(ValueError, match=f"SEQMAMBA_SCAN_FWD_CONFIG: '{bad}' is not key=value.*'lanes'"):
            scan_launch._config_from_env(config, "SEQMAMBA_SCAN_FWD_CONFIG")


def test_lanes_forward_rule(monkeypatch):
    """_lanes_forward_ok: only when asked, for channels-first inputs, N within lanes_max_n; with saved states only
    with lanes_training and a backward chunk that is a whole number of the kernel's chunks (4 steps here); with
    lanes_min_warps_per_sm only on CUDA from that many of its warps per SM (132 SMs faked here)."""
    bf16 = torch.zeros(2, 64, 8, dtype=torch.bfloat16)
    ok = scan_launch._lanes_forward_ok
    default_min_warps = scan_launch.FWD_CONFIG["lanes_min_warps_per_sm"]
    cfg = dict(scan_launch.FWD_CONFIG, lanes=True, lanes_min_warps_per_sm=0, lanes_training=True, lanes_num_warps=1,
               lanes_chunk=4)
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", cfg)
    assert ok(bf16, 16, False, 0) and ok(bf16, 16, False, 256) and ok(bf16.float(), 1, False, 4)
    assert not ok(bf16, 16, True, 0)  # time-major
    assert not ok(bf16, 17, False, 0)  # more states than the unrolled registers hold
    assert not ok(bf16, 16, False, 6) and ok(bf16, 16, False, 12)
    cfg["lanes_chunk"] = 2  # FWD_CONFIG lanes_chunk: 6-step saved states are whole 2-step chunks
    assert ok(bf16, 16, False, 6)
    cfg["lanes_chunk"] = 3
    with pytest.raises(ValueError, match="lanes_chunk=3: the lanes kernel takes 2, 4 or 8 steps per chunk"):
        ok(bf16, 16, False, 6)
    cfg["lanes_chunk"] = 4
    cfg["lanes_training"] = False
    assert ok(bf16, 16, False, 0) and not ok(bf16, 16, False, 256)
    cfg["lanes"] = False
    assert not ok(bf16, 16, False, 0)
    cfg.update(lanes=True, lanes_min_warps_per_sm=7)
    assert not ok(bf16, 16, False, 0)  # the CPU: the occupancy rule needs a GPU
    monkeypatch.setattr(scan_launch, "_sm_count", lambda index: 132)
    fake = type("FakeCuda", (), {"type": "cuda", "index": 0})()

    class Seq:  # shape and device of a CUDA tensor, without a GPU
        def __init__(self, batch, dim):
            self.shape, self.device = (batch, dim, 2048), fake

    assert ok(Seq(16, 2048), 16, False, 0) and ok(Seq(64, 1536), 16, False, 0)  # 7.8 / 23 warps per SM
    assert not ok(Seq(8, 1536), 16, False, 0) and not ok(Seq(64, 128), 16, False, 0)  # 2.9 / 1.9
    cfg["lanes_num_warps"] = 2  # 64 channels per program: 2000 channels round up to 32 programs of 2 warps
    assert ok(Seq(15, 2000), 16, False, 0) == (15 * 32 * 2 >= 7 * 132)
    # the default threshold (4 since the twenty-fourth session): the 8-step kernel won at 4.8 warps per SM on the
    # H200 (1.06x the chunked forward at (10, 2048, 2048)) and lost at 2.9 ((8, 1536, L): 0.93x)
    cfg.update(lanes_num_warps=1, lanes_min_warps_per_sm=default_min_warps)
    assert ok(Seq(10, 2048), 16, False, 0) and not ok(Seq(8, 1536), 16, False, 0)


def test_lanes_register_cap_rule(monkeypatch):
    """_lanes_options: FWD_CONFIG lanes_maxnreg as maxnreg only on NVIDIA and from lanes_maxnreg_min_warps_per_sm
    warps per SM; nothing when the cap is None (the default until timed)."""
    cfg = dict(scan_launch.FWD_CONFIG, lanes_maxnreg=None, lanes_maxnreg_min_warps_per_sm=10)
    monkeypatch.setattr(scan_launch, "FWD_CONFIG", cfg)
    opts = scan_launch._lanes_options
    assert opts(64 * 48, 132, True) == {}  # no cap asked for
    cfg["lanes_maxnreg"] = 200
    assert opts(64 * 48, 132, True) == {"maxnreg": 200}  # the 130M prefill at batch 64: 23 warps per SM
    assert opts(16 * 64, 132, True) == {}  # (16, 2048, ...): 7.8 per SM, all resident uncapped
    assert opts(1320, 132, True) == {"maxnreg": 200} and opts(1319, 132, True) == {}
    assert opts(64 * 48, 132, False) == {}  # off CUDA (the interpreter): no cap


def test_lanes_split_kernels_compile_for_sm90_without_shuffles_or_shared_memory():
    """The lanes split's first pass and the forward with SPLIT, compiled for sm_90 (the default's fast math with the
    one-MUFU softplus, bf16 pairs, 8-step chunks): no shuffle or shared memory in their loops; the first pass at one
    exp2 per state element (plus the softplus's one per step: 1.0625) and under 7.5 instructions per element (no
    C, y or z; 6.78) under its register cap (lanes_split_ends_maxnreg, 152: 1.03-1.07x on the H200), with a spill
    of at most 96 bytes; the forward's loop with SPLIT within 5% of the instructions without it (the split adds a
    prologue and offsets; sm_90: 10.06 against 9.74, 32 more register moves per 8-step iteration)."""
    capped, plain, split = sass_scan_report("--lanes-split-report", timeout=900)
    for row in (capped, plain, split):
        assert row["shuffles"] == 0 and row["shared"] == 0, row
    assert capped["mufu_per_element"] == 1.0625 and capped["per_element"] < 7.5, capped
    assert capped["registers"] <= capped["maxnreg"] == 152 and capped["stack"] <= 96, capped
    assert split["variant"] == {"SPLIT": True} and split["mufu_per_element"] == plain["mufu_per_element"], split
    assert split["per_element"] < 1.05 * plain["per_element"], (split, plain)


def test_lanes_forward_compiles_for_sm90_without_shuffles_or_shared_memory():
    """The lanes kernel's layout (a channel's chunk whole in one lane; tl.split takes it apart) leaves its loop
    without a shuffle or a shared-memory access in every specialisation compiled for sm_90 (Triton's ptxas, no
    GPU), with fewer instructions per state element than the chunked forward's 17.1, and spills of at most 128
    bytes per thread at 4-step chunks (the bf16 launch sits at 255 registers and spills 104, the training one 128:
    the next chunk's B / C tiles in flight; a larger spill would put local-memory traffic into every chunk) and 176
    at the default's 8 (168: 14 local loads per 8-step iteration, which the H200 measured as worth it)."""
    rows = sass_scan_report("--lanes-report", timeout=900)
    assert len(rows) >= 6
    for row in rows:
        limit = 176 if row["variant"].get("TC") == 8 else 128
        assert row["shuffles"] == 0 and row["shared"] == 0 and row["stack"] <= limit, row
    assert rows[0]["variant"] == {} and rows[0]["per_element"] < 17.1, rows[0]
    # fast math and bf16 pairs (the default launch since the tenth session): fewer instructions than without them
    # and nothing spilled
    fast = next(row for row in rows if row["variant"] == {"FAST_MATH": True, "BC_PAIRS": True})
    assert fast["per_element"] < rows[0]["per_element"] - 3 and fast["stack"] == 0, fast
    # FWD_CONFIG lanes_maxnreg's candidate: 200 registers (10 resident warps per SM instead of 8) for a small spill
    # and under 2% more loop instructions
    capped = next(row for row in rows if row["variant"].get("maxnreg") == 200)
    assert capped["registers"] <= 200 and capped["stack"] <= 32, capped
    assert capped["per_element"] < 1.02 * fast["per_element"], (capped, fast)
    # FWD_CONFIG lanes_chunk 2: 12 resident warps per SM (168 registers or fewer) without a spill, for at most 15%
    # more instructions per element
    tc2 = next(row for row in rows if row["variant"].get("TC") == 2)
    assert tc2["registers"] <= 168 and tc2["stack"] == 0 and tc2["per_element"] < 1.15 * fast["per_element"], tc2
    # the default since the twenty-third session (lanes_seq_pairs, lanes_chunk 8): no repacking of u / delta / z
    # tiles and half the loop trips, for fewer instructions per element than at 4-step chunks (10.2 against 10.9)
    pairs8 = next(row for row in rows if row["variant"].get("TC") == 8)
    assert pairs8["per_element"] < 0.97 * fast["per_element"], (pairs8, fast)
    # the default since the thirty-first session (lanes_fast_math "one_mufu"): the softplus's log1p as a polynomial
    # in exp(-|x|), one MUFU per step instead of two (1.1875 per element with SiLU's two), and fewer instructions
    # (9.74 against 10.18)
    default = rows[-1]
    assert default["variant"].get("FAST_MATH") == 2 and default["mufu_per_element"] == 1.1875, default
    assert default["per_element"] < 0.97 * pairs8["per_element"], (default, pairs8)


def test_scan_custom_op_fake_implementation_matches_the_kernels(short_chunks):
    """The scan's forward op as torch.compile traces it (its fake: the saved states' shape, from
    triton_launch.saved_states_shape: three 16-step chunks here) against the kernel's outputs (torch.library.opcheck)."""
    from seqmamba.ops.selective_scan import triton_autograd
    inputs = make_scan_inputs(2, 4, 40, 3, "variable", torch.float32, seed=5)
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"], inputs["z"],
            inputs["delta_bias"], True, None, True)
    assert triton_autograd._selective_scan_fwd_op(*args)[2].shape == (2, 4, 3, 3)
    torch.library.opcheck(triton_autograd._selective_scan_fwd_op, args, test_utils="test_faketensor")

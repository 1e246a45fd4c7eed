"""The decode projections' split-K kernel (seqmamba/ops/decode_linear) against a float64 product.

On a CPU-only machine the kernel runs under TRITON_INTERPRET=1 (conftest.py) at tiny shapes; on a GPU compiled,
at the paper models' shapes too (the ``gpu`` tests). Tolerance: the output is rounded to x's dtype once from an
fp32 sum, so it is within one unit in the last place of the output's largest element: 2^-7 (bf16) / 2^-10
(fp16) of it (the GPU rounds to nearest, half that; the interpreter truncates), and 1e-5 for fp32 (the
accumulation's own error). A lost or doubled K split is off by a whole fraction of the product.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from seqmamba.ops import decode_linear

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not set (conftest.py sets it)", allow_module_level=True)

dl = importlib.import_module("seqmamba.ops.decode_linear.triton_kernels")
TOL = {torch.float32: 1e-5, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}
gpu = pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
# The output and the split-K scratch start as NaN (conftest.py): a slot summed before it was written, or an output
# element never stored, shows up.
pytestmark = pytest.mark.usefixtures("nan_filled_buffers")


def operands(M, K, N, dtype, bias=False, x_row_stride=None, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    width = x_row_stride or K
    x = torch.randn(M, width, device=DEVICE, generator=g).to(dtype)[:, :K]  # a strided view when wider
    w = (torch.randn(N, K, device=DEVICE, generator=g) * K ** -0.5).to(dtype)
    b = torch.randn(N, device=DEVICE, generator=g).to(dtype) if bias else None
    return x, w, b


def check(y, x, w, b):
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert y.shape == ref.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert err <= TOL[x.dtype], f"relative error {err:.2e} > {TOL[x.dtype]:.0e}"


def counters_are_zero():
    return all(int(count.abs().sum()) == 0 for _, count in dl._SCRATCH.values())


# (M, K, N): one row, rows past BLOCK_M's 16 / 32, K and N off the tile sizes, a K shorter than one tile
SHAPES = [(1, 96, 40), (3, 200, 70), (17, 130, 33), (40, 64, 48), (2, 10, 20)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_decode_linear_matches_float64_product(M, K, N, dtype):
    x, w, b = operands(M, K, N, dtype, bias=M % 2 == 1)
    check(decode_linear(x, w, b, backend="triton"), x, w, b)
    assert counters_are_zero()


@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_every_split_of_K_gives_the_product_and_leaves_the_counters_at_zero(split, two_pass):
    """K split in 1-5 ranges (5 of 32-wide steps over K = 150: the last range is short), strided x, bias; the
    partials summed by the last program to arrive, or by a second launch (two_pass: sum_block 16 over 250
    outputs, so the last sum program is partial)."""
    x, w, b = operands(5, 150, 50, torch.bfloat16, bias=True, x_row_stride=160)
    config = dl.Config(16, 32, 32, split, two_pass=two_pass, sum_block=16)
    y = dl.decode_linear_triton(x, w, b, config)
    check(y, x, w, b)
    assert counters_are_zero()
    assert torch.equal(y, dl.decode_linear_triton(x, w, b, config)), "the same launch twice differs"


@pytest.mark.parametrize("bias", [False, True])
def test_two_pass_sum_gives_the_last_arrivers_bits(bias):
    """The second launch adds the slots (and the bias) in the last arriver's order, so both give the same bits."""
    x, w, b = operands(20, 200, 70, torch.float32, bias=bias, seed=5)
    last = dl.decode_linear_triton(x, w, b, dl.Config(32, 32, 32, 4))
    two = dl.decode_linear_triton(x, w, b, dl.Config(32, 32, 32, 4, two_pass=True, sum_block=64))
    assert torch.equal(last, two)
    check(two, x, w, b)


def test_split_sum_is_in_slot_order():
    """The output is the scratch's K-range partials summed in slot order 0..S-1 in fp32, bit for bit (the program
    that arrives last sums them in that order, whichever it is), so it does not depend on the programs' timing."""
    M, K, N, split = 4, 128, 32, 4
    x, w, _ = operands(M, K, N, torch.float32, seed=3)
    y = dl.decode_linear_triton(x, w, None, dl.Config(16, 32, 32, split))
    device_index = x.device.index if x.is_cuda else -1
    part, _ = dl._SCRATCH[(device_index, split * M * N, 1)]
    slots = part[:split * M * N].view(split, M, N)
    for i in range(split):  # each slot holds its K range's product
        ref = F.linear(x[:, i * 32:(i + 1) * 32].double(), w[:, i * 32:(i + 1) * 32].double())
        assert (slots[i].double() - ref).abs().max() <= 1e-5 * ref.abs().max()
    total = torch.zeros(M, N, device=x.device)
    for i in range(split):
        total = total + slots[i]
    assert torch.equal(y, total)
    assert not torch.equal(y, ((slots[3] + slots[2]) + slots[1]) + slots[0]), "choose data where order shows"


def test_bad_shapes_name_the_problem():
    x, w, _ = operands(2, 16, 8, torch.float32)
    with pytest.raises(ValueError, match="in_features"):
        decode_linear(x, w[:, :8])
    with pytest.raises(ValueError, match="bias"):
        decode_linear(x, w, torch.zeros(7, device=DEVICE))


def test_auto_rule_keeps_autograd_fp32_and_large_batches_on_f_linear():
    x, w, _ = operands(4, 16, 8, torch.bfloat16)
    if DEVICE == "cpu":
        assert not dl.use_kernel(x, w, None)  # CPU tensors: F.linear
        return
    assert dl.use_kernel(x, w, None) == dl.ENABLED
    assert not dl.use_kernel(x.float(), w.float(), None)
    assert not dl.use_kernel(x, w.detach().requires_grad_(True), None)
    big = torch.zeros(dl.MAX_ROWS + 1, 16, device=DEVICE, dtype=torch.bfloat16)
    assert not dl.use_kernel(big, w, None)


def test_rule_follows_the_measured_shapes():
    """kernel_wins at the 1.4B projections (N, K) and batches the H200 sweep measured: the kernel where it won."""
    in_proj, out_proj, x_proj, dt_proj = (8192, 2048), (2048, 4096), (160, 4096), (4096, 128)
    won = {1: {out_proj, x_proj, dt_proj}, 16: {out_proj, x_proj, dt_proj}, 32: {x_proj, dt_proj},
           64: {out_proj, x_proj, dt_proj}, 128: {x_proj, dt_proj}, 129: set()}
    for M, shapes in won.items():
        for shape in (in_proj, out_proj, x_proj, dt_proj):
            assert dl.kernel_wins(M, *shape) == (shape in shapes), (M, shape)


def test_heuristic_fills_the_gpu_without_splitting_past_two_steps():
    """At the 1.4B model's shapes on 132 SMs: tiles x splits within PROGRAMS_PER_SM per SM, each split >= 2
    steps, and no further doubling of the split would keep both; the H200 sweep's best splits at batch 1."""
    limit = 132 * dl.PROGRAMS_PER_SM
    for M, N, K in [(128, 8192, 2048), (128, 2048, 4096), (128, 160, 4096), (1, 2048, 4096), (1, 160, 4096),
                    (128, 4096, 128)]:
        c = dl.heuristic_config(M, N, K, sms=132)
        programs = -(-M // c.block_m) * -(-N // c.block_n) * c.split_k
        assert programs <= limit and K // c.split_k >= min(K, 2 * c.block_k), (M, N, K, c)
        assert programs * 2 > limit or K // (2 * c.split_k) < 2 * c.block_k, (M, N, K, c)
    if dl.PROGRAMS_PER_SM == 2:
        assert dl.heuristic_config(1, 2048, 4096, sms=132).split_k == 8  # out_proj: 7.79 us (best 7.70)
        assert dl.heuristic_config(1, 160, 4096, sms=132).split_k == 16  # x_proj: 4.51 us (best)
        # from 64 rows the sweep's best: the two-pass sum, 8 warps on 128-row tiles (4 spill)
        assert dl.heuristic_config(128, 160, 4096, sms=132) == dl.Config(128, 32, 128, 16, 8, two_pass=True)
        assert dl.heuristic_config(64, 160, 4096, sms=132) == dl.Config(64, 32, 128, 16, 4, two_pass=True)
    assert not dl.heuristic_config(16, 160, 4096, sms=132).two_pass  # the last arriver's sum below 64 rows
    assert not dl.heuristic_config(128, 4096, 128, sms=132).two_pass  # no split, nothing to sum


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 2, 16, 64, 128, 200])
@pytest.mark.parametrize("name,K,N", [("in_proj", 2048, 8192), ("out_proj", 4096, 2048), ("x_proj", 4096, 160),
                                      ("dt_proj", 128, 4096), ("130m_x_proj", 1536, 80)])
def test_gpu_decode_linear_at_paper_shapes(M, name, K, N):
    """The rule's config (CONFIGS or the heuristic) at the 1.4B / 130M projections, edge batches included; and the
    same config with the two-pass sum, which must give the same bits."""
    x, w, _ = operands(M, K, N, torch.bfloat16, seed=M)
    y = dl.decode_linear_triton(x, w)
    check(y, x, w, None)
    assert torch.equal(y, dl.decode_linear_triton(x, w)), "not bitwise repeatable"
    assert counters_are_zero()
    config = dl.launch_config(M, N, K, x.device)
    if config.split_k > 1:
        assert torch.equal(y, dl.decode_linear_triton(x, w, None, config._replace(two_pass=True)))
    two = dl.decode_linear_triton(x, w, None, config._replace(split_k=16, two_pass=True))  # batch 128's candidate
    check(two, x, w, None)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("warm_up", [True, False])
def test_gpu_decode_linear_under_cuda_graph(warm_up, two_pass):
    """Captured with and without an eager call first (without: the counters are new inside the capture and
    their zero fill is part of the graph); replays give the eager result, eager calls after it too."""
    x, w, b = operands(64, 1024, 520, torch.bfloat16, bias=True, seed=7 + warm_up)
    config = dl.Config(64, 64, 128, 4, two_pass=two_pass)
    expected = F.linear(x.float(), w.float(), b.float()).to(x.dtype)
    if warm_up:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            dl.decode_linear_triton(x, w, b, config)
        torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = dl.decode_linear_triton(x, w, b, config)
    for _ in range(3):
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        check(y, x, w, b)
    eager = dl.decode_linear_triton(x, w, b, config)
    assert torch.equal(eager, y)
    assert (eager.float() - expected.float()).abs().max() <= 2 ** -7 * expected.float().abs().max()
    assert counters_are_zero()

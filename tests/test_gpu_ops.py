"""Triton kernels at real shapes on a CUDA GPU (skipped without one): long sequences, int64 offsets,
torch.compile without graph breaks, the decode step under a CUDA graph."""
from __future__ import annotations

import importlib

import pytest
import torch

from seqmamba.ops import selective_scan, selective_scan_ref, selective_state_update
from seqmamba.ops.selective_state_update.reference import selective_state_update_ref
from helpers import force_lanes_forward, record_launch_flags, rel_err

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.usefixtures("nan_filled_buffers")]  # conftest.py


def scan_inputs(batch, dim, L, N=16, dtype=torch.bfloat16, time_major=True, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    seq = (lambda s=1.0, o=0.0: (s * r(batch, L, dim) + o).to(dtype).transpose(1, 2)) if time_major else \
        (lambda s=1.0, o=0.0: (s * r(batch, dim, L) + o).to(dtype))
    return dict(u=seq(), delta=seq(0.5, -3.0), A=-torch.rand(dim, N, device="cuda", generator=g) - 0.5,
                B=r(batch, N, L).to(dtype), C=r(batch, N, L).to(dtype), D=r(dim), z=seq(), delta_bias=0.1 * r(dim))


def scan_with_grads(fn, inputs, dout, **kw):
    args = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**args, delta_softplus=True, **kw)
    out_t = out[0] if isinstance(out, tuple) else out
    grads = torch.autograd.grad(out_t, list(args.values()), dout)
    return out, dict(zip(args, grads))


def test_gpu_inference_forward_with_register_cap_matches_reference():
    """The inference forward under FWD_CONFIG's register cap (it spills): at (8, 640, 1100), 5120 programs, >= 32
    per SM on an H200, so the cap applies; out and last state against the fp32 reference, chunk carries included."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    inputs = scan_inputs(8, 640, 1100, dtype=torch.float32, time_major=False)
    programs_per_sm = 8 * 640 / torch.cuda.get_device_properties(0).multi_processor_count
    options = kernels._launch_config(640, 16, 1100, 640, backward=False, batch=8, device=torch.device("cuda"))[3]
    assert ("maxnreg" in options) == (programs_per_sm >= kernels.FWD_CONFIG["min_programs_per_sm"])
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
        ref, ref_last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    assert rel_err(out, ref) < 1e-4 and rel_err(last, ref_last) < 1e-4


@pytest.mark.parametrize("L", [1, 3, 33, 65, 511, 512, 513, 1025, 4100])
@pytest.mark.parametrize("case", ["batch8-bf16", "batch2-bf16", "batch8-fp32-plain", "batch2-groups"])
def test_gpu_gluon_forward_matches_reference(monkeypatch, L, case):
    """FWD_CONFIG gluon: the inference forward as the Gluon kernel (no interpreter runs it: this is its test). At
    (8, 640, L) it runs one warp per program with 512-step chunks under the register cap, at (2, 64, L) the latency
    mode's 1024-step chunks on 2 warps (its scan crosses warps); lengths 1 and 3 (a 16-step chunk: the Triton
    kernel runs), 33 and 65 (the first chunks of 64 / 128 steps that the Gluon kernel takes on 1 / 2 warps: two
    steps per lane, one bf16 pair; at (2, 64, 33) the Triton kernel still runs) and one past a chunk; bf16 and
    fp32; without D / z / delta_bias / softplus (delta then positive, as softplus makes it: the scan's raw test
    delta is about -3, which with A < 0 grows the state past fp32 within a few hundred steps); B / C shared by
    groups of channels; an initial state; bf16 B / C read as int32 pairs where L is even. out and the last state
    against the float64 reference."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    used = []
    check = kernels._gluon_forward_ok
    monkeypatch.setattr(kernels, "_gluon_forward_ok", lambda *a: used.append(check(*a)) or used[-1])
    pairs, check_pairs = [], kernels._bf16_pairs_ok
    monkeypatch.setattr(kernels, "_bf16_pairs_ok", lambda *a: pairs.append(check_pairs(*a)) or pairs[-1])
    monkeypatch.setitem(kernels.FWD_CONFIG, "gluon", True)
    batch, dim = (8, 640) if case.startswith("batch8") else (2, 64)
    dtype = torch.float32 if "fp32" in case else torch.bfloat16
    inputs = scan_inputs(batch, dim, L, dtype=dtype, time_major=False, seed=L)
    if "plain" in case:
        for name in ("D", "z", "delta_bias"):
            inputs.pop(name)
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"].float()).to(dtype)
    if "groups" in case:  # 4 groups of 16 channels share B / C: (batch, groups, N, L)
        scale = torch.linspace(0.5, 1.5, 4, device="cuda")[:, None, None]
        inputs["B"] = (inputs["B"][:, None].repeat(1, 4, 1, 1) * scale).to(dtype)
        inputs["C"] = (inputs["C"][:, None].repeat(1, 4, 1, 1) * scale.flip(0)).to(dtype)
    softplus = "plain" not in case
    h0 = torch.randn(batch, dim, 16, device="cuda")
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=softplus, initial_state=h0, return_last_state=True,
                                   backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=softplus,
                                           initial_state=h0.double(), return_last_state=True)
    T, warps = kernels._launch_config(dim, 16, L, dim // 4 if "groups" in case else dim, backward=False, batch=batch,
                                      device=torch.device("cuda"))[1:3]
    gluon_runs = T % (64 * warps) == 0
    assert used == [gluon_runs] and gluon_runs == (L >= (33 if batch == 8 else 65))
    # B / C as int32 pairs of bf16 steps, or step by step (asked only where the Gluon kernel runs)
    assert pairs == ([dtype == torch.bfloat16 and L % 2 == 0] if gluon_runs else [])
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and rel_err(out, ref) < tol and rel_err(last, ref_last) < 1e-4


@pytest.mark.parametrize("L", [1, 300, 1500, 4100])
def test_gpu_gluon_training_forward_saves_the_states_the_backward_needs(monkeypatch, L):
    """FWD_CONFIG gluon in training: the Gluon forward saves the state entering each of the backward's chunks (two
    per 512-step forward chunk); out and every gradient equal the Triton forward's run (to the dB / dC atomics'
    run-to-run noise) and the float64 reference's. At L = 4100 also the training split (4 segments)."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    used = []
    check = kernels._gluon_forward_ok
    monkeypatch.setattr(kernels, "_gluon_forward_ok", lambda *a: used.append(check(*a)) or used[-1])
    inputs = scan_inputs(2, 64, L, dtype=torch.bfloat16, time_major=False, seed=L)
    dout = torch.randn(2, 64, L, device="cuda").to(torch.bfloat16)

    def run(gluon, segments=None):
        monkeypatch.setitem(kernels.FWD_CONFIG, "gluon", gluon)
        monkeypatch.setattr(kernels, "FORCE_TRAIN_SEGMENTS", segments)
        return scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inputs, dout)

    (out_t, grads_t), (out_g, grads_g) = run(False), run(True)
    assert used and used[-1] == (L > 1)  # L = 1: a 16-step chunk, the Triton kernel's
    ref_out, ref_grads = scan_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()},
                                         dout.double())
    assert rel_err(out_g.float(), out_t.float()) < 1e-3 and rel_err(out_g.double(), ref_out) < 1e-2
    for name in grads_t:
        assert rel_err(grads_g[name].float(), grads_t[name].float()) < 1e-3, name
        assert rel_err(grads_g[name].double(), ref_grads[name]) <= 1.05 * rel_err(
            grads_t[name].double(), ref_grads[name]) + 1e-4, name
    if L == 4100:
        (_, split_t), (_, split_g) = run(False, 4), run(True, 4)
        for name in split_t:
            assert rel_err(split_g[name].float(), split_t[name].float()) < 1e-3, name


@pytest.mark.parametrize("batch,dim,L,time_major", [(4, 128, 4112, False),   # selective copying: 8 x 512 + 16
                                                     (2, 64, 513, False),      # one step past a chunk
                                                     (2, 64, 4352, False),     # half a chunk: the largest tail
                                                     (2, 64, 516, True)])      # the block layout's 32-step chunks
def test_gpu_training_scan_with_a_tail_launch_matches_one_launch_and_float64(monkeypatch, batch, dim, L, time_major):
    """BWD_CONFIG tail_launch on the GPU (buffers NaN-filled): the whole chunks and the short tail as two launches
    per pass, the tail with chunks of its own length (the fast flip off there, on in the first launch). Out and
    every gradient equal the one-launch run's (to the dB / dC atomics' run-to-run noise) and are as close to
    float64 as it is."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    autograd = importlib.import_module("seqmamba.ops.selective_scan.triton_autograd")
    starts = []
    tail_forward = autograd.scan_forward_tail
    monkeypatch.setattr(autograd, "scan_forward_tail", lambda *a: starts.append(a[-1]) or tail_forward(*a))
    inputs = scan_inputs(batch, dim, L, dtype=torch.bfloat16, time_major=time_major, seed=L)
    dout = torch.randn(batch, dim, L, device="cuda").to(torch.bfloat16)

    def run(tail):
        monkeypatch.setattr(kernels, "FORCE_TAIL", tail)
        return scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inputs, dout)

    (out_one, grads_one), (out_two, grads_two) = run(False), run(True)
    assert starts and starts[0] > 0 and L - starts[0] <= 256, starts
    ref_out, ref_grads = scan_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()},
                                         dout.double())
    assert torch.isfinite(out_two).all() and rel_err(out_two.float(), out_one.float()) < 1e-3
    assert rel_err(out_two.double(), ref_out) < 1e-2
    for name in grads_one:
        assert torch.isfinite(grads_two[name]).all(), name
        assert rel_err(grads_two[name].float(), grads_one[name].float()) < 1e-3, name
        assert rel_err(grads_two[name].double(), ref_grads[name]) <= 1.05 * rel_err(
            grads_one[name].double(), ref_grads[name]) + 1e-4, name


# The configs apply to L-contiguous inputs (time-major ones use the *_CHANNEL_LAST configs), and "2ch" needs
# min_programs_per_sm 0, or the occupancy rule turns the 128 programs of (2, 64) back into one-channel ones. Until
# the sixth session this test passed time-major inputs, so its three variants all ran the same kernels.
@pytest.mark.parametrize("config", [{}, {"prefetch": False},
                                    {"block_d": 2, "prefetch": False, "min_programs_per_sm": 0}],
                         ids=["default", "no-prefetch", "2ch"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_scan_matches_reference_at_real_chunking(monkeypatch, dtype, tol, config):
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    for name in ("FWD_CONFIG", "BWD_CONFIG"):
        monkeypatch.setattr(kernels, name, {**getattr(kernels, name), **config})
    inputs = scan_inputs(2, 64, 1500, dtype=dtype, time_major=False)
    assert not kernels.is_block_layout(inputs["u"], inputs["delta"], inputs["z"])
    block_d = kernels._launch_config(64, 16, 1500, 64, backward=True, batch=2, device=torch.device("cuda"))[0]
    assert block_d == config.get("block_d", kernels.BWD_CONFIG["block_d"])
    dout = torch.randn(2, 1500, 64, device="cuda").to(dtype).transpose(1, 2)  # as the Mamba layer's out_proj gives
    out, grads = scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inputs, dout)
    ref, ref_grads = scan_with_grads(selective_scan_ref, inputs, dout)
    assert rel_err(out, ref) < tol
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) < tol, name


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_scan_inference_forward_matches_reference(dtype, tol):
    """Forward without autograd on contiguous inputs: at batch 1 the latency-bound launch (prefetch, its own
    chunk length and warps), at batch 8 the default one; several chunks and a padded last one."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    dim, L = 768, 3000
    for batch, latency_bound in ((1, True), (8, False)):
        assert kernels._launch_config(dim, 16, L, dim, backward=False, batch=batch,
                                      device=torch.device("cuda"))[4] == latency_bound
        inputs = scan_inputs(batch, dim, L, dtype=dtype, time_major=False)
        with torch.no_grad():
            out, last = selective_scan(**inputs, delta_softplus=True, backend="triton", return_last_state=True)
            ref, ref_last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
        assert rel_err(out, ref) < tol and rel_err(last, ref_last) < tol, batch


@pytest.mark.parametrize("fast", [True, False], ids=["fast_softplus", "libdevice"])
@pytest.mark.parametrize("L,dtype", [(1, torch.float32), (2, torch.bfloat16), (513, torch.float32),
                                     (4097, torch.bfloat16)])
def test_gpu_chunked_inference_forward_softplus_matches_float64(monkeypatch, L, dtype, fast):
    """FWD_CONFIG fast_softplus: the chunked inference forward (lanes off) with the one-MUFU softplus, and with
    libdevice's, at one step, two, a 512-step chunk plus one and 4097; out and last state against float64 (NaN-filled
    buffers); the flag reached the kernel only where asked."""
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    monkeypatch.setitem(launch.FWD_CONFIG, "lanes", False)
    monkeypatch.setitem(launch.FWD_CONFIG, "fast_softplus", fast)
    seen = record_launch_flags(monkeypatch, {"_launch_fwd": ("FAST_SOFTPLUS",)})
    inputs = scan_inputs(2, 640, L, dtype=dtype, time_major=False, seed=L)
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, backend="triton", return_last_state=True)
    ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True,
                                       return_last_state=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert seen == [(fast,)] and rel_err(out, ref) < tol and rel_err(last, ref_last) < 1e-4


def test_gpu_scan_cached_launches_match_launches_through_triton(monkeypatch):
    """Repeat launches of one specialization take the cached launcher (Triton's JITFunction.run skipped): same
    outputs and gradients as launching through Triton every time (fp32, so that the atomics' order of addition
    stays below 1e-5); a B whose data is not 16-byte aligned (same strides) gets its own cache entry and is still
    right."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    launch = importlib.import_module("seqmamba.ops.launch")
    batch, dim, L, N = 2, 128, 700, 16
    inputs = scan_inputs(batch, dim, L, N, dtype=torch.float32, time_major=False)
    dout = torch.randn(batch, dim, L, device="cuda")
    scan = lambda inp: scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inp, dout)  # noqa: E731
    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    slow_out, slow_grads = scan(inputs)
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    for run in range(3):  # the first run fills the cache, the others launch from it
        out, grads = scan(inputs)
        errors = {"out": rel_err(out, slow_out), **{n: rel_err(grads[n], slow_grads[n]) for n in grads}}
        assert max(errors.values()) < 1e-5, (run, errors)
    entries = len(kernels._launch_fwd.compiled)
    flat = torch.empty(1 + batch * N * L, device="cuda")
    shifted = {**inputs, "B": flat[1:].view(batch, N, L).copy_(inputs["B"])}  # 4 bytes past an aligned address
    assert shifted["B"].stride() == inputs["B"].stride() and shifted["B"].data_ptr() % 16 != 0
    for run in range(2):
        out, grads = scan(shifted)
        errors = {"out": rel_err(out, slow_out), **{n: rel_err(grads[n], slow_grads[n]) for n in grads}}
        assert max(errors.values()) < 1e-5, ("misaligned B", run, errors)
    assert len(kernels._launch_fwd.compiled) > entries


def test_gpu_cached_launches_of_conv_norm_and_decode_match_launches_through_triton(monkeypatch):
    """The causal conv (forward and backward), the residual-add + RMSNorm (forward and backward) and the decode
    step give the same results from the cached launcher as from Triton's own launch path (fp32)."""
    from seqmamba.ops import causal_conv1d, rms_norm_fn

    launch = importlib.import_module("seqmamba.ops.launch")
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x, w, b = r(2, 96, 300).transpose(1, 2).contiguous().transpose(1, 2), r(96, 4), r(96)  # time-major x
    h, res, nw = r(2, 300, 96), r(2, 300, 96), r(96)
    state0, xs, dt, A, B, C = r(3, 96, 16), r(3, 96), r(3, 96), -torch.rand(96, 16, device="cuda"), r(3, 16), r(3, 16)

    def run():
        leaves = [t.detach().requires_grad_(True) for t in (x, w, b, h, res, nw)]
        conv = causal_conv1d(*leaves[:3], activation="silu")
        normed, residual = rms_norm_fn(leaves[3], leaves[5], residual=leaves[4], prenorm=True)
        loss = (conv * conv).sum() + (normed * normed).sum() + residual.sum()
        state = state0.clone()
        y = selective_state_update(state, xs, dt, A, B, C, dt_softplus=True)
        return [conv, normed, y, state, *torch.autograd.grad(loss, leaves)]

    monkeypatch.setattr(launch, "FAST_LAUNCH", False)
    slow = run()
    monkeypatch.setattr(launch, "FAST_LAUNCH", True)
    for attempt in range(3):  # the first run fills the caches, the others launch from them
        fast = run()
        errors = [rel_err(a, b) for a, b in zip(fast, slow)]
        assert max(errors) < 1e-5, (attempt, errors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 2, 3, 7, 8, 9, 255, 256, 257, 2049, 4112])
def test_gpu_causal_conv1d_column_taps_at_edge_lengths_match_float64(monkeypatch, L, dtype):
    """The conv with its taps from aligned columns (COLUMN_TAPS, the default) against a float64 reference and
    against the shifted loads, forward and every gradient, at lengths around the 8-step groups and the 256-step
    tiles, with NaN-filled buffers; x is the Mamba block's view (the x half of in_proj's (batch, 2 dim, L)
    output), 37 channels (a partial channel block)."""
    from seqmamba.ops import causal_conv1d
    from seqmamba.ops.causal_conv1d.reference import causal_conv1d_ref

    module = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
    g = torch.Generator(device="cuda").manual_seed(L)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    dim = 37
    x = r(2, 2 * dim, L).to(dtype)[:, :dim]
    w, b, dout = r(dim, 4).to(dtype), r(dim).to(dtype), r(2, dim, L).to(dtype)

    def run(fn):
        leaves = [t.detach().requires_grad_(True) for t in (x, w, b)]
        out = fn(*leaves, activation="silu")
        return [out, *torch.autograd.grad(out, leaves, dout.to(out.dtype))]

    ref = run(lambda *a, **k: causal_conv1d_ref(*(t.double() for t in a), **k))
    results = {}
    for taps in (False, True):
        monkeypatch.setattr(module, "COLUMN_TAPS", taps)
        results[taps] = run(lambda *a, **k: causal_conv1d(*a, backend="triton", **k))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for name, col, shifted, exact in zip(("out", "dx", "dweight", "dbias"), results[True], results[False], ref):
        assert torch.isfinite(col).all(), name
        assert rel_err(col, exact) < tol, (name, rel_err(col, exact))
        assert rel_err(col, shifted) < tol, (name, rel_err(col, shifted))


@pytest.mark.bigmem
def test_gpu_scan_million_steps_batch_one_equals_two_halves():
    """L = 2^20 at batch 1 runs forward and backward; scanning the two halves with the state carried
    across (initial_state) gives the same output and last state as one pass."""
    L = 2 ** 20
    inputs = scan_inputs(1, 1536, L)
    dout = torch.randn(1, 1536, L, device="cuda", dtype=torch.bfloat16)
    (out, last), grads = scan_with_grads(lambda **k: selective_scan(**k, backend="triton", return_last_state=True),
                                         inputs, dout)
    assert all(torch.isfinite(g.float()).all() for g in grads.values())
    half = L // 2
    with torch.no_grad():
        first = {k: (v[..., :half] if v.dim() == 3 else v) for k, v in inputs.items()}
        second = {k: (v[..., half:] if v.dim() == 3 else v) for k, v in inputs.items()}
        out1, h1 = selective_scan(**first, delta_softplus=True, return_last_state=True)
        out2, h2 = selective_scan(**second, delta_softplus=True, return_last_state=True, initial_state=h1)
    assert rel_err(torch.cat([out1, out2], -1), out) < 1e-2
    assert rel_err(h2, last) < 1e-4


@pytest.mark.bigmem
def test_gpu_scan_offsets_past_2_pow_31_match_a_smaller_run():
    """batch 2 x dim 1536 x L 2^20 = 3.2e9 elements: batch 1's outputs and gradients (offsets > 2^31)
    equal those of batch 1 run alone (offsets < 2^31)."""
    L, dim = 2 ** 20, 1536
    inputs = scan_inputs(2, dim, L, time_major=False)
    dout = torch.randn(2, dim, L, device="cuda", dtype=torch.bfloat16)
    out, grads = scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inputs, dout)
    tail = slice(L - 4096, L)
    big = {"out": out[1, :, tail].clone(), **{k: grads[k][1, :, tail].clone() for k in ("u", "delta", "z")},
           "B": grads["B"][1, :, tail].clone()}
    del out, grads
    single = {k: (v[1:] if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    out1, grads1 = scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), single, dout[1:])
    small = {"out": out1[0, :, tail], **{k: grads1[k][0, :, tail] for k in ("u", "delta", "z")},
             "B": grads1["B"][0, :, tail]}
    for name in big:
        # dB is summed over channels with atomics (order varies); the rest must agree to rounding.
        assert rel_err(big[name], small[name]) < (1e-5 if name != "B" else 1e-3), name


class LinearScanLinear(torch.nn.Module):
    def __init__(self, dim=64, N=16):
        super().__init__()
        self.inp = torch.nn.Linear(dim, 3 * dim + 2 * N)
        self.out = torch.nn.Linear(dim, dim)
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, N + 1).float()).repeat(dim, 1))
        self.D = torch.nn.Parameter(torch.ones(dim))
        self.dim, self.N = dim, N

    def forward(self, x):  # x (batch, L, dim)
        u, delta, z, B, C = self.inp(x).split([self.dim] * 3 + [self.N] * 2, dim=-1)
        y = selective_scan(u.transpose(1, 2), delta.transpose(1, 2), -torch.exp(self.A_log), B.transpose(1, 2),
                           C.transpose(1, 2), self.D, z.transpose(1, 2), delta_softplus=True)
        return self.out(y.transpose(1, 2))


def _compiled_matches_eager(model, x):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    xe, xc = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_e, out_c = model(xe), compiled(xc)
    ge = torch.autograd.grad(out_e.sum(), [xe] + list(model.parameters()))
    gc = torch.autograd.grad(out_c.sum(), [xc] + list(model.parameters()))
    assert rel_err(out_c, out_e) < 1e-4
    for a, b in zip(gc, ge):
        assert rel_err(a, b) < 1e-4


def test_gpu_scan_under_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    _compiled_matches_eager(LinearScanLinear().cuda(), torch.randn(2, 300, 64, device="cuda"))


@pytest.mark.parametrize("project_grad", [False, True], ids=["bmm-autograd", "project-channels-input-grad"])
def test_gpu_mamba_block_under_torch_compile_fullgraph_matches_eager(monkeypatch, project_grad):
    monkeypatch.setattr(importlib.import_module("seqmamba.modules.mamba"), "PROJECT_CHANNELS_INPUT_GRAD", project_grad)
    try:
        Mamba = importlib.import_module("seqmamba.modules.mamba").Mamba
    except ImportError:
        pytest.skip("seqmamba.modules.mamba not available")
    torch.manual_seed(0)
    _compiled_matches_eager(Mamba(64).cuda(), torch.randn(2, 300, 64, device="cuda"))


@pytest.mark.parametrize("L", [1, 2, 9, 300, 4100])
def test_gpu_mamba_x_proj_channels_first_matches_time_major(monkeypatch, L):
    """X_PROJ_CHANNELS_FIRST: x_proj as W @ x_conv, B / C handed to the scan as L-contiguous rows of its output
    (batch stride (dt_rank + 2N) L). Training (fp32: the chunked forward, the backward, every gradient) and bf16
    inference at 1024 lanes warps ((16, 2048 channels): the lanes forward, B / C as int32 pairs where L is even)
    against the time-major x_proj with B / C copied contiguous (the switch off)."""
    mamba = importlib.import_module("seqmamba.modules.mamba")
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    pairs, check = [], launch._bf16_pairs_ok
    monkeypatch.setattr(launch, "_bf16_pairs_ok", lambda *a: pairs.append(check(*a)) or pairs[-1])
    torch.manual_seed(0)
    layer = mamba.Mamba(64, d_state=16).cuda()
    h = torch.randn(3, L, 64, device="cuda", requires_grad=True)
    runs = []
    for flag in (False, True):
        monkeypatch.setattr(mamba, "X_PROJ_CHANNELS_FIRST", flag)
        out = layer(h)
        runs.append((out, torch.autograd.grad(out.square().sum(), [h, *layer.parameters()])))
    assert rel_err(runs[1][0], runs[0][0]) < 1e-5
    for got, want in zip(runs[1][1], runs[0][1]):
        assert rel_err(got, want) < 1e-4
    big = mamba.Mamba(1024, d_state=16).cuda().to(torch.bfloat16)
    x = torch.randn(16, L, 1024, device="cuda", dtype=torch.bfloat16)
    outs = []
    with torch.no_grad():
        for flag in (False, True):
            monkeypatch.setattr(mamba, "X_PROJ_CHANNELS_FIRST", flag)
            pairs.clear()
            outs.append(big(x).float())
            assert pairs == [L % 2 == 0], (flag, pairs)  # the lanes forward ran and took the pairs where it can
    assert torch.isfinite(outs[1]).all() and rel_err(outs[1], outs[0]) < 1e-2


@pytest.mark.parametrize("batch", [1, 64])
def test_gpu_decode_step_under_cuda_graph_matches_reference(batch):
    dim, N = 1536, 16
    r = lambda *s: torch.randn(*s, device="cuda")  # noqa: E731
    state = r(batch, dim, N)
    x, dt, z = (r(batch, dim).to(torch.bfloat16) for _ in range(3))
    A, B, C, D, dt_bias = -torch.rand(dim, N, device="cuda") - 0.5, r(batch, N), r(batch, N), r(dim), r(dim)
    state_ref = state.clone()
    selective_state_update(state.clone(), x, dt, A, B, C, D, z, dt_bias, True)  # compile outside the graph
    graph, out = torch.cuda.CUDAGraph(), None
    with torch.cuda.graph(graph):
        out = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, True)
    for _ in range(3):
        graph.replay()
        y_ref = selective_state_update_ref(state_ref, x, dt, A, B, C, D, z, dt_bias, True)
    torch.cuda.synchronize()
    assert rel_err(state, state_ref) < 1e-4
    assert rel_err(out, y_ref) < 1e-2


def _float64_comparison(inputs, dout, dlast, use_state, fn):
    """(errors per output / gradient, Triton gradients) of ``fn`` against selective_scan_ref in float64."""
    names = [k for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
             if k != "initial_state" or use_state]

    def run(scan, cast):
        args = {k: cast(inputs[k]).detach().requires_grad_(True) for k in names}
        out, last = scan(**args, delta_softplus=True, return_last_state=True)
        loss = (out.double() * dout.double()).sum() + (last.double() * dlast.double()).sum()
        return out, last, dict(zip(names, torch.autograd.grad(loss, [args[k] for k in names])))

    ref = run(selective_scan_ref, lambda t: t.double())
    tri = run(fn, lambda t: t)
    errors = {"out": rel_err(tri[0], ref[0]), "last_state": rel_err(tri[1], ref[1]),
              **{f"d{k}": rel_err(tri[2][k], ref[2][k]) for k in names}}
    return errors, tri[2]


# 1-3 steps and one past each chunk length the GPU launches use: 32 (the Mamba block layout's chunks), 256 (the
# backward's), 512 (the forward's), 1024 (the latency-bound forward's).
@pytest.mark.parametrize("L", [1, 2, 3, 33, 257, 513, 1025])
@pytest.mark.parametrize("time_major", [False, True], ids=["contiguous", "time-major"])
@pytest.mark.parametrize("use_state", [False, True], ids=["no-state", "state"])
def test_gpu_scan_edge_lengths_every_output_and_gradient_match_float64_reference(L, time_major, use_state):
    """fp32 inputs, every optional input, NaN-filled buffers: out, last state and the gradients of u, delta, A, B,
    C, D, z, delta_bias (and initial_state) within 1e-4 of the float64 reference. Issue 9: at L = 1 without an
    initial state dA is exactly 0; the kernel used to return the rounding error of delta u B there (h_0 - b_0
    contracted into one FMA), relative error ~1e20."""
    batch, dim = 2, 64
    inputs = scan_inputs(batch, dim, L, dtype=torch.float32, time_major=time_major, seed=L)
    inputs["initial_state"] = torch.randn(batch, dim, 16, device="cuda")
    dout, dlast = torch.randn(batch, dim, L, device="cuda"), torch.randn(batch, dim, 16, device="cuda")
    errors, grads = _float64_comparison(inputs, dout, dlast, use_state,
                                        lambda **k: selective_scan(**k, backend="triton"))
    assert max(errors.values()) < 1e-4, errors
    if L == 1 and not use_state:
        assert torch.count_nonzero(grads["A"]) == 0


@pytest.mark.parametrize("time_major", [True, False], ids=["time-major", "contiguous"])
@pytest.mark.parametrize("batch,L", [(8, 1), (1, 1), (8, 2), (1, 1025), (8, 513)])
def test_gpu_scan_edge_lengths_at_real_width_match_float64_reference(batch, L, time_major):
    """Real width (1536 channels; at batch 1 the forward takes its latency-bound launch when no states are saved),
    bf16 inputs time-major as the Mamba block passes them, or L-contiguous (at batch 8 the training forward runs
    under the register cap of 96 with the one-MUFU softplus: maxnreg_inference_only off, fast_softplus_training on):
    1e-2 against float64 (bf16 rounding of out / du)."""
    dim = 1536
    inputs = scan_inputs(batch, dim, L, seed=L, time_major=time_major)
    dout = torch.randn(batch, L, dim, device="cuda").to(torch.bfloat16).transpose(1, 2)
    dlast = torch.randn(batch, dim, 16, device="cuda")
    errors, grads = _float64_comparison(inputs, dout, dlast, False, lambda **k: selective_scan(**k, backend="triton"))
    assert max(errors.values()) < 1e-2, errors
    if L == 1:
        assert torch.count_nonzero(grads["A"]) == 0
    with torch.no_grad():  # the inference forward (latency-bound launch at batch 1)
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True,
                                           return_last_state=True)
    assert rel_err(out, ref) < 1e-2 and rel_err(last, ref_last) < 1e-4


@pytest.mark.parametrize("segments", [8, 64])
def test_gpu_scan_forward_with_L_split_across_programs_matches_one_pass_and_reference(monkeypatch, segments):
    """Issue 9's split of L across programs (inference forward): at (1, 256, 2^20) the same out / last state as one
    pass over L, and at (2, 256, 20011) (a tail after the segments; initial state given) within 1e-4 of float64,
    with delta small enough (softplus(-9 + ...)) that a segment's decay is near 1 and the carried states matter."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    inputs = scan_inputs(1, 256, 2 ** 20, dtype=torch.float32, time_major=False)
    with torch.no_grad():
        monkeypatch.setattr(kernels, "FORCE_SEGMENTS", 1)
        out1, last1 = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
        monkeypatch.setattr(kernels, "FORCE_SEGMENTS", segments)
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
    assert rel_err(out, out1) < 1e-4 and rel_err(last, last1) < 1e-4
    del inputs, out1, out
    inputs = scan_inputs(2, 256, 20011, dtype=torch.float32, time_major=True, seed=1)
    inputs["initial_state"] = torch.randn(2, 256, 16, device="cuda")
    inputs["delta"] = inputs["delta"] - 6.0
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True,
                                           return_last_state=True)
    assert rel_err(out, ref) < 1e-4 and rel_err(last, ref_last) < 1e-4


@pytest.mark.parametrize("segments", [8, 32])
def test_gpu_training_scan_with_L_split_matches_one_pass(monkeypatch, segments):
    """Issue 9's split for training (forward with saved states per segment, state-gradient pass, backward with the
    carried gradients) at (1, 256, 2^18 + 777) in fp32, time-major as the block passes it, an initial state and a
    tail after the segments: out, last state and every gradient equal the one-pass scan's (rel 1e-4)."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    L = 2 ** 18 + 777
    inputs = scan_inputs(1, 256, L, dtype=torch.float32, time_major=True, seed=2)
    inputs["initial_state"] = torch.randn(1, 256, 16, device="cuda")
    inputs["delta"] = inputs["delta"] - 4.0  # decays near 1 over a segment: the carries matter
    dout = torch.randn(1, L, 256, device="cuda").transpose(1, 2)

    def run(forced):
        monkeypatch.setattr(kernels, "FORCE_TRAIN_SEGMENTS", forced)
        args = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
        out, last = selective_scan(**args, delta_softplus=True, return_last_state=True, backend="triton")
        grads = torch.autograd.grad((out * dout).sum() + last.sum(), list(args.values()))
        return out.detach(), last.detach(), dict(zip(args, grads))

    out1, last1, grads1 = run(1)
    calls = []
    split = kernels.scan_forward_split_train
    monkeypatch.setattr(importlib.import_module("seqmamba.ops.selective_scan.triton_autograd"),
                        "scan_forward_split_train", lambda *a: calls.append(a[-1]) or split(*a))
    out, last, grads = run(segments)
    assert calls == [segments]
    assert rel_err(out, out1) < 1e-4 and rel_err(last, last1) < 1e-4
    for name in grads1:
        assert rel_err(grads[name], grads1[name]) < 1e-4, name


def test_torch_backend_runs_on_cuda_and_is_bitwise_repeatable():
    # trainer.deterministic=true routes CUDA training through the PyTorch scan (no atomics): it must run on
    # CUDA tensors, match the reference, and give the same bits twice
    inputs = scan_inputs(2, 32, 300, dtype=torch.float32)
    dout = torch.randn(2, 32, 300, device="cuda")
    first, first_grads = scan_with_grads(lambda **k: selective_scan(**k, backend="torch"), inputs, dout)
    again, again_grads = scan_with_grads(lambda **k: selective_scan(**k, backend="torch"), inputs, dout)
    ref, ref_grads = scan_with_grads(selective_scan_ref, inputs, dout)
    assert first.device.type == "cuda" and rel_err(first, ref) < 1e-4
    assert torch.equal(first, again)
    for name in first_grads:
        assert rel_err(first_grads[name], ref_grads[name]) < 1e-4, name
        assert torch.equal(first_grads[name], again_grads[name]), name


@pytest.mark.parametrize("mode", [True, "shift"], ids=["flip", "flip-shift"])
@pytest.mark.parametrize("L", [256, 272, 4096, 1500])
def test_gpu_fast_flip_backward_matches_the_reverse_scans(monkeypatch, L, mode):
    """BWD_CONFIG fast_flip (the backward's and the state-gradient kernel's reverse scans run forward over chunks
    flipped with one shuffle per register): every gradient equals the plain build's to bf16 rounding and is as close
    to the float64 reference as the plain build's; used at L = 256, 272, 4096 (a multiple of 16: the specialisation
    compiled and layout-checked on the CPU), not at 1500. The training split's state-gradient kernel at (1, 64, 2^14)
    in 4 segments likewise. dB / dC add over channels with atomics, so two plain runs already differ in the last bf16
    bit (2.6e-5 relative, measured on the H200 at L = 1500, where the flip is not used): the bound between builds is
    1e-3, far below what a wrong flip gives (a reversed chunk is O(1) off). Both modes: the flips with the
    three-operand scan, and with the one-step shift and a two-operand scan ("shift")."""
    kernels = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    used = []
    check = kernels._fast_flip_ok
    monkeypatch.setattr(kernels, "_fast_flip_ok", lambda *a: used.append(check(*a)) or used[-1])
    inputs = scan_inputs(2, 64, L, dtype=torch.bfloat16, time_major=False)
    dout = torch.randn(2, 64, L, device="cuda").to(torch.bfloat16)

    def grads(fast):
        monkeypatch.setitem(kernels.BWD_CONFIG, "fast_flip", fast)
        return scan_with_grads(lambda **k: selective_scan(**k, backend="triton"), inputs, dout)[1]

    plain, fast = grads(False), grads(mode)
    assert any(used) == (L % 16 == 0)
    ref = scan_with_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()}, dout.double())[1]
    for name in plain:
        assert rel_err(fast[name].float(), plain[name].float()) < 1e-3, name
        plain_err = rel_err(plain[name].double(), ref[name])
        assert rel_err(fast[name].double(), ref[name]) <= 1.05 * plain_err + 1e-4, name
    if L == 4096:  # the split's state-gradient kernel
        monkeypatch.setattr(kernels, "FORCE_TRAIN_SEGMENTS", 4)
        long_inputs = scan_inputs(1, 64, 2 ** 14, dtype=torch.bfloat16, time_major=False, seed=3)
        long_dout = torch.randn(1, 64, 2 ** 14, device="cuda").to(torch.bfloat16)
        run = lambda fast: (monkeypatch.setitem(kernels.BWD_CONFIG, "fast_flip", fast), scan_with_grads(  # noqa
            lambda **k: selective_scan(**k, backend="triton"), long_inputs, long_dout)[1])[1]
        split_plain, split_fast = run(False), run(mode)
        for name in split_plain:
            assert rel_err(split_fast[name].float(), split_plain[name].float()) < 1e-3, name


# The lanes forward (FWD_CONFIG lanes): one channel per lane; the GPU hands it uninitialised memory (NaN-filled
# here), the interpreter zeros. Lengths around its 8-step bf16 / 4-step fp32 load chunk, the backward's 256-step
# chunks and the old forward's 512; 640 channels = 20 programs of 32 lanes, 40 = a program with 24 idle lanes.
def _lanes_case(case: str, L: int):
    """(inputs, dim, dtype, initial state or None) of a lanes GPU test case "<dtype>[-<kind>]-<dim>[-state]":
    "groups" gives 4 B / C groups of 16 channels, "const" (dim, N) B / C, "plain" no D / z / delta_bias and delta
    already through softplus; "state" an initial state."""
    dim = int(case.split("-")[-2 if case.endswith("state") else -1])
    dtype = torch.float32 if case.startswith("fp32") else torch.bfloat16
    inputs = scan_inputs(2, dim, L, dtype=dtype, time_major=False, seed=L)
    if "groups" in case:  # 4 groups of 16 channels
        scale = torch.linspace(0.5, 1.5, 4, device="cuda")[:, None, None]
        inputs["B"] = (inputs["B"][:, None].repeat(1, 4, 1, 1) * scale).to(dtype)
        inputs["C"] = (inputs["C"][:, None].repeat(1, 4, 1, 1) * scale.flip(0)).to(dtype)
    if "const" in case:  # (dim, N) B / C, the same at every step
        inputs["B"], inputs["C"] = (torch.randn(dim, 16, device="cuda") for _ in range(2))
    if "plain" in case:
        for name in ("D", "z", "delta_bias"):
            inputs.pop(name)
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"].float()).to(dtype)
    h0 = torch.randn(2, dim, 16, device="cuda") if "state" in case else None
    return inputs, dim, dtype, h0


@pytest.mark.parametrize("L", [1, 2, 7, 9, 257, 4100])
@pytest.mark.parametrize("case", ["bf16-640", "fp32-40-state", "bf16-groups-64", "fp32-plain-640"])
def test_gpu_lanes_forward_and_backward_match_float64_reference(monkeypatch, L, case):
    used = force_lanes_forward(monkeypatch)
    inputs, dim, dtype, h0 = _lanes_case(case, L)
    softplus = "plain" not in case
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=softplus, initial_state=h0, return_last_state=True,
                                   backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=softplus,
                                           initial_state=h0.double() if h0 is not None else None,
                                           return_last_state=True)
    assert used == [True]
    assert out.dtype == dtype and rel_err(out, ref) < tol and rel_err(last, ref_last) < 1e-4
    if softplus:  # training: the backward reads the states the lanes forward saved
        inputs["initial_state"] = h0 if h0 is not None else torch.zeros(2, dim, 16, device="cuda")
        dout, dlast = torch.randn(2, dim, L, device="cuda"), torch.randn(2, dim, 16, device="cuda")
        errors, _ = _float64_comparison(inputs, dout, dlast, h0 is not None,
                                        lambda **k: selective_scan(**k, backend="triton"))
        assert used[-1] and max(errors.values()) < tol, errors


@pytest.mark.parametrize("L", [1, 257, 4100])
def test_gpu_backward_batch_fastest_grid_matches_float64_reference(monkeypatch, L):
    """BWD_CONFIG batch_fastest (off; built the thirty-second session, not GPU-run yet): the backward's grid as
    (batch, channel blocks) at (8, 1536, L), bf16, L-contiguous, NaN-filled buffers: every output and gradient within
    1e-2 of float64, and the flag reached the kernel."""
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    monkeypatch.setitem(launch.BWD_CONFIG, "batch_fastest", True)
    seen = record_launch_flags(monkeypatch, {"_launch_bwd": ("BATCH_FASTEST",)})
    inputs = scan_inputs(8, 1536, L, time_major=False, seed=L)
    dout, dlast = torch.randn(8, 1536, L, device="cuda"), torch.randn(8, 1536, 16, device="cuda")
    errors, _ = _float64_comparison(inputs, dout, dlast, False, lambda **k: selective_scan(**k, backend="triton"))
    assert seen == [(True,)] and max(errors.values()) < 1e-2, (seen, errors)


@pytest.mark.parametrize("L", [2, 257, 1030])
def test_gpu_default_training_forward_runs_lanes_where_it_has_the_warps(monkeypatch, L):
    """FWD_CONFIG lanes_training (on since the thirty-second session): with the default config, a training call with
    lanes_min_warps_per_sm of the lanes kernel's warps per SM runs the lanes forward (it saves the backward's chunk
    states), one with fewer the chunked forward; the gradients of both against float64, bf16 inputs."""
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    used, check = [], launch._lanes_forward_ok
    monkeypatch.setattr(launch, "_lanes_forward_ok", lambda *a: used.append(check(*a)) or used[-1])
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    warps = launch.FWD_CONFIG["lanes_min_warps_per_sm"] * sms
    dim = 1536
    for batch, lanes in ((-(-warps * 32 // dim), True), (max(1, warps * 32 // dim - 1), False)):
        inputs = scan_inputs(batch, dim, L, time_major=False, seed=L + batch)
        dout, dlast = torch.randn(batch, dim, L, device="cuda"), torch.randn(batch, dim, 16, device="cuda")
        used.clear()
        errors, _ = _float64_comparison(inputs, dout, dlast, False, lambda **k: selective_scan(**k, backend="triton"))
        assert used and all(answer == lanes for answer in used), (batch, used)
        assert max(errors.values()) < 1e-2, (batch, errors)


@pytest.mark.parametrize("cap,chunk,seq,fast", [(None, 4, False, True), (200, 4, False, True), (None, 2, False, True),
                                                (None, 4, True, True), (None, 8, True, True),
                                                (None, 8, True, "one_mufu")],
                         ids=["default", "maxnreg200", "chunk2", "seqpairs", "seqpairs8", "one_mufu"])
@pytest.mark.parametrize("L", [2, 9, 4100])
def test_gpu_lanes_fast_math_and_bf16_pairs_match_float64_reference(monkeypatch, L, cap, chunk, seq, fast):
    """FWD_CONFIG lanes_fast_math + lanes_bc_pairs (on by default since the tenth session): bf16 at 640 channels,
    B / C read as int32 pairs where L is even (at 9: the plain loads), softplus / SiLU through exp2 and div.full;
    out and last state against float64 (inference). With lanes_maxnreg (off until timed) the kernel compiled
    under a register cap of 200 (it spills 24 bytes per thread) gives the same, and so do lanes_chunk 2 and
    lanes_seq_pairs (u / delta / z as int32 pairs too, where L is even), at 4- and 8-step chunks; "one_mufu" is the
    default launch since the thirty-first session (the softplus's log1p as a polynomial: one MUFU, not two)."""
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    force_lanes_forward(monkeypatch, lanes_fast_math=fast, lanes_bc_pairs=True, lanes_maxnreg=cap,
                        lanes_maxnreg_min_warps_per_sm=0, lanes_chunk=chunk, lanes_seq_pairs=seq)
    asked, check = [], launch._bf16_pairs_ok
    monkeypatch.setattr(launch, "_bf16_pairs_ok", lambda *a: asked.append(check(*a)) or asked[-1])
    options, rule = [], launch._lanes_options
    monkeypatch.setattr(launch, "_lanes_options", lambda *a: options.append(rule(*a)) or options[-1])
    inputs = scan_inputs(2, 640, L, time_major=False, seed=L)
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True,
                                           return_last_state=True)
    assert asked == [L % 2 == 0] and options == [{"maxnreg": cap} if cap else {}]
    assert rel_err(out, ref) < 1e-2 and rel_err(last, ref_last) < 1e-4


# The lanes forward with L split (FWD_CONFIG lanes_split_warps_per_sm; triton_launch.lanes_split_segments): the first
# pass's end states and the carry in the forward's prologue, on NaN-filled buffers. Lengths: one chunk per segment
# (16 in 2), a last segment one step longer than the others (4113 in 4: 1024 x 3 + 1041, odd: plain loads), the
# paper's 4112 in 3 (1368 x 2 + 1376, pairs), and many segments.
@pytest.mark.parametrize("L,segments", [(16, 2), (4113, 4), (4112, 3), (2 ** 14, 64)])
@pytest.mark.parametrize("case", ["bf16-640", "fp32-40-state", "bf16-groups-64", "bf16-const-64"])
def test_gpu_lanes_split_forward_matches_float64_reference(monkeypatch, L, segments, case):
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    force_lanes_forward(monkeypatch)
    monkeypatch.setattr(launch, "FORCE_LANES_SEGMENTS", segments)
    split, rule = [], launch.lanes_split_segments
    monkeypatch.setattr(launch, "lanes_split_segments", lambda *a: split.append(rule(*a)) or split[-1])
    inputs, dim, dtype, h0 = _lanes_case(case, L)
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, initial_state=h0, return_last_state=True,
                                   backend="triton")
        ref, ref_last = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True,
                                           initial_state=h0.double() if h0 is not None else None,
                                           return_last_state=True)
    assert split and split[-1] == segments
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and rel_err(out, ref) < tol and rel_err(last, ref_last) < 1e-4


@pytest.mark.parametrize("L", [2, 9, 257, 4112])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_mamba_inner_node_matches_the_separate_ops(monkeypatch, L, dtype):
    """ops/mamba_inner.py on the GPU: the block's output and every gradient with the inner node against the separate
    ops, fp32 and under bf16 autocast (the node sums the conv output's gradient inside x_proj's GEMM in fp32, the
    separate ops in bf16 after it), at lengths about the conv's groups, the scan's chunks and the paper's 4112."""
    mamba_inner = importlib.import_module("seqmamba.ops.mamba_inner")
    Mamba = importlib.import_module("seqmamba.modules.mamba").Mamba
    torch.manual_seed(0)
    layer = Mamba(64, d_state=16).cuda()
    h0, dout = torch.randn(4, L, 64, device="cuda"), torch.randn(4, L, 64, device="cuda")
    runs, calls = [], []
    forward = mamba_inner._forward
    monkeypatch.setattr(mamba_inner, "_forward", lambda *a: calls.append(1) or forward(*a))
    for enabled in (True, False):
        monkeypatch.setattr(mamba_inner, "ENABLED", enabled)
        layer.zero_grad(set_to_none=True)
        h = h0.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = layer(h)
        out.float().backward(dout)
        runs.append([out.float(), h.grad] + [p.grad for p in layer.parameters()])
    assert len(calls) == 1  # the inner node ran in the first pass only
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, a, b in zip(["out", "h"] + [n for n, _ in layer.named_parameters()], *runs):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))


@pytest.mark.parametrize("L", [1, 2, 63, 65, 4112])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("M,K,accumulate", [(128, 4, False), (36, 128, True)])
def test_gpu_channel_linear_backward_matches_float64(L, dtype, M, K, accumulate):
    """ops/channel_linear.py on the GPU (16-bit tl.dot, which the interpreter cannot run): the selective-copying
    model's dt_proj (128 x 4) and x_proj (36 x 128, adding into dx) at lengths 1 and 2, about a 64-step block and
    the paper's 4112 (several programs per batch row), dx into a strided half of a larger buffer."""
    channel_linear = importlib.import_module("seqmamba.ops.channel_linear")
    g = torch.Generator(device="cuda").manual_seed(L)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    batch = 8
    w, dy, x = r(M, K), r(batch, M, L), r(batch, K, L)
    buf = r(batch, 2 * K, L)
    before = buf.clone()
    dx, dw = channel_linear.linear_backward(w, dy, x, dx=buf[:, K:], accumulate=accumulate)
    ref_dx = torch.einsum("mk,bml->bkl", w.double(), dy.double()) + (before[:, K:].double() if accumulate else 0)
    ref_dw = torch.einsum("bml,bkl->mk", dy.double(), x.double())
    tol = 1e-5 if dtype == torch.float32 else 8e-3
    assert torch.isfinite(dx).all() and torch.isfinite(dw).all()
    assert rel_err(dx, ref_dx) < tol and rel_err(dw, ref_dw) < tol
    assert torch.equal(buf[:, :K], before[:, :K])


@pytest.mark.parametrize("L", [1, 2, 63, 65, 4112])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_channel_linear_forward_matches_float64(L, dtype):
    """ops/channel_linear.linear_forward (delta = dt_proj(dt) in the inner node) on the GPU at the selective-copying
    model's 128 x 4, x as rows of a larger buffer (dt in x_proj's output): lengths 1, 2, about a 64-step tile, 4112."""
    channel_linear = importlib.import_module("seqmamba.ops.channel_linear")
    g = torch.Generator(device="cuda").manual_seed(L)
    w = torch.randn(128, 4, device="cuda", generator=g)
    rows = torch.randn(8, 36, L, device="cuda", generator=g).to(dtype)
    y = channel_linear.linear_forward(w, rows[:, :4])
    ref = torch.einsum("mk,bkl->bml", w.to(dtype).double(), rows[:, :4].double())
    assert y.dtype == dtype and y.is_contiguous()
    assert rel_err(y, ref) < (1e-6 if dtype == torch.float32 else 4e-3)

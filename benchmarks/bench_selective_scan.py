"""Selective scan speed on a CUDA GPU: Triton kernels vs the PyTorch reference and mamba_ssm's CUDA kernel.

bf16 u / delta / z / B / C (variable B, C), fp32 A / D / delta_bias, N = 16, z and softplus on.
Prints one table: ms (forward, forward+backward), achieved GB/s with issue 3's byte counts
(forward 2*B*L*(4*dim + 2*N); backward 2*B*L*(7*dim + 4*N), backward time = fwd+bwd - fwd), percent of
the copy bandwidth measured in the same run, peak memory above inputs and dout, and ratios to the
PyTorch reference (smallest shape only: it is a Python loop over L) and to mamba_ssm (measured when
importable, else the anchor table measured on an H100 80GB HBM3). Also times the decode step
(selective_state_update) under a CUDA graph.

    python benchmarks/bench_selective_scan.py            # the table
    python benchmarks/bench_selective_scan.py --sweep    # pick launch configs at (8, 1536, 4096), then the table
    python benchmarks/bench_selective_scan.py --layout block   # the Mamba block's layouts: check, sweep, table
    python benchmarks/bench_selective_scan.py --attention      # also: scan vs SDPA flash attention, same run

Every row also shows the forward's share of its exp floor: one exp2 per state element (batch*dim*L*N of them) on
the special-function units, 16 per clock per SM on sm_80 / sm_90 (CUDA C programming guide, arithmetic
instruction throughput), at the SM clock nvidia-smi reports as the maximum. H200 / H100 SXM: 132 SMs x 1980 MHz
x 16 = 4.18e12 exp2/s, so (8, 1536, 4096) has a floor of 0.193 ms.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import torch
import triton

from seqmamba.ops import selective_scan, selective_scan_ref, selective_state_update
from seqmamba.ops import launch

scan_launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")  # launch configs

N_STATE = 16
SHAPES = [(8, 1536, 1024), (8, 1536, 4096), (8, 1536, 16384), (2, 1536, 65536), (1, 1536, 262144),
          (1, 1536, 1048576), (16, 2048, 2048)]
# mamba_ssm 2.3.2 CUDA kernel on an H100 80GB HBM3 (issue 3): (fwd ms, fwd+bwd ms).
ANCHOR_MS = {(8, 1536, 1024): (0.226, 1.145), (8, 1536, 4096): (0.886, 4.547), (8, 1536, 16384): (4.202, 18.929),
             (2, 1536, 65536): (4.387, 19.501), (1, 1536, 262144): (8.952, 40.246),
             (1, 1536, 1048576): (36.019, 163.220), (16, 2048, 2048): (1.170, 5.987)}
ANCHOR_DECODE_US = {1: 1.52, 64: 4.98}


SFU_EXP2_PER_CLOCK_PER_SM = 16  # sm_80 / sm_90: MUFU.EX2 throughput per SM per clock


def sm_clock_mhz() -> float:
    """The GPU's maximum SM clock (nvidia-smi), or 1980 MHz (H100 / H200 SXM boost) if it cannot be read."""
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20).stdout
        return float(text.split()[0])
    except Exception:
        return 1980.0


def exp_floor_ms(batch, dim, L, N=None) -> float:
    """Time for batch*dim*L*N exp2 on the special-function units of the current GPU."""
    N = N_STATE if N is None else N
    rate = SFU_EXP2_PER_CLOCK_PER_SM * torch.cuda.get_device_properties(0).multi_processor_count * sm_clock_mhz() * 1e6
    return batch * dim * L * N / rate * 1e3


def bench_ms(fn, rep=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def queued_ms(fn, calls=20) -> float:
    """GPU time per call with the host ahead of the GPU: calls queued behind a sleep kernel, so host overhead
    (Python, autograd, launches) leaves no gaps. do_bench's time is this or the host time, whichever is larger;
    at small shapes the host time wins and varies from run to run."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        torch.cuda._sleep(int(2e8))  # ~0.1 s of spinning while the host enqueues the calls
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / calls)
    return best


def copy_bandwidth_gbs() -> float:
    src = torch.empty(2 ** 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * src.numel() / ms / 1e6


def make_inputs(batch, dim, L, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    return dict(u=r(batch, dim, L).to(dtype), delta=(0.5 * r(batch, dim, L) - 4.0).to(dtype),
                A=-torch.rand(dim, N_STATE, device="cuda", generator=g) - 0.5,
                B=r(batch, N_STATE, L).to(dtype), C=r(batch, N_STATE, L).to(dtype),
                D=r(dim), z=r(batch, dim, L).to(dtype), delta_bias=0.1 * r(dim))


def scan_fns(inputs, impl):
    if impl == "triton":
        def run(**kw):
            return selective_scan(**kw, delta_softplus=True, backend="triton")
    elif impl == "reference":
        def run(**kw):
            return selective_scan_ref(**kw, delta_softplus=True)
    else:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        def run(**kw):
            return selective_scan_fn(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                                     kw["delta_bias"], delta_softplus=True)
    # the same dout for every call with these inputs, so gradients of two implementations / configs compare
    dout = torch.randn(inputs["u"].shape, device=inputs["u"].device,
                       generator=torch.Generator(device=inputs["u"].device).manual_seed(1)).to(inputs["u"].dtype)
    return timed_pair(run, inputs, dout)


def timed_pair(run, inputs, dout):
    """(forward under no_grad, forward + gradients of every input) of ``run(**inputs)``."""
    grad_inputs = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}

    def fwd():
        with torch.no_grad():
            return run(**inputs)

    def fwd_bwd():
        return torch.autograd.grad(run(**grad_inputs), list(grad_inputs.values()), dout)

    return fwd, fwd_bwd


def peak_memory_gb(fn) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e9


def mamba_ssm_available() -> bool:
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        return True
    except Exception:
        return False


def mamba_decode_fn():
    """mamba_ssm's Triton selective_state_update when importable, else None."""
    try:
        return importlib.import_module("mamba_ssm.ops.triton.selective_state_update").selective_state_update
    except Exception:
        return None


def decode_us(batch, dim=1536, N=N_STATE, steps_per_graph=(1, 100), impl=None):
    """Decode-step latency in us: {steps per captured graph: per-step time} plus "eager". One step per graph
    includes the graph launch; many steps per graph give the GPU's per-step time (consecutive decode steps
    of a model run in one graph, as mamba_ssm's and seqmamba's generate capture them). ``impl``: another
    function with selective_state_update's arguments (mamba_ssm's), timed the same way."""
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    state = r(batch, dim, N)
    x, dt, z = (r(batch, dim).to(torch.bfloat16) for _ in range(3))
    A, B, C, D, dt_bias = -torch.rand(dim, N, device="cuda") - 0.5, r(batch, N), r(batch, N), r(dim), r(dim)

    def step():
        if impl is not None:
            return impl(state, x, dt, A, B, C, D, z, dt_bias, True)
        return selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, True, backend="triton")

    step()  # compile
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    result = {"eager": bench_ms(step) * 1e3}
    for steps in steps_per_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                step()
        replays = max(1, 100 // steps)

        def replay_many():
            for _ in range(replays):
                graph.replay()

        # the median of several do_bench medians: one graph of 100 decode steps is ~0.2 ms of GPU time
        result[steps] = sorted(bench_ms(replay_many, rep=100) for _ in range(5))[2] / (replays * steps) * 1e3
    return result


def sweep():
    """Times launch configs at (8, 1536, 4096); returns the fastest (forward, backward) configs."""
    batch, dim, L = 8, 1536, 4096
    inputs = make_inputs(batch, dim, L)
    # Earlier sweeps (notes/triton_scan.md) tried block_d 1-8, 1-8 warps, T 128-1024 and an unrolled loop
    # over N; one warp per channel with a rolled loop won. Several channels per warp halve the dB / dC atomics.
    # Only the tile shape is swept; the other options of the current config (occupancy rules, prefetch,
    # masked_last; notes/triton_scan.md "Launch tables") are kept.
    shapes = [dict(block_d=bd, T=t, num_warps=w) for (bd, t, w) in [(1, 512, 1), (1, 256, 1), (2, 256, 1), (2, 128, 1)]]
    print(f"sweep at {(batch, dim, L)}")
    # The forward's best config is kept before the backward's sweep, which times forward + backward.
    for label, attr, timed in (("fwd", "FWD_CONFIG", 0), ("fwd+bwd", "BWD_CONFIG", 1)):
        results = []
        base = dict(getattr(scan_launch, attr))
        for shape in shapes:
            cfg = {**base, **shape}
            setattr(scan_launch, attr, cfg)
            results.append((bench_ms(scan_fns(inputs, "triton")[timed]), cfg))
            print(f"  {label} {cfg}: {results[-1][0]:.3f} ms", flush=True)
        setattr(scan_launch, attr, min(results, key=lambda r: r[0])[1])
    print(f"best: FWD_CONFIG = {scan_launch.FWD_CONFIG}, BWD_CONFIG = {scan_launch.BWD_CONFIG}", flush=True)


# ---------------------------------------------------------------------------------- the Mamba block's layouts
BLOCK_SHAPES = [(64, 1536, 2048), (8, 1536, 4096)]
DT_RANK = 48


def make_block_inputs(batch, dim, L, dtype=torch.bfloat16, seed=0):
    """u / delta / z: transposed views of (batch, L, dim) tensors; B / C: transposed slices of one
    (batch, L, dt_rank + 2N) x_proj output. These are what seqmamba.modules.Mamba passes to the scan."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    time_major = lambda s=1.0, o=0.0: (s * r(batch, L, dim) + o).to(dtype).transpose(1, 2)  # noqa: E731
    x_dbl = r(batch, L, DT_RANK + 2 * N_STATE).to(dtype)
    return dict(u=time_major(), delta=time_major(0.5, -4.0), A=-torch.rand(dim, N_STATE, device="cuda", generator=g) - 0.5,
                B=x_dbl[..., DT_RANK:DT_RANK + N_STATE].transpose(1, 2), C=x_dbl[..., DT_RANK + N_STATE:].transpose(1, 2),
                D=r(dim), z=time_major(), delta_bias=0.1 * r(dim))


def contiguous_copy(inputs):
    return {k: v.contiguous() for k, v in inputs.items()}


def copy_fallback_fns(inputs):
    """What a copying wrapper would cost: u / delta / z / B / C to (batch, dim, L) contiguous, the fast
    contiguous scan, out back to (batch, L, dim) storage."""
    def run(**kw):
        kw = {k: (v.contiguous() if k in ("u", "delta", "z", "B", "C") else v) for k, v in kw.items()}
        out = selective_scan(**kw, delta_softplus=True, backend="triton")
        return out.transpose(1, 2).contiguous()

    return timed_pair(run, inputs, torch.randn_like(inputs["u"]).transpose(1, 2).contiguous())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check_block_layout(batch=2, dim=256, L=700):
    """bf16 forward and every gradient of the block layout against the fp32 reference (tolerance 1e-2)."""
    inputs = make_block_inputs(batch, dim, L)
    dout = torch.randn(batch, L, dim, device="cuda").to(torch.bfloat16).transpose(1, 2)

    def with_grads(fn):
        args = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
        out = fn(**args, delta_softplus=True)
        return out, dict(zip(args, torch.autograd.grad(out, list(args.values()), dout)))

    ref, ref_grads = with_grads(selective_scan_ref)
    out, grads = with_grads(lambda **k: selective_scan(**k, backend="triton"))
    errs = {"out": rel_err(out, ref), **{"d" + name: rel_err(grads[name], ref_grads[name]) for name in grads}}
    worst = max(errs.values())
    print(f"block layout check at {(batch, dim, L)} bf16 (cfg fwd {scan_launch.FWD_CONFIG_CHANNEL_LAST}, "
          f"bwd {scan_launch.BWD_CONFIG_CHANNEL_LAST}): out stride {tuple(out.stride())}; rel errors "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f" -> {'PASS' if worst < 1e-2 else 'FAIL'}",
          flush=True)
    return worst < 1e-2


def sweep_block_layout(batch, dim, L):
    """Channel-tile configs for the block layout at one shape; keeps the fastest correct ones."""
    inputs = make_block_inputs(batch, dim, L)
    fwd_candidates = [(16, 32, 1), (16, 64, 1), (8, 64, 1), (32, 32, 1)]
    bwd_candidates = [(16, 32, 1), (8, 64, 1), (16, 64, 2)]
    results = {"fwd": [], "bwd": []}
    print(f"block-layout sweep at {(batch, dim, L)}", flush=True)
    for key, attr in (("fwd", "FWD_CONFIG_CHANNEL_LAST"), ("bwd", "BWD_CONFIG_CHANNEL_LAST")):
        for bd, t, w in fwd_candidates if key == "fwd" else bwd_candidates:
            cfg = dict(block_d=bd, T=t, num_warps=w)
            setattr(scan_launch, attr, cfg)
            try:
                ok = check_block_layout(2, 64, 300)
                fwd, fwd_bwd = scan_fns(inputs, "triton")
                ms = bench_ms(fwd if key == "fwd" else fwd_bwd, rep=100)
            except Exception as err:  # a config the compiler rejects (registers, shared memory) just drops out
                print(f"  {key} {cfg}: failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
                continue
            print(f"  {key} {cfg}: {ms:.3f} ms{'' if ok else ' (WRONG: not kept)'}", flush=True)
            if ok:
                results[key].append((ms, cfg))
        if results[key]:
            setattr(scan_launch, attr, min(results[key], key=lambda r: r[0])[1])
    print(f"best: FWD_CONFIG_CHANNEL_LAST = {scan_launch.FWD_CONFIG_CHANNEL_LAST}, "
          f"BWD_CONFIG_CHANNEL_LAST = {scan_launch.BWD_CONFIG_CHANNEL_LAST}", flush=True)


def block_layout_table(sweep_first: bool):
    ok = check_block_layout()
    if sweep_first:
        sweep_block_layout(*BLOCK_SHAPES[0])
        ok = check_block_layout() and ok
    rows = []
    for batch, dim, L in BLOCK_SHAPES:
        block = make_block_inputs(batch, dim, L)
        for name, fns in (("block (time-major u/delta/z, strided B/C)", lambda: scan_fns(block, "triton")),
                          ("block via copies to contiguous", lambda: copy_fallback_fns(block)),
                          ("contiguous (batch, dim, L)", lambda: scan_fns(contiguous_copy(block), "triton"))):
            fwd, fwd_bwd = fns()
            rows.append((f"{batch}, {dim}, {L}", name, bench_ms(fwd, rep=100), bench_ms(fwd_bwd, rep=100)))
            print(rows[-1], flush=True)
            del fwd, fwd_bwd
        del block
        torch.cuda.empty_cache()
    print(f"\nGPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, triton {triton.__version__}; "
          f"programmatic launch {'on' if launch.PROGRAMMATIC_LAUNCH else 'off'}; "
          f"block-layout check {'PASS' if ok else 'FAIL'}")
    print("| (batch, dim, L) | layout | fwd ms | fwd+bwd ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} |")


def split_l_table(batch=1, dim=256, L=2 ** 20, segment_counts=(1, 8, 16, 32, 64, 128), train=True):
    """Issue 9: the forward with L split across programs (scan_forward_split) and the training forward + backward
    split the same way (scan_forward_split_train / scan_backward_split) against one pass over L, at a shape where
    batch x channels cannot fill the GPU (by default 256 programs on 132 SMs): ms, and the largest relative
    difference of the output / of any gradient to the one-pass results. ``train`` False: the forward only."""
    inputs = make_inputs(batch, dim, L)
    rows = []
    ref = ref_grads = None
    nan = float("nan")
    for segments in segment_counts:
        scan_launch.FORCE_SEGMENTS = segments
        scan_launch.FORCE_TRAIN_SEGMENTS = segments  # the training forward + backward split the same way
        fwd, fwd_bwd = scan_fns(inputs, "triton")
        out = fwd()
        ref = out if ref is None else ref
        if train:
            grads = fwd_bwd()
            ref_grads = grads if ref_grads is None else ref_grads
            grad_diff = max(rel_err(g.float(), r.float()) for g, r in zip(grads, ref_grads))
            rows.append((segments, bench_ms(fwd), rel_err(out.float(), ref.float()), bench_ms(fwd_bwd), grad_diff))
        else:
            rows.append((segments, bench_ms(fwd), rel_err(out.float(), ref.float()), nan, nan))
        print(rows[-1], flush=True)
    scan_launch.FORCE_SEGMENTS = scan_launch.FORCE_TRAIN_SEGMENTS = None
    rule = scan_launch.split_segments(batch, dim, L, torch.device("cuda"), False)
    print(f"\nsplit L across programs, forward (no grad), ({batch}, {dim}, {L}) bf16; GPU {torch.cuda.get_device_name()}; "
          f"the current rule picks {rule} segment(s) (FWD_CONFIG split_programs_per_sm="
          f"{scan_launch.FWD_CONFIG.get('split_programs_per_sm', 0)}); exp floor (one pass) "
          f"{exp_floor_ms(batch, dim, L):.3f} ms")
    print("| segments | fwd ms | vs one pass | rel. diff | fwd+bwd ms (training split) | vs one pass | max grad diff |")
    print("|---|---|---|---|---|---|---|")
    for segments, ms, diff, train_ms, grad_diff in rows:
        print(f"| {segments} | {ms:.3f} | {rows[0][1] / ms:.2f}x | {diff:.1e} | {train_ms:.3f} | "
              f"{rows[0][3] / train_ms:.2f}x | {grad_diff:.1e} |")
    return rows


ATTENTION_LENGTHS = (1024, 2048, 4096, 8192, 16384)


def attention_fns(batch, heads, L, head_dim=64, dtype=torch.bfloat16):
    """(forward under no_grad, forward + backward) of PyTorch SDPA, causal, restricted to the flash backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, heads, L, head_dim, device="cuda", generator=g, dtype=dtype) for _ in range(3))
    dout = torch.randn_like(q)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def fwd():
        with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd_bwd():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
        return torch.autograd.grad(out, leaves, dout)

    return fwd, fwd_bwd


def attention_table(batch=8, dim=1536, heads=12, lengths=ATTENTION_LENGTHS):
    """The scan at (batch, dim, L) against SDPA flash attention at (batch, heads, L, 64), causal, bf16, same run:
    issue 9's comparison (the paper's claim: the scan beats attention from 2K tokens)."""
    rows = []
    for L in lengths:
        inputs = make_inputs(batch, dim, L)
        s_fwd, s_fb = scan_fns(inputs, "triton")
        scan = (bench_ms(s_fwd), bench_ms(s_fb, rep=100))
        del inputs, s_fwd, s_fb
        a_fwd, a_fb = attention_fns(batch, heads, L)
        attn = (bench_ms(a_fwd), bench_ms(a_fb, rep=100))
        del a_fwd, a_fb
        torch.cuda.empty_cache()
        rows.append((L, *scan, *attn, exp_floor_ms(batch, dim, L)))
        print(rows[-1], flush=True)
    print(f"\nscan ({batch}, {dim}, L) vs SDPA flash attention ({batch}, {heads} heads, L, 64) causal, bf16; "
          f"GPU {torch.cuda.get_device_name()}")
    print("| L | scan fwd ms | attention fwd ms | scan / attention fwd | scan fwd+bwd ms | attention fwd+bwd ms "
          "| scan / attention fwd+bwd | scan fwd % of exp floor |")
    print("|---|---|---|---|---|---|---|---|")
    for L, sf, sfb, af, afb, floor in rows:
        print(f"| {L} | {sf:.3f} | {af:.3f} | {sf / af:.2f} | {sfb:.3f} | {afb:.3f} | {sfb / afb:.2f} "
              f"| {100 * floor / sf:.0f}% |")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=["contiguous", "block"], default="contiguous",
                        help="block: the Mamba block's layouts (correctness check, then block vs contiguous times)")
    parser.add_argument("--sweep", action="store_true", help="pick the launch configs first, then the table")
    parser.add_argument("--sweep-only", action="store_true")
    parser.add_argument("--shapes", default="all",
                        help="'all', or indices into SHAPES and / or BATCHxDIMxL, e.g. 0,1,6,32x1536x2048")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--attention", action="store_true",
                        help="also time SDPA flash attention at (8, 12 heads, L, 64) causal beside the scan")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode-step timings")
    parser.add_argument("--split-l", action="store_true",
                        help="also time the forward with L split across programs at (1, 256, 2^20)")
    parser.add_argument("--split-shape", default="1x256x1048576", help="--split-l's BATCHxDIMxL")
    parser.add_argument("--split-segments", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128],
                        help="--split-l's segment counts (the first is the baseline; 1 = one pass)")
    parser.add_argument("--split-forward-only", action="store_true",
                        help="--split-l without the training forward + backward")
    parser.add_argument("--extras-only", action="store_true",
                        help="only the --attention / --split-l tables (not the main table)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_selective_scan.py needs a CUDA GPU")
    if args.layout == "block":
        block_layout_table(sweep_first=args.sweep)
        return
    split_args = dict(zip(("batch", "dim", "L"), (int(v) for v in args.split_shape.split("x"))),
                      segment_counts=tuple(args.split_segments), train=not args.split_forward_only)
    if args.extras_only:
        if args.split_l:
            split_l_table(**split_args)
        if args.attention:
            attention_table()
        return
    if args.sweep or args.sweep_only:
        sweep()
        if args.sweep_only:
            return
    gpu = torch.cuda.get_device_name()
    copy_gbs = copy_bandwidth_gbs()
    have_mamba = mamba_ssm_available()
    shapes = SHAPES if args.shapes == "all" else [
        tuple(int(v) for v in item.split("x")) if "x" in item else SHAPES[int(item)] for item in args.shapes.split(",")]
    rows = []
    for batch, dim, L in shapes:
        inputs = make_inputs(batch, dim, L)
        fwd, fwd_bwd = scan_fns(inputs, "triton")
        fwd_ms, fb_ms = bench_ms(fwd), bench_ms(fwd_bwd, rep=100)
        small = fb_ms < 10  # where host time can exceed GPU time
        fb_queued = queued_ms(fwd_bwd) if small else None
        peak = peak_memory_gb(fwd_bwd)
        fwd_bytes = 2 * batch * L * (4 * dim + 2 * N_STATE)
        bwd_bytes = 2 * batch * L * (7 * dim + 4 * N_STATE)
        fwd_gbs = fwd_bytes / fwd_ms / 1e6
        bwd_gbs = bwd_bytes / max(fb_ms - fwd_ms, 1e-9) / 1e6
        ref_ratio = "-"
        if (batch, dim, L) == SHAPES[0] and not args.no_reference:
            ref_fwd, _ = scan_fns(inputs, "reference")
            ref_ratio = f"{bench_ms(ref_fwd, rep=500) / fwd_ms:.0f}x fwd"
        if have_mamba:
            m_fwd, m_fb = scan_fns(inputs, "mamba_ssm")
            base, source = (bench_ms(m_fwd), bench_ms(m_fb, rep=100)), "measured"
            m_peak = f"{peak_memory_gb(m_fb):.2f}"
            m_queued = queued_ms(m_fb) if small else None
            del m_fwd, m_fb
        else:
            # a shape with no anchor row (given as BATCHxDIMxL) has no baseline: its ratios print as nan
            base = ANCHOR_MS.get((batch, dim, L), (float("nan"), float("nan")))
            source, m_peak, m_queued = ("anchor" if (batch, dim, L) in ANCHOR_MS else "-"), "-", None
        rows.append((f"{batch},{dim},{L}", fwd_ms, fb_ms, fwd_gbs, 100 * fwd_gbs / copy_gbs, bwd_gbs,
                     100 * bwd_gbs / copy_gbs, peak, ref_ratio, base[0] / fwd_ms, base[1] / fb_ms, source, m_peak,
                     base[0], base[1], fb_queued, m_queued, 100 * exp_floor_ms(batch, dim, L) / fwd_ms))
        del inputs, fwd, fwd_bwd
        torch.cuda.empty_cache()
        print(rows[-1], flush=True)
    dec = {b: decode_us(b) for b in (1, 64)} if not args.no_decode else {}
    mamba_decode = mamba_decode_fn() if not args.no_decode else None
    dec_mamba = {b: decode_us(b, impl=mamba_decode) for b in (1, 64)} if mamba_decode is not None else {}

    print(f"\nGPU: {gpu}; copy bandwidth {copy_gbs:.0f} GB/s (read+write); torch {torch.__version__}, "
          f"triton {triton.__version__}; mamba_ssm {'measured' if have_mamba else 'not importable: anchor table'}; "
          f"exp floor at {sm_clock_mhz():.0f} MHz x {torch.cuda.get_device_properties(0).multi_processor_count} SMs x "
          f"{SFU_EXP2_PER_CLOCK_PER_SM} exp2/clock")
    print("| (batch, dim, L) | fwd ms | fwd+bwd ms | fwd GB/s | fwd % copy | bwd GB/s | bwd % copy | peak GB "
          "| mamba_ssm fwd / fwd+bwd ms, peak GB | vs reference | speedup vs mamba_ssm fwd | fwd+bwd "
          "| fwd+bwd GPU time, host ahead (ours / mamba_ssm ms) | fwd % of exp floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        queued = (f"{r[15]:.3f} / " + (f"{r[16]:.3f} ({r[16] / r[15]:.2f}x)" if r[16] is not None else "-")
                  if r[15] is not None else "-")
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.0f} | {r[4]:.1f}% | {r[5]:.0f} | {r[6]:.1f}% | {r[7]:.2f} "
              f"| {r[13]:.3f} / {r[14]:.3f}, {r[12]} ({r[11]}) | {r[8]} | {r[9]:.2f}x | {r[10]:.2f}x | {queued} "
              f"| {r[17]:.0f}% |")
    for b, d in dec.items():
        base = (f"mamba_ssm measured {dec_mamba[b][100]:.2f} us ({dec_mamba[b][100] / d[100]:.2f}x), "
                f"{dec_mamba[b][1]:.2f} us with one" if b in dec_mamba else "mamba_ssm not importable")
        print(f"decode step batch {b}, dim 1536, N 16, CUDA graph: {d[100]:.2f} us per step with 100 steps per graph, "
              f"{d[1]:.2f} us with one (graph launch included); eager {d['eager']:.1f} us; {base}; "
              f"anchor table {ANCHOR_DECODE_US[b]} us")
    if args.split_l:
        split_l_table(**split_args)
    if args.attention:
        attention_table()


if __name__ == "__main__":
    main()

"""dt_proj (and x_proj) in the Mamba inner node: one pass each way (ops/channel_linear.py) against the batched GEMMs
(backward: bmm for dx, or baddbmm_ into du; bmm + a batch sum for dW), same run, same GPU, bf16.

Each row checks every path against an fp32 einsum and prints its GPU ms (CUDA-graph replays: no host time, as the
training step runs), its speedup over bmm and the one-pass memory floor (dy and x read, dx written, and read too when
accumulating, at the measured copy bandwidth). The forward y = W x is timed as bmm (cuBLAS) and, where the inner node
takes it (x of at most MAX_K channels: dt_proj), as ``linear_forward``. ``--sweep`` also times the backward's
(BLOCK_L, warps) tiles and programs per SM.

The backward's one pass also runs at x_proj, where ``channel_linear.applies`` keeps the GEMMs: that is how its rule
was set (H200, twenty-ninth session: 0.67-0.90x there).

    python benchmarks/bench_channel_linear.py            # GPU, ~30 s
    python benchmarks/bench_channel_linear.py --sweep
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import copy_bandwidth  # noqa: E402

from seqmamba.ops import channel_linear  # noqa: E402
from seqmamba.ops.mamba_inner import _weight_grad  # noqa: E402

# (name, batch, M, K, L, accumulate): y = W x with W (M, K); the paper's selective-copying model (D 64: d_inner 128,
# dt_rank 4, N 16) and a D 128 DNA model (d_inner 256, dt_rank 8)
CASES = [("sc dt_proj", 64, 128, 4, 4112, False), ("sc x_proj", 64, 36, 128, 4112, True),
         ("dna dt_proj", 16, 256, 8, 16384, False), ("dna x_proj", 16, 40, 256, 16384, True)]


def _bmm_path(w, dy, x, dx, accumulate):
    """The inner node's GEMM path (ops/mamba_inner.py _backward): x_proj's baddbmm_ into du, dt_proj's bmm into d dt,
    and its weight gradient (bmm, then the batch sum in fp32)."""
    batch = dy.shape[0]
    if accumulate:
        dx.baddbmm_(w.t().expand(batch, -1, -1), dy)
    else:
        torch.bmm(w.t().expand(batch, -1, -1), dy, out=dx)
    return _weight_grad(dy, x, w)


def _rel(a, b):
    return ((a.float() - b).norm() / b.norm()).item()


def _one_pass(w, dy, x, dx, accumulate):
    return channel_linear.linear_backward(w, dy, x, dx=dx, accumulate=accumulate)[1]


IMPLS = {"bmm": _bmm_path, "dot": _one_pass}


def _time(fn):
    """GPU ms of fn replayed from a CUDA graph (no host time in it: the step runs graphed), median."""
    return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")


def run_case(name, batch, M, K, L, accumulate, bandwidth, sweep, impls, check_only=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = torch.bfloat16
    w = (torch.randn(M, K, device="cuda", generator=g) / K ** 0.5).to(bf)
    dy = torch.randn(batch, M, L, device="cuda", generator=g).to(bf)
    x = torch.randn(batch, K, L, device="cuda", generator=g).to(bf)
    dx0 = torch.randn(batch, K, L, device="cuda", generator=g).to(bf)
    ref_dx = torch.einsum("mk,bml->bkl", w.float(), dy.float()) + (dx0.float() if accumulate else 0)
    ref_dw = torch.einsum("bml,bkl->mk", dy.float(), x.float())
    times, errors = {}, {}
    for impl in impls:
        dx = dx0.clone()
        dw = IMPLS[impl](w, dy, x, dx, accumulate)
        errors[impl] = (_rel(dx, ref_dx), _rel(dw, ref_dw))
        assert max(errors[impl]) < 1e-2, (name, impl, errors[impl])
        if check_only:
            continue
        buf = dx0.clone()
        times[impl] = _time(lambda: IMPLS[impl](w, dy, x, buf, accumulate))
    if check_only:
        print(f"{name}: {errors}")
        return
    t_fwd = _time(lambda: torch.bmm(w.expand(batch, -1, -1), x))
    fwd_cell = ""
    if K <= channel_linear.MAX_K:  # the forward the inner node takes for dt_proj: y = W x in one pass
        y = channel_linear.linear_forward(w, x)
        err = _rel(y, torch.einsum("mk,bkl->bml", w.float(), x.float()))
        assert err < 1e-2, (name, "forward", err)
        t = _time(lambda: channel_linear.linear_forward(w, x))
        fwd_floor = 2 * batch * L * (M + K) / bandwidth * 1e3  # x read, y written
        fwd_cell = f" one pass {t:.4f} ({t_fwd / t:.2f}x, err {err:.1e}, floor {fwd_floor:.4f})"
    nbytes = 2 * batch * L * (M + K + K * (2 if accumulate else 1))
    floor = nbytes / bandwidth * 1e3
    base = times.get("bmm")
    cells = "  ".join(f"{i} {t:.4f}" + (f" ({base / t:.2f}x)" if base and i != "bmm" else "")
                      for i, t in times.items())
    errs = " ".join(f"{i} {e[0]:.1e}/{e[1]:.1e}" for i, e in errors.items())
    print(f"{name:12s} {batch:3d}x{M:3d}x{K:3d}x{L:6d}  backward: {cells}  floor {floor:.4f}  err dx/dw {errs}",
          flush=True)
    print(f"{'':12s} {'':20s}  forward: bmm {t_fwd:.4f}{fwd_cell}", flush=True)
    if not sweep:
        return
    buf = dx0.clone()
    if "dot" in impls:
        tiles, per_sm = channel_linear._tiles, channel_linear.PROGRAMS_PER_SM
        for block_l, warps, programs in itertools.product([32, 64], [4, 8], [4, 8, 16]):
            channel_linear._tiles = lambda M, K, b=block_l, n=warps: (b, n)
            channel_linear.PROGRAMS_PER_SM = programs
            try:
                t = _time(lambda: IMPLS["dot"](w, dy, x, buf, accumulate))
                print(f"  dot BLOCK_L {block_l:3d} warps {warps} programs/SM {programs:2d}: {t:.4f}", flush=True)
            except Exception as e:  # noqa: BLE001 (out of resources at a large tile)
                print(f"  dot BLOCK_L {block_l:3d} warps {warps} programs/SM {programs:2d}: {type(e).__name__}")
        channel_linear._tiles, channel_linear.PROGRAMS_PER_SM = tiles, per_sm


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="also time the kernels' tiles and programs per SM")
    parser.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], help="case names (default: all)")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS),
                        help="bmm: the batched GEMMs; dot: the one-pass kernel")
    parser.add_argument("--check-only", action="store_true", help="one call of each path, checked, no timing "
                        "(for Nsight Compute)")
    args = parser.parse_args()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; ms (CUDA-graph replays, "
          "median)")
    for case in CASES:
        if case[0] in args.cases:
            run_case(*case, bandwidth, args.sweep, args.impls, args.check_only)


if __name__ == "__main__":
    main()

"""x_proj / dt_proj's backward in the Mamba inner node: one pass (ops/channel_linear.py) against the batched GEMMs it
replaces (bmm for dx, or baddbmm_ into du; bmm + a batch sum for dW), same run, same GPU, bf16.

Each row checks both against an fp32 einsum and prints ms (do_bench median), the ratio and the one-pass kernel's
memory floor (dy and x read, dx written, and read too when accumulating, at the measured copy bandwidth). The forward
GEMMs of the same projections (bmm, cuBLAS) are timed for context. ``--sweep`` also times the kernel's (BLOCK_L,
warps) tiles and programs per SM.

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

# (name, batch, M, K, L, accumulate): y = W x with W (M, K); the paper's selective-copying model (D 64: d_inner 128,
# dt_rank 4, N 16) and a D 128 DNA model (d_inner 256, dt_rank 8)
CASES = [("sc dt_proj", 64, 128, 4, 4112, False), ("sc x_proj", 64, 36, 128, 4112, True),
         ("dna dt_proj", 16, 256, 8, 16384, False), ("dna x_proj", 16, 40, 256, 16384, True)]


def _bmm_path(w, dy, x, dx, accumulate):
    batch = dy.shape[0]
    if accumulate:
        dx.baddbmm_(w.t().expand(batch, -1, -1), dy)
    else:
        torch.bmm(w.t().expand(batch, -1, -1), dy, out=dx)
    return torch.bmm(dy, x.transpose(1, 2)).sum(0, dtype=torch.float32)


def _rel(a, b):
    return ((a.float() - b).norm() / b.norm()).item()


def run_case(name, batch, M, K, L, accumulate, bandwidth, sweep):
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = torch.bfloat16
    w = (torch.randn(M, K, device="cuda", generator=g) / K ** 0.5).to(bf)
    dy = torch.randn(batch, M, L, device="cuda", generator=g).to(bf)
    x = torch.randn(batch, K, L, device="cuda", generator=g).to(bf)
    dx0 = torch.randn(batch, K, L, device="cuda", generator=g).to(bf)
    ref_dx = torch.einsum("mk,bml->bkl", w.float(), dy.float()) + (dx0.float() if accumulate else 0)
    ref_dw = torch.einsum("bml,bkl->mk", dy.float(), x.float())
    dx = dx0.clone()
    _, dw = channel_linear.linear_backward(w, dy, x, dx=dx, accumulate=accumulate)
    dx_b = dx0.clone()
    dw_b = _bmm_path(w, dy, x, dx_b, accumulate)
    errors = (_rel(dx, ref_dx), _rel(dw, ref_dw), _rel(dx_b, ref_dx), _rel(dw_b, ref_dw))
    assert max(errors) < 1e-2, (name, errors)
    buf = dx0.clone()
    t_bmm = triton.testing.do_bench(lambda: _bmm_path(w, dy, x, buf, accumulate), return_mode="median")
    t_one = triton.testing.do_bench(lambda: channel_linear.linear_backward(w, dy, x, dx=buf, accumulate=accumulate),
                                    return_mode="median")
    t_fwd = triton.testing.do_bench(lambda: torch.bmm(w.expand(batch, -1, -1), x), return_mode="median")
    nbytes = 2 * batch * L * (M + K + K * (2 if accumulate else 1))
    floor = nbytes / bandwidth * 1e3
    print(f"{name:12s} {batch:3d}x{M:3d}x{K:3d}x{L:6d}  bmm {t_bmm:.4f}  one pass {t_one:.4f}  "
          f"{t_bmm / t_one:.2f}x  floor {floor:.4f} ({t_one / floor:.2f}x)  fwd bmm {t_fwd:.4f}  "
          f"err dx {errors[0]:.1e} dw {errors[1]:.1e} (bmm {errors[2]:.1e} {errors[3]:.1e})", flush=True)
    if sweep:
        tiles, per_sm = channel_linear._tiles, channel_linear.PROGRAMS_PER_SM
        for block_l, warps, programs in itertools.product([32, 64, 128], [4, 8], [2, 4, 8, 16]):
            channel_linear._tiles = lambda M, K, b=block_l, n=warps: (b, n)
            channel_linear.PROGRAMS_PER_SM = programs
            try:
                t = triton.testing.do_bench(
                    lambda: channel_linear.linear_backward(w, dy, x, dx=buf, accumulate=accumulate),
                    return_mode="median")
                print(f"  BLOCK_L {block_l:3d} warps {warps} programs/SM {programs:2d}: {t:.4f}", flush=True)
            except Exception as e:  # noqa: BLE001 (out of resources at a large tile)
                print(f"  BLOCK_L {block_l:3d} warps {warps} programs/SM {programs:2d}: {type(e).__name__}")
        channel_linear._tiles, channel_linear.PROGRAMS_PER_SM = tiles, per_sm


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="also time the kernel's tiles and programs per SM")
    args = parser.parse_args()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; ms (do_bench median)")
    for case in CASES:
        run_case(*case, bandwidth, args.sweep)


if __name__ == "__main__":
    main()

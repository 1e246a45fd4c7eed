"""The L split's passes with no carry, as scans or as reductions (``triton_launch.SPLIT_REDUCTION_PASSES``), on a
GPU.

When batch x channels cannot fill the GPU (the 1.4M DNA model at (1, 2^20): 256 scan channels on 132 SMs) the
scan cuts each sequence into segments. Each segment needs one pass with no carry before the real one: the
forward its end state from a zero state and its decay exp(A sum delta), the backward the gradient of its start
state with no gradient entering at its end. As scans those passes cost a whole forward (that writes an output
the next pass overwrites) plus a delta-sum kernel, and a reverse state-gradient scan: 61 + 6 + 51 ms of a 485-ms
DNA step (H200, thirteenth session). As reductions (``_segment_end_state_kernel`` / ``_segment_start_grad_kernel``)
each element needs one exp and a few FMAs, and no scan.

This script times both ways per pass at the split's own segments, the reductions at several tiles (each pass's
SEGMENT_PASS_LAUNCH: channels, steps, warps per program), checks the reductions' results against the scans', then
times the whole scan forward + backward both ways. Inputs as the Mamba block hands them on CUDA: u / delta /
z / dout (batch, dim, L) L-contiguous, B / C rows of one x_proj output, bf16.

    python benchmarks/bench_split_passes.py                     # GPU, ~1 min
    python benchmarks/bench_split_passes.py --shapes 1x256x1048576 --tiles 4,64,4 2,128,4
"""
from __future__ import annotations

import argparse
import json

import torch
import triton

from seqmamba.ops.selective_scan import triton_autograd
from seqmamba.ops.selective_scan import triton_launch as launch

SHAPES = ["1x256x1048576", "1x512x262144", "2x256x524288"]
TILES = ["8,32,4", "4,32,4", "8,32,2", "16,32,4", "4,64,4", "8,64,4", "4,32,1", "16,16,4"]


def inputs(batch, dim, L, N=16, R=8, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(torch.bfloat16)

    x_dbl = randn(batch, R + 2 * N, L)  # x_proj's output, channels-first: dt rows, then B, then C
    return dict(u=randn(batch, dim, L), delta=randn(batch, dim, L, scale=0.5) - 4.0,
                A=-torch.rand(dim, N, device="cuda", generator=g) * 4 - 0.5, B=x_dbl[:, R:R + N],
                C=x_dbl[:, R + N:], D=torch.ones(dim, device="cuda"), z=randn(batch, dim, L),
                delta_bias=torch.rand(dim, device="cuda", generator=g) * 0.1, dout=randn(batch, dim, L))


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="BATCHxDIMxL")
    parser.add_argument("--tiles", nargs="+", default=TILES, help="BLOCK_D,BLOCK_L,WARPS")
    parser.add_argument("--segments", type=int, default=16, help="segments per sequence")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    tiles = [tuple(int(v) for v in t.split(",")) for t in args.tiles]
    default_tile, default_switch = launch.SEGMENT_PASS_LAUNCH, launch.SPLIT_REDUCTION_PASSES
    print(f"{torch.cuda.get_device_name()}; ms (do_bench median); default tiles {default_tile}")
    rows, table = [], []
    for shape in args.shapes:
        batch, dim, L = (int(v) for v in shape.split("x"))
        x = inputs(batch, dim, L)
        segments = args.segments
        chunk_t = launch.BWD_CONFIG["T"]
        seg_len, _ = launch._split_layout(L, segments, chunk_t)
        out = torch.empty_like(x["u"])  # the scan pass writes an output there (the real pass would overwrite it)
        fwd_args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, 0, segments,
                    seg_len, out)
        bwd_args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["z"], x["dout"], x["delta_bias"], True, 0, segments,
                    seg_len)

        def fwd_scan():
            return launch.segment_end_states(*fwd_args, reduction=False)

        def fwd_red():
            return launch.segment_end_states(*fwd_args, reduction=True)

        def bwd_scan():
            return launch.segment_start_grads(*bwd_args, reduction=False)

        def bwd_red():
            return launch.segment_start_grads(*bwd_args, reduction=True)

        h_ref, decay_ref = fwd_scan()
        g_ref = bwd_scan()
        base = {"fwd": triton.testing.do_bench(fwd_scan, warmup=5, rep=50),
                "bwd": triton.testing.do_bench(bwd_scan, warmup=5, rep=50)}
        print(f"{shape} ({segments} x {seg_len}): scan passes fwd {base['fwd']:.3f} ms, bwd {base['bwd']:.3f} ms")
        best = {}
        for tile in tiles:
            launch.SEGMENT_PASS_LAUNCH = {"end_state": tile, "start_grad": tile}
            h, decay = fwd_red()
            g = bwd_red()
            err = max(rel(h, h_ref), rel(decay, decay_ref), rel(g, g_ref))
            t_f = triton.testing.do_bench(fwd_red, warmup=5, rep=50)
            t_b = triton.testing.do_bench(bwd_red, warmup=5, rep=50)
            rows.append(dict(shape=shape, tile=tile, fwd_ms=t_f, bwd_ms=t_b, scan_fwd_ms=base["fwd"],
                             scan_bwd_ms=base["bwd"], max_rel_err=err))
            print(f"  tile {tile}: fwd {t_f:.3f} ms ({base['fwd'] / t_f:.2f}x)  bwd {t_b:.3f} ms "
                  f"({base['bwd'] / t_b:.2f}x)  err {err:.1e}")
            for k, t in (("fwd", t_f), ("bwd", t_b)):
                if k not in best or t < best[k][1]:
                    best[k] = (tile, t)
        launch.SEGMENT_PASS_LAUNCH = default_tile
        # the whole scan, forward + backward, through the autograd function (default tiles, same segments)
        saved_force = launch.FORCE_TRAIN_SEGMENTS
        launch.FORCE_TRAIN_SEGMENTS = segments
        whole = {}
        for switch in (False, True):
            launch.SPLIT_REDUCTION_PASSES = switch
            leaves = {k: x[k].detach().clone().requires_grad_(True) for k in ("u", "delta", "B", "C", "z")}

            def step():
                y = triton_autograd.selective_scan_triton(leaves["u"], leaves["delta"], x["A"], leaves["B"],
                                                          leaves["C"], x["D"], leaves["z"], x["delta_bias"], True)
                y.backward(x["dout"])
            whole[switch] = triton.testing.do_bench(step, warmup=3, rep=50, grad_to_none=list(leaves.values()))
        launch.SPLIT_REDUCTION_PASSES = default_switch
        launch.FORCE_TRAIN_SEGMENTS = saved_force
        table.append((shape, base, best, whole))
        rows.append(dict(shape=shape, whole_scan_passes_ms=whole[False], whole_reductions_ms=whole[True]))
    print(f"\n{'shape':16} {'fwd pass: scan':>14} {'best reduction':>24} {'bwd pass: scan':>14} "
          f"{'best reduction':>24} {'fwd+bwd scan passes':>20} {'reductions':>11} {'x':>5}")
    for shape, base, best, whole in table:
        print(f"{shape:16} {base['fwd']:14.3f} {best['fwd'][1]:10.3f} {str(best['fwd'][0]):>13} "
              f"{base['bwd']:14.3f} {best['bwd'][1]:10.3f} {str(best['bwd'][0]):>13} {whole[False]:20.3f} "
              f"{whole[True]:11.3f} {whole[False] / whole[True]:5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

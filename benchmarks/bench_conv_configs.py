"""The parallel causal conv's tiles (``causal_conv1d.triton_kernels.LAUNCH``): forward and backward against
their memory floors, per shape, on a GPU.

The 130M prompt forward (issue 9's prefill target, batch 64 within 1.3x of the Transformer) spends 9.3 ms of its
99.6 in the conv forward, ~2x the bytes it must move (profile_decode.py --phase prefill, eleventh session).
This script times (channels, time steps, warps) per program for the forward and for the backward's two kernels
(each config at its tiles as given; the default row with the backward's time-tile cap, BWD_MAX_TIME_TILES, as the
library runs it) at the shapes the toolkit runs: the 130M prefill and training width,
the selective-copying model, the DNA model at 2^20. x is what Mamba hands the conv: the x half of the in_proj output, (batch, d_inner, L) with L
contiguous and a batch stride of 2 x d_inner x L. Outputs and gradients of every config are checked against
the first row's (the default tiles with the first --taps and --backward). The backward's floor is 6 bytes per element for
the one-kernel backward (x, dout read, dx written), 14 for the two kernels (dpre in fp32 out and back).

``--taps columns shifted`` times each config both ways to the taps (``COLUMN_TAPS``: the columns of two aligned
loads, or one shifted load per tap); ``--tiles default`` times the library's tiles only.

    python benchmarks/bench_conv_configs.py                 # GPU, ~2 min
    python benchmarks/bench_conv_configs.py --json out.json --shapes 64x1536x2048
    python benchmarks/bench_conv_configs.py --taps shifted columns --tiles default
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import copy_bandwidth  # noqa: E402
from switches import SWITCHES  # noqa: E402

CONV = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
TAPS = SWITCHES["conv-taps"][2]  # --taps value -> COLUMN_TAPS, the names the other benchmarks' --conv-taps use
FUSED = SWITCHES["conv-backward"][2]  # --backward value -> FUSED_BACKWARD
SHAPES = ["64x1536x2048", "8x1536x4096", "64x128x4112", "1x256x1048576"]


def configs(tiles="all"):
    yield None  # the default
    if tiles == "default":
        return
    for block_d, block_l in itertools.product([1, 2, 4, 8, 16, 32], [128, 256, 512, 1024]):
        if 1024 <= block_d * block_l <= 8192:
            yield (block_d, block_l, 4)
    yield from [(16, 128, 8), (8, 512, 8), (4, 1024, 8), (16, 256, 8)]


def inputs(batch, dim, L, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    xz = torch.randn(batch, 2 * dim, L, device="cuda", generator=g).to(torch.bfloat16)
    weight = (torch.randn(dim, 4, device="cuda", generator=g) * 0.5).to(torch.bfloat16)
    bias = torch.randn(dim, device="cuda", generator=g).to(torch.bfloat16)
    dout = torch.randn(batch, dim, L, device="cuda", generator=g).to(torch.bfloat16)
    return xz[:, :dim], weight, bias, dout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="BATCHxDIMxL")
    parser.add_argument("--json", default=None)
    parser.add_argument("--taps", nargs="+", choices=sorted(TAPS), default=["columns"],
                        help="COLUMN_TAPS on (columns) / off (shifted): each config is timed each way")
    parser.add_argument("--tiles", choices=["all", "default"], default="all")
    parser.add_argument("--backward", nargs="+", choices=sorted(FUSED), default=["one-kernel"],
                        help="FUSED_BACKWARD (with column taps): the backward as one kernel or two, each config "
                             "timed each way")
    args = parser.parse_args()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; ms (do_bench median)")
    rows, summary = [], []
    for shape in args.shapes:
        batch, dim, L = (int(v) for v in shape.split("x"))
        x, weight, bias, dout = inputs(batch, dim, L)
        n = batch * dim * L
        fwd_floor = 2 * n * 2 / bandwidth * 1e3  # x read, out written (bf16)
        bwd_floor_two = (3 * n * 2 + 2 * n * 4) / bandwidth * 1e3  # x, dout read, dx written; dpre (fp32) out and back
        bwd_floor_one = 3 * n * 2 / bandwidth * 1e3  # the one-kernel backward: x, dout read, dx written
        ref = None
        best = {"fwd": (float("inf"), None), "bwd": (float("inf"), None)}
        default = {}
        for taps, backward, launch in itertools.product(args.taps, args.backward, list(configs(args.tiles))):
            saved, saved_cap, saved_taps = dict(CONV.LAUNCH), CONV.BWD_MAX_TIME_TILES, CONV.COLUMN_TAPS
            saved_fused = CONV.FUSED_BACKWARD
            CONV.COLUMN_TAPS, CONV.FUSED_BACKWARD = TAPS[taps], FUSED[backward]
            if launch is not None:
                CONV.LAUNCH.update(fwd=launch, bwd=launch)
                CONV.BWD_MAX_TIME_TILES = float("inf")  # the config's tiles as given
            try:
                out = CONV._conv_forward(x, weight, bias, True)
                dx, dw, db = CONV._conv_gradients(x, weight, bias, True, dout)
                result = [out.float(), dx.float(), dw.float(), db.float()]
                ref = result if ref is None else ref
                ok = all(torch.allclose(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item()) for a, b in zip(result, ref))
                fwd = triton.testing.do_bench(lambda: CONV._conv_forward(x, weight, bias, True), return_mode="median")
                bwd = triton.testing.do_bench(lambda: CONV._conv_gradients(x, weight, bias, True, dout),
                                              return_mode="median")
            finally:
                CONV.COLUMN_TAPS, CONV.FUSED_BACKWARD = saved_taps, saved_fused
                CONV.BWD_MAX_TIME_TILES = saved_cap
                CONV.LAUNCH.clear()
                CONV.LAUNCH.update(saved)
            bwd_floor = bwd_floor_one if TAPS[taps] and FUSED[backward] else bwd_floor_two
            label = taps + " " + backward + " " + ("default " + "/".join("x".join(map(str, saved[k])) for k in ("fwd", "bwd"))
                                  if launch is None else "x".join(map(str, launch)))
            rows.append({"shape": shape, "taps": taps, "backward": backward, "launch": launch, "fwd_ms": fwd,
                         "bwd_ms": bwd,
                         "fwd_floor_ms": fwd_floor, "bwd_floor_ms": bwd_floor, "matches_default": ok})
            print(f"{shape:16s} {label:43s} fwd {fwd:7.3f} ({fwd / fwd_floor:4.2f}x floor)  bwd {bwd:7.3f} "
                  f"({bwd / bwd_floor:4.2f}x floor){'' if ok else '  MISMATCH'}", flush=True)
            if launch is None and taps == args.taps[0] and backward == args.backward[0]:
                default = {"fwd": fwd, "bwd": bwd}
            for kind, ms in (("fwd", fwd), ("bwd", bwd)):
                if ok and ms < best[kind][0]:
                    best[kind] = (ms, label)
        for kind in ("fwd", "bwd"):
            summary.append(f"  {shape:16s} {kind}: best {best[kind][1]:43s} {best[kind][0]:7.3f} ms, first row "
                           f"{default[kind]:7.3f} ({default[kind] / best[kind][0]:.2f}x), floor "
                           + (f"{fwd_floor:7.3f}" if kind == "fwd" else
                              f"{bwd_floor_one:7.3f} (one kernel) / {bwd_floor_two:7.3f} (two)"))
        del x, weight, bias, dout
    print("\nbest per shape (taps, tiles: channels x steps x warps):")
    print("\n".join(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

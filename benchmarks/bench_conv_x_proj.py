"""The fused conv + x_proj (``causal_conv1d.triton_kernels.causal_conv1d_x_proj_triton``) against the separate conv
kernel and x_proj GEMM it replaces in the Mamba block's inference forward, per shape, on a GPU.

The 130M prefill at batch 64 (issue 9: within 1.3x of the Transformer) spends 5.2 ms of its ~90 in the conv and
2.5 ms in x_proj (twenty-fourth session's profile); both are memory-bound, and x_proj's bytes are a second read of
the conv's output. The fused kernel multiplies each conv tile into x_proj's accumulator as it stores it, so u is
written once and never read back. Per shape this prints the separate pair (the conv forward, then x_proj as the block
runs it: a batched GEMM over (batch, dim, L) into (batch, rows, L)), the fused kernel at its default tiles and at
each candidate tile, the memory floor (x read, u and x_dbl written, at the measured copy bandwidth) and each
candidate's match with the separate pair's outputs.

    python benchmarks/bench_conv_x_proj.py                       # GPU, ~1 min
    python benchmarks/bench_conv_x_proj.py --shapes 64x1536x2048x80 --json out.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import copy_bandwidth  # noqa: E402

CONV = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")
# batch x d_inner x L x x_proj rows: the 130M prefill at batch 64 / 16 / 4 / 1 (rows 48 + 2 x 16), the 1.4B
# block at batch 16 (rows 128 + 32), the selective-copying model's (rows 4 + 32) at its training shape
SHAPES = ["64x1536x2048x80", "16x1536x2048x80", "4x1536x2048x80", "1x1536x2048x80", "1x1536x8192x80",
          "8x1536x2048x80", "1x4096x2048x160"]
# candidate tiles: (channels per block, time steps, warps)
TILES = [(32, 128, 8), (64, 64, 8), (64, 32, 4), (32, 64, 4), (128, 32, 8), (256, 64, 8), (128, 128, 8)]


def separate(x, weight, bias, proj):
    u = CONV._conv_forward(x, weight, bias, True)
    return u, torch.bmm(proj.expand(x.shape[0], -1, -1), u)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="BATCHxDIMxLxROWS")
    parser.add_argument("--tiles", choices=["all", "default"], default="all")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; bf16; ms (do_bench median); "
          f"the fused launch rule: at most {CONV.X_PROJ_MAX_PROGRAMS_PER_SM} programs per SM")
    rows, summary = [], []
    for shape in args.shapes:
        batch, dim, L, n_rows = (int(v) for v in shape.split("x"))
        g = torch.Generator(device="cuda").manual_seed(0)
        xz = torch.randn(batch, 2 * dim, L, device="cuda", generator=g).to(torch.bfloat16)
        x = xz[:, :dim]  # the x half of in_proj's output, as the block hands it over
        weight = (torch.randn(dim, 4, device="cuda", generator=g) * 0.5).to(torch.bfloat16)
        bias = torch.randn(dim, device="cuda", generator=g).to(torch.bfloat16)
        proj = (torch.randn(n_rows, dim, device="cuda", generator=g) / dim ** 0.5).to(torch.bfloat16)
        floor = (2 * batch * dim * L + batch * n_rows * L) * 2 / bandwidth * 1e3
        ref_u, ref_dbl = separate(x, weight, bias, proj)
        base = triton.testing.do_bench(lambda: separate(x, weight, bias, proj), return_mode="median")
        conv_only = triton.testing.do_bench(lambda: CONV._conv_forward(x, weight, bias, True), return_mode="median")
        switch, CONV.FUSED_X_PROJ = CONV.FUSED_X_PROJ, True  # the grid rule, whatever the switch says
        rule = CONV.conv_x_proj_launch(batch, dim, L, n_rows, x.device, x.dtype)
        CONV.FUSED_X_PROJ = switch
        print(f"{shape:18s} separate {base:7.3f} (conv {conv_only:.3f}; {base / floor:4.2f}x floor {floor:.3f}); "
              f"the rule {'fuses' if rule else 'keeps them separate'}", flush=True)
        default = CONV.x_proj_tile(n_rows, x.dtype)
        block_m = default[2]
        candidates = [default] + ([] if args.tiles == "default" else
                                  [(d, t, block_m, w) for d, t, w in TILES if (d, t, block_m, w) != default])
        best = (base, "separate")
        for launch in candidates:
            try:
                u, dbl = CONV.causal_conv1d_x_proj_triton(x, weight, bias, "silu", proj, launch=launch)
            except triton.runtime.errors.OutOfResources as error:
                print(f"{shape:18s} fused {launch}: {error}", flush=True)
                continue
            ok = (torch.allclose(u.float(), ref_u.float(), rtol=2e-2, atol=2e-2)
                  and torch.allclose(dbl.float(), ref_dbl.float(), rtol=2e-2, atol=2e-2 * ref_dbl.abs().max().item()))
            ms = triton.testing.do_bench(
                lambda: CONV.causal_conv1d_x_proj_triton(x, weight, bias, "silu", proj, launch=launch),
                return_mode="median")
            label = ("default " if launch == default else "") + "x".join(map(str, (launch[0], launch[1], launch[3])))
            rows.append({"shape": shape, "launch": launch, "fused_ms": ms, "separate_ms": base, "conv_ms": conv_only,
                         "floor_ms": floor, "matches": ok, "rule_fuses": rule is not None})
            print(f"{shape:18s} fused {label:18s} {ms:7.3f} ({base / ms:4.2f}x the separate pair, {ms / floor:4.2f}x "
                  f"floor){'' if ok else '  MISMATCH'}", flush=True)
            if ok and ms < best[0]:
                best = (ms, label)
        summary.append(f"  {shape:18s} separate {base:7.3f}  best {best[1]:18s} {best[0]:7.3f} ({base / best[0]:.2f}x)"
                       f"  floor {floor:.3f}  rule: {'fused' if rule else 'separate'}")
        del xz, x, ref_u, ref_dbl
        torch.cuda.empty_cache()
    print("\nbest per shape (tiles: channels x steps x warps):")
    print("\n".join(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""The Triton scan's backward launch config at small widths, swept on the GPU.

The paper's synthetic models have 128 scan channels (2 layers, D 64, expand 2): at selective copying's
(64, 128, 4112) the backward takes ~4x the forward's time, and every channel adds its dB / dC into the
same (batch, N, L) rows with atomics. This sweep times forward + backward of the scan (bf16 inputs laid
out as the Mamba block passes them on CUDA: channels-first u / delta / z, contiguous B / C) for each
backward config (channels per program BLOCK_D, chunk T, register cap) against the default, checks each
config's gradients against the default's, and prints a table, fastest first.

    python benchmarks/bench_scan_backward_configs.py                    # GPU, ~1 min
    python benchmarks/bench_scan_backward_configs.py --shapes 64x128x4112 8x1536x4096
    python benchmarks/bench_scan_backward_configs.py --block-d 1 --T 256 --maxnreg 168   # fast flip off / on
    python benchmarks/bench_scan_backward_configs.py --block-d 1 --T 256 --maxnreg 168 --dout layer \
        --dout-copy off on                      # the Mamba layer's strided dout, read as is or copied first
    python benchmarks/bench_scan_backward_configs.py --shapes 64x128x4112 --block-d 1 --T 256 --maxnreg 168 \
        --fast-flip on --dout-copy on --tail-launch off on   # a length just past whole chunks: one launch or two
"""
from __future__ import annotations

import argparse
import itertools
import json

import torch

from seqmamba.ops import selective_scan
from seqmamba.ops.selective_scan import triton_launch


def inputs(batch, dim, L, N=16, seed=0, dout_layout="contiguous"):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    u = rand(batch, dim, L).bfloat16().requires_grad_()
    delta = (0.5 * rand(batch, dim, L)).bfloat16().requires_grad_()
    z = rand(batch, dim, L).bfloat16().requires_grad_()
    A = (-torch.rand(dim, N, device="cuda", generator=g) * 4 - 0.5).requires_grad_()
    B = rand(batch, N, L).bfloat16().requires_grad_()
    C = rand(batch, N, L).bfloat16().requires_grad_()
    D = rand(dim).requires_grad_()
    bias = (0.1 * rand(dim)).requires_grad_()
    # "layer": what the Mamba layer's out_proj backward hands the scan on CUDA, (batch, L, dim) storage
    dout = rand(batch, dim, L).bfloat16() if dout_layout == "contiguous" else \
        rand(batch, L, dim).bfloat16().transpose(1, 2)
    return (u, delta, A, B, C, D, z, bias), dout


def fwd_bwd(args, dout):
    u, delta, A, B, C, D, z, bias = args
    out = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, backend="triton")
    return torch.autograd.grad(out, args, dout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["64x128x4112", "8x128x256", "8x1536x4096"])
    parser.add_argument("--block-d", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--T", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--maxnreg", nargs="+", default=["168", "none"])
    parser.add_argument("--fast-flip", nargs="+", default=["off", "on"], choices=["off", "on", "shift"],
                        help="BWD_CONFIG fast_flip values to sweep (the one-shuffle chunk flips of the backward; "
                             "shift: with the one-step shift and a two-operand reverse scan)")
    parser.add_argument("--dout", nargs="+", default=["contiguous"], choices=["contiguous", "layer"],
                        help="dout layouts: L-contiguous, or the Mamba layer's ((batch, L, dim) storage)")
    parser.add_argument("--dout-copy", nargs="+", default=["off"], choices=["off", "on"],
                        help="BWD_CONFIG dout_copy values (copy a strided dout to L-contiguous first)")
    parser.add_argument("--tail-launch", nargs="+", default=["off"], choices=["off", "on"],
                        help="BWD_CONFIG tail_launch: whole chunks and a short tail as two launches per pass")
    parser.add_argument("--json", default=None, help="write all rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_scan_backward_configs.py needs a CUDA GPU")
    import triton.testing as tt

    default = dict(triton_launch.BWD_CONFIG)
    rows = []
    for shape in [f"{s}/{d}" for s in args.shapes for d in args.dout]:
        batch, dim, L = (int(v) for v in shape.split("/")[0].split("x"))
        tensors, dout = inputs(batch, dim, L, dout_layout=shape.split("/")[1])
        fwd_ms = tt.do_bench(lambda: selective_scan(*tensors[:6], z=tensors[6], delta_bias=tensors[7],
                                                    delta_softplus=True, backend="triton"), return_mode="median")
        reference = None
        first = (default["block_d"], default["T"], str(default.get("maxnreg")),
                 {True: "on", "shift": "shift"}.get(default.get("fast_flip"), "off"),
                 "on" if default.get("dout_copy") else "off", "on" if default.get("tail_launch") else "off")
        for block_d, T, reg, flip, copy, tail in itertools.chain([first], itertools.product(
                args.block_d, args.T, args.maxnreg, args.fast_flip, args.dout_copy, args.tail_launch)):
            triton_launch.BWD_CONFIG.clear()
            triton_launch.BWD_CONFIG.update(default, block_d=block_d, T=T,
                                            maxnreg=None if reg in ("none", "None") else int(reg),
                                            fast_flip={"on": True, "shift": "shift"}.get(flip, False),
                                            dout_copy=copy == "on", tail_launch=tail == "on")
            triton_launch._launch_config_cached.cache_clear()
            name = f"BLOCK_D {block_d} T {T} maxnreg {reg} flip {flip} dout copy {copy} tail {tail}"
            try:
                grads = fwd_bwd(tensors, dout)
                if reference is None:
                    reference = grads
                err = max(((g.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-30)).item()
                          for g, r in zip(grads, reference))
                ms = tt.do_bench(lambda: fwd_bwd(tensors, dout), return_mode="median")
                rows.append({"shape": shape, "config": name, "fwd_bwd_ms": ms, "fwd_ms": fwd_ms, "max_rel_err": err})
            except Exception as exc:  # a config that does not compile or run is reported
                rows.append({"shape": shape, "config": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            print(rows[-1], flush=True)
        triton_launch.BWD_CONFIG.clear()
        triton_launch.BWD_CONFIG.update(default)
        triton_launch._launch_config_cached.cache_clear()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)
    print(f"\ndevice: {torch.cuda.get_device_name()}; default {default}")
    for shape in [f"{s}/{d}" for s in args.shapes for d in args.dout]:
        ok = sorted((r for r in rows if r["shape"] == shape and "error" not in r), key=lambda r: r["fwd_bwd_ms"])
        base = next((r["fwd_bwd_ms"] for r in rows if r["shape"] == shape and "error" not in r), None)
        for r in ok[:8]:
            print(f"{shape:25s} {r['config']:69s} fwd+bwd {r['fwd_bwd_ms']:8.3f} ms  (fwd {r['fwd_ms']:.3f})  "
                  f"x default {base / r['fwd_bwd_ms']:5.2f}  err {r['max_rel_err']:.1e}")


if __name__ == "__main__":
    main()

"""The decode step's two Triton kernels at the paper's sizes: launch configs against each shape's memory floor.

Issue 9 asks for 1.4B decode at batch 128 >= 5x the Transformer's tokens/s. ``profile_decode.py`` put half of
Mamba's step in ``selective_state_update`` (dt projected inside the kernel: W (dim, R) re-read once per batch
row) and 9% in ``causal_conv1d_update``, before the defaults this script chose. This script times, under CUDA
graphs (100 launches per graph: the GPU's time per launch, as generation replays them), the choices each kernel
has (and, for context, the step's GEMMs against a split over K):

- state update: dt projected inside the kernel, by one GEMM first (``DECODE_DT_PROJ_MAX_BYTES``), or by one
  tensor-core product per (batch rows x channels) block (``DECODE_DT_PROJ_ROWS``); channels per program and
  warps; fp32 or bf16 state;
- conv update: channels per program and warps (``UPDATE_CONFIGS``).

Each row prints us per launch and the memory floor (the bytes the launch must move at the copy bandwidth
measured in the same run); the best config per shape last. Outputs are checked against the default config's.

    python benchmarks/bench_decode_kernels.py                 # GPU, ~2 min (compiles dominate)
    python benchmarks/bench_decode_kernels.py --json out.json
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import copy_bandwidth  # noqa: E402

from seqmamba.ops import causal_conv1d_update, selective_state_update  # noqa: E402
from seqmamba.ops import launch  # noqa: E402

SSU = importlib.import_module("seqmamba.ops.selective_state_update.triton_kernels")
CONV = importlib.import_module("seqmamba.ops.causal_conv1d.triton_kernels")

# (name, batch, d_inner, dt_rank): Mamba 1.4B (d_model 2048) and 130M (d_model 768)
SHAPES = [("1.4b", 1, 4096, 128), ("1.4b", 128, 4096, 128), ("130m", 64, 1536, 48), ("130m", 1, 1536, 48)]
N_STATE, WIDTH = 16, 4


def graphed_us(step, launches=100, repeats=5) -> float:
    """GPU time per launch of ``step`` with ``launches`` of them captured in one CUDA graph (median of repeats)."""
    step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(launches):
            step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        graph.replay()
        start.record()
        for _ in range(10):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (10 * launches))
    return sorted(times)[len(times) // 2]


def state_update_inputs(batch, dim, R, state_dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    x_dbl = r(batch, R + 2 * N_STATE).to(torch.bfloat16)  # as Mamba.step slices dt_low / B / C from x_proj's output
    dt_low, B, C = torch.split(x_dbl, [R, N_STATE, N_STATE], dim=-1)
    return dict(state=r(batch, dim, N_STATE).to(state_dtype), x=r(batch, dim).to(torch.bfloat16), dt=dt_low,
                A=-torch.rand(dim, N_STATE, device="cuda", generator=g) - 0.5, B=B, C=C, D=r(dim),
                z=r(batch, dim).to(torch.bfloat16), dt_bias=r(dim) - 4.0,
                dt_proj_weight=(r(dim, R) * R ** -0.5).to(torch.bfloat16))


def state_update_configs():
    yield {"label": "default"}
    yield {"label": "gemm first", "DECODE_DT_PROJ_MAX_BYTES": 0}
    for block_d, warps in itertools.product([32, 64, 128], [4, 8]):
        yield {"label": f"inside, {block_d} ch x {warps} w", "DECODE_DT_PROJ_MAX_BYTES": None,
               "DECODE_BLOCK_D": block_d, "DECODE_NUM_WARPS": warps}
    for rows in [(16, 16, 4), (16, 32, 4), (16, 64, 4), (32, 32, 4), (32, 32, 8), (64, 16, 4)]:
        yield {"label": "row blocks {} rows x {} ch x {} w".format(*rows), "DECODE_DT_PROJ_MAX_BYTES": 0,
               "DECODE_DT_PROJ_ROWS": rows, "DECODE_DT_PROJ_ROWS_FP32_STATE": True}  # fp32 states too


def run_state_update(inputs, config):
    saved = {k: getattr(SSU, k) for k in ("DECODE_DT_PROJ_MAX_BYTES", "DECODE_BLOCK_D", "DECODE_NUM_WARPS",
                                          "DECODE_DT_PROJ_ROWS", "DECODE_DT_PROJ_ROWS_FP32_STATE")}
    for k, v in config.items():
        if k != "label":
            setattr(SSU, k, v)
    try:
        state0 = inputs["state"].clone()
        out = selective_state_update(**inputs, dt_softplus=True, backend="triton")
        result = (out.float().clone(), inputs["state"].float().clone())
        inputs["state"].copy_(state0)
        us = graphed_us(lambda: selective_state_update(**inputs, dt_softplus=True, backend="triton"))
        inputs["state"].copy_(state0)
        return us, result
    finally:
        for k, v in saved.items():
            setattr(SSU, k, v)


def conv_update_configs():
    yield {"label": "default"}
    for block_d, warps in itertools.product([64, 128, 256, 512, 1024], [1, 2, 4, 8]):
        yield {"label": f"{block_d} ch x {warps} w", "launch": (block_d, warps)}


def run_conv_update(batch, dim, config):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(batch, 2 * dim, device="cuda", generator=g).to(torch.bfloat16)[:, :dim]  # xz's x half
    state0 = torch.randn(batch, dim, WIDTH, device="cuda", generator=g).to(torch.bfloat16)
    weight = torch.randn(dim, WIDTH, device="cuda", generator=g).to(torch.bfloat16)
    bias = torch.randn(dim, device="cuda", generator=g).to(torch.bfloat16)
    saved = dict(CONV.UPDATE_CONFIGS)
    if "launch" in config:
        CONV.UPDATE_CONFIGS.update(small=config["launch"], large=config["launch"])
    try:
        state = state0.clone()
        out = causal_conv1d_update(x, state, weight, bias, "silu", backend="triton")
        result = (out.float().clone(), state.float().clone())
        us = graphed_us(lambda: causal_conv1d_update(x, state, weight, bias, "silu", backend="triton"))
        return us, result
    finally:
        CONV.UPDATE_CONFIGS.update(saved)


# the decode step's projections at 1.4B (d_model 2048, d_inner 4096, dt_rank 128, N 16): (name, in, out)
GEMMS = [("in_proj", 2048, 8192), ("out_proj", 4096, 2048), ("x_proj", 4096, 160), ("dt_proj", 128, 4096)]


def gemm_rows(batch, bandwidth):
    """The 1.4B decode step's GEMMs at ``batch`` (profile_decode.py: 2.3x their weight-read floor at batch 128):
    F.linear against a split over K by hand (a batched GEMM over K slices, then a sum), which gives the GPU more
    tiles where cuBLAS runs few (M = batch rows)."""
    rows = []
    for name, n_in, n_out in GEMMS:
        g = torch.Generator(device="cuda").manual_seed(2)
        x = torch.randn(batch, n_in, device="cuda", generator=g).to(torch.bfloat16)
        w = (torch.randn(n_out, n_in, device="cuda", generator=g) * n_in ** -0.5).to(torch.bfloat16)
        floor_us = (w.numel() + x.numel() + batch * n_out) * 2 / bandwidth * 1e6
        ref = torch.nn.functional.linear(x, w).float()
        variants = {"F.linear": lambda: torch.nn.functional.linear(x, w)}
        for split in (2, 4, 8, 16):
            if n_in % split or n_in // split < 64:
                continue
            xs = x.view(batch, split, n_in // split).transpose(0, 1)  # (split, batch, K / split)
            ws = w.view(n_out, split, n_in // split).permute(1, 2, 0)  # (split, K / split, out)
            variants[f"split K {split}"] = (lambda xs=xs, ws=ws: torch.bmm(xs, ws).sum(0, dtype=torch.float32)
                                            .to(torch.bfloat16))
        for label, fn in variants.items():
            ok = torch.allclose(fn().float(), ref, rtol=2e-2, atol=2e-2)
            us = graphed_us(fn)
            rows.append({"kernel": "gemm", "size": "1.4b", "batch": batch, "gemm": name, "config": {"label": label},
                         "us": us, "floor_us": floor_us, "matches_default": ok})
            print(f"gemm  1.4b  b{batch:<4d} {name:8s} {label:22s} {us:8.2f} us ({us / floor_us:5.2f}x floor)"
                  f"{'' if ok else '  MISMATCH'}", flush=True)
    return rows


# (size, layers, [(name, in_features, out_features)]): every projection of a decode step
LINEAR_SHAPES = [("1.4b", 48, GEMMS), ("130m", 24, [("in_proj", 768, 3072), ("out_proj", 1536, 768),
                                                    ("x_proj", 1536, 80), ("dt_proj", 48, 1536)])]


def linear_configs(M, N, K, block_ms=None):
    """The split-K kernel's configs worth timing at one shape: row tiles of ``block_ms`` (default: all rows, up
    to 128), output tiles of 32-256 columns, K splits giving 33-528 programs (1/4 to 4 per SM), the kernel's
    BLOCK_K rule; every split both with the last arriver's sum and with the two-pass sum."""
    dl = importlib.import_module("seqmamba.ops.decode_linear.triton_kernels")
    block_k = dl.k_step(K)
    seen = set()
    for block_m, block_n in itertools.product(block_ms or [dl.block_rows(M)], (32, 64, 128, 256)):
        tiles = -(-M // block_m) * -(-N // block_n)
        for split in (1, 2, 4, 8, 16, 32):
            programs = tiles * split
            if split > 1 and (K // split < block_k or not 33 <= programs <= 528):
                continue  # each split at least one BLOCK_K step; 1/4 to 4 programs per SM
            # 8 warps for wide output tiles and for 64-128 row tiles: compiled for sm_90, 128 x 32 x 128 at 4 warps
            # spills (255 registers, 216-752 bytes of stack), at 8 warps not (244, none)
            for warps in ((4, 8) if block_n >= 128 or block_m >= 64 else (4,)):
                for two_pass in ((False, True) if split > 1 else (False,)):  # the slots summed by a second launch
                    config = dl.Config(block_m, block_n, block_k, split, warps, 3, two_pass)
                    if config not in seen:
                        seen.add(config)
                        yield config


def linear_rows(size, layers, shapes, batch, bandwidth, configs=True, block_ms=None, gemms=None):
    """A decode step's projections at ``batch``: F.linear against the split-K kernel (its rule's config, then a
    sweep). Each launch reads a different layer's weight and input (``layers`` of them in turn, as a step does),
    so the weights come from HBM, not from the L2 a repeated launch would leave them in."""
    dl = importlib.import_module("seqmamba.ops.decode_linear.triton_kernels")
    rows = []
    for name, n_in, n_out in shapes:
        if gemms and name not in gemms:
            continue
        g = torch.Generator(device="cuda").manual_seed(3)
        xs = [torch.randn(batch, n_in, device="cuda", generator=g).to(torch.bfloat16) for _ in range(layers)]
        ws = [(torch.randn(n_out, n_in, device="cuda", generator=g) * n_in ** -0.5).to(torch.bfloat16)
              for _ in range(layers)]
        floor_us = (n_out * n_in + batch * n_in + batch * n_out) * 2 / bandwidth * 1e6
        refs = [torch.nn.functional.linear(x.float(), w.float()) for x, w in zip(xs[:2], ws[:2])]
        variants = [("F.linear", None), ("kernel (rule)", dl.launch_config(batch, n_out, n_in, xs[0].device))]
        if configs:
            variants += [(f"{c.block_m}x{c.block_n}x{c.block_k} split {c.split_k}{' 2pass' if c.two_pass else ''} "
                          f"w{c.num_warps}", c)
                         for c in linear_configs(batch, n_out, n_in, block_ms)]
        for label, config in variants:
            if config is None:
                def fn(i):
                    return torch.nn.functional.linear(xs[i], ws[i])
            else:
                def fn(i, config=config):
                    return dl.decode_linear_triton(xs[i], ws[i], None, config)
            try:
                outs = [fn(0), fn(1)]
                again = fn(0)
                err = max(((o.float() - r).abs().max() / r.abs().max()).item() for o, r in zip(outs, refs))
                ok, repeatable = err < 1e-2, torch.equal(outs[0], again)
                us = graphed_us(lambda: [fn(i) for i in range(layers)], launches=4) / layers
            except Exception as exc:  # a config that does not compile (shared memory) is reported, not fatal
                print(f"linear {size:5s} b{batch:<4d} {name:8s} {label:34s} failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:80]}", flush=True)
                continue
            rows.append({"kernel": "linear", "size": size, "batch": batch, "gemm": name, "state": "bfloat16",
                         "config": {"label": label}, "us": us, "floor_us": floor_us, "rel_err": err,
                         "matches_default": ok, "repeatable": repeatable})
            print(f"linear {size:5s} b{batch:<4d} {name:8s} {label:34s} {us:8.2f} us ({us / floor_us:5.2f}x floor)"
                  f"  err {err:.1e}{'' if ok else '  MISMATCH'}{'' if repeatable else '  NOT REPEATABLE'}", flush=True)
    return rows


def same(a, b) -> bool:
    return all(torch.allclose(x, y, rtol=2e-2, atol=2e-2) for x, y in zip(a, b))


def sweep(kernel, size, batch, dim, state, configs, run, floor_us):
    """One row per config (``run(config)`` -> (us, outputs)), each output checked against the first config's
    (the default), printed as it comes."""
    rows, ref = [], None
    for config in configs:
        us, result = run(config)
        ref = result if ref is None else ref
        row = {"kernel": kernel, "size": size, "batch": batch, "dim": dim, "state": state, "config": config,
               "us": us, "floor_us": floor_us, "matches_default": same(result, ref)}
        rows.append(row)
        print(f"{kernel.split('_')[0]:5s} {size:5s} b{batch:<4d} {state:8s} {config['label']:32s} {us:8.2f} us "
              f"({us / floor_us:5.2f}x floor){'' if row['matches_default'] else '  MISMATCH'}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="write every row here")
    parser.add_argument("--kernels", nargs="+", default=["state", "conv", "gemm"],
                        choices=["state", "conv", "gemm", "linear"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 128],
                        help="--kernels linear: batch sizes (1.4B; 130M at the first and 64)")
    parser.add_argument("--no-sweep", action="store_true", help="--kernels linear: F.linear and the rule only")
    parser.add_argument("--block-m", type=int, nargs="+", default=None,
                        help="--kernels linear: sweep these row tiles (default: all rows, up to 128)")
    parser.add_argument("--gemms", nargs="+", default=None, help="--kernels linear: only these projections")
    parser.add_argument("--sizes", nargs="+", default=None, help="only these of 1.4b / 130m")
    args = parser.parse_args()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; us per launch, "
          f"100 launches per CUDA graph; programmatic launch {'on' if launch.PROGRAMMATIC_LAUNCH else 'off'} "
          f"(back to back, PDL overlaps a launch's start with the last one's end; SEQMAMBA_PDL=0 for plain order)",
          flush=True)
    rows, best = [], []
    for name, batch, dim, R in SHAPES:
        if args.sizes and name not in args.sizes:
            continue
        if "state" in args.kernels:
            for state_dtype in (torch.float32, torch.bfloat16):
                inputs = state_update_inputs(batch, dim, R, state_dtype)
                # state read + written, x / z / out, dt_low / B / C, W / A / D / dt_bias once
                nbytes = (2 * batch * dim * N_STATE * inputs["state"].element_size() + 3 * batch * dim * 2
                          + batch * (R + 2 * N_STATE) * 2 + dim * R * 2 + dim * N_STATE * 4 + 2 * dim * 4)
                shape_rows = sweep("state_update", name, batch, dim, str(state_dtype).split(".")[-1],
                                   state_update_configs(), lambda config: run_state_update(inputs, config),
                                   nbytes / bandwidth * 1e6)
                rows += shape_rows
                best.append(min(shape_rows, key=lambda r: r["us"]) | {"default_us": shape_rows[0]["us"]})
        if "conv" in args.kernels:
            nbytes = 2 * batch * dim * WIDTH * 2 + 2 * batch * dim * 2 + dim * (WIDTH + 1) * 2
            shape_rows = sweep("conv_update", name, batch, dim, "bfloat16", conv_update_configs(),
                               lambda config: run_conv_update(batch, dim, config), nbytes / bandwidth * 1e6)
            rows += shape_rows
            best.append(min(shape_rows, key=lambda r: r["us"]) | {"default_us": shape_rows[0]["us"]})
    if "gemm" in args.kernels:
        for batch in (1, 128):
            rows += gemm_rows(batch, bandwidth)
    if "linear" in args.kernels:
        for size, layers, shapes in LINEAR_SHAPES:
            if args.sizes and size not in args.sizes:
                continue
            for batch in args.batches:
                shape_rows = linear_rows(size, layers, shapes, batch, bandwidth, not args.no_sweep, args.block_m,
                                         args.gemms)
                rows += shape_rows
                for gemm in dict.fromkeys(r["gemm"] for r in shape_rows):
                    these = [r for r in shape_rows if r["gemm"] == gemm]
                    best.append(min(these, key=lambda r: r["us"]) | {"default_us": these[0]["us"],
                                                                     "state": gemm})
    print("\nbest per shape (us per launch; default; floor):")
    for r in best:
        print(f"  {r['kernel']:12s} {r['size']:5s} b{r['batch']:<4d} {r['state']:8s} {r['config']['label']:32s} "
              f"{r['us']:7.2f}  default {r['default_us']:7.2f} ({r['default_us'] / r['us']:.2f}x)  "
              f"floor {r['floor_us']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""The Triton scan's forward (inference, no states saved) launch config, swept on the GPU against mamba_ssm's
CUDA forward and SDPA flash attention in the same run.

Why: the forward issues ~17 instructions per state element at (8, 1536, 4096) on one warp per channel (Nsight
Compute: 546 M warp instructions, 62% of issue slots, 25% occupancy at 126 registers; the loop's SASS, compiled
for sm_90 on the CPU: the B / C rows' bf16 -> fp32 conversions and the warp scan's shuffles are a third of it).
Several channels per program share B / C's loads and conversions (15.3 per element at 4 channels, 14.1 at 8) at
the cost of registers. Each config's output is checked against the default's, then the forward is timed.

    python benchmarks/bench_scan_forward_configs.py                 # GPU, ~2-3 min
    python benchmarks/bench_scan_forward_configs.py --shapes 8x1536x4096 --json rows.json
"""
from __future__ import annotations

import argparse
import json

import torch
import triton.testing as tt

from bench_selective_scan import attention_fns, make_inputs, mamba_ssm_available, scan_fns
from seqmamba.ops.selective_scan import triton_launch

# (label, overrides of FWD_CONFIG). The one-channel configs keep the default's rules ("latency" prefetch below 32
# programs per SM, the register cap above). Several-channel configs fall back to one channel below 8 programs per
# SM and have prefetch off and no cap unless named: with the default's "latency" rule they would run its 1024-step
# chunks on 2 warps below 32 programs per SM (the sixth session's 4 x 128 / 8 x 64 / 4 x 256 rows did: they timed
# that, not their label).
MULTI = dict(min_programs_per_sm=8, prefetch=False, maxnreg=None)
CONFIGS = [
    ("default", {}),  # the lanes kernel (fast math, B / C pairs) from 4 of its warps per SM (inference), else chunked
    ("chunked", dict(lanes=False)),  # the chunked kernel everywhere (the default before the ninth session)
    ("no cap", dict(maxnreg=None)),
    ("1x512 reg80", dict(maxnreg=80)),
    # the chunk's last state by a where-sum (5 shuffles) instead of the masked store, which Triton routes through
    # shared memory (4 STS.128, an LDSM and a barrier per state component in the sm_90 SASS)
    # the Gluon kernel (gluon_kernels.py): one run of T / 32 steps per lane, one warp scan per state component
    # one channel per lane, all N states in registers, no shuffles (lane_kernels.py), at every shape (with the
    # default's fast math and B / C pairs)
    ("lanes", dict(lanes=True, lanes_min_warps_per_sm=0)),
    ("lanes, training too", dict(lanes=True, lanes_min_warps_per_sm=0, lanes_training=True)),
    ("lanes 2 warps", dict(lanes=True, lanes_min_warps_per_sm=0, lanes_num_warps=2)),
    # without them (libdevice softplus / SiLU, bf16 B / C loaded per step: 14.8 SASS instructions per element), then
    # with fast math alone (13.0; the default's pairs take it to 10.9, no spill)
    ("lanes plain", dict(lanes=True, lanes_min_warps_per_sm=0, lanes_fast_math=False, lanes_bc_pairs=False)),
    ("lanes fast", dict(lanes=True, lanes_min_warps_per_sm=0, lanes_fast_math=True, lanes_bc_pairs=False)),
    # FWD_CONFIG lanes_maxnreg (wherever the lanes kernel runs): uncapped it takes 253 registers, 8 warps per SM;
    # sm_90 SASS per cap: 224 -> 9 warps, no spill; 200 -> 10, 24 bytes; 184 -> 11, 128 bytes; 168 -> 12, 248 bytes
    # (loop 699 -> 700 / 703 / 718 / 757 instructions per 64 state elements)
    *((f"lanes reg{cap}", dict(lanes_maxnreg=cap, lanes_maxnreg_min_warps_per_sm=0)) for cap in (224, 200, 184, 168)),
    # FWD_CONFIG lanes_chunk 2: 2 steps per iteration, 168 registers (12 warps per SM) without a spill, 12.3
    # instructions per state element against 10.9
    ("lanes tc2", dict(lanes_chunk=2)),
    # the default since the twenty-third session is 8 steps per iteration with u / delta / z as int32 pairs of bf16
    # steps (lanes_seq_pairs): its loads' waits (Nsight Compute: long scoreboard) come half as often per element
    # as at 4 steps, for a 168-byte spill. The variants around it: 4 steps as plain tiles (the old default), 4 with
    # pairs, 8 without
    ("lanes tc4", dict(lanes_chunk=4, lanes_seq_pairs=False)),
    ("lanes seq pairs tc4", dict(lanes_chunk=4, lanes_seq_pairs=True)),
    ("lanes tc8", dict(lanes_chunk=8, lanes_seq_pairs=False)),
    # the lanes forward with L split where it has too few warps (lanes_split_warps_per_sm: the split's target warps
    # per SM; segments of at least lanes_split_min_len steps); "pass 1 alone" skips the forward's launch, so it
    # times the first pass (the segments' end states) and the wrapper (its output is not the scan's)
    ("no lanes split", dict(lanes_split_warps_per_sm=0)),
    *((f"lanes split {w}", dict(lanes_split_warps_per_sm=w)) for w in (8, 12, 16, 24, 32)),
    ("lanes split 12, min 512", dict(lanes_split_warps_per_sm=12, lanes_split_min_len=512)),
    # the first pass at 4-step chunks (sm_90: 128 registers, 16 warps per SM, 7.34 instructions per state element;
    # at 8 steps 168 registers, 12 warps, 6.98) and under a 152-register cap (72-byte spill)
    ("split ends tc4", dict(lanes_split_ends_chunk=4)),
    *((f"split ends reg{cap}", dict(lanes_split_ends_maxnreg=cap)) for cap in (None, 152, 144, 136, 128)),
    ("split ends tc4, pass 1 alone", dict(lanes_split_ends_chunk=4)),
    ("lanes split 12, pass 1 alone", dict(lanes_split_warps_per_sm=12)),
    # the softplus with two MUFU (exp2 and div.full's reciprocal), the default until the thirty-first session; the
    # default's "one_mufu" takes log1p(exp(-|x|)) as a polynomial instead (sm_90 SASS: the forward's loop 10.18 ->
    # 9.74 instructions per element, the split's first pass 6.98 -> 6.54 and 1.125 -> 1.0625 MUFU)
    # the chunked forward's softplus by libdevice's log and an IEEE division, the default until the thirty-first
    # session; the default's FWD_CONFIG fast_softplus (inference only) is _softplus_one_mufu: sm_90 SASS at
    # (8, 1536, 4096) 1752 -> 1192 instructions in the kernel (the loop over components 305 -> 301), and its
    # 72-byte spill under the cap of 96 gone
    ("chunked libdevice softplus", dict(fast_softplus=False)),
    ("two-MUFU softplus", dict(lanes_fast_math=True)),
    ("two-MUFU softplus, pass 1 alone", dict(lanes_fast_math=True)),
    ("gluon", dict(gluon=True)),
    ("gluon, no cap", dict(gluon=True, maxnreg=None)),
    # 32 steps per lane: 12.4 instructions per state element in SASS, but 216 registers (9 warps per SM)
    ("gluon 1x1024", dict(gluon=True, T=1024, maxnreg=None)),
    ("where-sum last", dict(masked_last=False)),
    ("where-sum, no cap", dict(masked_last=False, maxnreg=None)),
    ("1x256", dict(T=256)),
    ("2x256", dict(MULTI, block_d=2, T=256)),
    ("2x256 reg96", dict(MULTI, block_d=2, T=256, maxnreg=96)),
    ("4x128", dict(MULTI, block_d=4, T=128)),
    ("4x128 reg128", dict(MULTI, block_d=4, T=128, maxnreg=128)),
    ("8x64", dict(MULTI, block_d=8, T=64)),
    ("8x64 reg128", dict(MULTI, block_d=8, T=64, maxnreg=128)),
    ("4x256", dict(MULTI, block_d=4, T=256)),
]
SHAPES = ["8x1536x1024", "8x1536x4096", "8x1536x16384", "16x2048x2048", "2x1536x65536", "1x1536x262144"]


def _unless_split(launch):
    """The lanes forward's launch, skipped where it is the split's second pass (SPLIT): times the first alone."""
    def run(grid, tensors, scalars, constexprs, *rest, **kw):
        if not constexprs.get("SPLIT"):
            launch(grid, tensors, scalars, constexprs, *rest, **kw)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SHAPES)
    parser.add_argument("--configs", nargs="+", default=None, help="labels from CONFIGS (default: all)")
    parser.add_argument("--json", default=None, help="write all rows here")
    parser.add_argument("--train", action="store_true",
                        help="also time forward + backward (the training forward saves states; same backward)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_scan_forward_configs.py needs a CUDA GPU")
    configs = [c for c in CONFIGS if args.configs is None or c[0] in args.configs]
    have_mamba = mamba_ssm_available()
    default = dict(triton_launch.FWD_CONFIG)
    launch_fwd_lanes = triton_launch._launch_fwd_lanes
    rows = []
    print(f"GPU {torch.cuda.get_device_name()}; forward (no grad), bf16, N 16, D / z / delta_bias / softplus; "
          f"mamba_ssm {'measured' if have_mamba else 'not importable'}", flush=True)
    for shape in args.shapes:
        batch, dim, L = (int(v) for v in shape.split("x"))
        inputs = make_inputs(batch, dim, L)
        mamba_fns = scan_fns(inputs, "mamba_ssm") if have_mamba else None
        mamba_ms = tt.do_bench(mamba_fns[0], return_mode="median") if have_mamba else None
        mamba_train_ms = tt.do_bench(mamba_fns[1], return_mode="median") if have_mamba and args.train else None
        attn_ms = None
        if dim == 1536 and L <= 16384:  # issue 9's comparison: SDPA flash attention at (batch, 12, L, 64), causal
            attn_ms = tt.do_bench(attention_fns(batch, 12, L)[0], return_mode="median")
        reference = None
        for label, over in configs:
            triton_launch.FWD_CONFIG.clear()
            triton_launch.FWD_CONFIG.update(default, **over)
            triton_launch._launch_config_cached.cache_clear()
            triton_launch._launch_fwd_lanes = launch_fwd_lanes
            if label.endswith("pass 1 alone"):
                triton_launch._launch_fwd_lanes = _unless_split(launch_fwd_lanes)
            fwd, fwd_bwd = scan_fns(inputs, "triton")
            try:
                out = fwd().float()
            except Exception as exc:  # a config that does not compile (registers) is a row, not a crash
                rows.append(dict(shape=shape, config=label, error=str(exc)[:200]))
                print(f"  {shape} {label}: failed: {str(exc)[:120]}", flush=True)
                continue
            if reference is None:
                reference = out
            err = ((out - reference).abs().max() / reference.abs().max()).item()
            ms = tt.do_bench(fwd, return_mode="median")
            train_ms = tt.do_bench(fwd_bwd, return_mode="median") if args.train else None
            rows.append(dict(shape=shape, config=label, fwd_ms=ms, max_rel_diff=err, mamba_ssm_ms=mamba_ms,
                             attention_ms=attn_ms, fwd_bwd_ms=train_ms, mamba_ssm_fwd_bwd_ms=mamba_train_ms))
            print(f"  {shape} {label}: {ms:.3f} ms (diff {err:.1e})"
                  + (f"; fwd+bwd {train_ms:.3f} ms (mamba_ssm {mamba_train_ms or float('nan'):.3f})"
                     if args.train else ""), flush=True)
    triton_launch.FWD_CONFIG.clear()
    triton_launch.FWD_CONFIG.update(default)
    triton_launch._launch_fwd_lanes = launch_fwd_lanes
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("\n| (batch, dim, L) | " + " | ".join(label for label, _ in configs) + " | mamba_ssm | SDPA flash |")
    print("|---" * (len(configs) + 3) + "|")
    for shape in args.shapes:
        got = {r["config"]: r for r in rows if r["shape"] == shape}
        base = got.get(configs[0][0], {}).get("fwd_ms")
        cells = []
        for label, _ in configs:
            r = got.get(label, {})
            cells.append(f"{r['fwd_ms']:.3f} ({base / r['fwd_ms']:.2f}x)" if "fwd_ms" in r and base else "fail")
        any_row = next(iter(got.values()), {})
        m, a = any_row.get("mamba_ssm_ms"), any_row.get("attention_ms")
        print(f"| {shape.replace('x', ', ')} | " + " | ".join(cells) + f" | {f'{m:.3f}' if m else '-'} | "
              f"{f'{a:.3f}' if a else '-'} |")
    print(f"(ms; in brackets: speedup over the first config, {configs[0][0]})")


if __name__ == "__main__":
    main()

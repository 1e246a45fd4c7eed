"""Training steps per second of the paper's synthetic configs, eager against CUDA-graphed.

Every case is the user's run: the config composed from ``experiment=paper/<task>`` plus overrides,
built by the CLI's own ``build_task`` and trained by the ``Trainer`` (the data stream, the loss,
the optimizer and the logging are all in the timing). Steps/s is the trainer's own logged
``perf/steps_per_s``, the median over the windows after the first two (compilation, capture).

Cases:

- ``selective_copying``: the paper's Table 1 setting (batch 64 x 4112 tokens, 2 layers, D 64, bf16);
  the issue's target is 150 steps/s on the H200 (400K paper steps in 45 minutes);
- ``induction_heads``: the paper's Table 2 setting (batch 8 x 256, 2 layers, D 64);
- ``--table1``: every Table 1 row (``model.ssm_cfg.layer=<arch>_<inner>``) on the selective-copying
  setting, CUDA-graphed.

``--profile`` also writes the top CUDA kernels of a few eager selective-copying steps (torch.profiler).

    python benchmarks/bench_train_step.py --out $OUT/train_step          # on the GPU, ~2 min
    python benchmarks/bench_train_step.py --cases selective_copying --overrides model.fused_add_norm=true
    python benchmarks/bench_train_step.py --cases selective_copying --embedding-gemm-rows 64
    python benchmarks/bench_train_step.py --cases selective_copying --modes graph compiled-graph
    python benchmarks/bench_train_step.py --quick                        # CPU smoke run (eager only)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from seqmamba.commands.hydra_app import compose_config, register_resolvers  # noqa: E402
from seqmamba.commands.verbs import build_task  # noqa: E402
from seqmamba.train import Trainer, read_metrics  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import profile_report  # noqa: E402
from switches import add_switches, apply_switches  # noqa: E402

CASES = {
    "selective_copying": ["experiment=paper/selective_copying"],
    "induction_heads": ["experiment=paper/induction_heads"],
}
TABLE1 = ["nogate_s4d", "nogate_hyena", "nogate_s6", "h3_s4d", "h3_hyena", "h3_s6", "mamba_s4d", "mamba_hyena",
          "mamba_s6", "mamba"]
MODES = {"eager": ["trainer.cuda_graph=false", "trainer.compile=false"],
         "graph": ["trainer.cuda_graph=true", "trainer.compile=false"],
         "compiled": ["trainer.cuda_graph=false", "trainer.compile=true"],
         "compiled-graph": ["trainer.cuda_graph=true", "trainer.compile=true"]}
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0", "trainer.ckpt_every=0"]


def measure(overrides, steps, log_every, run_dir):
    cfg = compose_config(overrides + QUIET + [f"trainer.max_steps={steps}", f"trainer.log_every={log_every}"])
    task = build_task(cfg)
    trainer = Trainer(task, cfg, run_dir)
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    rates = [r["perf/steps_per_s"] for r in read_metrics(run_dir) if "perf/steps_per_s" in r]
    steady = rates[2:] or rates
    graph = trainer._graph
    return {
        "steps_per_s": statistics.median(steady),
        "tokens_per_s": statistics.median([r["perf/tokens_per_s"] for r in read_metrics(run_dir)
                                           if "perf/tokens_per_s" in r][2:] or [float("nan")]),
        "final_loss": result.get("train/loss"),
        "wall_s": wall,
        "graphed": trainer.use_cuda_graph,
        "captures": graph.captures if graph is not None else 0,
        "params": sum(p.numel() for p in trainer.model.parameters()),
    }


def profile_eager(overrides, out_dir, steps=8):
    """A few eager steps (after warmup) under torch.profiler: profile_decode.profile_report's kernel and op tables,
    written to out_dir; returns (path, text)."""
    cfg = compose_config(overrides + QUIET + [f"trainer.max_steps={steps + 5}", "trainer.log_every=1"])
    task = build_task(cfg)
    path = os.path.join(out_dir, "profile_selective_copying_eager.txt")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(task, cfg, run_dir)
        batches = iter(task.train_batches(0))
        window = {}
        for _ in range(5):
            trainer._train_step(batches, window)
        torch.cuda.synchronize()
        text = profile_report(lambda: trainer._train_step(batches, window), steps, path, row_limit=60)
    return path, text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="train_step_bench", help="directory for results.json and the profile")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per measurement")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--table1", action="store_true", help="also every Table 1 mixer row, CUDA-graphed")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of eager selective copying")
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke run of this script")
    parser.add_argument("--embedding-gemm-rows", type=int, default=None,
                        help="seqmamba.models.mamba_lm.EMBEDDING_GEMM_MAX_ROWS for every case (the embedding's "
                             "weight gradient as one GEMM for tables of at most that many rows; 0: off)")
    add_switches(parser, "channels-first-linear", "project-channels-grad", "conv-taps", "conv-backward", "mamba-inner",
                 "channel-linear", "x-proj-layout", "graph-check")  # for every case
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["eager", "graph"],
                        help="how each case's step runs (on a GPU): eager, CUDA-graphed, torch.compile'd, or "
                             "compiled and CUDA-graphed (trainer.compile=true trainer.cuda_graph=true)")
    parser.add_argument("--overrides", nargs="+", default=[],
                        help="Hydra overrides added to every case, e.g. model.fused_add_norm=true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    register_resolvers()
    if args.embedding_gemm_rows is not None:
        from seqmamba.models import mamba_lm

        mamba_lm.EMBEDDING_GEMM_MAX_ROWS = args.embedding_gemm_rows
    apply_switches(args)

    cuda = torch.cuda.is_available() and not args.quick
    modes = {mode: MODES[mode] for mode in args.modes} if cuda else {"eager": MODES["eager"]}
    device = ["trainer.device=cuda"] if cuda else ["trainer.device=cpu", "trainer.num_threads=1"]
    shrink = []
    if args.quick:  # seconds on a CPU: short sequences, a handful of steps
        args.steps, args.log_every = 6, 2
        shrink = {"selective_copying": ["dataset.n_noise=56", "dataset.n_tokens=4"],
                  "induction_heads": ["dataset.seq_len=32"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            for mode, mode_overrides in modes.items():
                extra = (shrink.get(case, []) if shrink else []) + args.overrides
                row = measure(CASES[case] + device + mode_overrides + extra, args.steps, args.log_every,
                              os.path.join(tmp, f"{case}_{mode}"))
                rows.append({"case": case, "mode": mode, **row})
                print(f"{case:18s} {mode:14s} {row['steps_per_s']:8.1f} steps/s  loss {row['final_loss']:.4f}",
                      flush=True)
        if args.table1:
            for layer in TABLE1 if not args.quick else ["h3_s4d", "mamba"]:
                overrides = CASES["selective_copying"] + device + list(MODES["graph"] if cuda else MODES["eager"])
                overrides += [f"+model.ssm_cfg.layer={layer}"] if layer != "mamba" else []
                overrides += (shrink.get("selective_copying", []) if shrink else []) + args.overrides
                try:
                    row = measure(overrides, args.steps // 2, args.log_every, os.path.join(tmp, f"t1_{layer}"))
                except Exception as exc:  # a row that fails is reported, the others still run
                    row = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                rows.append({"case": f"table1/{layer}", "mode": "graph" if cuda else "eager", **row})
                print(f"table1/{layer:12s} {row.get('steps_per_s', float('nan')):8.1f} steps/s "
                      f"{row.get('error', '')}", flush=True)
        if args.profile and cuda:
            path, text = profile_eager(CASES["selective_copying"] + device + args.overrides, args.out)
            # on stdout too (a device's output may come back without its files)
            print(f"profile ({path}):\n{text}", flush=True)

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if cuda else "cpu", "rows": rows}, f, indent=2)
    print(f"\ndevice: {torch.cuda.get_device_name() if cuda else 'cpu'}")
    print(f"{'case':24s} {'mode':14s} {'steps/s':>9s} {'tokens/s':>12s} {'x eager':>8s} {'params':>8s}")
    eager = {r["case"]: r.get("steps_per_s") for r in rows if r["mode"] == "eager"}
    for r in rows:
        if "error" in r:
            print(f"{r['case']:24s} {r['mode']:14s} failed: {r['error']}")
            continue
        base = eager.get(r["case"]) if r["mode"] != "eager" else None
        ratio = f"{r['steps_per_s'] / base:7.2f}x" if base else "       -"
        print(f"{r['case']:24s} {r['mode']:14s} {r['steps_per_s']:9.1f} {r['tokens_per_s']:12.0f} {ratio} "
              f"{r['params']:8d}")


if __name__ == "__main__":
    main()

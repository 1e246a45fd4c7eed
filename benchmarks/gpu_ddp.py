"""Two GPUs of one host (issue 14): DDP over NCCL through ``torchrun -m seqmamba.cli run``, measured.

    python benchmarks/gpu_ddp.py --out gpu_logs            # on a machine with 2 GPUs (nvidia-h200-x2)

Every run is the user's command, ``torchrun --standalone --nproc_per_node=K -m seqmamba.cli run ...``:

1. ``task=induction_heads trainer.device=cuda`` on K = 2 (the smallest end-to-end check), then the same
   run paused at half way (``trainer.stop_at_step``) and resumed with ``trainer.resume=auto`` under
   torchrun: the resumed ``last.pt`` must hold the uninterrupted run's weights; one run directory each,
   checkpoints written once (rank 0).
2. ``task=hg38`` on demo genomes (made here, seed 0, 2^19-base chromosomes, a Basenji-format BED of
   2^17-base intervals), the ~7M-parameter MambaLM (16 blocks, d_model 256), bf16:
   L = 2^14: K = 1 with 2 accumulation steps (seeds 0 and 1: run-to-run noise) and K = 2 without, so the
   per-GPU micro-batch and the global batch are equal; L = 2^17: K = 1 and K = 2, batch 1 per GPU.
   tokens/s (all GPUs, logged by the trainer as ``perf/tokens_per_s``, first windows dropped), peak memory
   per GPU (rank 0's ``perf/peak_mem_gb``), scaling efficiency = tokens/s(K=2) / (2 x tokens/s(K=1)).

NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends). Writes ddp_results.json, ddp_loss.png
and ddp.log under --out; the summary table is printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
MODEL_7M = ["model.d_model=256", "model.n_layer=16"]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def torchrun(k: int, overrides, run_dir: str, logfile, timeout: float) -> float:
    """One ``torchrun ... -m seqmamba.cli run`` with ``hydra.run.dir=run_dir``; returns wall seconds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}",
           "-m", "seqmamba.cli", "run", *overrides, *QUIET, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, **MULTICAST_OFF, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "4"}
    logfile.write(f"\n$ {' '.join(cmd)}\n")
    logfile.flush()
    started = time.time()
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=logfile, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(overrides)} (see ddp.log)")
    return seconds


def perf(run_dir: str):
    from seqmamba.train.run_log import read_metrics

    rows = [r for r in read_metrics(run_dir) if "perf/tokens_per_s" in r]
    steady = rows[max(1, len(rows) // 4):] or rows  # the first windows hold compilation and warm-up
    losses = [(r["step"], r["train/loss"]) for r in read_metrics(run_dir) if "train/loss" in r]
    return {"tokens_per_s": statistics.median(r["perf/tokens_per_s"] for r in steady),
            "steps_per_s": statistics.median(r["perf/steps_per_s"] for r in steady),
            "peak_mem_gb": max(r.get("perf/peak_mem_gb", 0.0) for r in rows),
            "loss": losses}


def weights(path: str):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def compare_weights(a: str, b: str):
    """Largest weight difference between two checkpoints, and whether they are equal bit for bit."""
    import torch

    sa, sb = weights(a), weights(b)
    pairs = [(value, sb["model"][key]) for key, value in sa["model"].items()]
    return {"step_a": sa["step"], "step_b": sb["step"],
            "max_abs_diff": max((x.float() - y.float()).abs().max().item() for x, y in pairs),
            "bit_exact": all(torch.equal(x, y) for x, y in pairs)}


def run_dir_report(run_dir: str):
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    metrics = sorted(p for p in os.listdir(run_dir) if p.startswith("metrics"))
    return {"checkpoints": ckpts, "metrics_files": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_logs")
    parser.add_argument("--work", default="/tmp/seqmamba_ddp", help="run dirs and demo genomes")
    parser.add_argument("--steps-14", type=int, default=120, help="steps of the L = 2^14 runs")
    parser.add_argument("--steps-17", type=int, default=40, help="steps of the L = 2^17 runs")
    parser.add_argument("--batch-14", type=int, default=8, help="per-GPU micro-batch at 2^14")
    parser.add_argument("--ih-steps", type=int, default=400, help="induction heads steps (K = 2)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds; later parts are skipped past it")
    parser.add_argument("--parts", default="ih,hg38,resume",
                        help="ih: induction heads K=2 + resume with Triton; hg38: throughput and loss curves; "
                             "resume: run-to-run spread with Triton, and resume with trainer.deterministic=true")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="check this script on a CPU (gloo, a tiny model, short lengths): no numbers")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    results = {}
    logfile = open(os.path.join(args.out, "ddp.log"), "w")

    import torch

    device, len14, len17, chrom_len, model = "cuda", 1 << 14, 1 << 17, 1 << 19, MODEL_7M
    if args.cpu_smoke:
        device, len14, len17, chrom_len = "cpu", 256, 1024, 1 << 13
        model = ["model.d_model=32", "model.n_layer=2"]
        results["gpus"] = ["cpu smoke"]
    else:
        n_gpu = torch.cuda.device_count()
        results["gpus"] = [torch.cuda.get_device_name(i) for i in range(n_gpu)]
        log(f"GPUs: {results['gpus']}; NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
        if n_gpu < 2:
            sys.exit("needs 2 GPUs (device kind nvidia-h200-x2)")

    def left() -> float:
        return args.budget - (time.time() - t0)

    parts = set(args.parts.split(","))
    # 1. induction heads on two GPUs, uninterrupted and paused + resumed
    ih = ["task=induction_heads", f"trainer.device={device}", f"trainer.max_steps={args.ih_steps}",
          "trainer.eval_every=0", f"trainer.ckpt_every={args.ih_steps // 4}", "trainer.log_every=20", "seed=0"]
    if "ih" in parts:
        try:
            full_dir, split_dir = os.path.join(args.work, "ih_full"), os.path.join(args.work, "ih_split")
            secs = torchrun(2, ih, full_dir, logfile, timeout=max(30, left()))
            with open(os.path.join(full_dir, "eval_results.json")) as f:
                ih_eval = json.load(f)
            torchrun(2, ih + [f"trainer.stop_at_step={args.ih_steps // 2}"], split_dir, logfile, timeout=max(30, left()))
            paused = weights(os.path.join(split_dir, "checkpoints", "last.pt"))["step"]
            torchrun(2, ih + ["trainer.resume=auto"], split_dir, logfile, timeout=max(30, left()))
            cmp = compare_weights(os.path.join(full_dir, "checkpoints", "last.pt"),
                                  os.path.join(split_dir, "checkpoints", "last.pt"))
            results["induction_heads_k2"] = {"seconds": secs, "eval": ih_eval.get("eval"), "paused_at": paused,
                                             "resume_vs_uninterrupted": cmp, "run_dir": run_dir_report(full_dir),
                                             "world_size_in_ckpt": weights(os.path.join(full_dir, "checkpoints",
                                                                                        "last.pt"))["world_size"]}
            log(f"induction heads K=2: {secs:.0f} s, resume vs uninterrupted {cmp}")
        except Exception as exc:  # noqa: BLE001 - log and go on to the DNA runs
            results["induction_heads_k2"] = {"error": str(exc)}
            log(f"induction heads K=2 FAILED: {exc}")

    # 1b. the Triton backward sums some gradients with float atomics: two uninterrupted runs already differ.
    # With trainer.deterministic=true (PyTorch scan path) a paused + resumed run must equal the uninterrupted one.
    if "resume" in parts:
        try:
            spread = {}
            for tag in ("a", "b"):
                torchrun(2, ih, os.path.join(args.work, f"ih_triton_{tag}"), logfile, timeout=max(30, left()))
            spread["triton_run_to_run"] = compare_weights(*(os.path.join(args.work, f"ih_triton_{t}", "checkpoints",
                                                                          "last.pt") for t in ("a", "b")))
            det = ih + ["trainer.deterministic=true"]
            det_full, det_split = os.path.join(args.work, "ih_det_full"), os.path.join(args.work, "ih_det_split")
            torchrun(2, det, det_full, logfile, timeout=max(30, left()))
            torchrun(2, det + [f"trainer.stop_at_step={args.ih_steps // 2}"], det_split, logfile,
                     timeout=max(30, left()))
            torchrun(2, det + ["trainer.resume=auto"], det_split, logfile, timeout=max(30, left()))
            spread["deterministic_resume_vs_uninterrupted"] = compare_weights(
                os.path.join(det_full, "checkpoints", "last.pt"), os.path.join(det_split, "checkpoints", "last.pt"))
            spread["deterministic_run_dir"] = run_dir_report(det_split)
            with open(os.path.join(det_full, "eval_results.json")) as f:
                spread["deterministic_eval_val"] = json.load(f)["eval"].get("val")
            results["resume_k2"] = spread
            log(f"resume K=2: {spread}")
        except Exception as exc:  # noqa: BLE001
            results["resume_k2"] = {"error": str(exc)}
            log(f"resume K=2 FAILED: {exc}")

    # 2. hg38 on demo genomes
    from seqmamba.data.demo_genomes import ensure_demo_genomes

    demo = ensure_demo_genomes(os.path.join(args.work, "demo_long"), n_chroms=14, chrom_length=chrom_len,
                               bed_interval=len17)
    data = [f"dataset.fasta={demo['fasta']}", f"dataset.bed={demo['bed']}"]
    base = ["task=hg38", f"trainer.device={device}", *model, *data, "trainer.eval_every=0", "trainer.ckpt_every=0",
            "task.val_windows=16", "task.val_batch_size=4"]
    plan = [
        # name, K, L, per-GPU batch, accumulation, steps, seed
        ("L14_k1_s0", 1, len14, args.batch_14, 2, args.steps_14, 0),
        ("L14_k2_s0", 2, len14, args.batch_14, 1, args.steps_14, 0),
        ("L14_k1_s1", 1, len14, args.batch_14, 2, args.steps_14, 1),
        ("L17_k1", 1, len17, 1, 1, args.steps_17, 0),
        ("L17_k2", 2, len17, 1, 1, args.steps_17, 0),
    ]
    hg = results.setdefault("hg38", {})
    for name, k, length, batch, accum, steps, seed in (plan if "hg38" in parts else []):
        if left() < 45:
            hg[name] = {"skipped": "time budget"}
            log(f"{name}: skipped (budget)")
            continue
        run_dir = os.path.join(args.work, name)
        overrides = base + [f"dataset.seq_len={length}", f"trainer.batch_size={batch}",
                            f"trainer.grad_accum_steps={accum}", f"trainer.max_steps={steps}",
                            f"trainer.log_every={max(1, steps // 24)}", f"seed={seed}"]
        try:
            secs = torchrun(k, overrides, run_dir, logfile, timeout=max(30, left()))
            p = perf(run_dir)
            p.update(k=k, seq_len=length, batch_per_gpu=batch, grad_accum=accum, steps=steps, seed=seed,
                     seconds=secs, global_tokens_per_step=k * batch * accum * length, run_dir=run_dir_report(run_dir))
            hg[name] = p
            log(f"{name}: {p['tokens_per_s'] / 1e6:.3f} M tok/s, peak {p['peak_mem_gb']:.2f} GB/GPU, "
                f"final loss {p['loss'][-1][1]:.4f}, {secs:.0f} s")
        except Exception as exc:  # noqa: BLE001
            hg[name] = {"error": str(exc)}
            log(f"{name} FAILED: {exc}")

    # scaling: the K = 1 runs at 2^14 take 2 micro-batches of the same size per step, so their tokens/s is
    # the per-GPU-batch throughput of one GPU
    def ok(name):
        return name in hg and "tokens_per_s" in hg[name]

    scaling = {}
    for tag, one, two in (("2^14", "L14_k1_s0", "L14_k2_s0"), ("2^17", "L17_k1", "L17_k2")):
        if ok(one) and ok(two):
            scaling[tag] = hg[two]["tokens_per_s"] / hg[one]["tokens_per_s"]
    results["speedup_k2_over_k1"] = scaling
    if ok("L14_k1_s0") and ok("L14_k2_s0") and ok("L14_k1_s1"):
        def tail_mean(name):
            losses = [v for _, v in hg[name]["loss"]]
            tail = losses[-max(3, len(losses) // 4):]
            return sum(tail) / len(tail)

        agreement = {"k1_seed0": tail_mean("L14_k1_s0"), "k2_seed0": tail_mean("L14_k2_s0"),
                     "k1_seed1": tail_mean("L14_k1_s1")}
        agreement["k2_minus_k1"] = agreement["k2_seed0"] - agreement["k1_seed0"]
        agreement["seed_noise"] = agreement["k1_seed1"] - agreement["k1_seed0"]
        results["loss_agreement_2^14"] = agreement
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6.5, 4))
            for name, label in (("L14_k1_s0", "1 GPU, 8 x 2 accum, seed 0"), ("L14_k1_s1", "1 GPU, seed 1"),
                                ("L14_k2_s0", "2 GPUs, 8 each, seed 0")):
                steps, losses = zip(*hg[name]["loss"])
                ax.plot(steps, losses, label=label)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (nats / base)")
            ax.set_title("hg38 demo genomes, L = 2^14, ~7M MambaLM, global batch 16")
            ax.legend()
            fig.tight_layout()
            fig.savefig(os.path.join(args.out, "ddp_loss.png"), dpi=120)
        except Exception as exc:  # noqa: BLE001
            log(f"plot failed: {exc}")

    with open(os.path.join(args.out, "ddp_results.json"), "w") as f:
        json.dump(results, f, indent=1)

    print(f"\n==== summary ({time.time() - t0:.0f} s; {results['gpus']}) ====")
    print("| run | K | L | batch/GPU x accum | tokens/s (all GPUs) | peak GB/GPU | final loss | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in hg.items():
        if "tokens_per_s" in r:
            print(f"| {name} | {r['k']} | {r['seq_len']} | {r['batch_per_gpu']} x {r['grad_accum']} | "
                  f"{r['tokens_per_s']:,.0f} | {r['peak_mem_gb']:.2f} | {r['loss'][-1][1]:.4f} | {r['seconds']:.0f} |")
        else:
            print(f"| {name} | {r} |")
    for tag, speedup in scaling.items():
        print(f"scaling at {tag}: K=2 / K=1 tokens/s = {speedup:.3f}x (efficiency {speedup / 2:.1%})")
    if "loss_agreement_2^14" in results:
        a = results["loss_agreement_2^14"]
        print(f"loss (last quarter mean) K1 s0 {a['k1_seed0']:.4f}, K2 s0 {a['k2_seed0']:.4f}, K1 s1 {a['k1_seed1']:.4f}"
              f" -> K2-K1 {a['k2_minus_k1']:+.4f} vs seed noise {a['seed_noise']:+.4f}")
    ih = results.get("induction_heads_k2", {})
    if "eval" in ih:
        curve = [(row["log2_length"], round(row["acc"], 3)) for row in (ih["eval"] or {}).get("extrapolation", [])]
        print(f"induction heads K=2 ({ih['seconds']:.0f} s): val {ih['eval'].get('val')}; (log2 L, acc) {curve}")
    else:
        print(f"induction heads K=2: {ih}")
    if "resume_k2" in results:
        print(f"K=2 resume and spread: {results['resume_k2']}")
    if "resume_vs_uninterrupted" in ih:
        print(f"resume under torchrun (paused at {ih['paused_at']}): {ih['resume_vs_uninterrupted']}; "
              f"run dir {ih['run_dir']}")


if __name__ == "__main__":
    main()

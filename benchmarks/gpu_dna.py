"""DNA on one GPU (issue 11), one script: demo genomes -> brief HG38 pretraining -> Great Apes at
2^10, 2^12, 2^14 -> chunked-inference check -> training throughput of the ~1.4M-parameter MambaLM
(12 blocks, d_model 128) at L = 2^20 x 1 and 2^10 x 1024, with and without activation checkpointing.

    OUT=gpu_logs bash benchmarks/gpu_dna.sh          # or: python benchmarks/gpu_dna.py --out gpu_logs

Everything goes under --out: run dirs (metrics, checkpoints, confusion matrices CSV/PNG), dna_results.json,
accuracy_vs_context.png, throughput.png; the summary table is printed last. About 5-7 minutes on an H200.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import profile_report  # noqa: E402
from switches import add_switches, apply_switches  # noqa: E402

import seqmamba  # noqa: E402,F401  (from a checkout it maps tasks/ and configs/ itself: seqmamba/__init__.py)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def compose_cfg(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from seqmamba.commands.hydra_app import configs_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=configs_dir(), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def train_and_eval(overrides, run_dir):
    import seqmamba.tasks  # noqa: F401
    from seqmamba.tasks import get_task
    from seqmamba.train import Trainer

    cfg = compose_cfg(overrides)
    task = get_task(cfg.task.name)(cfg)
    trainer = Trainer(task, cfg, run_dir)
    started = time.time()
    final = trainer.fit()
    seconds = time.time() - started
    model = trainer.model
    model.eval()
    with torch.no_grad():
        results = task.eval_checkpoint(model, run_dir)
    return results["val"], seconds, final


MODEL = ["model.d_model=128", "model.n_layer=12"]
DEVICE = ["trainer.device=cuda"]
BATCH = {"pretrain": 64}
EXTRA = {"hg38": [], "great_apes": []}  # --cpu-smoke shrinks the validation sets here


def pretrain(demo, out, steps):
    run_dir = os.path.join(out, "hg38_pretrain")
    overrides = ["task=hg38", f"dataset.fasta={demo['fasta']}", f"dataset.bed={demo['bed']}", "dataset.seq_len=1024",
                 *MODEL, f"trainer.max_steps={steps}", f"trainer.batch_size={BATCH['pretrain']}", *DEVICE,
                 f"trainer.eval_every={max(1, steps // 4)}", f"trainer.ckpt_every={steps}", "trainer.progress=false",
                 "trainer.num_threads=null", "optimizer.lr=4e-3", "task.val_windows=512", "task.val_batch_size=64", *EXTRA["hg38"]]
    metrics, seconds, _ = train_and_eval(overrides, run_dir)
    log(f"hg38 pretraining: {steps} steps in {seconds:.0f} s; val ppl {metrics['ppl']:.4f} vs base-frequency "
        f"{metrics['base_freq_ppl']:.4f}")
    return metrics, seconds, os.path.join(run_dir, "checkpoints", "last.pt")


def great_apes(demo, out, ckpt, length, steps, batch, pooling="last"):
    run_dir = os.path.join(out, f"great_apes_2p{int(math.log2(length))}_{pooling}")
    overrides = ["task=great_apes", f"dataset.species_dir={demo['species_dir']}", f"dataset.seq_len={length}", *MODEL,
                 f"task.pretrained={ckpt}", f"task.pooling={pooling}", f"trainer.max_steps={steps}", f"trainer.batch_size={batch}",
                 *DEVICE, f"trainer.eval_every={steps}", f"trainer.ckpt_every={steps}",
                 "trainer.progress=false", "trainer.num_threads=null", "optimizer.lr=1e-3", "scheduler.warmup_ratio=0.1",
                 "task.val_samples=1000", "task.val_batch_size=50", *EXTRA["great_apes"]]
    metrics, seconds, _ = train_and_eval(overrides, run_dir)
    log(f"great_apes L={length} pooling={pooling}: acc {metrics['acc']:.4f} in {seconds:.0f} s")
    return metrics, seconds


def kmer_baseline(species_dir, length, n_train=1500, n_val=500, k=8):
    """Reference on the same data: logistic regression on 8-mer presence (CPU). Says how much species
    signal a window of this length carries for a model that only counts k-mers."""
    import numpy as np
    import scipy.sparse as sparse
    from sklearn.linear_model import LogisticRegression

    from seqmamba.data.species import SpeciesDataset
    from seqmamba.data.streams import seeded_generator

    def features(windows):
        rows, cols = [], []
        for r, ids in enumerate(windows):
            b = ids.astype(np.int64) - 3
            b[b > 3] = 0  # N counts as A here
            code = np.zeros(len(b) - k + 1, dtype=np.int64)
            for j in range(k):
                code = code * 4 + b[j:len(b) - k + 1 + j]
            u = np.unique(code)
            rows.append(np.full(u.size, r))
            cols.append(u)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        return sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(len(windows), 4 ** k))

    train = SpeciesDataset(species_dir, seq_len=length, split="train")
    valid = SpeciesDataset(species_dir, seq_len=length, split="valid")
    g, h = seeded_generator(0, length), seeded_generator(1, length)
    tr = [train.draw(g)[:2] for _ in range(n_train)]
    va = [valid.draw(h)[:2] for _ in range(n_val)]
    clf = LogisticRegression(max_iter=300).fit(features([x for x, _ in tr]), [y for _, y in tr])
    acc = float(clf.score(features([x for x, _ in va]), [y for _, y in va]))
    log(f"8-mer logistic regression L={length}: acc {acc:.3f}")
    return acc


def chunked_check():
    """Chunked features (states carried) == one full pass, fp32 on the GPU, L = 2^16 in chunks of 2^13."""
    from seqmamba.models.mamba_lm import MambaLM
    from seqmamba.tasks.hg38 import chunked_features

    torch.manual_seed(0)
    model = MambaLM(d_model=128, n_layer=12, vocab_size=8).cuda().eval()
    ids = torch.randint(3, 8, (2, 2 ** 16), device="cuda")
    with torch.no_grad():
        full = model.features(ids)
        chunked = chunked_features(model, ids, 2 ** 13)
    err = float((full - chunked).abs().max() / full.abs().max())
    log(f"chunked == full pass: max |diff| / max |full| = {err:.2e}")
    return err


def throughput(batch, length, checkpointing, warmup=2, iters=5, fused_add_norm=False, split_per_sm=None,
               profile_dir=None):
    """One row: the 1.4M model's training step at (batch, length). ``split_per_sm``: the training scan's
    BWD_CONFIG split_programs_per_sm for this row (None: the default). ``profile_dir``: also one more step under
    torch.profiler, its kernels by GPU time written there (profile_<batch>x<length>.txt) and printed."""
    from unittest import mock

    from seqmamba.models.mamba_lm import MambaLM
    from seqmamba.ops.selective_scan import triton_launch
    from seqmamba.tasks.next_token import model_logits

    config = {} if split_per_sm is None else {"split_programs_per_sm": split_per_sm}
    with mock.patch.dict(triton_launch.BWD_CONFIG, config):
        split_per_sm = triton_launch.BWD_CONFIG["split_programs_per_sm"]
        torch.manual_seed(0)
        model = MambaLM(d_model=128, n_layer=12, vocab_size=8, fused_add_norm=fused_add_norm).cuda()
        model.set_activation_checkpointing(checkpointing)
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        ids = torch.randint(3, 8, (batch, length + 1), device="cuda")
        inputs, targets = ids[:, :-1], ids[:, 1:]

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model_logits(model, inputs)
            loss = torch.nn.functional.cross_entropy(logits[..., :8].float().reshape(-1, 8), targets.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            loss = step()
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(iters):
            loss = step()
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / iters
        row = {"batch": batch, "length": length, "activation_checkpointing": checkpointing, "params": n_params,
               "fused_add_norm": fused_add_norm, "split_programs_per_sm": split_per_sm,
               "tokens_per_s": batch * length / seconds, "step_ms": seconds * 1e3,
               "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "loss_finite": bool(torch.isfinite(loss))}
        log(f"throughput {batch} x {length} ckpt={checkpointing} fused_add_norm={fused_add_norm} split/SM "
            f"{split_per_sm}: {row['tokens_per_s'] / 1e6:.2f} M tokens/s, "
            f"{row['step_ms']:.0f} ms/step, peak {row['peak_gib']:.1f} GiB")
        if profile_dir is not None:
            path = os.path.join(profile_dir, f"profile_{batch}x{length}.txt")
            print(f"profile of one step ({path}):\n{profile_report(step, 1, path)}", flush=True)
        del model, opt
        return row


def plots(out, apes, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if apes:
        accuracy_plot(plt, out, apes)
    if rows:
        throughput_plot(plt, out, rows)


def accuracy_plot(plt, out, apes):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = sorted(apes)
    ax.plot([math.log2(x) for x in xs], [100 * apes[x]["acc"] for x in xs], "o-", label="Mamba 12x128, last token")
    for key, label in (("acc_mean_pooling", "Mamba 12x128, mean pooling"), ("kmer_acc", "8-mer logistic regression")):
        have = [x for x in xs if key in apes[x]]
        if have:
            ax.plot([math.log2(x) for x in have], [100 * apes[x][key] for x in have], "s--", label=label)
    ax.axhline(20, color="gray", ls="--", label="chance")
    ax.set_xlabel("log2 context length")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Great Apes (demo genomes), H200")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_context.png"), dpi=120)
    plt.close(fig)


def throughput_plot(plt, out, rows):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    def label(r):
        split = f" split {r['split_programs_per_sm']}" if r["batch"] == 1 and "split_programs_per_sm" in r else ""
        return f"{r['batch']}x2^{int(math.log2(r['length']))}{' ckpt' if r['activation_checkpointing'] else ''}{split}"

    labels = [label(r) for r in rows]
    ax.bar(labels, [r["tokens_per_s"] / 1e6 for r in rows])
    for i, r in enumerate(rows):
        ax.text(i, r["tokens_per_s"] / 1e6, f"{r['peak_gib']:.1f} GiB", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("M tokens / s (train step)")
    ax.set_title("MambaLM 12 x 128, bf16")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_logs"))
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--apes-steps", type=int, default=400)
    parser.add_argument("--apes-batch", type=int, default=16)
    parser.add_argument("--lengths", default="1024,4096,16384")
    parser.add_argument("--time-budget", type=float, default=430,
                        help="seconds; the extra mean-pooling Great Apes runs (after the throughput) only fit inside it")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: train,kmer,chunked,throughput")
    parser.add_argument("--fused-add-norm", action="store_true",
                        help="throughput rows: the model's residual add + RMSNorm as the fused Triton op")
    parser.add_argument("--split-per-sm", type=int, nargs="+", default=None,
                        help="throughput: also time the 1 x 2^20 step (no checkpointing) with the training scan's "
                             "BWD_CONFIG split_programs_per_sm set to each of these")
    add_switches(parser, "project-channels-grad", "split-passes", "x-proj-layout", "mamba-inner", "channel-linear")
    parser.add_argument("--profile", action="store_true",
                        help="throughput: one more step of each row without checkpointing under torch.profiler")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="a tiny CPU pass through the training part (checks the script, measures nothing)")
    args = parser.parse_args()
    if args.cpu_smoke:
        MODEL[:] = ["model.d_model=32", "model.n_layer=2"]
        DEVICE[:] = ["trainer.device=cpu"]
        BATCH["pretrain"] = 4
        EXTRA["hg38"] = ["task.val_windows=8"]
        EXTRA["great_apes"] = ["task.val_samples=10"]
        args.skip += ",chunked,throughput"
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_dna.py needs a CUDA GPU (or --cpu-smoke)")
    apply_switches(args)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    device = "cpu (smoke test)" if args.cpu_smoke else torch.cuda.get_device_name()
    log(f"device {device}, torch {torch.__version__}")
    results = {"device": device}
    apes = {}
    t0 = time.time()
    demo = ckpt_path = None
    if "train" not in skip:
        from seqmamba.data.demo_genomes import make

        started = time.time()
        demo = make(os.path.join(out, "demo"), n_chroms=16, chrom_length=65536 if args.cpu_smoke else 262144, seed=0, quiet=True)
        log(f"demo genomes in {time.time() - started:.1f} s")
        hg38, hg38_s, ckpt_path = pretrain(demo, out, args.pretrain_steps)
        results["hg38"] = {**hg38, "seconds": hg38_s}
        for length in [int(x) for x in args.lengths.split(",")]:
            metrics, seconds = great_apes(demo, out, ckpt_path, length, args.apes_steps, args.apes_batch)
            apes[length] = {k: v for k, v in metrics.items() if not isinstance(v, list)} | {"seconds": seconds}
            if "kmer" not in skip:
                apes[length]["kmer_acc"] = kmer_baseline(demo["species_dir"], length,
                                                         *((40, 20) if args.cpu_smoke else (1500, 500)))
        results["great_apes"] = {str(k): v for k, v in apes.items()}
    if "chunked" not in skip:
        try:
            results["chunked_rel_err"] = chunked_check()
        except Exception as err:  # keep going: the throughput rows are still wanted
            log(f"chunked check FAILED: {type(err).__name__}: {err}")
            results["chunked_error"] = f"{type(err).__name__}: {err}"
    rows = []
    if "throughput" not in skip:
        for batch, length in ((1, 2 ** 20), (1024, 2 ** 10)):
            for checkpointing in (False, True):
                try:
                    rows.append(throughput(batch, length, checkpointing, fused_add_norm=args.fused_add_norm,
                                           profile_dir=out if args.profile and not checkpointing else None))
                except Exception as err:
                    log(f"throughput {batch} x {length} ckpt={checkpointing} FAILED: {type(err).__name__}: {err}")
                    results.setdefault("throughput_errors", []).append(f"{batch}x{length} ckpt={checkpointing}: {err}")
                    torch.cuda.empty_cache()
        for per_sm in args.split_per_sm or []:
            try:
                rows.append(throughput(1, 2 ** 20, False, fused_add_norm=args.fused_add_norm, split_per_sm=per_sm))
            except Exception as err:
                log(f"throughput 1 x 2^20 split/SM {per_sm} FAILED: {type(err).__name__}: {err}")
                torch.cuda.empty_cache()
        results["throughput"] = rows
    if apes and "mean" not in skip:  # the same runs with mean pooling, as far as the time budget allows
        for length in sorted(apes):
            if time.time() - t0 + 1.3 * apes[length]["seconds"] > args.time_budget:
                log(f"mean-pooling run at L={length} skipped (time budget {args.time_budget:.0f} s)")
                continue
            metrics, _ = great_apes(demo, out, ckpt_path, length, args.apes_steps, args.apes_batch, "mean")
            apes[length]["acc_mean_pooling"] = metrics["acc"]
        results["great_apes"] = {str(k): v for k, v in apes.items()}
    with open(os.path.join(out, "dna_results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    plots(out, apes, rows)
    # -- the table, last ------------------------------------------------------------------------
    print("\n==== DNA on", results["device"], "====")
    if "hg38" in results:
        h = results["hg38"]
        print(f"hg38 pretrain (demo, 12x128, L=1024, {args.pretrain_steps} steps x 64): val ppl {h['ppl']:.4f} "
              f"({h['bits_per_base']:.3f} bits/base) vs base-frequency ppl {h['base_freq_ppl']:.4f}")
    if apes:
        print("great_apes (demo, from the hg38 checkpoint, "
              f"{args.apes_steps} steps x {args.apes_batch}):")
        print("  L     | acc (last token, paper) | balanced | seconds | acc (mean pooling) | 8-mer LR reference")
        for length, m in sorted(apes.items()):
            kmer = f"{100 * m['kmer_acc']:5.1f}%" if "kmer_acc" in m else "-"
            mean = f"{100 * m['acc_mean_pooling']:5.1f}%" if "acc_mean_pooling" in m else "-"
            print(f"  2^{int(math.log2(length)):<2d}  | {100 * m['acc']:22.1f}% | {100 * m['balanced_acc']:7.1f}% | "
                  f"{m['seconds']:7.0f} | {mean:>18s} | {kmer}")
        print(f"  chance 20%; total {time.time() - t0:.0f} s; rises with context (last token):", all(apes[a]["acc"] < apes[b]["acc"] for a, b in
                                                       zip(sorted(apes), sorted(apes)[1:])))
    for key in ("chunked_error", "throughput_errors"):
        if key in results:
            print(f"{key}: {results[key]}")
    if "chunked_rel_err" in results:
        print(f"chunked inference (2^16 in 2^13 chunks) vs full pass, fp32: rel. max err {results['chunked_rel_err']:.2e}")
    if rows:
        print(f"throughput, MambaLM 12 x 128 ({rows[0]['params'] / 1e6:.2f}M params), bf16 autocast, AdamW step:")
        print("  batch x L        | act. ckpt | fused norm | split/SM | M tokens/s | ms/step | peak GiB")
        for r in rows:
            print(f"  {r['batch']:>4d} x 2^{int(math.log2(r['length'])):<2d}     | {str(r['activation_checkpointing']):9s} | "
                  f"{str(r['fused_add_norm']):10s} | {r['split_programs_per_sm']:8d} | "
                  f"{r['tokens_per_s'] / 1e6:10.2f} | {r['step_ms']:7.0f} | {r['peak_gib']:8.1f}")


if __name__ == "__main__":
    main()

"""Why does an induction-heads checkpoint stop extrapolating? Accuracy, precision and state leakage by length.

For a checkpoint of ``seqmamba run task=induction_heads`` (its run directory's ``config.yaml`` gives the
model and data settings) this prints four tables (notes/extrapolation.md reads them; issue 13):

1. Accuracy at lengths 2^min .. 2^max on the fixed sets ``seqmamba eval`` scores (the same seeds and
   batches, so the first samples of each length ARE the eval's set; ``--min-samples`` adds more). Every
   set is checked first (special token exactly twice, the second at the last position, target = the
   token after the first). With ``--double`` a float64 copy of the model (scan state, residual stream,
   projections in float64) scores the same sets, and the disagreements with fp32 are counted.
2. Accuracy by distance from the first trigger to the query (the last position), per length: a model
   that forgets fails beyond some distance whatever the length; one that uses the total length fails
   at every distance of a long sequence.
3. Leakage per Mamba layer, from the delta and A the selective scan actually receives (the scan is
   wrapped, so delta = softplus(dt_proj(dt) + dt_bias) is exactly what the model used): the
   distribution of delta over channels and positions after the write (the answer enters the state at
   trigger + 1 .. trigger + 3, through the width-4 conv), its minimum (no floor: dt_min and
   dt_init_floor only place the initial dt_bias), delta * min|A|, and the smallest softplus(dt_bias).
4. The answer-carrying state entries: the (channel, state) entries of each layer's final state whose
   class means (over the 15 answers) explain most of their variance at the training length. For them:
   |A|, softplus(dt_bias) of their channel, the mean delta between write and query ("bg delta"), the
   per-token leak delta*|A| there, the memory length 1 / (that leak), the
   accumulated leak sum(delta*|A|) from the write to the query, the retention exp(-sum) it implies,
   the signal actually retained (slope of the state on its training-length class mean) and the
   noise-to-signal ratio of the state. Where retention falls (sum ~ 1) or noise overtakes the signal
   is where the memory fails.

Runs in a few minutes on one CPU thread for the default model (lengths 2^6 .. 2^14):

    OMP_NUM_THREADS=1 python benchmarks/extrapolation_study.py /tmp/run/checkpoints/best.pt
    python benchmarks/extrapolation_study.py CKPT --max-log2 13 --double --json study.json
    python benchmarks/extrapolation_study.py CKPT --json b.json --label "longer" --plot acc.png --compare "default=a.json"
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import time
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import seqmamba.modules.mamba as mamba_module
from seqmamba.data import synthetic
from seqmamba.modules.mamba import Mamba
from seqmamba.tasks import get_task
from seqmamba.tasks.next_token import model_logits
from seqmamba.train.checkpoint import load_model_weights

#: the answer enters the state in the conv's window after the trigger: positions trigger + 1 .. + WRITE_SPAN
WRITE_SPAN = 3


# ----------------------------------------------------------------------------------------------- loading
def load(ckpt: str, config: Optional[str], backend: str):
    """(task, fp32 model in eval mode) from a checkpoint and its run's resolved config.yaml."""
    if config is None:
        config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ckpt))), "config.yaml")
    cfg = OmegaConf.load(config)
    task = get_task(str(cfg.task.name))(cfg)
    model = task.build_model()
    load_model_weights(model, ckpt)
    for module in model.modules():
        if isinstance(module, Mamba):
            module.scan_backend = backend
    return task, model.eval()


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model in float64, residual stream included (RMSNorm still normalises in fp32 by design;
    A, D and dt_bias reach the scan in fp32 as the scan requires, the state is carried in float64)."""
    model64 = copy.deepcopy(model).double()
    for module in model64.modules():
        if hasattr(module, "residual_in_fp32"):
            module.residual_in_fp32 = False
    return model64.eval()


# ----------------------------------------------------------------------------------------------- data
def extrapolation_set(task, length: int, n_samples: int, batch_size: int) -> List[tuple]:
    """The task's fixed extrapolation set at ``length`` (``seqmamba eval`` draws the same batches)."""
    return synthetic.fixed_batches(task.data, task.val_seed, n_samples, batch_size,
                                   stream=synthetic.EXTRAPOLATION_STREAM, set_key=(length,), seq_len=length)


def check_set(batches: Sequence[tuple], special: int) -> torch.Tensor:
    """Trigger positions of a set after checking it; raises ValueError on a malformed sample."""
    triggers = []
    for inputs, targets in batches:
        is_special = inputs == special
        first = is_special.float().argmax(1)
        checks = {
            "the special token appears exactly twice": (is_special.sum(1) == 2).all(),
            "the last position is the special token": is_special[:, -1].all(),
            "the first trigger is at most at L - 3": (first <= inputs.shape[1] - 3).all(),
            "the target is the token after the first trigger": (inputs.gather(1, first[:, None] + 1) == targets).all(),
        }
        for claim, holds in checks.items():
            if not bool(holds):
                raise ValueError(f"malformed set at length {inputs.shape[1]}: {claim!r} fails for some sample")
        triggers.append(first)
    return torch.cat(triggers)


@torch.no_grad()
def predictions(model, batches: Sequence[tuple], vocab_size: int):
    """(argmax over the real classes at the last position, those logits in float64), per sample."""
    preds, logits = [], []
    for inputs, _ in batches:
        out = model_logits(model, inputs, n_scored=1)[:, -1, :vocab_size]
        logits.append(out.double())
        preds.append(out.argmax(-1))
    return torch.cat(preds), torch.cat(logits)


# ----------------------------------------------------------------------------------------------- scan capture
@contextlib.contextmanager
def recording_scan(on_call) -> Iterator[None]:
    """Within the block, every selective scan a Mamba layer runs (in layer order) also calls
    ``on_call(delta, A, last_state)``: delta after dt_bias and softplus, computed exactly as the scan
    computes it (fp32), A (dim, N) and the final state (batch, dim, N)."""
    original = mamba_module.selective_scan

    def wrapped(u, delta, A, B, C, D=None, **kwargs):
        want_state = kwargs.pop("return_last_state", False)
        out, last = original(u, delta, A, B, C, D, return_last_state=True, **kwargs)
        dt = delta.float()
        if kwargs.get("delta_bias") is not None:
            dt = dt + kwargs["delta_bias"].float()[:, None]
        if kwargs.get("delta_softplus"):
            dt = F.softplus(dt)
        on_call(dt, A.float(), last.float())
        return (out, last) if want_state else out

    mamba_module.selective_scan = wrapped
    try:
        yield
    finally:
        mamba_module.selective_scan = original


def gap_mask(triggers: torch.Tensor, length: int) -> torch.Tensor:
    """(batch, L) True between the write window and the query: trigger + WRITE_SPAN < t < L - 1."""
    t = torch.arange(length)[None, :]
    return (t > triggers[:, None] + WRITE_SPAN) & (t < length - 1)


@torch.no_grad()
def layer_statistics(model, inputs: torch.Tensor, triggers: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
    """Per Mamba layer: delta quantiles in the gap, the per-(sample, channel) delta sums and means over the
    gap and maxima over the write window, A, and the final state."""
    length = inputs.shape[1]
    gap = gap_mask(triggers, length)  # (batch, L)
    t = torch.arange(length)[None, :]
    write = (t > triggers[:, None]) & (t <= triggers[:, None] + WRITE_SPAN)
    stats: List[Dict[str, torch.Tensor]] = []

    def on_call(delta, A, state):
        gap_delta = delta.transpose(1, 2)[gap]  # (gap positions, dim)
        sample = gap_delta.flatten()
        if sample.numel() > 1 << 22:
            sample = sample[torch.randperm(sample.numel(), generator=torch.Generator().manual_seed(0))[: 1 << 22]]
        stats.append({
            "delta_quantiles": torch.quantile(sample, torch.tensor([0.01, 0.5, 0.99])),
            "delta_min": gap_delta.min(),
            "gap_sum": (delta * gap[:, None, :]).sum(-1),  # (batch, dim)
            "gap_len": gap.sum(-1).clamp(min=1),  # (batch,)
            "write_max": delta.masked_fill(~write[:, None, :], 0).amax(-1),  # (batch, dim)
            "A": A,
            "state": state,
        })

    with recording_scan(on_call):
        model_logits(model, inputs, n_scored=1)
    return stats


def answer_entries(state: torch.Tensor, targets: torch.Tensor, n_classes: int, top: int):
    """The ``top`` (channel, state) entries whose class means explain most variance, and those means."""
    flat = state.flatten(1)  # (batch, dim * N)
    means = torch.zeros(n_classes, flat.shape[1]).index_add_(0, targets, flat)
    counts = torch.bincount(targets, minlength=n_classes).clamp(min=1)[:, None]
    means = means / counts
    explained = means[targets].var(0) / flat.var(0).clamp(min=1e-30)
    index = explained.topk(top).indices
    return index, means[:, index], explained[index]


def retained_signal(state_entries: torch.Tensor, class_means: torch.Tensor, targets: torch.Tensor):
    """(slope, noise/signal) per entry: the state regressed on its training-length class mean."""
    signal = class_means[targets]
    signal = signal - signal.mean(0)
    x = state_entries - state_entries.mean(0)
    slope = (x * signal).sum(0) / (signal * signal).sum(0).clamp(min=1e-30)
    noise = (x - slope * signal).std(0) / class_means.std(0).clamp(min=1e-30)
    return slope, noise


# ----------------------------------------------------------------------------------------------- report
def median(x: torch.Tensor) -> float:
    return float(x.float().median())


def accuracy_tables(task, model, model64, lengths, args) -> Dict[str, list]:
    plan = {item["length"]: item for item in _plan(task, args)}
    rows, by_distance = [], []
    special = task.data.special_token
    print("\n1. accuracy by length (fixed extrapolation sets; fp32 torch scan"
          + (", and float64" if model64 is not None else "") + ")")
    print(f"{'length':>8} {'samples':>7} {'set ok':>6} {'acc fp32':>9}"
          + (f" {'acc fp64':>9} {'disagree':>8} {'max |dlogit|':>12}" if model64 is not None else "") + f" {'s':>6}")
    for length in lengths:
        item = plan[length]
        n = max(item["n_samples"], args.min_samples)
        start = time.perf_counter()
        batches = extrapolation_set(task, length, n, item["batch_size"])
        triggers = check_set(batches, special)
        targets = torch.cat([t[:, 0] for _, t in batches])
        pred, logits = predictions(model, batches, task.vocab_size)
        correct = pred == targets
        row = {"length": length, "log2_length": length.bit_length() - 1, "n_samples": n, "set_ok": True,
               "acc": float(correct.float().mean())}
        line = f"{length:>8d} {n:>7d} {'yes':>6} {100 * row['acc']:>8.2f}%"
        if model64 is not None:
            pred64, logits64 = predictions(model64, batches, task.vocab_size)
            row["acc_fp64"] = float((pred64 == targets).float().mean())
            row["disagree"] = int((pred64 != pred).sum())
            row["max_logit_diff"] = float((logits64 - logits).abs().max())
            line += f" {100 * row['acc_fp64']:>8.2f}% {row['disagree']:>8d} {row['max_logit_diff']:>12.2e}"
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(line + f" {row['seconds']:>6.1f}", flush=True)
        rows.append(row)
        distance = length - 1 - triggers
        by_distance.append({"length": length, "distance": distance.tolist(), "correct": correct.tolist()})

    print("\n2. accuracy by distance from the first trigger to the query: acc% (samples)")
    edges = [0] + [2**k for k in range(args.min_log2, args.max_log2)]
    header = ["< 2^%d" % args.min_log2] + [f"2^{k}..2^{k + 1}" for k in range(args.min_log2, args.max_log2)]
    print(f"{'length':>8} " + " ".join(f"{h:>13}" for h in header))
    for entry in by_distance:
        distance, correct = torch.tensor(entry["distance"]), torch.tensor(entry["correct"])
        cells = []
        for lo, hi in zip(edges, edges[1:] + [1 << 62]):
            sel = (distance >= lo) & (distance < hi)
            cells.append(f"{100 * float(correct[sel].float().mean()):6.1f} ({int(sel.sum()):>4d})" if sel.any() else "")
        print(f"{entry['length']:>8d} " + " ".join(f"{c:>13}" for c in cells))
    return {"accuracy": rows, "by_distance": by_distance}


def _plan(task, args):
    """The task's extrapolation plan (samples and batch per length) over this study's lengths."""
    OmegaConf.update(task.cfg, "eval.min_log2_len", args.min_log2)
    OmegaConf.update(task.cfg, "eval.max_log2_len", args.max_log2)
    return task.extrapolation_plan()


def leakage_tables(task, model, args) -> Dict[str, list]:
    n_classes = task.vocab_size - 1
    train_len = task.data.seq_len
    ref_batches = extrapolation_set(task, train_len, args.ref_samples, args.ref_samples)
    inputs, targets = ref_batches[0]
    ref = layer_statistics(model, inputs, check_set(ref_batches, task.data.special_token))
    entries = [answer_entries(layer["state"], targets[:, 0], n_classes, args.top) for layer in ref]
    dt_biases = [m.dt_proj.bias.detach() for m in model.modules() if isinstance(m, Mamba)]

    print(f"\n3. delta = softplus(dt_proj(dt) + dt_bias) between write and query ({args.diag_samples} sequences "
          "per length); no clamp: min is the smallest delta the scan used")
    print(f"{'layer':>5} {'length':>8} {'p1 delta':>10} {'median':>10} {'p99':>10} {'min':>10} "
          f"{'p1 d*|A|min':>12} {'softplus(bias) min':>18}")
    rows3, rows4 = [], []
    per_length = {}
    for length in args.diag_lengths:
        batches = extrapolation_set(task, length, args.diag_samples, args.diag_samples)
        triggers = check_set(batches, task.data.special_token)
        per_length[length] = (layer_statistics(model, batches[0][0], triggers), batches[0][1][:, 0])
    for layer_index in range(len(ref)):
        bias_min = float(F.softplus(dt_biases[layer_index].float()).min())
        a_min = float(ref[layer_index]["A"].abs().min())
        for length, (stats, _) in per_length.items():
            s = stats[layer_index]
            q = s["delta_quantiles"]
            row = {"layer": layer_index, "length": length, "delta_p1": float(q[0]), "delta_median": float(q[1]),
                   "delta_p99": float(q[2]), "delta_min": float(s["delta_min"]),
                   "leak_p1_Amin": float(q[0]) * a_min, "softplus_bias_min": bias_min}
            rows3.append(row)
            print(f"{layer_index:>5d} {length:>8d} {row['delta_p1']:>10.2e} {row['delta_median']:>10.2e} "
                  f"{row['delta_p99']:>10.2e} {row['delta_min']:>10.2e} {row['leak_p1_Amin']:>12.2e} {bias_min:>18.2e}")

    print(f"\n4. the {args.top} answer-carrying state entries per layer (explained variance at length {train_len}, "
          f"{args.ref_samples} sequences): medians over entries x sequences")
    print(f"{'layer':>5} {'length':>8} {'expl.var':>8} {'|A|':>6} {'sp(bias)':>9} {'bg delta':>9} {'leak/token':>10} "
          f"{'mem. len':>9} {'sum leak':>9} {'exp(-sum)':>9} {'write/bg':>9} {'retained':>9} {'noise/sig':>9}")
    for layer_index in range(len(ref)):
        index, class_means, explained = entries[layer_index]
        dim, n_state = ref[layer_index]["A"].shape
        channel, state_n = index // n_state, index % n_state
        abs_a = ref[layer_index]["A"].abs()[channel, state_n]  # (top,)
        for length, (stats, targets_l) in per_length.items():
            s = stats[layer_index]
            gap_sum = s["gap_sum"][:, channel]  # (batch, top)
            background = gap_sum / s["gap_len"][:, None]
            leak = background * abs_a
            total = gap_sum * abs_a
            write_ratio = s["write_max"][:, channel] / background.clamp(min=1e-30)
            slope, noise = retained_signal(s["state"].flatten(1)[:, index], class_means, targets_l)
            row = {"layer": layer_index, "length": length, "explained_var_at_train_len": median(explained),
                   "abs_A": median(abs_a), "softplus_bias": median(F.softplus(dt_biases[layer_index].float())[channel]),
                   "delta_background": median(background), "leak_per_token": median(leak), "memory_length": 1.0 / max(median(leak), 1e-30),
                   "sum_leak": median(total), "retention": median(torch.exp(-total)),
                   "write_over_background": median(write_ratio), "retained_slope": median(slope),
                   "noise_over_signal": median(noise)}
            rows4.append(row)
            print(f"{layer_index:>5d} {length:>8d} {row['explained_var_at_train_len']:>8.2f} {row['abs_A']:>6.2f} "
                  f"{row['softplus_bias']:>9.2e} {row['delta_background']:>9.2e} {row['leak_per_token']:>10.2e} "
                  f"{row['memory_length']:>9.0f} {row['sum_leak']:>9.3f} {row['retention']:>9.3f} "
                  f"{row['write_over_background']:>9.0f} {row['retained_slope']:>9.3f} {row['noise_over_signal']:>9.2f}")
    return {"delta": rows3, "answer_entries": rows4}


def plot_accuracy(runs: Dict[str, list], train_len: int, out: str) -> None:
    """Accuracy against log2 length, one line per run (``{label: accuracy rows}``), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, rows in runs.items():
        ax.plot([r["log2_length"] for r in rows], [100 * r["acc"] for r in rows], marker="o", label=label)
    ax.axvline(math.log2(train_len), color="grey", linestyle="--", label=f"training length {train_len}")
    ax.set_ylim(0, 102)
    ax.set_xlabel("log2 test sequence length")
    ax.set_ylabel("accuracy at the last position (%)")
    ax.set_title("Induction heads on the CPU: length extrapolation")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("ckpt", help="checkpoint (best.pt / last.pt) of an induction-heads run")
    parser.add_argument("--config", help="resolved config.yaml of the run (default: <ckpt>/../../config.yaml)")
    parser.add_argument("--min-log2", type=int, default=6, help="shortest test length, log2 (default 6)")
    parser.add_argument("--max-log2", type=int, default=14, help="longest test length, log2 (default 14)")
    parser.add_argument("--min-samples", type=int, default=64,
                        help="at least this many sequences per length; the first ones are seqmamba eval's (default 64)")
    parser.add_argument("--double", action="store_true", help="also score every set with a float64 copy of the model")
    parser.add_argument("--backend", default="torch", choices=["torch", "reference"],
                        help="CPU scan backend (default torch, what trainer.device=cpu uses)")
    parser.add_argument("--diag-lengths", type=int, nargs="+", default=None,
                        help="lengths for the leakage tables (default: the training length, 2^10, 2^12 .. 2^max)")
    parser.add_argument("--diag-samples", type=int, default=32, help="sequences per length for the leakage tables")
    parser.add_argument("--ref-samples", type=int, default=1024,
                        help="sequences at the training length that pick the answer-carrying entries (default 1024)")
    parser.add_argument("--top", type=int, default=16, help="answer-carrying entries per layer (default 16)")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the leakage tables")
    parser.add_argument("--json", help="also write every number to this JSON file")
    parser.add_argument("--plot", help="write accuracy against log2 length to this PNG")
    parser.add_argument("--label", default="this checkpoint", help="this run's name in the plot")
    parser.add_argument("--compare", nargs="+", default=[], metavar="LABEL=JSON",
                        help="earlier --json outputs to draw in the same plot")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    task, model = load(args.ckpt, args.config, args.backend)
    train_len = task.data.seq_len
    if args.diag_lengths is None:
        args.diag_lengths = sorted({train_len, 2**10, *[2**k for k in range(12, args.max_log2 + 1)]})
    lengths = [2**k for k in range(args.min_log2, args.max_log2 + 1)]
    print(f"checkpoint {args.ckpt}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"training length {train_len}, scan backend {args.backend}, {args.threads} thread(s)")
    results: Dict[str, object] = {"ckpt": os.path.abspath(args.ckpt), "train_length": train_len}
    if not args.skip_accuracy:
        model64 = float64_copy(model) if args.double else None
        results.update(accuracy_tables(task, model, model64, lengths, args))
    results.update(leakage_tables(task, model, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json}")
    if args.plot:
        runs = {}
        for item in args.compare:
            label, path = item.rsplit("=", 1)
            with open(path) as f:
                runs[label] = json.load(f)["accuracy"]
        if "accuracy" in results:
            runs[args.label] = results["accuracy"]
        plot_accuracy(runs, train_len, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

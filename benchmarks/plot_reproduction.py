"""Figures of REPRODUCTION.md from the recorded runs under reproduction/ (CSV files; no GPU needed).

    python benchmarks/plot_reproduction.py            # writes docs/img/repro_*.png

- repro_induction_heads.png: training loss and validation accuracy at the training length (256) against
  steps, and accuracy against test length 2^6 .. 2^20 beside the paper's Mamba (100% everywhere) and the
  CPU default model trained at 64 (notes/extrapolation.md);
- repro_selective_copying.png: training accuracy on the 16 output positions against steps, and the held-out
  accuracy from the segments whose in-run evaluation was valid (see REPRODUCTION.md); beside it, every Table 1
  row recorded so far (reproduction/selective_copying_<arch>_<inner>/) against the Mamba run over the same steps
  (training accuracy on fresh batches: every row's in-run evaluation is valid there, the Mamba run's early one
  was not).
"""
from __future__ import annotations

import argparse
import csv
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CPU default (train length 64, early stop), 64+ sequences per length: notes/extrapolation.md, table 1-3
CPU_DEFAULT = {6: 100, 7: 100, 8: 100, 9: 100, 10: 100, 11: 100, 12: 100, 13: 87.5, 14: 56.3}
# Table 1 rows (selective_copying_<arch>_<inner>): colour by inner layer, line style by architecture
INNER_COLOURS = {"s4d": "tab:blue", "hyena": "tab:orange", "s6": "tab:green"}
ARCH_LINES = {"nogate": ":", "h3": "--", "mamba": "-"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows, key, since=0):
    pairs = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "") and int(r["step"]) >= since]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def label(ax, xlabel, ylabel, top, title, legend_loc):
    """Axis labels, y range 0 .. top, title and a small legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top)
    ax.set_title(title)
    ax.legend(loc=legend_loc, fontsize=8)


def save(fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=os.path.join(REPO, "reproduction"))
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "img"))
    parser.add_argument("--sc-valid-from", type=int, default=51391,
                        help="first selective-copying step whose in-run evaluation is valid (REPRODUCTION.md)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    ih = read(os.path.join(args.runs, "induction_heads", "metrics.csv"))
    ext = read(os.path.join(args.runs, "induction_heads", "extrapolation_last.csv"))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps, loss = column(ih, "train/loss")
    ax1.semilogy([s / 1000 for s in steps], loss, label="train loss (window mean)")
    ax1.set_xlabel("thousand steps (batch 8 x 256)")
    ax1.set_ylabel("cross-entropy at the last position")
    twin = ax1.twinx()
    vs, va = column(ih, "val/acc")
    twin.plot([s / 1000 for s in vs], [100 * v for v in va], "o-", color="tab:green", ms=3, label="val acc at 256")
    twin.set_ylabel("val accuracy (%)")
    twin.set_ylim(0, 102)
    ax1.set_title("Induction heads, paper config: training (H200)")
    ax1.legend(loc="center right")
    twin.legend(loc="lower right")
    lengths = [int(r["log2_length"]) for r in ext]
    ax2.plot(lengths, [100 * float(r["acc"]) for r in ext], "o-", label="seqmamba, trained at 256 (last weights)")
    ax2.plot(lengths, [100] * len(lengths), "k--", lw=1, label="paper, Mamba")
    ax2.plot(list(CPU_DEFAULT), list(CPU_DEFAULT.values()), "s:", color="tab:red",
             label="seqmamba CPU default, trained at 64")
    ax2.axvline(8, color="grey", lw=0.8)
    label(ax2, "log2 test length", "accuracy (%)", 104, "Accuracy vs length (512+ sequences per length)", "lower left")
    save(fig, args.out, "repro_induction_heads.png")

    sc = read(os.path.join(args.runs, "selective_copying", "metrics.csv"))
    rows = sorted(glob.glob(os.path.join(args.runs, "selective_copying_*", "metrics.csv")))
    fig, axes = plt.subplots(1, 2 if rows else 1, figsize=(13.5 if rows else 7, 3.8), squeeze=False)
    ax = axes[0][0]
    s, a = column(sc, "train/acc")
    ax.plot([x / 1000 for x in s], [100 * v for v in a], label="train acc (fresh batches)")
    s, a = column(sc, "val/acc", since=args.sc_valid_from)
    ax.plot([x / 1000 for x in s], [100 * v for v in a], "o", ms=3, label="held-out acc (1024 sequences)")
    ax.axhline(99.8, color="k", ls="--", lw=1, label="paper, Mamba: 99.8 (400K steps)")
    label(ax, "thousand steps (batch 64 x 4112)", "accuracy on the 16 outputs (%)", 102,
          "Selective copying, Mamba (S6), paper config (H200)", "upper left")
    if rows:
        ax = axes[0][1]
        runs = [("Mamba (S6, fused block)", sc)] + [
            (os.path.basename(os.path.dirname(path)).removeprefix("selective_copying_"), read(path)) for path in rows]
        last = max(int(r["step"]) for _, rs in runs[1:] for r in rs)
        for name, rs in runs:  # colour: the inner layer; line: the architecture
            s, a = column(rs, "train/acc")
            keep = [i for i, x in enumerate(s) if x <= last]
            arch, _, inner = name.partition("_")  # the fused Mamba run's name has no "_": the Mamba S6 style
            inner, _, variant = inner.partition("_")  # e.g. nogate_s4d_gelu: the nogate S4D row with a GELU
            style = dict(color=INNER_COLOURS.get(inner, "tab:green"), ls="-." if variant else ARCH_LINES.get(arch, "-"))
            ax.plot([s[i] / 1000 for i in keep], [100 * a[i] for i in keep], label=name, lw=1.2, **style)
        label(ax, "thousand steps", "train accuracy (%)", 102, "Table 1 rows as far as each was run (H200)",
              "upper left")
        ax.get_legend().set_bbox_to_anchor((1.01, 1.0))  # outside: the rows' curves fill the axes
    save(fig, args.out, "repro_selective_copying.png")
    print("wrote", os.path.join(args.out, "repro_induction_heads.png"), "and repro_selective_copying.png")


if __name__ == "__main__":
    main()

"""Induction heads / associative recall (Mamba paper, section 4.1.2, Table 2).

A special token appears twice; after its second occurrence (the last position) the model must output
the token that followed its first occurrence. Scored at the last position only. Fresh data every step
from (seed, step, rank); fixed seeded validation set at the training length.

``seqmamba eval task=induction_heads ckpt=...`` measures length extrapolation: accuracy on fixed
validation sets at lengths 2^eval.min_log2_len .. 2^eval.max_log2_len, with the batch size shrinking
as the length grows so memory stays bounded. It writes ``extrapolation.csv``, ``extrapolation.json``
and ``extrapolation.png`` (accuracy against log2 length, training length marked) to the run dir.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Any, Dict, List

import torch
from torch import nn

from seqmamba.data import synthetic
from seqmamba.atomic_write import atomic_open
from seqmamba.registry import TASKS
from seqmamba.train.distributed import is_rank0

from seqmamba.config_checks import ConfigValueError, config_get

from .synthetic_base import SyntheticLMTask

#: shortest sequence the task accepts: the trigger then has L - 2 >= 14 possible positions, so copying
#: the token at a fixed offset before the last one scores no better than guessing among 15 tokens
MIN_SEQ_LEN = 16


@TASKS.register("induction_heads")
class InductionHeadsTask(SyntheticLMTask):
    default_dataset = "induction_heads"
    supports_seq_len_warmup = True

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.data.seq_len < MIN_SEQ_LEN:
            raise ConfigValueError(
                f"dataset.seq_len={self.data.seq_len} is too short for induction heads; expected an integer "
                f">= {MIN_SEQ_LEN} (shorter sequences can be solved by copying from a fixed offset)")

    def set_seq_len(self, length: int) -> None:
        """Sequence-length warmup (``trainer.seq_len_warmup``): training batches drawn after this
        call have ``length`` tokens; validation stays at ``dataset.seq_len``."""
        self.train_data = dataclasses.replace(self.data, seq_len=int(length))

    def extrapolation_plan(self) -> List[Dict[str, int]]:
        """(length, n_samples, batch_size) per test length, from the ``eval`` config section.

        The samples per length shrink as ``eval.tokens_per_length / length`` (between
        ``eval.min_samples`` and ``eval.max_samples``) and the batch as
        ``eval.tokens_per_batch / length`` (at least 1), so time and memory stay bounded up to 2^20."""
        min_log2 = int(config_get(self.cfg, "eval.min_log2_len", 6))
        max_log2 = int(config_get(self.cfg, "eval.max_log2_len", 14))
        tokens_per_length = int(config_get(self.cfg, "eval.tokens_per_length", 2**19))
        min_samples = int(config_get(self.cfg, "eval.min_samples", 16))
        max_samples = int(config_get(self.cfg, "eval.max_samples", 1024))
        tokens_per_batch = int(config_get(self.cfg, "eval.tokens_per_batch", 2**16))
        plan = []
        for length in synthetic.extrapolation_lengths(min_log2, max_log2):
            n_samples = max(min_samples, min(max_samples, tokens_per_length // length))
            batch_size = max(1, min(n_samples, tokens_per_batch // length))
            plan.append({"length": length, "n_samples": n_samples, "batch_size": batch_size})
        return plan

    @torch.no_grad()
    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        results = super().eval_checkpoint(model, out_dir)  # the val set at the training length
        rows = []
        for item in self.extrapolation_plan():
            start = time.perf_counter()
            batches = synthetic.fixed_batches(
                self.data,
                self.val_seed,
                item["n_samples"],
                item["batch_size"],
                stream=synthetic.EXTRAPOLATION_STREAM,
                set_key=(item["length"],),
                seq_len=item["length"],
            )
            metrics = self.evaluate(model, batches)
            rows.append(
                {
                    "length": item["length"],
                    "log2_length": item["length"].bit_length() - 1,
                    "acc": metrics["acc"],
                    "loss": metrics["loss"],
                    "n_samples": item["n_samples"],
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
            if is_rank0():
                print(_format_row(rows[-1], self.data.seq_len), flush=True)
        results["extrapolation"] = rows
        if is_rank0():  # evaluation is collective; the files are written once
            write_extrapolation_report(rows, self.data.seq_len, out_dir)
        return results


def _format_row(row: Dict[str, Any], train_len: int) -> str:
    mark = "  <- training length" if row["length"] == train_len else ""
    return (
        f"length 2^{row['log2_length']:<2d} = {row['length']:>8d}  acc {100 * row['acc']:6.2f}%  "
        f"({row['n_samples']} samples, {row['seconds']:.1f}s){mark}"
    )


def write_extrapolation_report(rows: List[Dict[str, Any]], train_len: int, out_dir: str) -> None:
    """extrapolation.csv / .json and a plot of accuracy against length (log2 axis)."""
    os.makedirs(out_dir, exist_ok=True)
    fields = ["length", "log2_length", "acc", "loss", "n_samples", "seconds"]
    with atomic_open(os.path.join(out_dir, "extrapolation.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_open(os.path.join(out_dir, "extrapolation.json")) as f:
        json.dump({"train_length": train_len, "results": rows}, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["length"] for r in rows], [100 * r["acc"] for r in rows], marker="o", label="Mamba")
    ax.axvline(train_len, color="grey", linestyle="--", label=f"training length {train_len}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 102)
    ax.set_xlabel("test sequence length")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Induction heads: length extrapolation")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "extrapolation.png"), dpi=120)
    plt.close(fig)

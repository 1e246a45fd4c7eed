"""Small tasks and models for the evaluation tests (single process and ``ddp_eval_script.py``).

A synthetic induction-heads task with a seeded stand-in model (no scan: fast on any CPU) and a
classification task built on ``SequenceClassificationTask`` over the same token data.
"""
from __future__ import annotations

import torch
from torch import nn

from seqmamba.registry import TASKS
from seqmamba.tasks.classification import SequenceClassificationTask


class SeededLM(nn.Module):
    """Embedding -> linear next-token logits (batch, L, vocab); deterministic for a seed."""

    def __init__(self, vocab: int = 16, dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def features(self, input_ids):
        return torch.tanh(self.embedding(input_ids))

    def forward(self, input_ids):
        return self.out(self.features(input_ids))


class ParityClassification(SequenceClassificationTask):
    """Label = number of token 3 in the sequence, mod 3 (three classes)."""

    num_classes = 3
    vocab_size = 16
    class_names = ("zero", "one", "two")

    def build_backbone(self):
        return SeededLM(self.vocab_size, 8, seed=1)

    def _batch(self, size: int, g: torch.Generator):
        inputs = torch.randint(0, self.vocab_size, (size, 12), generator=g)
        return inputs, (inputs == 3).sum(dim=1) % 3

    def train_batches(self, start_step, rank=0, world_size=1):
        step = start_step
        while True:
            yield self._batch(4, torch.Generator().manual_seed(1000 * step + rank))
            step += 1

    def val_sets(self):
        g = torch.Generator().manual_seed(7)
        return {"val": [self._batch(s, g) for s in (5, 4, 6, 3, 5)], "one_batch": [self._batch(4, g)]}


def induction_cfg():
    return {"seed": 0, "task": {"name": "induction_heads", "val_samples": 45, "val_batch_size": 10},
            "dataset": {"name": "induction_heads", "vocab_size": 16, "seq_len": 24}, "trainer": {"batch_size": 4}}


def all_metrics():
    """{task: {set: metrics}} of both tasks on this process (collective under torchrun)."""
    import seqmamba.tasks  # noqa: F401

    out = {}
    task = TASKS.get("induction_heads")(induction_cfg())
    model = SeededLM(16, 8, seed=0).eval()
    out["induction_heads"] = {name: task.evaluate(model, batches) for name, batches in task.val_sets().items()}
    clf = ParityClassification({"seed": 0, "task": {"name": "parity"}, "model": {"d_model": 8}})
    model = clf.build_model().eval()
    out["parity"] = {name: clf.evaluate(model, batches) for name, batches in clf.val_sets().items()}
    return out

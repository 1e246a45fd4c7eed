"""A tiny in-test Task for the trainer tests (and the torchrun script): token regression.

Every training sample is generated from its own seed (seed, rank, sample index), so a batch is a
pure function of its index: resumed runs see the same data, and ``grad_accum_steps=2`` at batch
size B sees exactly the samples of one step at batch size 2B.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional

import torch
from torch import nn

from seqmamba.tasks.base import Task

VOCAB = 7


class TinyTokenRegressor(nn.Module):
    """Embedding -> MLP with dropout and LayerNorm -> mean over length; plus Mamba-named A_log / D."""

    def __init__(self, dim: int = 8, dropout: float = 0.1):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, dim)
        self.proj = nn.Linear(dim, 16)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 1)
        self.A_log = nn.Parameter(torch.zeros(4, 2))
        self.D = nn.Parameter(torch.ones(4))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(self.dropout(torch.tanh(self.proj(self.embedding(tokens)))))
        out = self.head(hidden).squeeze(-1).mean(-1)
        return out * self.D.mean() - self.A_log.exp().mean() + 1.0


class TinyRegressionTask(Task):
    supports_seq_len_warmup = True
    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(self, cfg, dropout: float = 0.1, nan_at_batch: Optional[int] = None,
                 crash_at_batch: Optional[int] = None):
        super().__init__(cfg)
        trainer_cfg = cfg.get("trainer", {}) if hasattr(cfg, "get") else {}
        self.batch_size = int(trainer_cfg.get("batch_size", 4) or 4)
        self.micro_batches = int(trainer_cfg.get("grad_accum_steps", 1) or 1)
        self.seed = int(cfg.get("seed", 0) or 0)
        self.dropout = dropout
        self.seq_len = 6
        self.nan_at_batch = nan_at_batch
        self.crash_at_batch = crash_at_batch
        self.seq_len_calls = []
        self.opened_at = []

    def build_model(self) -> nn.Module:
        return TinyTokenRegressor(dropout=self.dropout)

    def set_seq_len(self, seq_len) -> None:
        self.seq_len_calls.append(seq_len)
        self.seq_len = seq_len

    def _sample(self, generator_seed: int):
        g = torch.Generator().manual_seed(generator_seed)
        tokens = torch.randint(0, VOCAB, (self.seq_len,), generator=g)
        target = (tokens.float() / VOCAB).mean() + 0.05 * torch.randn((), generator=g)
        return tokens, target

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator[Dict]:
        self.opened_at.append(start_step)
        index = start_step * self.micro_batches  # the contract: grad_accum_steps micro-batches per step
        while True:
            if self.crash_at_batch is not None and index == self.crash_at_batch:
                raise RuntimeError(f"simulated crash at batch {index}")
            samples = [
                self._sample(self.seed * 1_000_003 + rank * 100_003 + index * self.batch_size + i)
                for i in range(self.batch_size)
            ]
            yield {
                "tokens": torch.stack([s[0] for s in samples]),
                "target": torch.stack([s[1] for s in samples]),
                "index": index,
            }
            index += 1

    def val_sets(self):
        g = torch.Generator().manual_seed(12345)
        batches = [
            {"tokens": torch.randint(0, VOCAB, (8, 6), generator=g), "target": torch.rand(8, generator=g)}
            for _ in range(2)
        ]
        return {"val": batches}

    def training_step(self, model, batch):
        pred = model(batch["tokens"])
        self.last_pred_dtype = pred.dtype  # lets the GPU test see autocast at work
        loss = nn.functional.mse_loss(pred.float(), batch["target"])
        if self.nan_at_batch is not None and batch["index"] == self.nan_at_batch:
            loss = loss * float("nan")
        return loss, {"mae": (pred - batch["target"]).abs().mean().detach()}

    def eval_step(self, model, batch):
        torch.rand(3)  # consumes the global RNG on purpose: evaluation must not shift training
        pred = model(batch["tokens"])
        return {"sq_sum": ((pred.float() - batch["target"]) ** 2).sum(), "count": batch["target"].numel()}

    def reduce_metrics(self, sums):
        loss = float(sums["sq_sum"]) / float(sums["count"])
        return {"loss": loss, "score": 1.0 / (1.0 + loss)}

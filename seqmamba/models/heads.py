"""Heads that sit on a backbone's (batch, L, d_model) features, registered in seqmamba.registry.HEADS."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..registry import HEADS

POOLINGS = ("last", "mean", "first", "max")


def pool_sequence(hidden: torch.Tensor, pooling: str = "last", mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(batch, L, d) -> (batch, d). ``mask`` (batch, L) bool/0-1 marks the real tokens (right padding assumed
    for "last": the last real token of each row is used)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if mask is None:
        if pooling == "last":
            return hidden[:, -1]
        if pooling == "first":
            return hidden[:, 0]
        if pooling == "mean":
            return hidden.mean(dim=1)
        return hidden.max(dim=1).values
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(hidden.shape[:2])}")
    mask = mask.to(torch.bool)
    if pooling == "last":
        last = mask.long().cumsum(dim=1).argmax(dim=1)  # index of the last True in each row
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "first":
        first = mask.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1).values


@HEADS.register("sequence_classification")
class SequenceClassificationHead(nn.Module):
    """Pool the sequence (last / mean / first / max), then dropout + linear to ``num_classes`` logits."""

    def __init__(self, d_model: int, num_classes: int, pooling: str = "last", dropout: float = 0.0,
                 device=None, dtype=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.classifier(self.dropout(pool_sequence(hidden, self.pooling, mask)))


@HEADS.register("next_token")
class NextTokenHead(nn.Module):
    """Linear projection of every position to vocabulary logits (untied; MambaLM has its own tied head)."""

    def __init__(self, d_model: int, vocab_size: int, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=bias, device=device, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)

"""Next-token prediction: the base of every language-model task (synthetic recall, HG38, SC09).

Batch: a tuple ``(inputs, targets)`` of LongTensors. ``inputs`` is (B, L). ``targets`` is (B, T)
with T <= L and covers the LAST T positions: ``targets[:, j]`` is the token that should follow
``inputs[:, L - T + j]``. T = L is ordinary language modelling (targets = inputs shifted by one);
T < L scores a few last positions (the synthetic tasks). A target of -100 is ignored (padding,
N windows of a genome), in the loss and in every count.

Metrics: loss (nats per scored token), acc, ppl = exp(loss), bits_per_token = loss / ln 2. Sums in
``eval_step``: loss_sum, correct, count (scored tokens).
"""
from __future__ import annotations

import inspect
import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.config_checks import as_plain_dict, config_get
from seqmamba.registry import BACKBONES

from .base import Task

IGNORE_INDEX = -100


def _accepts_num_last_tokens(model: nn.Module) -> bool:
    from seqmamba.train.distributed import unwrap_model

    try:
        return "num_last_tokens" in inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def model_logits(model: nn.Module, input_ids: torch.Tensor, n_scored: int = 0) -> torch.Tensor:
    """Logits of ``model`` on ``input_ids``; backbones return logits or an object with ``.logits``.

    With ``n_scored`` > 0 and a backbone that takes mamba_ssm's ``num_last_tokens``, only the last
    ``n_scored`` positions go through the LM head (what long extrapolation sequences need)."""
    if 0 < n_scored < input_ids.shape[-1] and _accepts_num_last_tokens(model):
        out = model(input_ids, num_last_tokens=n_scored)
    else:
        out = model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def scored_logits(logits: torch.Tensor, n_scored: int, vocab_size: int) -> torch.Tensor:
    """(batch, L, padded_vocab) -> (batch, n_scored, vocab_size) in fp32: the last positions, real classes.

    The class axis stays last throughout; cross-entropy gets (rows, vocab) rows, so the class and
    position axes can never be swapped silently (which hides when vocab == n_scored)."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits of shape (batch, L, vocab), got {tuple(logits.shape)}")
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} classes, fewer than the task's vocab_size={vocab_size}")
    if logits.shape[1] < n_scored:
        raise ValueError(f"logits cover {logits.shape[1]} positions, fewer than the {n_scored} scored ones")
    return logits[:, -n_scored:, :vocab_size].float()


class NextTokenTask(Task):
    """Cross-entropy of next-token logits against ``targets`` (see the module docstring).

    Subclasses set ``self.vocab_size`` in ``__init__`` and supply the data (``train_batches``,
    ``val_sets``); the model is ``BACKBONES.get(cfg.model.name)(**cfg.model, vocab_size=vocab_size)``."""

    vocab_size: int = 0

    def build_model(self) -> nn.Module:
        import seqmamba.models  # noqa: F401  (importing registers the backbones)

        params = as_plain_dict(config_get(self.cfg, "model", {}))
        name = params.pop("name", "mamba_lm")
        if self.vocab_size < 1:
            raise ValueError(f"task {self.name or type(self).__name__!r} did not set vocab_size")
        params["vocab_size"] = self.vocab_size
        return BACKBONES.get(name)(**params)

    def scored(self, model: nn.Module, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """(fp32 logits (rows, vocab_size), targets (rows,)) of the scored positions, -100 included."""
        inputs, targets = batch
        if targets.dim() != 2 or inputs.dim() != 2 or targets.shape[0] != inputs.shape[0] \
                or targets.shape[1] > inputs.shape[1]:
            raise ValueError(f"task {self.name!r}: batch must be (inputs (B, L), targets (B, T <= L)), got "
                             f"{tuple(inputs.shape)} and {tuple(targets.shape)}")
        n_scored = targets.shape[1]
        logits = scored_logits(model_logits(model, inputs, n_scored), n_scored, self.vocab_size)
        return logits.reshape(-1, self.vocab_size), targets.reshape(-1)

    def training_step(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logits, targets = self.scored(model, batch)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
        valid = targets != IGNORE_INDEX
        hits = (logits.detach().argmax(dim=-1) == targets) & valid
        acc = hits.sum() / valid.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "acc": acc.detach()}

    def eval_step(self, model: nn.Module, batch) -> Dict[str, torch.Tensor]:
        logits, targets = self.scored(model, batch)
        valid = targets != IGNORE_INDEX
        loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((logits.argmax(dim=-1) == targets) & valid).sum()
        return {"loss_sum": loss_sum, "correct": correct, "count": valid.sum()}

    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        metrics = super().reduce_metrics(sums)
        metrics["ppl"] = math.exp(min(metrics["loss"], 700.0))
        metrics["bits_per_token"] = metrics["loss"] / math.log(2)
        return metrics

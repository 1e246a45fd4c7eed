"""The contract between a task and the trainer.

A task binds the lower layers together: which dataset, which backbone and head, the loss and the
metrics, and any extra verbs (length-extrapolation eval, generation). The trainer in
``seqmamba.train`` knows nothing else about a task than this class.

Reproducibility contract: ``train_batches(start_step, rank, world_size)`` must yield exactly the
same batches for the same (seed, start_step, rank, world_size), so a run resumed at step k sees the
batches the uninterrupted run would have seen from step k on. On-the-fly tasks seed a generator
from (seed, step, rank); dataset tasks use a seeded permutation and skip ahead.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Mapping, Tuple

import torch
from torch import nn

Batch = Any


class Task:
    """Base class; subclasses are registered with ``@TASKS.register("name")``.

    ``cfg`` is the full run config (an OmegaConf DictConfig or a plain mapping): the task reads its
    own section ``cfg.task`` plus ``cfg.model`` and ``cfg.dataset``; ``cfg.seed`` seeds everything.
    """

    #: metric the trainer uses to pick ``best.pt`` and whether larger is better
    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(self, cfg: Mapping):
        self.cfg = cfg

    # -- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    # -- data ------------------------------------------------------------------------------
    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Infinite iterator of this rank's training batches, beginning at global step ``start_step``.

        With gradient accumulation it yields ``cfg.trainer.grad_accum_steps`` micro-batches per step.
        Tasks that support sequence-length warmup (``trainer.seq_len_warmup``) define an optional
        ``set_seq_len(length)`` method; the trainer calls it at each scheduled step and then reopens
        this iterator at that step, so batches drawn afterwards have the new length."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_batches()")

    def val_sets(self) -> Dict[str, Iterable[Batch]]:
        """Fixed held-out sets by name (e.g. {"val": ...}); the trainer evaluates each periodically.
        Metrics are reported as f"{name}/{metric}"."""
        return {}

    # -- loss and metrics --------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Return (scalar loss to backpropagate, detached scalar metrics for logging)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step()")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> Dict[str, float]:
        """Metrics over a whole held-out set (sums of correct / counts, not means of means)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def move_to(self, batch: Batch, device: torch.device) -> Batch:
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.move_to(b, device) for b in batch)
        if isinstance(batch, dict):
            return {k: self.move_to(v, device) for k, v in batch.items()}
        return batch

    # -- extra verbs ---------------------------------------------------------------------------
    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        """``seqmamba eval``: default is every val set; tasks override (e.g. length extrapolation)."""
        return {name: self.evaluate(model, batches) for name, batches in self.val_sets().items()}

    def generate(self, model: nn.Module, out_dir: str) -> Any:
        """``seqmamba generate``; only generative tasks implement it."""
        raise NotImplementedError(f"task {type(self).__name__} has no generate verb")

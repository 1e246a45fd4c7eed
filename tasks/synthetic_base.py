"""What the two synthetic tasks share: next-token tasks scored at a few last positions.

Both tasks feed a token sequence to a backbone from BACKBONES (``MambaLM`` by default) and read its
next-token logits at the last ``n_scored`` positions only: the marker positions of selective copying,
the final position of induction heads. Their batches are ``(inputs (B, L), targets (B, n_scored))``,
which :class:`~tasks.next_token.NextTokenTask` scores at the last ``n_scored`` positions.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F

from seqmamba.config_checks import as_plain_dict, check_int, config_get
from seqmamba.data import synthetic
from seqmamba.data.streams import Prefetcher
from seqmamba.registry import DATASETS

from .next_token import NextTokenTask, model_logits, scored_logits

__all__ = ["SyntheticLMTask", "scored_loss_and_correct", "model_logits", "scored_logits", "config_get",
           "as_plain_dict"]


def scored_loss_and_correct(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the scored positions and a (batch, n_scored) bool tensor of hits."""
    n_scored = targets.shape[1]
    scored = scored_logits(logits, n_scored, vocab_size)
    if scored.shape[:2] != targets.shape:
        raise ValueError(f"scored logits {tuple(scored.shape)} do not match targets {tuple(targets.shape)}")
    loss = F.cross_entropy(scored.reshape(-1, vocab_size), targets.reshape(-1))
    correct = scored.argmax(dim=-1) == targets
    return loss, correct


class SyntheticLMTask(NextTokenTask):
    """Base of the synthetic tasks: seeded on-the-fly training data, fixed validation sets, scored
    by accuracy at the last positions; not generative."""

    monitor = "val/acc"
    monitor_mode = "max"
    generative = False
    #: name of the dataset generator in DATASETS; subclasses set it
    default_dataset = ""

    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        if not self.name:
            self.name = self.default_dataset
        dataset_cfg = as_plain_dict(config_get(cfg, "dataset", {}))
        dataset_name = dataset_cfg.pop("name", self.default_dataset)
        self.data = DATASETS.get(dataset_name)(**dataset_cfg)
        # what training batches are drawn from; tasks with sequence-length warmup swap it
        self.train_data = self.data
        self.vocab_size = self.data.vocab_size
        self.seed = check_int("seed", config_get(cfg, "seed", 0), minimum=0)
        self.batch_size = check_int("trainer.batch_size", config_get(cfg, "trainer.batch_size", 32), minimum=1)
        self.micro_batches = check_int("trainer.grad_accum_steps", config_get(cfg, "trainer.grad_accum_steps", 1),
                                       minimum=1)
        self.val_samples = check_int("task.val_samples", config_get(cfg, "task.val_samples", 1024), minimum=1)
        self.val_batch_size = check_int("task.val_batch_size", config_get(cfg, "task.val_batch_size", 256),
                                        minimum=1)
        # the validation sets come from their own seed, so changing the training seed keeps them
        self.val_seed = check_int("task.val_seed", config_get(cfg, "task.val_seed", 1234), minimum=0)
        self._val_sets = None

    # -- data -------------------------------------------------------------------------------
    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1):
        stream = synthetic.training_stream(
            self.train_data, self.seed, start_step, rank, self.batch_size, micro_batches=self.micro_batches
        )
        # the next batches are drawn on a thread while the device runs this step (the stream is a pure
        # function of (seed, step, rank), so this changes no batch)
        return Prefetcher(stream, depth=2, pin_memory=True)

    def val_sets(self) -> Dict[str, Sequence]:
        if self._val_sets is None:  # generated once; the trainer asks at every evaluation
            self._val_sets = {
                "val": synthetic.fixed_batches(self.data, self.val_seed, self.val_samples, self.val_batch_size)
            }
        return self._val_sets

    # -- metrics ----------------------------------------------------------------------------
    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """loss and acc only: perplexity of a recall answer says nothing the accuracy does not."""
        metrics = super().reduce_metrics(sums)
        return {"loss": metrics["loss"], "acc": metrics["acc"]}

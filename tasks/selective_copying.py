"""Selective copying (Mamba paper, section 4.1.1, Table 1).

Noise tokens with ``dataset.n_tokens`` data tokens at random positions, then as many marker tokens;
the model must output the data tokens, in order, at the marker positions. Loss and accuracy count
only those positions. Training data is generated on the fly from (seed, step, rank); the validation
set is fixed (``task.val_seed``, ``task.val_samples``).
"""
from __future__ import annotations

from seqmamba.registry import TASKS

from .synthetic_base import SyntheticLMTask


@TASKS.register("selective_copying")
class SelectiveCopyingTask(SyntheticLMTask):
    default_dataset = "selective_copying"

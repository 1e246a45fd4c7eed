"""The trainer shared by every task, in small replaceable parts.

- ``trainer.py``     the loop: :class:`Trainer` (``fit``, ``evaluate``) and :class:`TrainingError`
- ``optim.py``       AdamW / Adam with decay and no-decay parameter groups
- ``schedule.py``    cosine / linear / constant with linear warmup
- ``checkpoint.py``  atomic checkpoints that load with ``weights_only=True``
- ``seeding.py``     seeds and RNG-state capture / restore
- ``run_log.py``     the run's log: metrics.jsonl / metrics.csv / TensorBoard, and ``plot_curves``
- ``settings.py``    TrainerSettings: every trainer.* default and its check
- ``evaluation.py``  evaluation at the run's precision (the trainer and ``seqmamba eval``)
- ``distributed.py`` torchrun process groups, rank-0 helpers, DDP wrapping
"""
from .checkpoint import atomic_torch_save, load_checkpoint, load_model_weights
from .run_log import MetricsLogger, plot_curves, read_metrics
from .optim import build_optimizer, split_decay_groups
from .schedule import build_scheduler, lr_multiplier
from .seeding import seed_everything
from .trainer import Trainer, TrainingError

__all__ = [
    "Trainer",
    "TrainingError",
    "MetricsLogger",
    "plot_curves",
    "read_metrics",
    "build_optimizer",
    "split_decay_groups",
    "build_scheduler",
    "lr_multiplier",
    "seed_everything",
    "atomic_torch_save",
    "load_checkpoint",
    "load_model_weights",
]

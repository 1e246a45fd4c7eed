"""Learning-rate schedules as a multiplier of the base lr, per optimizer step.

All schedules share a linear warmup: the first optimizer step runs at ``lr / warmup`` and step
``warmup - 1`` reaches the full lr (so no step is wasted at lr 0). After warmup:

- ``cosine``: half a cosine from 1 down to ``min_lr_ratio`` at ``max_steps``;
- ``linear``: a straight line from 1 down to ``min_lr_ratio`` at ``max_steps``;
- ``constant``: 1.

The multiplier is a closure, not a callable object, on purpose: LambdaLR then stores only its step
counter in a checkpoint, and a resumed run recomputes the schedule from its own config.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

SCHEDULES = ("cosine", "linear", "constant")


def resolve_warmup_steps(sched_cfg: Mapping[str, Any], max_steps: int) -> int:
    warmup_steps = sched_cfg.get("warmup_steps", None)
    warmup_ratio = sched_cfg.get("warmup_ratio", None)
    if warmup_steps is not None and warmup_ratio is not None and float(warmup_ratio) > 0 and int(warmup_steps) > 0:
        raise ValueError(
            f"scheduler.warmup_steps={warmup_steps} and scheduler.warmup_ratio={warmup_ratio} are both set; set one"
        )
    if warmup_ratio is not None and float(warmup_ratio) > 0:
        if not 0.0 <= float(warmup_ratio) <= 1.0:
            raise ValueError(f"scheduler.warmup_ratio={warmup_ratio} must lie in [0, 1]")
        return int(round(float(warmup_ratio) * max_steps))
    steps = int(warmup_steps or 0)
    if steps < 0:
        raise ValueError(f"scheduler.warmup_steps={steps} must be >= 0")
    return steps


def lr_multiplier(name: str, max_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """``f(step) -> factor`` for the optimizer step ``step`` (0-based)."""
    name = str(name).lower()
    if name not in SCHEDULES:
        raise ValueError(f"scheduler.name={name!r} is not supported; expected one of {', '.join(SCHEDULES)}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"scheduler.min_lr_ratio={min_lr_ratio} must lie in [0, 1]")
    decay_steps = max(1, max_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        if name == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # linear
            shape = 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, sched_cfg: Mapping[str, Any], max_steps: int):
    """LambdaLR over ``optimizer``; ``sched_cfg`` keys: name, warmup_steps or warmup_ratio, min_lr_ratio."""
    name = sched_cfg.get("name", "cosine") or "cosine"
    warmup = resolve_warmup_steps(sched_cfg, max_steps)
    min_ratio = float(sched_cfg.get("min_lr_ratio", 0.0) or 0.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(name, max_steps, warmup, min_ratio))

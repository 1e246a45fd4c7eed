"""Evaluation at the run's precision, shared by the trainer's periodic eval and ``seqmamba eval``.

Both call :func:`evaluation_mode`, so a checkpoint evaluated by ``seqmamba eval`` gives the metrics
the trainer logged for it (same autocast dtype, eval mode, no_grad). The training RNG streams are
saved and restored around it, so evaluating never shifts training.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Mapping, Optional

import torch
from torch import nn

from .seeding import preserved_rng_state


def add_sums(total: Dict[str, torch.Tensor], step: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """``total += step`` key by key, in float64 on the value's device (no host sync)."""
    for key, value in step.items():
        value = torch.as_tensor(value).detach()
        value = value.to(torch.float64) if value.device.type != "mps" else value.float()
        total[key] = value if key not in total else total[key] + value.to(total[key].device)
    return total


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``trainer.precision`` on ``device``, or None for plain fp32.
    Autocast runs on CUDA only: on a CPU every precision is fp32 (a warning if bf16/fp16 was asked)."""
    import logging

    name = str(precision or "auto").lower()
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"trainer.precision={precision!r} is not supported; expected auto, fp32, bf16 or fp16")
    if name == "fp32":
        return None
    if device.type != "cuda":
        if name != "auto":
            logging.getLogger("seqmamba.train").warning("trainer.precision=%s needs CUDA; running in fp32 on %s",
                                                        name, device)
        return None
    if name == "fp16":
        return torch.float16
    if name == "auto" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype], cache_enabled: bool = True):
    """``cache_enabled=False`` under CUDA-graph capture (the cast-weight cache must not outlive it)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, dtype: Optional[torch.dtype], device: Optional[torch.device] = None
                    ) -> Iterator[nn.Module]:
    """``model`` in eval mode under no_grad and autocast(``dtype``), RNG state preserved; the
    previous train/eval mode comes back afterwards."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with preserved_rng_state(), torch.no_grad(), autocast(device, dtype):
            yield model
    finally:
        model.train(was_training)


def evaluate_sets(task: Any, model: nn.Module, dtype: Optional[torch.dtype]) -> Dict[str, float]:
    """Every ``task.val_sets()`` entry through ``task.evaluate``: ``{"<set>/<metric>": value}``.
    Collective under torch.distributed (every rank calls it)."""
    results: Dict[str, float] = {}
    with evaluation_mode(model, dtype):
        for set_name, batches in task.val_sets().items():
            for metric, value in task.evaluate(model, batches).items():
                results[f"{set_name}/{metric}"] = float(value)
    return results

"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

Write path: ``torch.save`` through ``seqmamba.atomic_write.atomic_open`` (temporary file,
fsync, ``os.replace``). A crash at any moment leaves either the old checkpoint or the new one, never
a torn file; a failed write removes its temporary file, and temporary names
(``.<name>.tmp-<pid>-<random>``) never end in ``.pt`` so nothing mistakes them for checkpoints.

Contents (only tensors and primitive containers, so the safe loader accepts them):
``format_version, step, model, optimizer, scheduler, grad_scaler, rng (one entry per rank),
best_metric, best_step, monitor, world_size, config (resolved YAML text)``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from seqmamba.atomic_write import atomic_open

FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


# -- whole training state ----------------------------------------------------------------------------
def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with the safe unpickler; a clear error if the file is missing or not ours.
    Every loader (resume, ``seqmamba eval`` / ``generate``) comes through here."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn/foreign files raise many types; name the file in one line
        raise RuntimeError(f"checkpoint {path!r} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"checkpoint {path!r} is not a seqmamba checkpoint (no 'model' entry)")
    return ckpt


def load_model_weights(model: nn.Module, path: str, strict: bool = True) -> Dict[str, Any]:
    """Load only the model weights of a checkpoint into ``model`` (for eval / generate).
    Returns the checkpoint dict (for its step, config, metrics)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    model.load_state_dict(ckpt["model"], strict=strict)
    return ckpt


def make_checkpoint(
    *,
    step: int,
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    scheduler: Any,
    grad_scaler: Any,
    rng_states: List[Dict[str, Any]],
    best_metric: Optional[float],
    best_step: Optional[int],
    monitor: str,
    config_yaml: str,
) -> Dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        "rng": list(rng_states),
        "world_size": len(rng_states),
        "best_metric": None if best_metric is None else float(best_metric),
        "best_step": None if best_step is None else int(best_step),
        "monitor": str(monitor),
        "config": config_yaml,
    }

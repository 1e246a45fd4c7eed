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
    if os.path.isdir(path):  # a run directory or its checkpoints/: name the files in it
        found = sorted(os.path.relpath(os.path.join(root, name), path) for root, _, names in os.walk(path)
                       for name in names if name.endswith(".pt"))
        hint = (f"; it holds {', '.join(found[:6])}{' ...' if len(found) > 6 else ''}: pass one of them"
                if found else "; no .pt file in it")
        raise FileNotFoundError(f"checkpoint {path} is a directory, not a checkpoint file{hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn/foreign files raise many types; name the file in one line
        raise RuntimeError(f"checkpoint {path!r} could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RuntimeError(f"checkpoint {path!r} is not a seqmamba checkpoint (no 'model' entry)")
    return ckpt


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model built from the current config (the message names the model
    settings that differ and the overrides that build the checkpoint's model)."""


def load_model_weights(model: nn.Module, path: str, strict: bool = True, model_cfg: Any = None) -> Dict[str, Any]:
    """Load only the model weights of a checkpoint into ``model`` (for eval / generate / resume).
    Returns the checkpoint dict (for its step, config, metrics). Weights of another model raise
    :class:`CheckpointMismatchError`, comparing the checkpoint's saved ``model`` config with ``model_cfg`` (the
    config ``model`` was built from) when given."""
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        model.load_state_dict(ckpt["model"], strict=strict)
    except RuntimeError as err:
        raise CheckpointMismatchError(model_mismatch_message(path, ckpt.get("config"), model_cfg, err)) from None
    return ckpt


_UNSET = object()


def _flatten(node: Any, prefix: str) -> Dict[str, Any]:
    """{dotted key: value} of a nested dict; lists (and empty dicts) stay whole values."""
    if isinstance(node, dict) and node:
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: node}


def model_config_differences(saved_config_yaml: Optional[str], model_cfg: Any) -> Optional[List[tuple]]:
    """(dotted key, value in the checkpoint's config, value in ``model_cfg``) for every ``model.*`` setting that
    differs, _UNSET where one side lacks it; None when there is nothing to compare (no readable saved config, or no
    ``model_cfg``)."""
    from omegaconf import OmegaConf

    if not saved_config_yaml or model_cfg is None:
        return None
    try:
        saved = OmegaConf.to_container(OmegaConf.create(saved_config_yaml), resolve=True).get("model") or {}
        node = model_cfg if OmegaConf.is_config(model_cfg) else OmegaConf.create(dict(model_cfg))
        now = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an older or foreign config: nothing to compare
        return None
    a, b = _flatten(saved, "model"), _flatten(now, "model")
    return [(key, a.get(key, _UNSET), b.get(key, _UNSET)) for key in sorted(set(a) | set(b))
            if a.get(key, _UNSET) != b.get(key, _UNSET)]


def _override_value(value: Any) -> str:
    """A config value as a Hydra override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def model_mismatch_message(path: str, saved_config_yaml: Optional[str], model_cfg: Any, err: Exception) -> str:
    """One line: the checkpoint's weights do not fit the model this command builds, which model settings differ
    (checkpoint vs command) and the overrides that build the checkpoint's model."""
    torch_error = " ".join(str(err).split())
    diffs = model_config_differences(saved_config_yaml, model_cfg)
    if diffs is None:  # nothing to compare with
        return f"checkpoint {path} does not fit the model: {torch_error[:400]}"
    if not diffs:
        return (f"checkpoint {path} does not fit the model this command builds, and its saved model config does not "
                f"explain why (no difference in model.*): {torch_error[:400]}")
    shown = lambda v: "unset" if v is _UNSET else repr(v)  # noqa: E731
    what = "; ".join(f"{key}: {shown(saved)} in the checkpoint, {shown(now)} here" for key, saved, now in diffs)
    fixes = " ".join(f"~{key}" if saved is _UNSET else f"{'+' if now is _UNSET else ''}{key}={_override_value(saved)}"
                     for key, saved, now in diffs)
    count = f"{len(diffs)} model setting{'s differ' if len(diffs) > 1 else ' differs'}"
    return (f"checkpoint {path} holds a different model than this command builds ({count}: {what}); build the "
            f"checkpoint's model by adding: {fixes}")


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

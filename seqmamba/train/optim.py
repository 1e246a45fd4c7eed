"""Optimizer with two parameter groups: weights that decay and parameters that must not.

Weight decay pulls parameters towards zero. That is right for matrices, wrong for parameters whose
zero means something else: Mamba's ``A_log`` (zero is A = -1, a fixed decay rate) and ``D`` (the skip
gain), norm gains (zero switches a channel off) and biases. mamba_ssm flags the first two with
``param._no_weight_decay = True``; we honour that flag, the names, and every parameter of fewer than
two dimensions. Embedding tables decay by default (as in GPT-style training) unless
``optimizer.no_decay_embeddings`` is set.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import torch
from torch import nn

#: parameter leaf names that never decay, whatever their shape
NO_DECAY_NAMES = frozenset({"A_log", "D", "A", "dt_bias"})

OPTIMIZERS = ("adamw", "adam")


def _leaf_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def split_decay_groups(model: nn.Module, no_decay_embeddings: bool = False) -> Dict[str, List[str]]:
    """Names of trainable parameters in the ``decay`` and ``no_decay`` groups.

    A parameter shared by two modules (a tied embedding / lm_head) appears once, under the name
    ``named_parameters`` gives it first.
    """
    embedding_params = set()
    if no_decay_embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                embedding_params.add(id(module.weight))

    groups: Dict[str, List[str]] = {"decay": [], "no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = (
            getattr(param, "_no_weight_decay", False)
            or _leaf_name(name) in NO_DECAY_NAMES
            or param.ndim < 2  # biases, norm gains, scalars
            or id(param) in embedding_params
        )
        groups["no_decay" if no_decay else "decay"].append(name)
    return groups


def build_optimizer(model: nn.Module, opt_cfg: Mapping[str, Any], device_type: str = "cpu") -> torch.optim.Optimizer:
    """AdamW (or Adam) over the decay / no-decay groups of ``model``.

    ``opt_cfg`` keys (all optional): name (adamw | adam), lr, weight_decay, betas, eps,
    no_decay_embeddings, fused (default: True on CUDA). Each param group carries a ``name``.
    """
    name = str(opt_cfg.get("name", "adamw") or "adamw").lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={name!r} is not supported; expected one of {', '.join(OPTIMIZERS)}")
    lr = float(opt_cfg.get("lr", 1e-3))
    weight_decay = float(opt_cfg.get("weight_decay", 0.01) or 0.0)
    betas: Sequence[float] = tuple(float(b) for b in (opt_cfg.get("betas", None) or (0.9, 0.999)))
    if len(betas) != 2:
        raise ValueError(f"optimizer.betas={list(betas)} must hold two numbers, e.g. [0.9, 0.999]")
    eps = float(opt_cfg.get("eps", 1e-8) or 1e-8)
    fused = opt_cfg.get("fused", None)
    if fused is None:
        fused = device_type == "cuda"

    named = dict(model.named_parameters())
    split = split_decay_groups(model, bool(opt_cfg.get("no_decay_embeddings", False)))
    param_groups = [
        {"name": group, "params": [named[n] for n in names], "weight_decay": weight_decay if group == "decay" else 0.0}
        for group, names in split.items()
        if names
    ]
    if not param_groups:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    kwargs: Dict[str, Any] = dict(lr=lr, betas=betas, eps=eps)
    if fused:
        kwargs["fused"] = True
    return cls(param_groups, **kwargs)

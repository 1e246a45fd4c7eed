"""Sequence classification: a backbone's features, pooled, through a linear head.

Batch: ``(inputs LongTensor (B, L), labels LongTensor (B,))`` or ``(inputs, labels, mask)`` with a
(B, L) 0/1 mask of real tokens (right padding). The model is :class:`BackboneWithHead`: the backbone
``BACKBONES.get(cfg.model.name)`` (its LM head dropped) gives ``features(input_ids) -> (B, L, D)``,
``SequenceClassificationHead(D, num_classes, task.pooling)`` turns them into logits.

Config the task owns (``task.*``): ``pooling`` [last | mean | first | max], ``head_dropout`` [0.0],
``pretrained`` [null: a trainer checkpoint (``checkpoints/best.pt`` / ``last.pt``, a dict with
"model") or a ``save_pretrained`` directory whose backbone weights are loaded, LM head dropped, a
shape mismatch failing loudly], ``backbone_lr_scale`` [1.0: the backbone's learning rate relative to
the head's, through ``configure_optimizer``].

Metrics: loss, acc, balanced_acc (mean recall over the classes present), ``recall/<class>`` per class
present in the set; sums: loss_sum, correct, count, confusion (num_classes, num_classes), rows = truth.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.config_checks import as_plain_dict, check_choice, check_float, config_get
from seqmamba.registry import BACKBONES

from .base import Task


class BackboneWithHead(nn.Module):
    """``head(backbone.features(input_ids), mask)``; the backbone's own LM head (if any) is removed."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        if not callable(getattr(backbone, "features", None)):
            raise TypeError(f"backbone {type(backbone).__name__} has no features(input_ids) method")
        if isinstance(getattr(backbone, "lm_head", None), nn.Module):
            backbone.lm_head = None  # unused here: no gradient, no weight decay, no DDP "unused parameter"
        self.backbone = backbone
        self.head = head

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(input_ids)

    def forward(self, input_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.backbone.features(input_ids), mask)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        hook = getattr(self.backbone, "set_activation_checkpointing", None)
        if not callable(hook):
            raise ValueError(f"trainer.activation_checkpointing=true but backbone {type(self.backbone).__name__} "
                             f"has no set_activation_checkpointing")
        hook(enabled)


def backbone_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Backbone weights from a trainer checkpoint file or a ``save_pretrained`` directory, with the
    keys of the backbone module (LM head dropped; a BackboneWithHead checkpoint's head dropped)."""
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        from seqmamba.models.pretrained import read_checkpoint

        _, state = read_checkpoint(path)
    elif os.path.isfile(path):
        from seqmamba.train.checkpoint import load_checkpoint

        state = load_checkpoint(path)["model"]
    else:
        raise FileNotFoundError(f"task.pretrained={path!r}: no such file or directory (expected checkpoints/"
                                f"best.pt / last.pt of a run, or a save_pretrained directory)")
    if any(k.startswith("head.") for k in state):  # a classification checkpoint: keep its backbone
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith("lm_head.")}


def load_backbone(backbone: nn.Module, path: str) -> None:
    """Copy the weights at ``path`` into ``backbone``; any missing, unexpected or mis-shaped key fails,
    naming the first few."""
    state = backbone_state_dict(path)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = [f"{what} {items[:5]}{' ...' if len(items) > 5 else ''}"
                for what, items in (("wrong shapes", shapes), ("missing keys", missing), ("unexpected keys", unexpected))
                if items]
    if problems:
        raise ValueError(f"task.pretrained={path!r} does not fit the backbone built from cfg.model: "
                         + "; ".join(problems))
    backbone.load_state_dict(state, strict=True)


class SequenceClassificationTask(Task):
    """Base of classification tasks. Subclasses set ``self.num_classes`` (and ``self.class_names``,
    default "0".."C-1") and ``self.vocab_size`` in ``__init__``, and supply train_batches / val_sets."""

    monitor = "val/acc"
    monitor_mode = "max"
    generative = False
    num_classes: int = 0
    vocab_size: int = 0
    class_names: Sequence[str] = ()

    def names_of_classes(self) -> List[str]:
        return [str(n) for n in self.class_names] or [str(i) for i in range(self.num_classes)]

    # -- model ---------------------------------------------------------------------------------
    def build_backbone(self) -> nn.Module:
        import seqmamba.models  # noqa: F401  (importing registers the backbones)

        params = as_plain_dict(config_get(self.cfg, "model", {}))
        name = params.pop("name", "mamba_lm")
        params["vocab_size"] = self.vocab_size
        return BACKBONES.get(name)(**params)

    def build_model(self) -> nn.Module:
        from seqmamba.models.heads import SequenceClassificationHead

        if self.num_classes < 2 or self.vocab_size < 1:
            raise ValueError(f"task {self.name!r} must set num_classes >= 2 and vocab_size >= 1 "
                             f"(got {self.num_classes}, {self.vocab_size})")
        backbone = self.build_backbone()
        d_model = config_get(self.cfg, "model.d_model", None) or getattr(getattr(backbone, "config", None),
                                                                          "d_model", None)
        if d_model is None:
            raise ValueError(f"cannot tell the backbone's width: set model.d_model")
        pooling = check_choice("task.pooling", config_get(self.cfg, "task.pooling", "last"),
                               ("last", "mean", "first", "max"))
        dropout = check_float("task.head_dropout", config_get(self.cfg, "task.head_dropout", 0.0), 0.0, 1.0)
        model = BackboneWithHead(backbone, SequenceClassificationHead(int(d_model), self.num_classes, pooling,
                                                                      dropout))
        pretrained = config_get(self.cfg, "task.pretrained", None)
        if pretrained:
            load_backbone(model.backbone, str(pretrained))
        return model

    def configure_optimizer(self, model: nn.Module, device_type: str = "cpu") -> torch.optim.Optimizer:
        """The default optimizer, with the backbone's groups at ``task.backbone_lr_scale`` x the LR."""
        optimizer = super().configure_optimizer(model, device_type)
        scale = check_float("task.backbone_lr_scale", config_get(self.cfg, "task.backbone_lr_scale", 1.0),
                            minimum=0.0, accepted="a number >= 0 (the backbone's LR relative to the head's)")
        if scale == 1.0 or not isinstance(model, BackboneWithHead):
            return optimizer
        in_backbone = {id(p) for p in model.backbone.parameters()}
        groups = []
        for group in optimizer.param_groups:
            options = {k: v for k, v in group.items() if k != "params"}
            for part, keep, factor in (("backbone", True, scale), ("head", False, 1.0)):
                params = [p for p in group["params"] if (id(p) in in_backbone) == keep]
                if params:
                    groups.append({**options, "params": params, "name": f"{group.get('name', 'group')}/{part}",
                                   "lr": group["lr"] * factor})
        return type(optimizer)(groups, lr=optimizer.defaults["lr"])  # every other option rides in the groups

    # -- loss and metrics ----------------------------------------------------------------------
    def logits_and_labels(self, model: nn.Module, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = batch[0], batch[1]
        mask = batch[2] if len(batch) > 2 else None
        if labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
            raise ValueError(f"task {self.name!r}: labels must be (B,), got {tuple(labels.shape)} for inputs "
                             f"{tuple(inputs.shape)}")
        logits = model(inputs, mask) if mask is not None else model(inputs)
        return logits.float(), labels

    def training_step(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        logits, labels = self.logits_and_labels(model, batch)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    def eval_step(self, model: nn.Module, batch) -> Dict[str, torch.Tensor]:
        logits, labels = self.logits_and_labels(model, batch)
        predicted = logits.argmax(dim=-1)
        c = self.num_classes
        confusion = torch.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
        return {"loss_sum": F.cross_entropy(logits, labels, reduction="sum"),
                "correct": (predicted == labels).sum(), "count": labels.new_tensor(labels.numel()),
                "confusion": confusion}

    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        metrics = super().reduce_metrics(sums)
        confusion = sums["confusion"].double().cpu()
        support = confusion.sum(dim=1)
        recalls = []
        for index, name in enumerate(self.names_of_classes()):
            if support[index] > 0:  # classes absent from the set have no recall (balanced_acc says over which)
                recall = float(confusion[index, index] / support[index])
                metrics[f"recall/{name}"] = recall
                recalls.append(recall)
        metrics["balanced_acc"] = sum(recalls) / len(recalls) if recalls else float("nan")
        return metrics

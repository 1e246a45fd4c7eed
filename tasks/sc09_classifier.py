"""SC09 digit classifier on mel spectrograms: the scorer behind sc09's FID / IS / mIS / AM.

``seqmamba run task=sc09_classifier dataset.root=<SC09 folder>`` trains
:class:`seqmamba.models.sc09_classifier.MelCNNClassifier` on the train split (16-bit linear audio, so
the waveforms are the WAVs' own samples) with random time shifts and gains, monitors val/acc, and at
the end writes ``<run dir>/sc09_classifier.pt`` that ``task.classifier=...`` of the sc09 task loads.
Batch: ``(waves float (B, clip_length), labels (B,))``. Metrics: loss, acc, and ``recall/<digit>``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.config_checks import as_plain_dict, check_float, check_int, config_get
from seqmamba.data.sc09 import DIGITS
from seqmamba.models.sc09_classifier import MelCNNClassifier
from seqmamba.registry import TASKS

from .base import Task
from .sc09 import dataset_from_cfg, train_stream


@TASKS.register("sc09_classifier")
class SC09ClassifierTask(Task):
    monitor = "val/acc"
    monitor_mode = "max"
    generative = False

    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        self.seed = check_int("seed", config_get(cfg, "seed", 0), minimum=0)
        self.batch_size = check_int("trainer.batch_size", config_get(cfg, "trainer.batch_size", 32), minimum=1)
        self.micro_batches = check_int("trainer.grad_accum_steps", config_get(cfg, "trainer.grad_accum_steps", 1), 1)
        self.max_shift = check_float("task.max_shift_s", config_get(cfg, "task.max_shift_s", 0.1), minimum=0.0)
        self.sample_rate = int(config_get(cfg, "dataset.sample_rate", 16000))
        self._splits: Dict[str, Any] = {}

    def split(self, name: str):
        if name not in self._splits:
            limit = config_get(self.cfg, f"task.max_{name}_clips", None)
            self._splits[name] = dataset_from_cfg(self.cfg, name, None if limit is None else int(limit),
                                                  bits=16, quantization="linear")
        return self._splits[name]

    def build_model(self) -> nn.Module:
        params = as_plain_dict(config_get(self.cfg, "model", {}))
        params.pop("name", None)
        return MelCNNClassifier(**params)

    def _train_batch(self, idx: torch.Tensor, g: torch.Generator):
        data = self.split("train")
        waves = data.waveforms(idx)
        shift = int(self.max_shift * self.sample_rate)
        if shift:
            offsets = torch.randint(-shift, shift + 1, (len(idx),), generator=g)
            waves = torch.stack([torch.roll(w, int(o)) for w, o in zip(waves, offsets)])
        gains = torch.empty(len(idx)).uniform_(0.5, 1.5, generator=g)
        return waves * gains[:, None], data.labels[idx]

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1):
        return train_stream(self.split("train"), self.batch_size, self.seed, start_step, rank, self.micro_batches,
                            self._train_batch)

    def _eval_batches(self, name: str) -> Sequence:
        data = self.split(name)
        bs = check_int("task.val_batch_size", config_get(self.cfg, "task.val_batch_size", 128), minimum=1)
        return [(data.waveforms(range(s, min(s + bs, len(data)))), data.labels[s:s + bs])
                for s in range(0, len(data), bs)]

    def val_sets(self) -> Dict[str, Sequence]:
        return {"val": self._eval_batches("val")}

    def training_step(self, model, batch):
        waves, labels = batch
        logits = model(waves).float()
        loss = F.cross_entropy(logits, labels)
        acc = (logits.detach().argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}

    def eval_step(self, model, batch) -> Dict[str, torch.Tensor]:
        waves, labels = batch
        logits = model(waves).float()
        pred = logits.argmax(-1)
        confusion = torch.zeros(len(DIGITS), len(DIGITS), device=logits.device)
        confusion.index_put_((labels, pred), torch.ones_like(labels, dtype=confusion.dtype), accumulate=True)
        return {"loss_sum": F.cross_entropy(logits, labels, reduction="sum"), "correct": (pred == labels).sum(),
                "count": torch.tensor(len(labels), device=logits.device), "confusion": confusion}

    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        metrics = super().reduce_metrics(sums)
        confusion = sums["confusion"]
        for i, digit in enumerate(DIGITS):
            total = float(confusion[i].sum())
            if total > 0:
                metrics[f"recall/{digit}"] = float(confusion[i, i]) / total
        return metrics

    def eval_checkpoint(self, model, out_dir: str) -> Dict[str, Any]:
        from seqmamba.train.distributed import get_rank, unwrap_model

        results = {"val": self.evaluate(model, self._eval_batches("val")),
                   "test": self.evaluate(model, self._eval_batches("test"))}
        if get_rank() == 0:
            path = os.path.join(out_dir, "sc09_classifier.pt")
            os.makedirs(out_dir, exist_ok=True)
            unwrap_model(model).export(path)
            results["exported"] = path
            print(f"sc09_classifier: wrote {path} (use it as task.classifier={path} for seqmamba eval task=sc09)")
        return results

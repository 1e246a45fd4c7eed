"""Great Apes classification: which of five species a DNA window comes from (Mamba paper Figure 6).

Data (``dataset.*``, DATASETS "species_windows"): ``species_dir`` (null = the demo genomes),
``seq_len``, ``species``, ``val_chroms`` / ``test_chroms`` (chromosome splits), ``max_n_fraction``,
``rc_prob``. A sample: species uniformly, chromosome uniformly, window uniformly (seqmamba/data/species.py).

Model: a backbone (``cfg.model``) with a classification head on its features
(:class:`~tasks.classification.SequenceClassificationTask`); ``task.pretrained`` loads an hg38
checkpoint's backbone. Metrics: acc, balanced_acc, ``recall/<species>``; the final evaluation
(``eval_checkpoint``: the end of ``seqmamba run`` and ``seqmamba eval``) also writes the
scikit-learn confusion matrix of the validation set as ``confusion_val.csv`` and ``confusion_val.png``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from seqmamba.atomic_write import atomic_open
from seqmamba.config_checks import check_int, config_get
from seqmamba.data.dna_tokenizer import VOCAB_SIZE
from seqmamba.data.species import SpeciesDataset
from seqmamba.data.streams import TRAIN_STREAM, VALIDATION_STREAM, seeded_generator
from seqmamba.registry import DATASETS, TASKS

from .classification import SequenceClassificationTask
from .hg38 import embed_verb, resolve_demo_paths


@TASKS.register("great_apes")
class GreatApesTask(SequenceClassificationTask):
    supports_seq_len_warmup = True

    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        params = resolve_demo_paths(cfg, ("species_dir",))
        self.dataset_name = params.pop("name", "species_windows")
        self.seq_len = check_int("dataset.seq_len", params.pop("seq_len", 1024), minimum=2)
        self.dataset_params = params
        self.vocab_size = VOCAB_SIZE
        self.seed = check_int("seed", config_get(cfg, "seed", 0), minimum=0)
        self.batch_size = check_int("trainer.batch_size", config_get(cfg, "trainer.batch_size", 16), minimum=1)
        self.micro_batches = check_int("trainer.grad_accum_steps", config_get(cfg, "trainer.grad_accum_steps", 1),
                                       minimum=1)
        self.val_samples = check_int("task.val_samples", config_get(cfg, "task.val_samples", 512), minimum=1)
        self.val_batch_size = check_int("task.val_batch_size", config_get(cfg, "task.val_batch_size", 32), minimum=1)
        self.val_seed = check_int("task.val_seed", config_get(cfg, "task.val_seed", 1234), minimum=0)
        self._datasets: Dict[tuple, SpeciesDataset] = {}
        self.train_data = self.dataset("train", self.seq_len)
        self.class_names = list(self.train_data.species)
        self.num_classes = len(self.class_names)
        self._val_sets: Optional[Dict[str, List]] = None

    def dataset(self, split: str, seq_len: int) -> SpeciesDataset:
        key = (split, seq_len)
        if key not in self._datasets:
            params = dict(self.dataset_params)
            if split != "train":
                params["rc_prob"] = 0.0
            self._datasets[key] = DATASETS.get(self.dataset_name)(**params, seq_len=seq_len, split=split)
        return self._datasets[key]

    def set_seq_len(self, length: int) -> None:
        self.train_data = self.dataset("train", check_int("trainer.seq_len_warmup length", length, minimum=2))

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator:
        step, data = int(start_step), self.train_data
        while True:
            for micro in range(self.micro_batches):
                yield data.batch(self.batch_size, seeded_generator(self.seed, TRAIN_STREAM, step, rank, micro))
            step += 1

    def val_sets(self) -> Dict[str, Sequence]:
        if self._val_sets is None:  # from the validation seed alone: identical across runs and ranks
            data = self.dataset("valid", self.seq_len)
            sizes = [min(self.val_batch_size, self.val_samples - s) for s in range(0, self.val_samples,
                                                                                    self.val_batch_size)]
            self._val_sets = {"val": [data.batch(size, seeded_generator(self.val_seed, VALIDATION_STREAM, self.seq_len, i))
                                      for i, size in enumerate(sizes)]}
        return self._val_sets

    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        """Every val set's metrics, and its confusion matrix (scikit-learn) as CSV and PNG."""
        from seqmamba.train.distributed import is_rank0

        results: Dict[str, Any] = {}
        for (split, length), data in sorted(self._datasets.items()):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(data.counts.items()) if v) or "nothing skipped"
            print(f"great_apes data, {split} at L={length}: {sum(len(c) for c in data.chroms.values())} "
                  f"chromosomes of {len(data.species)} species; {counts}")
        for name, batches in self.val_sets().items():
            results[name] = self.evaluate(model, batches)
            if is_rank0():
                results[name]["confusion_files"] = self.write_confusion(model, batches, out_dir, name)
        return results

    @torch.no_grad()
    def write_confusion(self, model: nn.Module, batches: Sequence, out_dir: str, name: str) -> List[str]:
        from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

        from .base import model_device

        device = model_device(model)
        truth, predicted = [], []
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                logits, labels = self.logits_and_labels(model, self.move_to(batch, device))
                truth.append(labels.cpu())
                predicted.append(logits.argmax(dim=-1).cpu())
        finally:
            model.train(was_training)
        y, p = torch.cat(truth).numpy(), torch.cat(predicted).numpy()
        labels = list(range(self.num_classes))
        matrix = confusion_matrix(y, p, labels=labels)
        os.makedirs(out_dir, exist_ok=True)
        csv_path = os.path.join(out_dir, f"confusion_{name}.csv")
        with atomic_open(csv_path) as f:
            f.write("truth\\predicted," + ",".join(self.class_names) + "\n")
            for i, row in enumerate(matrix):
                f.write(self.class_names[i] + "," + ",".join(str(int(v)) for v in row) + "\n")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 5))
        ConfusionMatrixDisplay(matrix, display_labels=self.class_names).plot(ax=ax, colorbar=False, cmap="Blues")
        acc = float(np.trace(matrix)) / max(1, int(matrix.sum()))
        ax.set_title(f"great_apes {name}: L={self.seq_len}, accuracy {acc:.3f}")
        fig.tight_layout()
        png_path = os.path.join(out_dir, f"confusion_{name}.png")
        with atomic_open(png_path, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
        plt.close(fig)
        return [csv_path, png_path]

    def embed(self, model: nn.Module, cfg: Mapping, out_path: str) -> Dict[str, Any]:
        return embed_verb(self, model, cfg, out_path)

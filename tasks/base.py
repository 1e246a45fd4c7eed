"""The contract between a task and the trainer.

A task binds the lower layers together: which dataset, which backbone and head, the loss and the
metrics, and any extra verbs (length-extrapolation eval, generation). The trainer in
``seqmamba.train`` knows nothing else about a task than this class.

Reproducibility contract: ``train_batches(start_step, rank, world_size)`` must yield exactly the
same batches for the same (seed, start_step, rank, world_size), so a run resumed at step k sees the
batches the uninterrupted run would have seen from step k on. On-the-fly tasks seed a generator
from (seed, step, rank); dataset tasks use a seeded permutation and skip ahead.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from seqmamba.atomic_write import atomic_open

Batch = Any


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Task:
    """Base class; subclasses are registered with ``@TASKS.register("name")``.

    ``cfg`` is the full run config (an OmegaConf DictConfig or a plain mapping): the task reads its
    own section ``cfg.task`` plus ``cfg.model`` and ``cfg.dataset``; ``cfg.seed`` seeds everything.
    """

    #: metric the trainer uses to pick ``best.pt`` and whether larger is better
    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(self, cfg: Mapping):
        self.cfg = cfg

    # -- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    # -- data ------------------------------------------------------------------------------
    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Infinite iterator of this rank's training batches, beginning at global step ``start_step``.

        With gradient accumulation it yields ``cfg.trainer.grad_accum_steps`` micro-batches per step.
        Tasks that support sequence-length warmup (``trainer.seq_len_warmup``) define an optional
        ``set_seq_len(length)`` method; the trainer calls it at each scheduled step and then reopens
        this iterator at that step, so batches drawn afterwards have the new length."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_batches()")

    def val_sets(self) -> Dict[str, Iterable[Batch]]:
        """Fixed held-out sets by name (e.g. {"val": ...}); the trainer evaluates each periodically.
        Metrics are reported as f"{name}/{metric}"."""
        return {}

    # -- loss and metrics --------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Return (scalar loss to backpropagate, detached scalar metrics for logging)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step()")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> Dict[str, float]:
        """Metrics over a whole held-out set (sums of correct / counts, not means of means)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def move_to(self, batch: Batch, device: torch.device) -> Batch:
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.move_to(b, device) for b in batch)
        if isinstance(batch, dict):
            return {k: self.move_to(v, device) for k, v in batch.items()}
        return batch

    # -- extra verbs ---------------------------------------------------------------------------
    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        """``seqmamba eval``: default is every val set; tasks override (e.g. length extrapolation)."""
        return {name: self.evaluate(model, batches) for name, batches in self.val_sets().items()}

    # -- generation (``seqmamba generate``) ------------------------------------------------------
    # The default works for any task whose model has ``generate`` (MambaLM and every model with a
    # recurrent cache): it samples ``n_samples`` continuations of ``generate.prompt`` with the
    # ``generate.*`` settings and writes them through ``write_samples``. A token-level LM task only
    # supplies ``encode_prompt`` / ``decode_tokens`` (and e.g. a FASTA ``write_samples``); tasks that
    # are scored rather than sampled override ``generate`` to refuse.

    def encode_prompt(self, prompt: str) -> List[int]:
        """Prompt text -> token ids. Default: whitespace-separated integers."""
        ids = []
        for word in prompt.split():
            try:
                ids.append(int(word))
            except ValueError:
                raise ValueError(f"generate.prompt: {word!r} is not a token id; task {type(self).__name__} "
                                 f"takes whitespace-separated integers") from None
        return ids

    def decode_tokens(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    def write_samples(self, samples: List[str], out_dir: str) -> List[str]:
        """Write the decoded samples (one per line of ``samples.txt``); return the paths written."""
        path = os.path.join(out_dir, "samples.txt")
        with atomic_open(path) as f:
            f.writelines(sample + "\n" for sample in samples)
        return [path]

    @torch.no_grad()
    def generate(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        if not callable(getattr(model, "generate", None)):
            raise NotImplementedError(f"task {type(self).__name__}: its model ({type(model).__name__}) "
                                      f"cannot generate")
        gen = dict(self.cfg.get("generate") or {})
        n_samples = int(self.cfg.get("n_samples", 16))
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        prompt = self.encode_prompt(str(gen.pop("prompt", "") or ""))
        if not prompt:
            bos = getattr(self, "bos_token_id", None)
            if bos is None:
                raise ValueError(f"generate.prompt is empty and task {type(self).__name__} has no start token; "
                                 f"give a prompt, e.g. generate.prompt='1 2 3'")
            prompt = [bos]
        vocab = getattr(model, "vocab_size", None)
        bad = [t for t in prompt if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            raise ValueError(f"generate.prompt: token ids {bad} outside the vocabulary [0, {vocab})")
        batch_size = int(gen.pop("batch_size", None) or n_samples)
        max_new_tokens = int(gen.pop("max_new_tokens", 256))
        device = model_device(model)
        gen.setdefault("cg", device.type == "cuda")  # decode under a captured CUDA graph on the GPU
        generator = torch.Generator(device=device).manual_seed(int(self.cfg.get("seed", 0)))
        samples: List[str] = []
        for start in range(0, n_samples, batch_size):
            rows = min(batch_size, n_samples - start)
            ids = torch.tensor([prompt] * rows, dtype=torch.long, device=device)
            out = model.generate(ids, max_new_tokens, generator=generator, **gen)
            samples.extend(self.decode_tokens(row.tolist()) for row in out)
        paths = self.write_samples(samples, out_dir)
        return {"n_samples": len(samples), "prompt_tokens": len(prompt), "max_new_tokens": max_new_tokens,
                "files": paths}

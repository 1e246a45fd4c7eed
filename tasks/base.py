"""The contract between a task and the trainer / CLI (documented in notes/task_contract.md).

A task binds the lower layers together: which dataset, which backbone and head, the loss and the
metrics, and the extra verbs (``seqmamba eval``, ``generate``, ``embed``). The trainer and the CLI
know nothing else about a task than the members declared here; nothing is looked up with getattr.

Reproducibility: ``train_batches(start_step, rank, world_size)`` yields exactly the same batches for
the same (seed, start_step, rank, world_size), so a run resumed at step k sees the batches the
uninterrupted run would have seen from step k on.

Evaluation: ``eval_step`` returns SUMS over its batch (tensors, possibly vectors); the base
``evaluate`` gives batch i of a set to rank ``i % world_size``, adds the sums on the device (no
host sync per batch), all-reduces them once and turns them into metrics with ``reduce_metrics``.
So a set split over any number of processes gives the same metrics as one process.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from seqmamba.atomic_write import atomic_open
from seqmamba.config_checks import as_plain_dict, check_int, config_get
from seqmamba.data.streams import map_tensors
from seqmamba.train.evaluation import add_sums

Batch = Any


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def move_to(batch: Batch, device: torch.device) -> Batch:
    """Tensors of a (nested) tuple / list / dict batch moved to ``device``; other leaves unchanged."""
    return map_tensors(lambda t: t.to(device, non_blocking=True), batch)


class Task:
    """Base class of every task; subclasses register with ``@TASKS.register("name")``.

    ``cfg`` is the full run config (an OmegaConf DictConfig or a plain mapping): the task reads its
    own section ``cfg.task`` plus ``cfg.model``, ``cfg.dataset`` and ``cfg.seed``.
    """

    #: registry name; the discovery in seqmamba.tasks sets it from the registration, cfg.task.name wins
    name: str = ""
    #: metric the trainer uses to pick ``best.pt``, and whether larger is better
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    #: start token for unconditional generation (an empty ``generate.prompt``); None: a prompt is required
    bos_token_id: Optional[int] = None
    #: True where ``set_seq_len`` is implemented (``trainer.seq_len_warmup``)
    supports_seq_len_warmup: bool = False
    #: False for tasks that are scored, not sampled: ``seqmamba generate`` refuses them in one line
    generative: bool = True

    def __init__(self, cfg: Mapping):
        self.cfg = cfg
        name = config_get(cfg, "task.name", None)
        if name:
            self.name = str(name)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_model()")

    def configure_optimizer(self, model: nn.Module, device_type: str = "cpu") -> torch.optim.Optimizer:
        """The optimizer of ``model`` (the plain module); default: ``build_optimizer(model, cfg.optimizer)``.
        Override for per-part learning rates (e.g. a pretrained backbone)."""
        from seqmamba.train.optim import build_optimizer

        return build_optimizer(model, as_plain_dict(config_get(self.cfg, "optimizer", {})), device_type)

    # -- data ----------------------------------------------------------------------------------
    def set_seq_len(self, length: int) -> None:
        """Training batches drawn after this call have ``length`` tokens (sequence-length warmup).
        Tasks that implement it also set ``supports_seq_len_warmup = True``."""
        raise NotImplementedError(f"task {self.name or type(self).__name__!r} has no sequence-length warmup "
                                  f"(trainer.seq_len_warmup); remove that setting")

    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Infinite iterator of this rank's training batches from global step ``start_step`` on,
        ``trainer.grad_accum_steps`` micro-batches per step, deterministic per (seed, step, rank)."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_batches()")

    def val_sets(self) -> Dict[str, Sequence[Batch]]:
        """Full held-out sets by name (e.g. {"val": [...]}), identical on every rank; the evaluator
        gives batch i to rank i % world_size. Metrics are reported as f"{name}/{metric}"."""
        return {}

    def move_to(self, batch: Batch, device: torch.device) -> Batch:
        return move_to(batch, device)

    def batch_tokens(self, batch: Batch) -> int:
        """Input tokens (or samples) in a training batch, for the logged ``perf/tokens_per_s``.
        Default: the element count of the batch's first tensor (inputs of ``(inputs, targets)``)."""
        first = batch
        while isinstance(first, (tuple, list)) and first:
            first = first[0]
        if isinstance(first, dict) and first:
            first = next(iter(first.values()))
        return int(first.numel()) if isinstance(first, torch.Tensor) else 0

    # -- loss and metrics ----------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(scalar loss to backpropagate, detached scalar metric tensors for logging; no .item())."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step()")

    def eval_step(self, model: nn.Module, batch: Batch) -> Dict[str, torch.Tensor]:
        """SUMS over ``batch`` as tensors, e.g. {"loss_sum", "correct", "count"}; vectors allowed."""
        raise NotImplementedError(f"{type(self).__name__} must implement eval_step()")

    def reduce_metrics(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Finished metrics from the sums over a whole set. Default: loss = loss_sum / count,
        acc = correct / count (where present)."""
        count = float(sums["count"])
        if count <= 0:
            raise ValueError(f"task {self.name!r}: the evaluated set has no scored items")
        metrics: Dict[str, float] = {}
        if "loss_sum" in sums:
            metrics["loss"] = float(sums["loss_sum"]) / count
        if "correct" in sums:
            metrics["acc"] = float(sums["correct"]) / count
        return metrics

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Sequence[Batch]) -> Dict[str, float]:
        """Metrics over a whole set: ``eval_step`` over this rank's share (batch i on rank i % world),
        the sums all-reduced once, then ``reduce_metrics``. Collective under torch.distributed: every
        rank calls it with the same set. Autocast / no_grad are the caller's (see
        ``seqmamba.train.evaluation.evaluation_mode``); this puts the model in eval mode itself."""
        from seqmamba.train.distributed import all_reduce_tensor_sums, get_rank, get_world_size

        rank, world = get_rank(), get_world_size()
        device = model_device(model)
        sums: Dict[str, torch.Tensor] = {}
        was_training = model.training
        model.eval()
        try:
            for index, batch in enumerate(batches):
                if index % world == rank:
                    add_sums(sums, self.eval_step(model, self.move_to(batch, device)))
        finally:
            model.train(was_training)
        sums = all_reduce_tensor_sums(sums, device)
        if not sums:
            raise ValueError(f"task {self.name!r}: evaluate() got no batches")
        return self.reduce_metrics(sums)

    # -- extra verbs -----------------------------------------------------------------------------
    def eval_checkpoint(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        """``seqmamba eval`` (and the end of ``seqmamba run``): default, every val set. Collective:
        runs on every rank; write files on rank 0 only."""
        return {name: self.evaluate(model, batches) for name, batches in self.val_sets().items()}

    def embed(self, model: nn.Module, cfg: Mapping, out_path: str) -> Dict[str, Any]:
        """``seqmamba embed``: write per-sequence embeddings to ``out_path``; return a summary."""
        raise NotImplementedError(f"task {self.name or type(self).__name__!r} has no embed verb")

    # -- generation (``seqmamba generate``) ------------------------------------------------------
    # generate() = prompt_ids -> sample (in batches of generate.batch_size) -> decode_samples ->
    # write_samples. Token tasks change nothing; a DNA task overrides encode_prompt / decode_samples /
    # write_samples (text, FASTA), an audio task decode_samples / write_samples (WAV).

    def encode_prompt(self, prompt: str) -> List[int]:
        """Prompt text (``generate.prompt``) -> token ids. Default: whitespace-separated integers."""
        ids = []
        for word in prompt.split():
            try:
                ids.append(int(word))
            except ValueError:
                raise ValueError(f"generate.prompt: {word!r} is not a token id; task {type(self).__name__} "
                                 f"takes whitespace-separated integers") from None
        return ids

    def prompt_ids(self) -> List[int]:
        """Token ids every sample starts from: ``generate.prompt`` encoded, or ``[bos_token_id]``."""
        prompt = config_get(self.cfg, "generate.prompt", "")
        if isinstance(prompt, str) or not prompt:
            ids = self.encode_prompt(str(prompt or ""))
        else:  # a list of ids (YAML / OmegaConf list)
            ids = [int(t) for t in prompt]
        if not ids:
            if self.bos_token_id is None:
                raise ValueError(f"generate.prompt is empty and task {type(self).__name__} has no start token; "
                                 f"give a prompt, e.g. generate.prompt='1 2 3'")
            ids = [int(self.bos_token_id)]
        return ids

    def sampling_settings(self) -> Dict[str, Any]:
        """``generate.*`` keywords passed to ``model.generate`` (prompt, max_new_tokens, batch_size removed)."""
        gen = as_plain_dict(config_get(self.cfg, "generate", {}))
        for key in ("prompt", "max_new_tokens", "batch_size"):
            gen.pop(key, None)
        return gen

    def sample(self, model: nn.Module, prompt: torch.Tensor, max_new_tokens: int,
               generator: torch.Generator) -> torch.Tensor:
        """(rows, prompt_len) ids -> (rows, prompt_len + max_new_tokens) ids. Default: ``model.generate``."""
        if not callable(getattr(model, "generate", None)):
            raise NotImplementedError(f"task {type(self).__name__}: its model ({type(model).__name__}) cannot generate")
        settings = self.sampling_settings()
        settings.setdefault("cg", prompt.device.type == "cuda")  # decode under a captured CUDA graph on the GPU
        return model.generate(prompt, max_new_tokens, generator=generator, **settings)

    def decode_samples(self, ids: torch.Tensor) -> List[Any]:
        """Generated ids -> task-typed samples. Default: lists of token ids."""
        return [row.tolist() for row in ids]

    def write_samples(self, samples: List[Any], out_dir: str) -> List[str]:
        """Write the samples in the task's format; return the paths. Default: ``samples.txt``, one
        sample per line as space-separated token ids."""
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "samples.txt")
        with atomic_open(path) as f:
            f.writelines(" ".join(str(int(t)) for t in sample) + "\n" for sample in samples)
        return [path]

    @torch.no_grad()
    def generate(self, model: nn.Module, out_dir: str) -> Dict[str, Any]:
        """``seqmamba generate``: ``n_samples`` samples from ``prompt_ids()``, written by ``write_samples``."""
        if not self.generative:
            raise NotImplementedError(
                f"task {self.name!r} has no generate verb (it is scored, not sampled); use 'seqmamba eval'")
        n_samples = check_int("n_samples", config_get(self.cfg, "n_samples", 16), minimum=1)
        prompt = self.prompt_ids()
        vocab = getattr(model, "vocab_size", None)
        bad = [t for t in prompt if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            raise ValueError(f"generate.prompt: token ids {bad} outside the vocabulary [0, {vocab})")
        batch_size = check_int("generate.batch_size", config_get(self.cfg, "generate.batch_size", n_samples), 1)
        max_new_tokens = check_int("generate.max_new_tokens",
                                   config_get(self.cfg, "generate.max_new_tokens", 256), minimum=1)
        device = model_device(model)
        generator = torch.Generator(device=device).manual_seed(int(config_get(self.cfg, "seed", 0)))
        samples: List[Any] = []
        for start in range(0, n_samples, batch_size):
            rows = min(batch_size, n_samples - start)
            ids = torch.tensor([prompt] * rows, dtype=torch.long, device=device)
            samples.extend(self.decode_samples(self.sample(model, ids, max_new_tokens, generator)))
        paths = self.write_samples(samples, out_dir)
        return {"n_samples": len(samples), "prompt_tokens": len(prompt), "max_new_tokens": max_new_tokens,
                "files": paths}

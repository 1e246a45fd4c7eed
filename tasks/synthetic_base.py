"""What the two synthetic tasks share: a language-model backbone scored at a few last positions.

Both tasks feed a token sequence to a backbone from BACKBONES (``MambaLM`` by default) and read its
next-token logits at the last ``n_scored`` positions only: the marker positions of selective copying,
the final position of induction heads. Loss and accuracy ignore every other position.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.data import synthetic
from seqmamba.registry import BACKBONES, DATASETS
from seqmamba.train.distributed import unwrap_model

from .base import Task, model_device


def as_plain_dict(section: Any) -> Dict[str, Any]:
    """A config section (OmegaConf node or mapping) as a plain, resolved dict."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(section, DictConfig):
            return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    return dict(section)


def config_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b`` for an OmegaConf node or nested mappings, ``default`` where any part is missing."""
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):  # omegaconf's ConfigKeyError is a KeyError
            return default
    return default if node is None else node


def _accepts_num_last_tokens(model: nn.Module) -> bool:
    try:
        return "num_last_tokens" in inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def model_logits(model: nn.Module, input_ids: torch.Tensor, n_scored: int = 0) -> torch.Tensor:
    """Logits of ``model`` on ``input_ids``; backbones return logits or an object with ``.logits``.

    With ``n_scored`` > 0 and a backbone that takes mamba_ssm's ``num_last_tokens``, only the last
    ``n_scored`` positions go through the LM head (what long extrapolation sequences need)."""
    if n_scored > 0 and _accepts_num_last_tokens(model):
        out = model(input_ids, num_last_tokens=n_scored)
    else:
        out = model(input_ids)
    return out.logits if hasattr(out, "logits") else out


def scored_logits(logits: torch.Tensor, n_scored: int, vocab_size: int) -> torch.Tensor:
    """(batch, L, padded_vocab) -> (batch, n_scored, vocab_size): the last positions, real classes.

    The class axis stays last throughout; cross-entropy gets (batch * n_scored, vocab) rows, so the
    class and position axes can never be swapped silently (which hides when vocab == n_scored)."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits of shape (batch, L, vocab), got {tuple(logits.shape)}")
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} classes, fewer than the task's vocab_size={vocab_size}")
    if logits.shape[1] < n_scored:
        raise ValueError(f"logits cover {logits.shape[1]} positions, fewer than the {n_scored} scored ones")
    return logits[:, -n_scored:, :vocab_size].float()


def scored_loss_and_correct(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the scored positions and a (batch, n_scored) bool tensor of hits."""
    n_scored = targets.shape[1]
    scored = scored_logits(logits, n_scored, vocab_size)
    if scored.shape[:2] != targets.shape:
        raise ValueError(f"scored logits {tuple(scored.shape)} do not match targets {tuple(targets.shape)}")
    loss = F.cross_entropy(scored.reshape(-1, vocab_size), targets.reshape(-1))
    correct = scored.argmax(dim=-1) == targets
    return loss, correct


class SyntheticLMTask(Task):
    """Base of the synthetic tasks: seeded on-the-fly training data, fixed validation sets."""

    monitor = "val/acc"
    monitor_mode = "max"
    #: name of the dataset generator in DATASETS; subclasses set it
    default_dataset = ""

    def __init__(self, cfg: Mapping):
        super().__init__(cfg)
        dataset_cfg = as_plain_dict(config_get(cfg, "dataset", {}) or {})
        dataset_name = dataset_cfg.pop("name", self.default_dataset)
        self.data = DATASETS.get(dataset_name)(**dataset_cfg)
        # what training batches are drawn from; tasks with sequence-length warmup swap it
        self.train_data = self.data
        self.vocab_size = self.data.vocab_size
        self.seed = int(config_get(cfg, "seed", 0))
        self.batch_size = int(config_get(cfg, "trainer.batch_size", 32))
        self.micro_batches = int(config_get(cfg, "trainer.grad_accum_steps", 1))
        self.val_samples = int(config_get(cfg, "task.val_samples", 1024))
        self.val_batch_size = int(config_get(cfg, "task.val_batch_size", 256))
        # the validation sets come from their own seed, so changing the training seed keeps them
        self.val_seed = int(config_get(cfg, "task.val_seed", 1234))
        self._val_sets = None

    # -- model ------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        import seqmamba.models  # noqa: F401  (importing registers the backbones)

        params = as_plain_dict(config_get(self.cfg, "model", {}) or {})
        name = params.pop("name", "mamba_lm")
        params["vocab_size"] = self.vocab_size
        return BACKBONES.get(name)(**params)

    # -- data -------------------------------------------------------------------------------
    def train_batches(self, start_step: int, rank: int = 0, world_size: int = 1):
        return synthetic.training_stream(
            self.train_data, self.seed, start_step, rank, self.batch_size, micro_batches=self.micro_batches
        )

    def val_sets(self) -> Dict[str, Iterable]:
        if self._val_sets is None:  # generated once; the trainer asks at every evaluation
            self._val_sets = {
                "val": synthetic.fixed_batches(self.data, self.val_seed, self.val_samples, self.val_batch_size)
            }
        return self._val_sets

    # -- loss and metrics --------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        inputs, targets = batch
        loss, correct = scored_loss_and_correct(model_logits(model, inputs, targets.shape[1]), targets, self.vocab_size)
        return loss, {"loss": float(loss.detach()), "acc": float(correct.float().mean())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable) -> Dict[str, float]:
        device = model_device(model)
        loss_sum, hits, count = 0.0, 0, 0
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                inputs, targets = self.move_to(batch, device)
                loss, correct = scored_loss_and_correct(model_logits(model, inputs, targets.shape[1]), targets, self.vocab_size)
                loss_sum += float(loss) * correct.numel()
                hits += int(correct.sum())
                count += correct.numel()
        finally:
            model.train(was_training)
        if count == 0:
            raise ValueError("evaluate() got no batches")
        return {"loss": loss_sum / count, "acc": hits / count}

    def generate(self, model: nn.Module, out_dir: str):
        raise NotImplementedError(
            f"task {self.name!r} has no generate verb (it is scored, not sampled); use 'seqmamba eval'"
        )

    @property
    def name(self) -> str:
        return str(config_get(self.cfg, "task.name", self.default_dataset))

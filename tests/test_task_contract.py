"""The Task contract's base classes: next-token scoring with ignored targets, classification with a
backbone loaded from a trainer checkpoint or a save_pretrained directory, per-part learning rates,
and the trainer's activation-checkpointing switch."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from seqmamba.models import MambaLM
from seqmamba.tasks.classification import BackboneWithHead
from seqmamba.tasks.next_token import NextTokenTask
from seqmamba.train import Trainer
from seqmamba.train.checkpoint import atomic_torch_save

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_contract_tasks import ParityClassification  # noqa: E402

MODEL = {"name": "mamba_lm", "d_model": 16, "n_layer": 1, "ssm_cfg": {"d_state": 4}}


class MambaParity(ParityClassification):
    """ParityClassification on a real MambaLM backbone (the base class's build_backbone)."""

    def build_backbone(self):
        return super(ParityClassification, self).build_backbone()


def _cfg(**task):
    return {"seed": 0, "task": {"name": "parity", **task}, "model": dict(MODEL),
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1}}


def _lm(d_model=16):
    torch.manual_seed(5)
    return MambaLM(d_model=d_model, n_layer=1, vocab_size=16, ssm_cfg={"d_state": 4})


def test_classifier_drops_the_lm_head_and_loads_the_backbone_of_a_trainer_checkpoint(tmp_path):
    lm = _lm()
    path = tmp_path / "last.pt"
    atomic_torch_save({"model": lm.state_dict(), "step": 3}, str(path))
    model = MambaParity(_cfg(pretrained=str(path))).build_model()
    assert isinstance(model, BackboneWithHead) and model.backbone.lm_head is None
    assert not any(k.startswith("backbone.lm_head") for k in model.state_dict())
    for name, value in lm.state_dict().items():
        if not name.startswith("lm_head"):
            assert torch.equal(model.backbone.state_dict()[name], value), name
    logits = model(torch.randint(0, 16, (2, 10)))
    assert logits.shape == (2, 3)


def test_classifier_loads_a_save_pretrained_directory_and_rejects_a_mismatched_backbone(tmp_path):
    lm = _lm()
    lm.save_pretrained(tmp_path / "pre")
    model = MambaParity(_cfg(pretrained=str(tmp_path / "pre"))).build_model()
    assert torch.equal(model.backbone.backbone.embedding.weight, lm.backbone.embedding.weight)
    atomic_torch_save({"model": _lm(d_model=32).state_dict()}, str(tmp_path / "wide.pt"))
    with pytest.raises(ValueError, match=r"does not fit the backbone.*wrong shapes"):
        MambaParity(_cfg(pretrained=str(tmp_path / "wide.pt"))).build_model()
    with pytest.raises(FileNotFoundError, match="task.pretrained"):
        MambaParity(_cfg(pretrained=str(tmp_path / "missing.pt"))).build_model()


def test_backbone_lr_scale_gives_the_backbone_a_lower_learning_rate_through_the_schedule(tmp_path):
    cfg = _cfg(backbone_lr_scale=0.1)
    cfg.update(trainer={"max_steps": 4, "batch_size": 4, "device": "cpu", "progress": False, "tensorboard": False,
                        "eval_every": 0, "ckpt_every": 0, "log_every": 1},
               scheduler={"name": "cosine", "warmup_steps": 0})
    task = MambaParity(cfg)
    trainer = Trainer(task, cfg, str(tmp_path))
    backbone = {id(p) for p in trainer.model.backbone.parameters()}
    seen = 0
    for group in trainer.optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1, "a group mixes backbone and head parameters"
        expected = 1e-4 if in_backbone.pop() else 1e-3
        assert group["lr"] == pytest.approx(expected)
        seen += len(group["params"])
    assert seen == len(list(trainer.model.parameters()))
    result = trainer.fit()
    assert result["step"] == 4 and "val/recall/zero" in result


def test_activation_checkpointing_on_a_model_without_it_fails_in_one_line(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from trainer_tiny_task import TinyRegressionTask

    cfg = {"seed": 0, "trainer": {"device": "cpu", "activation_checkpointing": True, "progress": False}}
    with pytest.raises(ValueError, match="trainer.activation_checkpointing=true is not supported by model "
                                         "TinyTokenRegressor"):
        Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path))


class _Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids):
        return self.logits


def test_next_token_sums_skip_ignored_targets():
    task = NextTokenTask({"task": {"name": "lm"}})
    task.vocab_size = 4
    logits = torch.zeros(1, 3, 8)
    logits[0, :, 2] = 5.0  # predicts token 2 everywhere (padded vocab slots 4..7 never count)
    targets = torch.tensor([[2, -100, 1]])
    sums = task.eval_step(_Fixed(logits), (torch.zeros(1, 3, dtype=torch.long), targets))
    assert int(sums["count"]) == 2 and int(sums["correct"]) == 1
    metrics = task.reduce_metrics({k: v.double() for k, v in sums.items()})
    assert metrics["acc"] == 0.5 and metrics["bits_per_token"] == pytest.approx(metrics["loss"] / 0.6931471805599453)

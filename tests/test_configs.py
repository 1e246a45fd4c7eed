"""Every config in configs/ composes with Hydra's compose API and trains for a few steps on the CPU.

The lightning-hydra-template / s4 habit: a config that is not tested is a config that is broken.
New task and experiment files are picked up automatically (they are listed from the folders).
"""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import seqmamba.tasks  # noqa: F401  (registers the tasks)
from seqmamba.cli import config_group_options, configs_dir
from seqmamba.registry import BACKBONES, DATASETS, TASKS
from seqmamba.tasks import get_task
from seqmamba.train.settings import TrainerSettings

TASK_OPTIONS = config_group_options("task")
EXPERIMENT_OPTIONS = config_group_options("experiment")
# what a user starts from: each task, each experiment
ENTRY_OVERRIDES = [[f"task={t}"] for t in TASK_OPTIONS] + [[f"experiment={e}"] for e in EXPERIMENT_OPTIONS]

# Shrinks any composed config to a few CPU steps: the trainer's own keys here, the task's through the
# `task.tiny` override list each task config declares (notes/task_contract.md), so a DNA or audio
# task shrinks through its own keys. Lengths stay as configured where a task keeps them (the paper's
# 4112-token selective copying included), so the real shapes are exercised; batches become tiny.
TRAINER_SHRINK = [
    "trainer.max_steps=2",
    "trainer.batch_size=2",
    "trainer.grad_accum_steps=1",
    "trainer.device=cpu",
    "trainer.eval_every=2",
    "trainer.ckpt_every=2",
    "trainer.log_every=1",
    "trainer.progress=false",
    "trainer.early_stop_metric=null",
    "trainer.early_stop_threshold=null",
]


def _compose_tiny(entry):
    """``entry`` overrides, shrunk: the trainer's keys plus the composed task's own ``task.tiny``."""
    tiny = list(_compose(entry).task.get("tiny") or [])
    return _compose(list(entry) + TRAINER_SHRINK + tiny)


def _compose(overrides, return_hydra_config=False):
    with initialize_config_dir(config_dir=configs_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def test_config_groups_have_the_expected_options():
    assert {"induction_heads", "selective_copying"} <= set(TASK_OPTIONS)
    assert {"paper/induction_heads", "paper/selective_copying"} <= set(EXPERIMENT_OPTIONS)
    for group in ("model", "dataset", "optimizer", "scheduler", "trainer"):
        assert config_group_options(group), f"config group {group}/ is empty"


@pytest.mark.parametrize("task_name", TASK_OPTIONS)
def test_task_config_composes_and_names_registered_parts(task_name):
    cfg = _compose([f"task={task_name}"])
    assert cfg.task.name == task_name and cfg.task.name in TASKS
    assert cfg.model.name in BACKBONES or cfg.model.name == "mamba_lm"
    assert cfg.dataset.name in DATASETS
    for key in ("seed", "ckpt", "n_samples", "out_dir"):
        assert key in cfg, f"shared override name {key!r} missing"
    for key in ("max_steps", "device", "batch_size"):
        assert key in cfg.trainer
    assert cfg.trainer.device == "auto"


@pytest.mark.parametrize("group", ["model", "optimizer", "scheduler", "trainer"])
def test_every_option_of_the_shared_groups_composes_with_every_task(group):
    for option in config_group_options(group):
        for task_name in TASK_OPTIONS:
            cfg = _compose([f"task={task_name}", f"{group}={option}"])
            assert cfg[group] is not None


def test_every_dataset_config_is_chosen_by_a_task_or_experiment():
    # dataset/ files are composed (and trained, below) only through the task and experiment configs
    # that pick them; a dataset file none of them picks would go untested
    chosen = {_compose(o, return_hydra_config=True).hydra.runtime.choices.dataset for o in ENTRY_OVERRIDES}
    unused = set(config_group_options("dataset")) - chosen
    assert not unused, f"dataset configs no task or experiment composes: {sorted(unused)}"


def _train_few_steps(cfg, run_dir):
    from seqmamba.train import Trainer

    task = get_task(cfg.task.name)(cfg)
    trainer = Trainer(task, cfg, str(run_dir))
    final = trainer.fit()
    assert final["step"] == 2
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "last.pt"))
    return final


@pytest.mark.parametrize("task_name", TASK_OPTIONS)
def test_task_config_trains_two_steps_on_cpu(task_name, tmp_path):
    cfg = _compose_tiny([f"task={task_name}"])
    final = _train_few_steps(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(final["val/loss"]))


@pytest.mark.parametrize("experiment", EXPERIMENT_OPTIONS)
def test_experiment_config_trains_two_steps_on_cpu(experiment, tmp_path):
    cfg = _compose_tiny([f"experiment={experiment}"])
    final = _train_few_steps(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(final["val/loss"]))


def test_paper_configs_keep_the_papers_settings():
    copying = _compose(["experiment=paper/selective_copying"])
    assert copying.task.name == "selective_copying"
    assert (copying.dataset.vocab_size, copying.dataset.n_tokens) == (16, 16)
    assert copying.dataset.n_noise + copying.dataset.n_tokens == 4096
    assert (copying.model.n_layer, copying.model.d_model) == (2, 64)
    assert (copying.trainer.max_steps, copying.trainer.batch_size) == (400_000, 64)
    assert copying.optimizer.lr == pytest.approx(1e-4) and copying.scheduler.name == "constant"

    induction = _compose(["experiment=paper/induction_heads"])
    assert induction.task.name == "induction_heads"
    assert (induction.dataset.vocab_size, induction.dataset.seq_len) == (16, 256)
    assert (induction.model.n_layer, induction.model.d_model) == (2, 64)
    assert induction.trainer.batch_size == 8 and induction.trainer.max_steps == 25 * 8192
    assert induction.optimizer.name == "adam" and induction.optimizer.lr == pytest.approx(1e-3)
    assert induction.optimizer.weight_decay == 0.0
    assert (induction.eval.min_log2_len, induction.eval.max_log2_len) == (6, 20)
    for cfg in (copying, induction):
        assert cfg.trainer.device == "auto"


def test_default_synthetic_sizes_meet_the_issue_minimums():
    copying = _compose(["task=selective_copying"])
    assert copying.dataset.n_tokens >= 8 and copying.dataset.n_noise >= 64
    induction = _compose(["task=induction_heads"])
    assert 16 * induction.dataset.seq_len <= 2 ** induction.eval.max_log2_len, "eval reaches 16x the training length"


def test_composed_configs_resolve_without_missing_values():
    for overrides in ENTRY_OVERRIDES:
        cfg = _compose(overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# ---------------------------------------------------------------------------------------------
# layout rules (notes/task_contract.md)
# ---------------------------------------------------------------------------------------------
#: what a task file may set at the top level: its defaults list, its own section, and sections of
#: its own extra verbs
TASK_FILE_KEYS = {"defaults", "task", "eval", "generate", "embed"}


@pytest.mark.parametrize("task_name", TASK_OPTIONS)
def test_task_files_set_only_what_the_task_owns(task_name):
    raw = OmegaConf.load(os.path.join(configs_dir(), "task", f"{task_name}.yaml"))
    extra = set(raw.keys()) - TASK_FILE_KEYS
    assert not extra, f"task/{task_name}.yaml sets {sorted(extra)}; choose options of those groups in its defaults list"
    assert raw.task.name == task_name
    tiny = raw.task.get("tiny") or []
    assert all(isinstance(o, str) and "=" in o and not o.startswith("trainer.") for o in tiny), tiny


def test_trainer_defaults_agree_between_settings_yaml_and_docstring():
    import seqmamba.train.settings as settings

    yaml = OmegaConf.to_container(OmegaConf.load(os.path.join(configs_dir(), "trainer", "default.yaml")))
    code = dataclasses.asdict(TrainerSettings())
    assert yaml == code
    for key, value in code.items():
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert f"``{key}`` [{shown}]" in settings.__doc__, f"settings docstring lacks ``{key}`` [{shown}]"


"""The ``seqmamba`` command: verbs, run directories, sweeps, torchrun, and one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from seqmamba.cli import main

# a few CPU steps with tiny batches, small validation and extrapolation sets
TINY = [
    "trainer.max_steps=2",
    "trainer.batch_size=2",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.early_stop_metric=null",
    "trainer.early_stop_threshold=null",
    "task.val_samples=8",
    "dataset.seq_len=32",
    "eval.max_log2_len=7",
    "eval.max_samples=16",
]


def _seqmamba(*args, cwd=None, env_extra=None, timeout=240):
    """Run the installed console script (falls back to ``python -m seqmamba.cli``)."""
    exe = shutil.which("seqmamba", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "seqmamba.cli"]
    env = dict(os.environ, **(env_extra or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny induction-heads run shared by the tests that need a checkpoint."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["run", "task=induction_heads", f"hydra.run.dir={run_dir}"] + TINY) == 0
    return run_dir


# ---------------------------------------------------------------------------------------------
# help and list, from any working directory
# ---------------------------------------------------------------------------------------------
def test_help_lists_the_verbs_and_examples_from_another_working_directory(tmp_path):
    result = _seqmamba("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for verb in ("run", "eval", "generate", "list"):
        assert f"  {verb} " in result.stdout
    assert "seqmamba run task=induction_heads" in result.stdout


def test_list_names_tasks_backbones_datasets_and_config_groups(tmp_path):
    result = _seqmamba("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "induction_heads" in out and "selective_copying" in out and "mamba_lm" in out
    assert "paper/induction_heads" in out


# ---------------------------------------------------------------------------------------------
# run / eval / generate
# ---------------------------------------------------------------------------------------------
def test_run_writes_one_directory_with_config_metrics_tensorboard_and_checkpoints(trained_run):
    names = set(os.listdir(trained_run))
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "tensorboard", "checkpoints", ".hydra"} <= names
    assert {"last.pt", "best.pt"} <= set(os.listdir(trained_run / "checkpoints"))
    # run = train then evaluate: the task's evaluation (here the extrapolation table) is there too
    assert {"extrapolation.csv", "extrapolation.png", "eval_results.json"} <= names
    results = json.loads((trained_run / "eval_results.json").read_text())
    assert results["train"]["step"] == 2


def test_a_paused_run_resumed_to_the_end_reports_its_last_step_not_the_pause(tmp_path):
    """train_results.json is rewritten when a resumed run finishes: before, a run paused at step 2 and resumed to 4
    kept the pause's file (step 2, paused) beside the finished run's eval_results.json."""
    run_dir = tmp_path / "run"
    common = ["run", "task=induction_heads", f"hydra.run.dir={run_dir}", "trainer.resume=auto"] + TINY[1:]
    assert main(common + ["trainer.max_steps=4", "trainer.stop_at_step=2"]) == 0
    paused = json.loads((run_dir / "train_results.json").read_text())["train"]
    assert paused["paused"] and paused["step"] == 2 and not (run_dir / "eval_results.json").exists()
    assert main(common + ["trainer.max_steps=4"]) == 0
    final = json.loads((run_dir / "train_results.json").read_text())["train"]
    assert not final["paused"] and final["step"] == 4
    assert json.loads((run_dir / "eval_results.json").read_text())["train"]["step"] == 4


def test_eval_of_another_models_checkpoint_names_the_settings_and_the_overrides_that_build_it(trained_run, tmp_path,
                                                                                             capsys):
    """A checkpoint trained with other model settings than the command's: one line naming each differing model.*
    setting (checkpoint vs here) and the overrides that build the checkpoint's model; with them the eval runs."""
    ckpt = trained_run / "checkpoints" / "last.pt"
    common = ["eval", "task=induction_heads", f"ckpt={ckpt}", "eval.max_log2_len=6", "eval.max_samples=8",
              "trainer.device=cpu", "task.val_samples=8"]
    other = ["model.n_layer=3", "+model.ssm_cfg.dt_min=0.01"]
    rc = main(common + [f"hydra.run.dir={tmp_path / 'a'}"] + other)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "2 model settings differ" in err and "model.n_layer: 2 in the checkpoint, 3 here" in err, err
    assert "model.ssm_cfg.dt_min: unset in the checkpoint, 0.01 here" in err, err
    fixes = err.split("build the checkpoint's model by adding: ")[1].split()
    assert fixes == ["model.n_layer=2", "~model.ssm_cfg.dt_min"], fixes
    assert main(common + [f"hydra.run.dir={tmp_path / 'b'}"] + other + fixes) == 0


def test_eval_of_a_run_directory_names_the_checkpoints_in_it(trained_run, tmp_path, capsys):
    rc = main(["eval", "task=induction_heads", f"ckpt={trained_run}", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "is a directory, not a checkpoint file" in err and "checkpoints/best.pt, checkpoints/last.pt" in err, err


def test_resuming_with_another_model_fails_in_one_line_and_keeps_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["run", "task=induction_heads", f"hydra.run.dir={run_dir}", "trainer.resume=auto"] + TINY[1:]
    assert main(common + ["trainer.max_steps=2"]) == 0
    last = run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    rc = main(common + ["trainer.max_steps=4", "model.n_layer=3"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "model.n_layer: 2 in the checkpoint, 3 here" in err and "adding: model.n_layer=2" in err, err
    assert last.read_bytes() == before


def test_model_mismatch_overrides_add_set_and_delete():
    """The overrides model_mismatch_message proposes: + for a setting only the checkpoint has, plain for one both
    have, ~ for one only the command has; values as Hydra writes them (null, lowercase booleans, lists)."""
    from seqmamba.train.checkpoint import model_mismatch_message

    saved = ("model:\n  n_layer: 2\n  ssm_cfg:\n    layer: nogate_s4d\n    activation: gelu\n  tie: true\n"
             "  ids: [1, 2]\n")
    here = OmegaConf.create({"n_layer": 4, "ssm_cfg": {"d_conv": 3}, "tie": False, "ids": None})
    line = model_mismatch_message("x.pt", saved, here, RuntimeError("size mismatch"))
    assert "6 model settings differ" in line and "'nogate_s4d' in the checkpoint, unset here" in line, line
    assert line.split("adding: ")[1].split() == [
        "model.ids=[1,2]", "model.n_layer=2", "+model.ssm_cfg.activation=gelu", "~model.ssm_cfg.d_conv",
        "+model.ssm_cfg.layer=nogate_s4d", "model.tie=true"]
    same = model_mismatch_message("x.pt", "model:\n  n_layer: 2\n", OmegaConf.create({"n_layer": 2}),
                                  RuntimeError("odd"))
    assert "no difference in model.*" in same and "odd" in same


def test_eval_scores_a_checkpoint_at_lengths_2_to_the_6_up_to_the_override(trained_run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "task=induction_heads", f"ckpt={trained_run / 'checkpoints' / 'best.pt'}",
               f"hydra.run.dir={out}", "eval.max_log2_len=8", "eval.max_samples=8", "trainer.device=cpu"])
    assert rc == 0
    table = (out / "extrapolation.csv").read_text().splitlines()
    assert table[0].startswith("length,") and [int(line.split(",")[0]) for line in table[1:]] == [64, 128, 256]
    assert "2^8" in capsys.readouterr().out


def test_generate_on_a_synthetic_task_says_it_has_none_in_one_line(trained_run, tmp_path, capsys):
    rc = main(["generate", "task=induction_heads", f"ckpt={trained_run / 'checkpoints' / 'best.pt'}",
               f"hydra.run.dir={tmp_path / 'gen'}", "trainer.device=cpu"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "no generate verb" in err


def test_multirun_sweep_writes_one_directory_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    rc = main(["run", "-m", "task=induction_heads", "seed=0,1", f"hydra.sweep.dir={sweep}", "eval.max_log2_len=6"]
              + [t for t in TINY if not t.startswith("eval.max_log2_len")])
    assert rc == 0
    for job in ("0", "1"):
        assert os.path.isfile(sweep / job / "checkpoints" / "last.pt")
    seeds = {OmegaConf.load(sweep / job / ".hydra" / "config.yaml").seed for job in ("0", "1")}
    assert seeds == {0, 1}


def test_cfg_job_prints_the_composed_config_without_running(tmp_path):
    result = _seqmamba("run", "experiment=paper/induction_heads", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "seq_len: 256" in result.stdout and not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, non-zero exit, no traceback
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "task=induction_head"], "did you mean task=induction_heads"),
        (["run"], "task"),
        (["run", "task=induction_heads", "model=mamba_lmm"], "mamba_lm"),
        (["run", "task=induction_heads", "trainer.max_stepz=3"], "trainer.max_stepz"),
        (["run", "task=induction_heads", "trainer.max_steps=[1,"], "bad override"),
        (["eval", "task=induction_heads", "ckpt=/definitely/not/here.pt"], "checkpoint file not found"),
        (["eval", "task=induction_heads"], "ckpt="),
        (["runn", "task=induction_heads"], "did you mean 'run'"),
    ],
    ids=["unknown-task", "no-task", "unknown-model", "unknown-key", "bad-syntax", "missing-ckpt", "no-ckpt", "bad-verb"],
)
def test_bad_input_fails_with_one_clear_line_and_no_traceback(args, expected, capsys, tmp_path):
    rc = main(args + [f"hydra.run.dir={tmp_path}"] if args[0] in ("run", "eval") and len(args) > 1 else args)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and expected in err, err


def test_unknown_backbone_name_in_the_model_config_is_a_registry_error_with_a_close_match(capsys, tmp_path):
    rc = main(["run", "task=induction_heads", "model.name=mamba_ml", f"hydra.run.dir={tmp_path}"] + TINY)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "did you mean 'mamba_lm'" in err, err


def test_debug_flag_shows_the_traceback(tmp_path):
    result = _seqmamba("eval", "task=induction_heads", "ckpt=/not/here.pt", "--debug", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


# ---------------------------------------------------------------------------------------------
# torchrun: one run directory for the job
# ---------------------------------------------------------------------------------------------
def test_two_process_gloo_run_under_torchrun_writes_one_run_directory(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to this Python")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "seqmamba.cli", "run", "task=induction_heads"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd + TINY, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = os.listdir(tmp_path / "outputs" / "induction_heads" / "run")
    assert len(run_dirs) == 1, run_dirs
    run_dir = tmp_path / "outputs" / "induction_heads" / "run" / run_dirs[0]
    assert os.path.isfile(run_dir / "checkpoints" / "last.pt")
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["world_size"] == 2


# ---------------------------------------------------------------------------------------------
# config values checked before training (issue 10)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("trainer.max_steps=-3", "trainer.max_steps=-3 is not accepted; expected an integer >= 1"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is not accepted; expected an integer >= 1"),
    ("dataset.seq_len=3", "dataset.seq_len=3 is too short for induction heads; expected an integer >= 16"),
    ("trainer.max_stepz=5", "unknown config key trainer.max_stepz; did you mean trainer.max_steps?"),
    ("+trainer.max_stepz=5", "unknown config key trainer.max_stepz; did you mean trainer.max_steps?"),
    ("trainer.precision=fp8", "trainer.precision='fp8' is not accepted; expected one of auto, fp32, bf16, fp16"),
])
def test_bad_config_values_fail_before_training_in_one_line(tmp_path, capsys, override, expected):
    run_dir = tmp_path / "run"
    code = main(["run", "task=induction_heads", "trainer.device=cpu", "trainer.progress=false",
                 f"hydra.run.dir={run_dir}", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert expected in err[0]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


def test_embed_is_a_verb_and_a_task_without_it_says_so_in_one_line(trained_run, tmp_path, capsys):
    ckpt = trained_run / "checkpoints" / "last.pt"
    code = main(["embed", "task=induction_heads", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'e'}"] + TINY)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "has no embed verb" in err[0], err

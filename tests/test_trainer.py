"""The trainer loop: exact resume, NaN stop, param groups, schedules, run-directory contents."""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from torch import nn

from seqmamba.train import Trainer, TrainingError, read_metrics
from seqmamba.train.checkpoint import load_model_weights
from seqmamba.train.optim import build_optimizer, split_decay_groups
from seqmamba.train.schedule import build_scheduler, lr_multiplier
from seqmamba.train.trainer import resolve_precision
from trainer_tiny_task import TinyRegressionTask, TinyTokenRegressor


def make_cfg(**trainer_overrides):
    trainer = {
        "max_steps": 8,
        "batch_size": 4,
        "log_every": 1,
        "eval_every": 0,
        "ckpt_every": 0,
        "progress": False,
        "tensorboard": False,
        "num_threads": 1,
        "device": "cpu",  # the CPU tests pin the device, so a GPU machine runs the same numbers
    }
    trainer.update(trainer_overrides)
    return {
        "seed": 3,
        "trainer": trainer,
        "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.1},
        "scheduler": {"name": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
        "ckpt": None,
    }


def train_losses(run_dir):
    return [(r["step"], r["train/loss"]) for r in read_metrics(run_dir) if "train/loss" in r]


def assert_same_weights(model_a: nn.Module, model_b: nn.Module):
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"weights differ at {key}"


# -- exact resume ---------------------------------------------------------------------------------------
def test_run_resumed_after_crash_matches_uninterrupted_run_bit_for_bit(tmp_path):
    # cosine + warmup, dropout, grad accumulation and evals that consume the RNG: all must resume exactly.
    cfg = make_cfg(max_steps=10, grad_accum_steps=2, eval_every=3, ckpt_every=4)
    full = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "full"))
    full_result = full.fit()

    crash_dir = str(tmp_path / "crash")
    # the data stream dies while drawing step 7's batches: last.pt is from step 4, metrics ran to step 6
    crashing = Trainer(TinyRegressionTask(cfg, crash_at_batch=6 * 2), cfg, crash_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    assert max(step for step, _ in train_losses(crash_dir)) == 6

    resume_cfg = copy.deepcopy(cfg)
    resume_cfg["trainer"]["resume"] = "auto"
    resumed = Trainer(TinyRegressionTask(resume_cfg), resume_cfg, crash_dir)
    assert resumed.step == 4
    resumed_result = resumed.fit()

    assert_same_weights(full.model, resumed.model)
    assert train_losses(crash_dir) == train_losses(str(tmp_path / "full"))  # rows 5..6 of the crash replaced
    assert resumed_result["val/loss"] == full_result["val/loss"]
    assert resumed_result["best_step"] == full_result["best_step"]
    for group_full, group_resumed in zip(full.optimizer.param_groups, resumed.optimizer.param_groups):
        assert group_full["lr"] == group_resumed["lr"]


def test_resume_keeps_the_history_of_a_run_recorded_with_its_csv_only(tmp_path):
    """A run directory copied with last.pt and metrics.csv but not metrics.jsonl (how reproduction/ records runs):
    the resumed run's files start from the CSV's rows up to the checkpoint's step, as if it had never stopped; a
    CSV whose step is not a number is an error naming the file and line, and the CSV is left as it was."""
    cfg = make_cfg(max_steps=9, ckpt_every=0)
    Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "full")).fit()
    paused_cfg = copy.deepcopy(cfg)
    paused_cfg["trainer"]["stop_at_step"] = 5
    Trainer(TinyRegressionTask(paused_cfg), paused_cfg, str(tmp_path / "split")).fit()
    os.remove(tmp_path / "split" / "metrics.jsonl")
    resume_cfg = copy.deepcopy(cfg)
    resume_cfg["trainer"]["resume"] = "auto"
    Trainer(TinyRegressionTask(resume_cfg), resume_cfg, str(tmp_path / "split")).fit()
    full, split = train_losses(str(tmp_path / "full")), train_losses(str(tmp_path / "split"))
    assert [s for s, _ in split] == list(range(1, 10))
    assert split == full  # the CSV holds repr()s of the floats: exact
    lines = lambda run: (tmp_path / run / "metrics.csv").read_text().count("\n")  # noqa: E731
    assert lines("split") == lines("full")

    os.remove(tmp_path / "split" / "metrics.jsonl")
    csv_path = tmp_path / "split" / "metrics.csv"
    text = csv_path.read_text().replace("\n3,", "\nthree,", 1)
    csv_path.write_text(text)
    with pytest.raises(ValueError, match=r"metrics.csv, line 4: step 'three' is not an integer"):
        Trainer(TinyRegressionTask(resume_cfg), resume_cfg, str(tmp_path / "split")).fit()
    assert csv_path.read_text() == text


def test_paused_run_resumes_to_the_uninterrupted_weights(tmp_path):
    # trainer.stop_at_step: pause (last.pt, no final eval, schedule still to max_steps), then resume=auto
    cfg = make_cfg(max_steps=9, grad_accum_steps=2, eval_every=4, ckpt_every=0)
    full = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "full"))
    full_result = full.fit()

    paused_cfg = copy.deepcopy(cfg)
    paused_cfg["trainer"]["stop_at_step"] = 5
    first = Trainer(TinyRegressionTask(paused_cfg), paused_cfg, str(tmp_path / "split"))
    first_result = first.fit()
    assert first_result["paused"] and first_result["step"] == 5
    assert torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
    assert "val/loss" not in {k for r in read_metrics(str(tmp_path / "split")) if r["step"] == 5 for k in r}

    resume_cfg = copy.deepcopy(cfg)
    resume_cfg["trainer"]["resume"] = "auto"
    second = Trainer(TinyRegressionTask(resume_cfg), resume_cfg, str(tmp_path / "split"))
    assert second.step == 5
    second_result = second.fit()
    assert not second_result["paused"] and second_result["step"] == 9
    assert_same_weights(full.model, second.model)
    assert second_result["val/loss"] == full_result["val/loss"]


def test_time_limit_pauses_after_the_first_step_past_it(tmp_path):
    cfg = make_cfg(max_steps=50, time_limit_s=0)
    result = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    assert result["paused"] and result["step"] == 1
    with pytest.raises(ValueError, match="trainer.stop_at_step=0"):
        Trainer(TinyRegressionTask(make_cfg(stop_at_step=0)), make_cfg(stop_at_step=0), str(tmp_path / "x"))


def test_deterministic_setting_switches_cuda_ops_off_the_atomic_triton_backward(tmp_path):
    from seqmamba.ops.backend import resolve_backend

    assert resolve_backend("selective_scan", "auto", on_cuda=True) == "triton"
    cfg = make_cfg(max_steps=2, deterministic=True)
    try:
        Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
        assert torch.are_deterministic_algorithms_enabled()
        assert resolve_backend("selective_scan", "auto", on_cuda=True) == "torch"
        assert resolve_backend("selective_scan", "triton", on_cuda=True) == "triton"  # an explicit choice stands
    finally:
        torch.use_deterministic_algorithms(False)
    with pytest.raises(ValueError, match="trainer.deterministic='yes'"):
        Trainer(TinyRegressionTask(make_cfg(deterministic="yes")), make_cfg(deterministic="yes"), str(tmp_path / "x"))


def test_training_extended_from_last_checkpoint_matches_longer_run(tmp_path):
    # run N steps, then a new Trainer with ckpt=last.pt continues to 2N (constant schedule: the
    # schedule of a run to N and a run to 2N agree on the first N steps)
    n = 5
    cfg = make_cfg(max_steps=2 * n, eval_every=2)
    cfg["scheduler"] = {"name": "constant", "warmup_steps": 2}
    full = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "full"))
    full.fit()

    first_cfg = copy.deepcopy(cfg)
    first_cfg["trainer"]["max_steps"] = n
    first = Trainer(TinyRegressionTask(first_cfg), first_cfg, str(tmp_path / "first"))
    first.fit()
    second_cfg = copy.deepcopy(cfg)
    second_cfg["ckpt"] = str(tmp_path / "first" / "checkpoints" / "last.pt")
    second = Trainer(TinyRegressionTask(second_cfg), second_cfg, str(tmp_path / "second"))
    assert second.step == n
    second.fit()

    assert_same_weights(full.model, second.model)
    assert train_losses(str(tmp_path / "first")) + train_losses(str(tmp_path / "second")) == train_losses(
        str(tmp_path / "full")
    )


# -- failure handling -----------------------------------------------------------------------------------
def test_nan_loss_raises_training_error_naming_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_cfg(max_steps=10, ckpt_every=3, eval_every=3)
    run_dir = tmp_path / "run"
    trainer = Trainer(TinyRegressionTask(cfg, nan_at_batch=7), cfg, str(run_dir))  # batch 7 = step 8
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    message = str(err.value)
    assert "step 8" in message and "nan" in message and "\n" not in message

    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert last["step"] == 6 and best["step"] <= 6
    for state in (last["model"], best["model"]):
        assert all(torch.isfinite(t).all() for t in state.values())
    # the in-memory model never took the bad update either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.step == 7


def test_unknown_optimizer_and_precision_fail_with_the_accepted_values():
    model = TinyTokenRegressor()
    with pytest.raises(ValueError, match="adamw, adam"):
        build_optimizer(model, {"name": "sgdd"})
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        resolve_precision("half", torch.device("cpu"))
    with pytest.raises(ValueError, match="cosine, linear, constant"):
        lr_multiplier("cosinus", 10)


# -- optimizer and schedule -----------------------------------------------------------------------------
def test_weight_decay_skips_A_log_D_norms_biases_and_flagged_params():
    model = TinyTokenRegressor()
    model.proj.weight._no_weight_decay = True
    groups = split_decay_groups(model)
    assert sorted(groups["decay"]) == ["embedding.weight", "head.weight"]
    assert {"A_log", "D", "norm.weight", "norm.bias", "proj.bias", "head.bias", "proj.weight"} <= set(
        groups["no_decay"]
    )
    with_flag = split_decay_groups(model, no_decay_embeddings=True)
    assert with_flag["decay"] == ["head.weight"] and "embedding.weight" in with_flag["no_decay"]

    opt = build_optimizer(model, {"lr": 1e-3, "weight_decay": 0.2})
    decay_by_name = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decay_by_name == {"decay": 0.2, "no_decay": 0.0}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_tied_weights_appear_once_in_the_optimizer():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    opt = build_optimizer(model, {})
    assert sum(len(g["params"]) for g in opt.param_groups) == 1


def test_cosine_warmup_reaches_peak_then_decays_to_min_ratio():
    f = lr_multiplier("cosine", max_steps=10, warmup_steps=4, min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)
    linear = lr_multiplier("linear", max_steps=10, warmup_steps=0, min_lr_ratio=0.0)
    assert [linear(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_multiplier("constant", 10, 2)(9) == 1.0


def test_warmup_ratio_sets_warmup_steps_from_max_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, {"name": "constant", "warmup_ratio": 0.25}, max_steps=20)  # 5 warmup steps
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_gradient_accumulation_matches_one_step_on_the_combined_batch(tmp_path):
    # 2 micro-batches of 4 see the same samples as 1 batch of 8; without dropout the updates agree.
    accum_cfg = make_cfg(max_steps=3, batch_size=4, grad_accum_steps=2)
    big_cfg = make_cfg(max_steps=3, batch_size=8, grad_accum_steps=1)
    accum = Trainer(TinyRegressionTask(accum_cfg, dropout=0.0), accum_cfg, str(tmp_path / "a"))
    accum.fit()
    big = Trainer(TinyRegressionTask(big_cfg, dropout=0.0), big_cfg, str(tmp_path / "b"))
    big.fit()
    for (name, p_accum), p_big in zip(accum.model.named_parameters(), big.model.parameters()):
        torch.testing.assert_close(p_accum, p_big, rtol=1e-5, atol=1e-6, msg=f"parameter {name}")
    # and the logged loss is the mean over the micro-batches, not their sum
    accum_losses = [loss for _, loss in train_losses(str(tmp_path / "a"))]
    big_losses = [loss for _, loss in train_losses(str(tmp_path / "b"))]
    assert accum_losses == pytest.approx(big_losses, rel=1e-5)


# -- loop features --------------------------------------------------------------------------------------
def test_early_stop_ends_the_run_once_the_metric_reaches_the_threshold(tmp_path):
    cfg = make_cfg(max_steps=50, eval_every=2, early_stop_metric="val/score", early_stop_threshold=0.0)
    result = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    assert result["stopped_early"] is True and result["step"] == 2
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_seq_len_warmup_sets_length_and_reopens_batches_at_scheduled_steps(tmp_path):
    cfg = make_cfg(max_steps=6, seq_len_warmup=[[0, 4], [2, 8], [5, 12]])
    task = TinyRegressionTask(cfg)
    Trainer(task, cfg, str(tmp_path)).fit()
    assert task.seq_len_calls == [4, 8, 12]
    assert task.opened_at == [0, 2, 5]
    assert [r["train/seq_len"] for r in read_metrics(str(tmp_path)) if "train/seq_len" in r] == [4, 4, 8, 8, 8, 12]


def test_seq_len_warmup_without_task_hook_is_rejected(tmp_path):
    class NoHookTask(TinyRegressionTask):
        supports_seq_len_warmup = False

    cfg = make_cfg(seq_len_warmup=[[0, 4]])
    with pytest.raises(ValueError, match="set_seq_len"):
        Trainer(NoHookTask(cfg), cfg, str(tmp_path))


def test_run_directory_holds_config_metrics_tensorboard_checkpoints_and_plot(tmp_path):
    cfg = make_cfg(max_steps=6, eval_every=3, ckpt_every=3, tensorboard=True)
    result = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    names = set(os.listdir(tmp_path))
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "loss_curve.png", "tensorboard", "checkpoints"} <= names
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.pt", "last.pt"]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "tensorboard"))
    assert "max_steps: 6" in (tmp_path / "config.yaml").read_text()

    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "train/loss", "train/lr", "train/mae", "val/loss", "val/score"} <= set(header)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(read_metrics(str(tmp_path))) == 6 + 2  # 6 train rows, 2 eval rows

    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6 and result["step"] == 6
    assert last["best_metric"] == pytest.approx(result["best_metric"])
    assert "max_steps: 6" in last["config"]


def test_fresh_run_in_a_used_directory_starts_new_metrics(tmp_path):
    cfg = make_cfg(max_steps=3)
    Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()  # no resume: same steps again
    assert [step for step, _ in train_losses(str(tmp_path))] == [1, 2, 3]


def test_bf16_request_on_cpu_trains_in_fp32():
    assert resolve_precision("bf16", torch.device("cpu")) is None
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("fp32", torch.device("cpu")) is None


# -- CUDA ----------------------------------------------------------------------------------------------
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@requires_cuda
def test_cuda_bf16_autocast_run_resumes_exactly(tmp_path):
    cfg = make_cfg(max_steps=8, device="cuda", precision="auto", grad_accum_steps=2, eval_every=3, ckpt_every=4)
    full_task = TinyRegressionTask(cfg)
    full = Trainer(full_task, cfg, str(tmp_path / "full"))
    full.fit()
    assert full.autocast_dtype == torch.bfloat16 and full_task.last_pred_dtype == torch.bfloat16
    assert next(full.model.parameters()).dtype == torch.float32  # master weights stay fp32

    crash_dir = str(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(TinyRegressionTask(cfg, crash_at_batch=5 * 2), cfg, crash_dir).fit()
    resume_cfg = copy.deepcopy(cfg)
    resume_cfg["trainer"]["resume"] = "auto"
    resumed = Trainer(TinyRegressionTask(resume_cfg), resume_cfg, crash_dir)
    assert resumed.step == 4
    resumed.fit()
    for (name, p_full), p_resumed in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p_resumed, p_full, rtol=0, atol=1e-6, msg=f"parameter {name}")
    resumed_rows, full_rows = train_losses(crash_dir), train_losses(str(tmp_path / "full"))
    assert [s for s, _ in resumed_rows] == [s for s, _ in full_rows]
    assert [v for _, v in resumed_rows] == pytest.approx([v for _, v in full_rows], abs=1e-6)


@pytest.mark.gpu
@requires_cuda
def test_compiled_training_saves_checkpoints_with_plain_parameter_names(tmp_path):
    cfg = make_cfg(max_steps=3, device="cuda", compile=True)
    result = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    assert math.isfinite(result["train/loss"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert set(ckpt["model"]) == set(TinyTokenRegressor().state_dict())


def test_throughput_is_logged_from_the_tokens_of_each_batch(tmp_path):
    from tasks.base import Task

    x = torch.zeros(4, 7, dtype=torch.long)
    assert Task.batch_tokens(None, (x, x[:, :1])) == 28
    assert Task.batch_tokens(None, {"inputs": x}) == 28 and Task.batch_tokens(None, [[x]]) == 28
    cfg = make_cfg(max_steps=4, log_every=2)
    Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path)).fit()
    rows = [r for r in read_metrics(str(tmp_path)) if "perf/tokens_per_s" in r]
    assert [r["step"] for r in rows] == [2, 4] and all(r["perf/tokens_per_s"] > 0 for r in rows)
    task = TinyRegressionTask(cfg)
    per_step = task.batch_tokens(next(iter(task.train_batches(0))))  # grad_accum_steps = 1
    for r in rows:  # both rates share the window's clock, so their ratio is the tokens of one step
        assert r["perf/tokens_per_s"] / r["perf/steps_per_s"] == pytest.approx(per_step, rel=1e-9)


# -- CUDA graphs (trainer.cuda_graph) -------------------------------------------------------------------
class GraphableRegressionTask(TinyRegressionTask):
    """The tiny task with its batch index as a tensor: what a replayed graph reads must be tensors
    (a Python value in the batch is baked into the capture), so the NaN injection is data-driven."""

    def train_batches(self, start_step, rank=0, world_size=1):
        for batch in super().train_batches(start_step, rank, world_size):
            yield {**batch, "index": torch.tensor(batch["index"])}

    def training_step(self, model, batch):
        pred = model(batch["tokens"])
        loss = nn.functional.mse_loss(pred.float(), batch["target"])
        if self.nan_at_batch is not None:
            loss = loss * torch.where(batch["index"] == self.nan_at_batch, float("nan"), 1.0)
        return loss, {"mae": (pred.float() - batch["target"]).abs().mean().detach()}


def test_cuda_graph_setting_is_checked_and_refused_where_a_step_cannot_be_captured(tmp_path):
    from seqmamba.config_checks import ConfigValueError
    from seqmamba.train.settings import TrainerSettings

    assert TrainerSettings.from_config({"trainer": {"cuda_graph": True}}).cuda_graph == "true"
    assert TrainerSettings.from_config({"trainer": {"cuda_graph": "auto"}}).cuda_graph == "auto"
    assert TrainerSettings.from_config({}).cuda_graph == "false"
    with pytest.raises(ConfigValueError, match="cuda_graph='sometimes'.*true, false or auto"):
        TrainerSettings.from_config({"trainer": {"cuda_graph": "sometimes"}})
    assert TrainerSettings.from_config({"trainer": {"compile": "auto"}}).compile == "auto"
    assert TrainerSettings.from_config({"trainer": {"compile": True}}).compile == "true"
    with pytest.raises(ConfigValueError, match="compile='yes'.*true, false or auto"):
        TrainerSettings.from_config({"trainer": {"compile": "yes"}})
    cfg = make_cfg(max_steps=2, cuda_graph="auto", compile="auto")  # compile=auto: only where the step is graphed
    assert not Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "auto_compile")).compiled
    cfg = make_cfg(max_steps=2, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=true cannot be used: it needs a CUDA device"):
        Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "refused"))
    cfg = make_cfg(max_steps=2, cuda_graph="auto")  # auto: an eager run, same numbers as without it
    auto = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "auto"))
    auto.fit()
    assert not auto.use_cuda_graph
    plain_cfg = make_cfg(max_steps=2)
    plain = Trainer(TinyRegressionTask(plain_cfg), plain_cfg, str(tmp_path / "plain"))
    plain.fit()
    assert_same_weights(auto.model, plain.model)


# the schedule is stepped here without an optimizer step (the graph replays it in training): torch's warning is moot
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_graphed_step_checkpoints_a_plain_optimizer_state():
    from seqmamba.train.cuda_graph import GraphedTrainStep

    model = TinyTokenRegressor()
    optimizer = build_optimizer(model, {"name": "adamw", "lr": 3e-3}, "cpu")
    scheduler = build_scheduler(optimizer, {"name": "cosine", "warmup_steps": 2}, 10)
    graph = GraphedTrainStep(model=model, optimizer=optimizer, training_step=None, move_to=None,
                             autocast=None, grad_clip=1.0, device=torch.device("cpu"))
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor) and optimizer.param_groups[0]["capturable"]
    scheduler.step()  # the schedule fills the device tensor in place
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(3e-3)
    state = graph.plain_optimizer_state(optimizer.state_dict())
    assert all(type(g["lr"]) is float and g["capturable"] is False for g in state["param_groups"])
    assert state["param_groups"][0]["lr"] == pytest.approx(3e-3)
    sched_state = graph.plain_scheduler_state(scheduler.state_dict())
    assert all(type(v) is float for v in sched_state["_last_lr"])
    fresh = build_optimizer(TinyTokenRegressor(), {"name": "adamw", "lr": 3e-3}, "cpu")
    fresh.load_state_dict(state)  # an eager CPU run takes the checkpoint as it is


def test_the_fused_adamw_skips_a_step_on_the_device_flag_the_graphed_update_sets():
    """The premise of the graphed step's deferred check (cuda_graph.skips_nonfinite_on_device): the fused
    optimizer leaves weights, moments and step count untouched where ``found_inf`` is 1, and steps at 0."""
    from seqmamba.train.cuda_graph import skips_nonfinite_on_device

    model = TinyTokenRegressor()
    assert not skips_nonfinite_on_device(build_optimizer(model, {"name": "adamw", "fused": False}, "cpu"))
    optimizer = build_optimizer(model, {"name": "adamw", "lr": 1e-2, "fused": True}, "cpu")
    assert skips_nonfinite_on_device(optimizer)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.found_inf = torch.tensor(1.0)
    optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in optimizer.state.values())
    optimizer.found_inf.zero_()
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(float(s["step"]) == 1 for s in optimizer.state.values())


def _graph_cfg(**overrides):
    cfg = make_cfg(device="cuda", precision="auto", **overrides)
    return cfg


@pytest.mark.gpu
@requires_cuda
def test_cuda_graph_run_matches_the_eager_run_and_resumes(tmp_path):
    # cosine warmup: the learning rate changes every step, so the captured optimizer must read it
    cfg = _graph_cfg(max_steps=14, ckpt_every=5, cuda_graph=True)
    graphed = Trainer(GraphableRegressionTask(cfg, dropout=0.0), cfg, str(tmp_path / "graph"))
    graphed.fit()
    assert graphed._graph.captures == 1 and graphed._graph.replays == 14 - 3  # 3 eager warmup steps
    eager_cfg = _graph_cfg(max_steps=14)
    eager = Trainer(GraphableRegressionTask(eager_cfg, dropout=0.0), eager_cfg, str(tmp_path / "eager"))
    eager.fit()
    for (name, p_graph), p_eager in zip(graphed.model.named_parameters(), eager.model.parameters()):
        torch.testing.assert_close(p_graph, p_eager, rtol=1e-5, atol=1e-6, msg=f"parameter {name}")
    graph_losses, eager_losses = train_losses(str(tmp_path / "graph")), train_losses(str(tmp_path / "eager"))
    assert [v for _, v in graph_losses] == pytest.approx([v for _, v in eager_losses], rel=1e-5, abs=1e-7)

    # paused at step 9 and resumed: the uninterrupted graphed run's weights
    pause_cfg = _graph_cfg(max_steps=14, ckpt_every=5, cuda_graph=True, stop_at_step=9)
    Trainer(GraphableRegressionTask(pause_cfg, dropout=0.0), pause_cfg, str(tmp_path / "paused")).fit()
    ckpt = torch.load(tmp_path / "paused" / "checkpoints" / "last.pt", weights_only=True)
    assert all(type(g["lr"]) is float and not g.get("capturable") for g in ckpt["optimizer"]["param_groups"])
    resume_cfg = _graph_cfg(max_steps=14, ckpt_every=5, cuda_graph=True, resume="auto")
    resumed = Trainer(GraphableRegressionTask(resume_cfg, dropout=0.0), resume_cfg, str(tmp_path / "paused"))
    assert resumed.step == 9
    resumed.fit()
    for (name, p_graph), p_resumed in zip(graphed.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p_resumed, p_graph, rtol=1e-5, atol=1e-6, msg=f"parameter {name}")


@pytest.mark.gpu
@requires_cuda
def test_cuda_graph_run_stops_on_a_nan_loss_before_the_update_and_recaptures_a_new_length(tmp_path):
    # log_every 5: step 8 is no log / checkpoint step, so its values are read one step late (at step 9, before
    # step 9's update is launched) while its own update skipped itself on the device (fused AdamW's found_inf)
    cfg = _graph_cfg(max_steps=12, ckpt_every=3, log_every=5, cuda_graph=True)
    run_dir = tmp_path / "nan"
    trainer = Trainer(GraphableRegressionTask(cfg, nan_at_batch=7), cfg, str(run_dir))  # batch 7 = step 8
    assert trainer._graph is None
    with pytest.raises(TrainingError, match="step 8"):
        trainer.fit()
    assert trainer._graph.skips_nonfinite and trainer._graph.replays == 9 - 3  # step 8 was a replayed one
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    # the weights and the optimizer's state are step 7's, exactly: as a run paused after step 7 left them
    pause_cfg = _graph_cfg(max_steps=12, ckpt_every=3, log_every=5, cuda_graph=True, stop_at_step=7)
    paused = Trainer(GraphableRegressionTask(pause_cfg, nan_at_batch=7), pause_cfg, str(tmp_path / "paused7"))
    paused.fit()
    for (name, p_nan), p_7 in zip(trainer.model.named_parameters(), paused.model.parameters()):
        torch.testing.assert_close(p_nan, p_7, rtol=1e-6, atol=1e-7, msg=f"parameter {name}")
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(trainer.optimizer.state[p_nan][key], paused.optimizer.state[p_7][key],
                                       rtol=1e-6, atol=1e-9, msg=f"{key} of {name}")

    cfg = _graph_cfg(max_steps=12, cuda_graph=True, seq_len_warmup=[[0, 6], [6, 9]])
    warm = Trainer(GraphableRegressionTask(cfg), cfg, str(tmp_path / "lengths"))
    result = warm.fit()
    assert warm._graph.captures == 2 and warm._graph.replays == (6 - 3) + (6 - 3)
    assert math.isfinite(result["train/loss"])


@pytest.mark.gpu
@requires_cuda
def test_cuda_graph_trains_the_mamba_induction_heads_model_like_the_eager_step(tmp_path):
    import seqmamba.tasks  # noqa: F401  (registers the tasks)
    from seqmamba.registry import TASKS

    def run(name, **trainer):
        cfg = {"seed": 0, "task": {"name": "induction_heads", "val_samples": 64, "val_batch_size": 64},
               "dataset": {"name": "induction_heads", "vocab_size": 16, "seq_len": 64},
               "model": {"name": "mamba_lm", "d_model": 32, "n_layer": 2},
               "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}, "scheduler": {"name": "constant"},
               "trainer": {"max_steps": 24, "batch_size": 8, "device": "cuda", "log_every": 1, "eval_every": 8,
                           "progress": False, "tensorboard": False, "deterministic": True, **trainer}}
        trainer_obj = Trainer(TASKS.get("induction_heads")(cfg), cfg, str(tmp_path / name))
        trainer_obj.fit()
        return trainer_obj, [v for _, v in train_losses(str(tmp_path / name))], cfg

    graphed, graph_losses, cfg = run("graph", cuda_graph=True)
    eager, eager_losses, _ = run("eager")
    assert graphed._graph.replays == 21
    # evaluations in the run see the weights the replays wrote (the no-grad caches keyed on parameter
    # versions included): the same numbers as the saved weights loaded into a fresh model
    fresh = TASKS.get("induction_heads")(cfg).build_model().cuda()
    load_model_weights(fresh, str(tmp_path / "graph" / "checkpoints" / "last.pt"))
    in_run = graphed.evaluate()
    graphed.model = fresh
    assert in_run == pytest.approx(graphed.evaluate(), rel=1e-6)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    for (name, p_graph), p_eager in zip(graphed.model.named_parameters(), eager.model.parameters()):
        torch.testing.assert_close(p_graph, p_eager, rtol=1e-4, atol=1e-5, msg=f"parameter {name}")

    # trainer.compile under the graphs: the warmup steps compile, the capture records Inductor's kernels, and the
    # replays train as the compiled eager step does (Inductor's fused bf16 elementwise ops round differently from
    # eager's kernels, so against the plain eager run only the losses, loosely)
    compiled, compiled_losses, _ = run("compiled_graph", cuda_graph=True, compile=True)
    compiled_eager, compiled_eager_losses, _ = run("compiled_eager", compile=True)
    assert compiled.compiled and compiled.use_cuda_graph and compiled._graph.captures == 1
    assert compiled._graph.replays == 21 and compiled._graph.skips_nonfinite
    assert compiled_losses == pytest.approx(compiled_eager_losses, rel=1e-4)
    for (name, p_graph), p_eager in zip(compiled.model.named_parameters(), compiled_eager.model.parameters()):
        torch.testing.assert_close(p_graph, p_eager, rtol=1e-4, atol=1e-5, msg=f"parameter {name}")
    assert compiled_losses == pytest.approx(eager_losses, rel=2e-2)


def test_a_tie_with_the_best_metric_moves_best_to_the_later_weights(tmp_path):
    # val/acc saturates at 1.0 on the synthetic tasks; best.pt must not freeze at the first perfect step
    cfg = make_cfg(max_steps=1)
    trainer = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path))
    trainer.monitor_mode, trainer.best_metric = "max", 1.0
    assert trainer._is_better(1.0) and not trainer._is_better(0.99) and not trainer._is_better(float("nan"))
    trainer.monitor_mode, trainer.best_metric = "min", 0.5
    assert trainer._is_better(0.5) and not trainer._is_better(0.51)

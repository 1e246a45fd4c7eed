"""Data parallelism: single-process helpers are no-ops; a real 2-process gloo run under torchrun."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from seqmamba.train import distributed as dist_utils
from seqmamba.train.run_log import read_metrics

HERE = os.path.dirname(os.path.abspath(__file__))


def test_single_process_helpers_pass_values_through(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = dist_utils.init_distributed("cpu")
    assert (env.rank, env.world_size, env.is_distributed, env.is_rank0) == (0, 1, False, True)
    assert dist_utils.broadcast_object({"dir": "x"}) == {"dir": "x"}
    assert dist_utils.all_gather_object(3) == [3]
    assert dist_utils.all_reduce_sums({"loss": 2, "n": 1}) == {"loss": 2.0, "n": 1.0}
    model = nn.Linear(2, 2)
    assert dist_utils.wrap_ddp(model, torch.device("cpu")) is model
    dist_utils.barrier()
    dist_utils.destroy_distributed()


def test_torchrun_environment_is_read_and_validated(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert dist_utils.env_from_torchrun() == dist_utils.DistEnv(rank=2, world_size=4, local_rank=0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        dist_utils.env_from_torchrun()
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK='two'"):
        dist_utils.env_from_torchrun()
    assert dist_utils.backend_for("cpu") == "gloo" and dist_utils.backend_for("cuda") == "nccl"


def test_two_process_gloo_run_writes_one_run_dir_equal_weights_and_stops_all_ranks_on_nan(tmp_path):
    runs_parent, out_dir = tmp_path / "runs", tmp_path / "out"
    runs_parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=env.get("GLOO_SOCKET_IFNAME", "lo"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           os.path.join(HERE, "ddp_train_script.py"), str(runs_parent), str(out_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    run_dirs = os.listdir(runs_parent)
    assert len(run_dirs) == 1, f"expected one run directory, found {run_dirs}"
    run_dir = runs_parent / run_dirs[0]
    assert sorted(p for p in os.listdir(run_dir) if p.startswith("metrics")) == ["metrics.csv", "metrics.jsonl"]
    rows = read_metrics(str(run_dir))
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == [2, 4, 6]  # logged once (rank 0), not once per rank
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2

    rank0 = torch.load(out_dir / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(out_dir / "weights_rank1.pt", weights_only=True)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["step"] == rank1["step"] == 6
    assert rank0["val_loss"] == rank1["val_loss"]  # evaluated on rank 0, broadcast to all
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), f"ranks disagree on {key}"

    # NaN on rank 1 only: both ranks raise TrainingError naming step 5; last.pt stays at step 3
    for rank in (0, 1):
        message = (out_dir / f"nan_rank{rank}.txt").read_text()
        assert "non-finite" in message and "step 5" in message, f"rank {rank}: {message}"
    nan_last = torch.load(out_dir / "nan_run" / "checkpoints" / "last.pt", weights_only=True)
    assert nan_last["step"] == 3


def test_evaluation_over_two_gloo_processes_equals_one_process(tmp_path):
    """Sums over ranks: 2 processes (batch i on rank i % 2, one set of a single batch, so rank 1
    has nothing to add there) give the metrics of 1 process, counts exactly, losses to rounding."""
    sys.path.insert(0, HERE)
    from eval_contract_tasks import all_metrics

    single = all_metrics()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=env.get("GLOO_SOCKET_IFNAME", "lo"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           os.path.join(HERE, "ddp_eval_script.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    import json

    for rank in (0, 1):
        double = json.loads((tmp_path / f"eval_rank{rank}.json").read_text())
        assert double.keys() == single.keys()
        for task_name, sets in single.items():
            assert double[task_name].keys() == sets.keys()
            for set_name, metrics in sets.items():
                got = double[task_name][set_name]
                assert got.keys() == metrics.keys(), (task_name, set_name)
                for key, value in metrics.items():
                    # acc / recall are ratios of integer counts: equal; losses are float64 sums in another order
                    assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (task_name, set_name, key)
    assert 0.0 < single["parity"]["val"]["acc"] < 1.0 and "recall/two" in single["parity"]["val"]

"""Checkpoints: atomic writes survive a crash mid-write, contents load with weights_only=True."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from seqmamba.atomic_write import remove_stale_temp_files
from seqmamba.train import Trainer
from seqmamba.train.checkpoint import atomic_torch_save, load_checkpoint, load_model_weights
from seqmamba.train.seeding import capture_rng_state, restore_rng_state
from trainer_tiny_task import TinyRegressionTask, TinyTokenRegressor


def test_crash_during_write_keeps_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"model": {"w": torch.arange(4.0)}, "step": 1}, str(path))

    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip archive")  # what a dying writer leaves behind
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="simulated"):
        atomic_torch_save({"model": {"w": torch.zeros(4)}, "step": 2}, str(path))
    monkeypatch.setattr(torch, "save", real_save)

    survivor = load_checkpoint(str(path))
    assert survivor["step"] == 1 and torch.equal(survivor["model"]["w"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["last.pt"]


def test_interrupted_write_inside_trainer_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = {"seed": 0, "trainer": {"max_steps": 4, "ckpt_every": 2, "log_every": 1, "device": "cpu",
                                  "progress": False, "tensorboard": False}}
    trainer = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path))
    calls = {"n": 0}
    real_save = torch.save

    def save_then_die_on_second_call(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 save: a KeyboardInterrupt arrives mid-write
            f.write(b"\x00" * 100)
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die_on_second_call)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    ckpt_dir = tmp_path / "checkpoints"
    assert os.listdir(ckpt_dir) == ["last.pt"]
    assert load_checkpoint(str(ckpt_dir / "last.pt"))["step"] == 2


def test_stale_temp_files_from_a_killed_writer_are_removed_and_never_end_in_pt(tmp_path):
    (tmp_path / ".last.pt.tmp-123-abcd").write_bytes(b"torn")
    (tmp_path / "last.pt").write_bytes(b"keep")
    removed = remove_stale_temp_files(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [".last.pt.tmp-123-abcd"]
    assert os.listdir(tmp_path) == ["last.pt"]


def test_trainer_checkpoint_loads_with_weights_only_and_restores_model(tmp_path):
    cfg = {"seed": 0, "trainer": {"max_steps": 2, "progress": False, "tensorboard": False, "device": "cpu"}}
    trainer = Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path))
    trainer.fit()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "grad_scaler", "rng", "step", "best_metric", "config"} <= set(ckpt)
    assert ckpt["world_size"] == 1 and len(ckpt["rng"]) == 1
    assert isinstance(ckpt["config"], str)

    fresh = TinyTokenRegressor()
    load_model_weights(fresh, str(tmp_path / "checkpoints" / "last.pt"))
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_rng_state_round_trip_reproduces_python_numpy_and_torch_draws():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_rng_state_survives_safe_loading(tmp_path):
    atomic_torch_save({"model": {}, "rng": [capture_rng_state()]}, str(tmp_path / "r.pt"))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(load_checkpoint(str(tmp_path / "r.pt"))["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_missing_or_foreign_checkpoint_fails_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="junk.pt"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    cfg = {"seed": 0, "trainer": {"progress": False}, "ckpt": str(tmp_path / "absent.pt")}
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        Trainer(TinyRegressionTask(cfg), cfg, str(tmp_path / "run"))

"""A task defined outside the package, through the public contract only (notes/task_contract.md):
its module and config live in the test's temp directory, named by ``SEQMAMBA_TASK_PATH``; it is
registered, trained, evaluated and generates samples in its own format. A task module that fails to
import is reported in one line and listed as unavailable."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

TOY_TASK = '''
"""Counting: every token is the previous one plus one (mod vocab); samples are written as JSON."""
import json
import os

import torch

from seqmamba.atomic_write import atomic_open
from seqmamba.config_checks import check_int, config_get
from seqmamba.data.streams import fixed_batches, training_stream
from seqmamba.registry import TASKS
from seqmamba.tasks.next_token import NextTokenTask


class CountingData:
    def __init__(self, vocab_size, seq_len):
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def sample(self, batch_size, generator):
        start = torch.randint(0, self.vocab_size, (batch_size, 1), generator=generator)
        seq = (start + torch.arange(self.seq_len + 1)) % self.vocab_size
        return seq[:, :-1], seq[:, 1:]


@TASKS.register("toy_count")
class ToyCountTask(NextTokenTask):
    bos_token_id = 0

    def __init__(self, cfg):
        super().__init__(cfg)
        self.vocab_size = check_int("task.vocab_size", config_get(cfg, "task.vocab_size", 8), minimum=2)
        self.data = CountingData(self.vocab_size, check_int("task.seq_len", config_get(cfg, "task.seq_len", 12), 2))

    def train_batches(self, start_step, rank=0, world_size=1):
        return training_stream(self.data, int(config_get(self.cfg, "seed", 0)), start_step, rank,
                               int(config_get(self.cfg, "trainer.batch_size", 4)))

    def val_sets(self):
        return {"val": fixed_batches(self.data, 99, 12, 4)}

    def decode_samples(self, ids):
        return ["-".join(str(int(t)) for t in row) for row in ids]

    def write_samples(self, samples, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "counts.json")
        with atomic_open(path) as f:
            json.dump({"task": self.name, "samples": samples}, f)
        return [path]
'''

TOY_CONFIG = '''
# @package _global_
defaults:
  - override /model: mamba_lm
task:
  name: toy_count
  vocab_size: 8
  seq_len: 12
  tiny: []
'''

SHRINK = ["trainer.max_steps=3", "trainer.batch_size=4", "trainer.device=cpu", "trainer.progress=false",
          "trainer.eval_every=0", "trainer.ckpt_every=0", "trainer.tensorboard=false", "trainer.num_threads=1",
          "model.d_model=16", "model.n_layer=1"]


def _seqmamba(args, task_path, cwd):
    exe = shutil.which("seqmamba", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "seqmamba.cli"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["SEQMAMBA_TASK_PATH"] = str(task_path)
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_toy_task_outside_the_package_trains_evaluates_and_generates_its_own_format(tmp_path):
    ext = tmp_path / "ext"
    _write(ext / "toy_count.py", TOY_TASK)
    _write(ext / "configs" / "task" / "toy_count.yaml", TOY_CONFIG)
    run_dir = tmp_path / "run"

    listed = _seqmamba(["list"], ext, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy_count" in listed.stdout.split("tasks:")[1].splitlines()[0]
    assert "toy_count" in listed.stdout.split("task/")[1].splitlines()[0]

    trained = _seqmamba(["run", "task=toy_count", f"hydra.run.dir={run_dir}"] + SHRINK, ext, tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    results = json.loads((run_dir / "eval_results.json").read_text())
    val = results["eval"]["val"]
    assert set(val) == {"loss", "acc", "ppl", "bits_per_token"} and 0.0 <= val["acc"] <= 1.0
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert ckpt.is_file()

    evaluated = _seqmamba(["eval", "task=toy_count", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"] + SHRINK,
                          ext, tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["val"]
    # the final eval of `run` is of best.pt (absent: no periodic eval), i.e. the last weights
    assert again["acc"] == val["acc"] and abs(again["loss"] - val["loss"]) < 1e-9

    out_dir = tmp_path / "samples"
    generated = _seqmamba(["generate", "task=toy_count", f"ckpt={ckpt}", f"out_dir={out_dir}", "n_samples=3",
                           "generate.max_new_tokens=5", f"hydra.run.dir={tmp_path / 'gen'}"] + SHRINK, ext, tmp_path)
    assert generated.returncode == 0, generated.stderr[-2000:]
    samples = json.loads((out_dir / "counts.json").read_text())
    assert samples["task"] == "toy_count" and len(samples["samples"]) == 3
    for sample in samples["samples"]:
        tokens = [int(t) for t in sample.split("-")]
        assert tokens[0] == 0 and len(tokens) == 1 + 5 and all(0 <= t < 8 for t in tokens)


def test_a_task_module_that_fails_to_import_is_reported_in_one_line_and_listed_unavailable(tmp_path):
    ext = tmp_path / "ext"
    _write(ext / "broken_task.py", "import json\nimport no_such_package_for_seqmamba_tests\n")
    _write(ext / "configs" / "task" / "broken_task.yaml", "# @package _global_\ntask:\n  name: broken_task\n")

    run = _seqmamba(["run", "task=broken_task", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'r'}"], ext, tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "task 'broken_task' is unavailable" in lines[0]
    assert "No module named 'no_such_package_for_seqmamba_tests'" in lines[0] and "broken_task.py:2" in lines[0]

    listed = _seqmamba(["list"], ext, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "unavailable: broken_task (ModuleNotFoundError: No module named" in listed.stdout
    assert "induction_heads" in listed.stdout  # the other tasks still work

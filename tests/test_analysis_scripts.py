"""The analysis scripts behind notes/extrapolation.md and REPRODUCTION.md run and agree with the toolkit."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}


def _run(args, cwd):
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_extrapolation_study_scores_the_same_sets_as_seqmamba_eval(tmp_path):
    run_dir = tmp_path / "run"
    _run(["-m", "seqmamba.cli", "run", "task=induction_heads", "trainer.device=cpu", "trainer.max_steps=3",
          "trainer.eval_every=0", "trainer.progress=false", "trainer.tensorboard=false", "eval.max_log2_len=7",
          "eval.min_samples=256", "eval.max_samples=256", f"hydra.run.dir={run_dir}"], REPO)
    with open(run_dir / "extrapolation.csv", newline="") as f:
        toolkit = {int(r["length"]): float(r["acc"]) for r in csv.DictReader(f)}
    study = tmp_path / "study.json"
    _run([os.path.join(REPO, "benchmarks", "extrapolation_study.py"), str(run_dir / "checkpoints" / "last.pt"),
          "--max-log2", "7", "--min-samples", "256", "--diag-samples", "4", "--ref-samples", "32", "--double",
          "--json", str(study), "--plot", str(tmp_path / "study.png")], REPO)
    result = json.loads(study.read_text())
    rows = {r["length"]: r for r in result["accuracy"]}
    assert sorted(rows) == [64, 128] and all(r["set_ok"] and r["n_samples"] == 256 for r in rows.values())
    for length, acc in toolkit.items():  # its first samples are the eval's sets, scored the same way
        assert rows[length]["acc"] == acc
        assert rows[length]["max_logit_diff"] < 1e-3  # the float64 copy agrees
    assert {r["layer"] for r in result["answer_entries"]} == {0, 1}
    assert all(r["leak_per_token"] > 0 for r in result["answer_entries"])
    assert (tmp_path / "study.png").stat().st_size > 0


def test_reproduction_figures_are_drawn_from_the_recorded_runs(tmp_path):
    out = _run([os.path.join(REPO, "benchmarks", "plot_reproduction.py"), "--out", str(tmp_path)], REPO)
    for name in ("repro_induction_heads.png", "repro_selective_copying.png"):
        assert (tmp_path / name).stat().st_size > 10_000, out

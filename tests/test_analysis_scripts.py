"""The analysis scripts behind notes/extrapolation.md and REPRODUCTION.md run and agree with the toolkit."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the benchmark shell scripts call `python`: this interpreter's first on PATH
ENV = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
       "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


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


def test_table1_rows_script_trains_each_row_in_its_own_resumable_run_and_packs_it(tmp_path):
    """benchmarks/gpu_table1_rows.sh (REPRODUCTION.md's Table 1 commands) on the CPU at a tiny size: two rows side
    by side, each its own run directory under RUNS, paused by max_steps then resumed to the end by a second call
    with a larger max_steps (the recorded rows continue so), finished rows scored on their last weights and
    packed into OUT; one summary line per row."""
    import tarfile

    env = {**ENV, "MPS": "0", "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "out")}
    tiny = ["dataset.n_noise=24", "dataset.n_tokens=4", "trainer.batch_size=2", "trainer.device=cpu",
            "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.tensorboard=false", "trainer.cuda_graph=false",
            "task.val_samples=8", "task.val_batch_size=8"]
    rows = ["nogate_s4d", "h3_s6"]

    def call(max_steps):
        done = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_table1_rows.sh"), "300", " ".join(rows),
                               f"trainer.max_steps={max_steps}", *tiny], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    call(2)
    out = call(4)  # the same runs, resumed: from step 2 to 4
    for row in rows:
        run = tmp_path / "runs" / f"selective_copying_{row}"
        assert f"== {row}: step 4: val/acc=" in out, out
        assert json.loads((run / "train_results.json").read_text())["train"]["step"] == 4
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(steps) and steps[0] <= 2 and steps[-1] == 4  # one history across the two calls
        scored = run / "eval_last" / "eval_results.json"  # the last weights of the second call, not the first's
        assert "acc" in json.loads(scored.read_text())["val"]
        assert scored.stat().st_mtime >= (run / "train_results.json").stat().st_mtime
        assert "+model.ssm_cfg.layer=" + row in (run / ".hydra" / "overrides.yaml").read_text()
        with tarfile.open(tmp_path / "out" / f"selective_copying_{row}.tgz") as packed:
            names = packed.getnames()
        assert f"selective_copying_{row}/checkpoints/last.pt" in names


@pytest.mark.parametrize("archive", ["rows.tar", "logs.tgz"])
def test_pack_out_packs_more_than_eight_files_into_one_archive_and_leaves_eight_alone(tmp_path, archive):
    """benchmarks/pack_out.sh (the device returns at most 8 files from $OUT; a Table 1 call once lost a row's run
    directory as the ninth): 8 files stay as they are; 9, one of them in a sub-folder, become one archive holding
    every one of them with its contents."""
    import tarfile

    script = os.path.join(REPO, "benchmarks", "pack_out.sh")
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    files = {f"row{i}.log": f"log {i}" for i in range(7)}
    files["run/last.pt"] = "weights"
    for name, text in files.items():
        (out / name).write_text(text)
    subprocess.run(["bash", script, str(out), archive], check=True, capture_output=True, text=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(files)
    files["mps.err"] = "ninth"
    (out / "mps.err").write_text("ninth")
    done = subprocess.run(["bash", script, str(out), archive], check=True, capture_output=True, text=True)
    assert "9 files" in done.stdout and [p.name for p in out.iterdir()] == [archive]
    with tarfile.open(out / archive) as packed:
        packed_files = {os.path.normpath(m.name): packed.extractfile(m).read().decode()
                        for m in packed.getmembers() if m.isfile()}
    assert packed_files == files


def test_profile_decode_builds_both_runners_from_bench_generations_options():
    """profile_decode.py takes build_runner's options from bench_generation's own parser (a hand-built Namespace
    once lacked an option added later, and the script failed on its first GPU run): both models build with
    them, on the CPU, eager."""
    import argparse

    import torch

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import bench_generation
        import profile_decode
    finally:
        sys.path.pop(0)
    opts = profile_decode.runner_options(argparse.Namespace(prompt_len=16, gen_len=4, vocab_size=64,
                                                            ssm_state_dtype="bfloat16"))
    assert (opts.prompt_len, opts.gen_len, opts.vocab_size, opts.no_cuda_graph) == (16, 4, 64, True)
    assert opts.ssm_state_dtype == "bfloat16"
    size = bench_generation.QUICK_SIZES[0]
    for name in ("Mamba", "Transformer"):
        runner = bench_generation.build_runner(name, size, opts, torch.device("cpu"), torch.float32)
        assert sum(p.numel() for p in runner.model.parameters()) > 0
    # the profiled Mamba cache takes the runner's cache options (the bf16 states asked for), as profile_decode builds it
    mamba = bench_generation.build_runner("Mamba", size, opts, torch.device("cpu"), torch.float32)
    params = mamba.model.new_inference_params(2, 20, **mamba.cache_kwargs)
    mamba.model.step(torch.zeros(2, 1, dtype=torch.long), params)
    assert {s.dtype for _, s in params.key_value_memory_dict.values()} == {torch.bfloat16}


def test_profile_ops_by_input_shape_lists_the_costliest_ops_per_step_with_their_shapes():
    """profile_decode.ops_by_input_shape (profile_report: gpu_dna.py / bench_train_step.py --profile): ops by their own time and
    input shapes, most first, times and calls per step, the copies among them. On the CPU with CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import profile_decode
    finally:
        sys.path.pop(0)
    big, small = torch.randn(512, 512), torch.randn(8, 8)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):
            big @ big
            small.t().contiguous()
    lines = profile_decode.ops_by_input_shape(prof, per=2, time_attr="self_cpu_time_total")
    assert lines[0].split()[:2] == ["op", "calls"]
    assert lines[1].startswith("aten::mm") and "[[512, 512], [512, 512]]" in lines[1]
    assert float(lines[1].split()[1]) == 1.0  # calls per step
    copies = [line for line in lines if line.startswith("aten::copy_")]
    assert len(copies) == 1 and "[8, 8]" in copies[0]


def test_benchmark_switch_flags_set_the_named_module_switches_and_only_those_given(monkeypatch):
    """benchmarks/switches.py (bench_train_step.py, gpu_dna.py): each flag sets its module's switch to the value
    its choice means; a flag left out leaves the library's default."""
    import argparse
    import importlib

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import switches
    finally:
        sys.path.pop(0)
    mamba = importlib.import_module("seqmamba.modules.mamba")
    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    for module, name in ((mamba, "PROJECT_CHANNELS_INPUT_GRAD"), (mamba, "CHANNELS_FIRST_LINEAR_GRAD"),
                         (launch, "SPLIT_REDUCTION_PASSES")):
        monkeypatch.setattr(module, name, True)  # restored after the test
    parser = argparse.ArgumentParser()
    switches.add_switches(parser, "project-channels-grad", "split-passes", "channels-first-linear")
    args = parser.parse_args(["--project-channels-grad", "off", "--split-passes", "scan"])
    assert switches.apply_switches(args) == {"PROJECT_CHANNELS_INPUT_GRAD": False, "SPLIT_REDUCTION_PASSES": False}
    assert mamba.PROJECT_CHANNELS_INPUT_GRAD is False and launch.SPLIT_REDUCTION_PASSES is False
    assert mamba.CHANNELS_FIRST_LINEAR_GRAD is True  # not given
    switches.apply_switches(parser.parse_args(["--split-passes", "reduction"]))
    assert launch.SPLIT_REDUCTION_PASSES is True

"""Tasks sc09 and sc09_classifier on demo speech: CLI run -> generate (WAV, PNG), eval with FID / IS / mIS / AM."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

import seqmamba.tasks  # noqa: F401  (registers the tasks)
from seqmamba.cli import configs_dir, main
from seqmamba.data.sc09 import ensure_demo_folder
from seqmamba.tasks import get_task

TINY_MODEL = ["model.d_model=8", "model.n_layers=1"]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: extra OpenMP threads only contend (the runs' own trainer.num_threads is set to 1 too)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_folder(str(tmp_path_factory.mktemp("audio") / "sc09_demo"), speakers=3)


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=configs_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_cli(args):
    assert main(args) == 0, args


def test_train_batches_are_deterministic_per_seed_step_rank(demo):
    cfg = compose_cfg(["task=sc09", f"dataset.root={demo}", "task.train_crop=256", "trainer.batch_size=3"])
    task = get_task("sc09")(cfg)
    a, b = next(iter(task.train_batches(5, rank=1))), next(iter(task.train_batches(5, rank=1)))
    c = next(iter(task.train_batches(6, rank=1)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    inputs, targets = a
    assert inputs.shape == targets.shape == (3, 256)
    assert torch.equal(inputs[:, 1:], targets[:, :-1].clamp(min=0)) or (targets == -100).any()


def test_bits_per_sample_of_uniform_predictions_is_8_and_padding_is_not_scored(demo):
    cfg = compose_cfg(["task=sc09", f"dataset.root={demo}", "dataset.clip_length=512", *TINY_MODEL])
    task = get_task("sc09")(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    torch.nn.init.zeros_(model.lm_head.weight)  # equal logits: the uniform baseline, 8 bits for 8-bit mu-law
    metrics = task.evaluate(model, task.val_sets()["val"])
    assert metrics["bits_per_sample"] == pytest.approx(8.0, abs=1e-5)  # fp32 log-softmax round-off
    assert metrics["bits_per_sample"] == pytest.approx(metrics["loss"] / np.log(2))


@pytest.mark.slow
def test_cli_run_then_generate_writes_mono_16khz_wavs_of_16000_samples(demo, tmp_path):
    run_dir = tmp_path / "run"
    common = ["task=sc09", f"dataset.root={demo}", *TINY_MODEL, "trainer.device=cpu", "trainer.progress=false",
              "trainer.num_threads=1"]
    run_cli(["run", *common, "trainer.max_steps=3", "task.train_crop=64", "task.max_val_clips=2",
             f"hydra.run.dir={run_dir}"])
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    out = tmp_path / "samples"
    run_cli(["generate", *common, f"ckpt={ckpt}", "n_samples=2", f"out_dir={out}", f"hydra.run.dir={tmp_path / 'g'}"])
    wavs = sorted(p for p in os.listdir(out) if p.endswith(".wav"))
    assert wavs == ["sample_0000.wav", "sample_0001.wav"]
    for name in wavs:
        info = sf.info(str(out / name))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
    assert (out / "spectrograms.png").stat().st_size > 1000


def test_cli_on_a_short_clip_folder_and_generate(demo, tmp_path):
    # any SC09-layout folder works (here: the demo trimmed to 1600-sample clips)
    run_dir = tmp_path / "run"
    common = ["task=sc09", f"dataset.root={demo}", "dataset.clip_length=800", *TINY_MODEL, "trainer.device=cpu",
              "trainer.progress=false", "trainer.num_threads=1"]
    run_cli(["run", *common, "trainer.max_steps=2", "task.train_crop=64", "task.max_val_clips=2",
             f"hydra.run.dir={run_dir}"])
    out = tmp_path / "samples"
    run_cli(["generate", *common, f"ckpt={run_dir / 'checkpoints' / 'last.pt'}", "n_samples=3",
             f"out_dir={out}", f"hydra.run.dir={tmp_path / 'g'}"])
    data, rate = sf.read(str(out / "sample_0002.wav"), always_2d=True)
    assert data.shape == (800, 1) and rate == 16000 and np.abs(data).max() <= 1.0
    assert not [p for p in os.listdir(out) if ".tmp" in p]  # no half-written files left


def test_classifier_task_exports_and_sc09_eval_scores_samples(demo, tmp_path):
    clf_cfg = compose_cfg(["task=sc09_classifier", f"dataset.root={demo}", "dataset.clip_length=800",
                           "model.channels=[4,8]", "model.feature_dim=8"])
    clf_task = get_task("sc09_classifier")(clf_cfg)
    torch.manual_seed(0)
    classifier = clf_task.build_model()
    loss, metrics = clf_task.training_step(classifier, next(iter(clf_task.train_batches(0))))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(metrics["acc"]) <= 1
    results = clf_task.eval_checkpoint(classifier, str(tmp_path / "clf"))
    assert os.path.isfile(results["exported"]) and "recall/zero" in results["val"]

    cfg = compose_cfg(["task=sc09", f"dataset.root={demo}", "dataset.clip_length=800", *TINY_MODEL,
                       f"task.classifier={results['exported']}", "task.eval_samples=4", "task.max_val_clips=2"])
    task = get_task("sc09")(cfg)
    model = task.build_model()
    scores = task.eval_checkpoint(model, str(tmp_path / "eval"))
    assert set(scores["samples"]) == {"fid", "is", "mis", "am", "n"} and scores["samples"]["n"] == 4
    assert scores["samples"]["fid"] >= 0 and scores["test_set"]["is"] >= 1.0
    saved = json.load(open(tmp_path / "eval" / "audio_metrics.json"))
    assert saved["samples"] == scores["samples"]
    assert (tmp_path / "eval" / "eval_samples" / "spectrograms.png").is_file()


def test_missing_root_and_classifier_errors(tmp_path):
    task = get_task("sc09")(compose_cfg(["task=sc09"]))
    with pytest.raises(ValueError, match="dataset.root is not set"):
        task.val_sets()
    from seqmamba.models.sc09_classifier import load_sc09_classifier

    with pytest.raises(FileNotFoundError, match="not found"):
        load_sc09_classifier(str(tmp_path / "nope.pt"))

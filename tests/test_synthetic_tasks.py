"""Selective copying and induction heads: the generators, the seeded streams, the scoring."""
from __future__ import annotations

import csv
import gc
import json
import os
import sys

import pytest
import torch
from torch import nn

import seqmamba.tasks  # noqa: F401  (registers the tasks)
from seqmamba.data import synthetic
from seqmamba.data.synthetic import InductionHeadsGenerator, SelectiveCopyingGenerator, seeded_generator
from seqmamba.registry import DATASETS, TASKS
from seqmamba.tasks.synthetic_base import scored_loss_and_correct


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------
def test_selective_copying_places_data_tokens_in_order_among_noise_then_markers():
    # vocab (10) != number of outputs (4), so swapped class / position axes could not pass unseen
    gen = SelectiveCopyingGenerator(vocab_size=10, n_tokens=4, n_noise=20)
    inputs, targets = gen.sample(64, seeded_generator(0, 1))
    assert inputs.shape == (64, 20 + 2 * 4) and targets.shape == (64, 4)
    region, markers = inputs[:, :24], inputs[:, 24:]
    assert torch.all(markers == 9)
    assert torch.all((targets >= 1) & (targets <= 8)), "data tokens come from 1 .. vocab-2"
    for row in range(64):
        data = region[row][region[row] != 0]
        assert data.tolist() == targets[row].tolist(), "data tokens, in positional order, are the targets"
    # the positions are random: not always the same slots
    assert len({tuple(torch.nonzero(r).flatten().tolist()) for r in region}) > 50


def test_selective_copying_positions_are_uniform_over_the_region():
    # every position of the region holds a data token equally often (n_tokens / region of the rows),
    # and a region with no noise at all is all data
    gen = SelectiveCopyingGenerator(vocab_size=10, n_tokens=4, n_noise=20)
    inputs, _ = gen.sample(24000, seeded_generator(5))
    frequency = (inputs[:, :24] != 0).float().mean(dim=0)
    expected = 4 / 24  # binomial sd over 24000 rows: 0.0024
    assert torch.all((frequency - expected).abs() < 0.012), frequency
    full, targets = SelectiveCopyingGenerator(vocab_size=10, n_tokens=5, n_noise=0).sample(8, seeded_generator(1))
    assert torch.equal(full[:, :5], targets) and torch.all(full[:, 5:] == 9)


def test_induction_heads_special_token_appears_twice_and_target_follows_its_first_occurrence():
    gen = InductionHeadsGenerator(vocab_size=16, seq_len=40)
    inputs, targets = gen.sample(256, seeded_generator(3))
    assert inputs.shape == (256, 40) and targets.shape == (256, 1)
    assert torch.all(inputs[:, -1] == 15)
    assert torch.all((inputs == 15).sum(dim=1) == 2)
    first = (inputs == 15).float().argmax(dim=1)
    assert torch.all(first <= 37), "the answer after the first trigger lies before the final trigger"
    assert torch.equal(inputs.gather(1, (first + 1)[:, None]), targets)
    assert torch.all(targets < 15)
    # another length on demand (length extrapolation)
    long_inputs, _ = gen.sample(2, seeded_generator(3), seq_len=300)
    assert long_inputs.shape == (2, 300)


def test_generators_are_registered_and_reject_bad_sizes():
    assert DATASETS.get("selective_copying") is SelectiveCopyingGenerator
    assert DATASETS.get("induction_heads") is InductionHeadsGenerator
    with pytest.raises(ValueError, match="vocab_size"):
        SelectiveCopyingGenerator(vocab_size=2)
    with pytest.raises(ValueError, match="seq_len"):
        InductionHeadsGenerator(seq_len=2)


# ---------------------------------------------------------------------------------------------
# seeded streams: exact resume, per-rank streams, fixed validation sets
# ---------------------------------------------------------------------------------------------
def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_training_stream_resumed_at_step_k_matches_the_uninterrupted_stream():
    gen = InductionHeadsGenerator(seq_len=16)
    full = _take(synthetic.training_stream(gen, seed=7, start_step=0, rank=0, batch_size=4, micro_batches=2), 10)
    resumed = _take(synthetic.training_stream(gen, seed=7, start_step=3, rank=0, batch_size=4, micro_batches=2), 4)
    for (x_full, y_full), (x_res, y_res) in zip(full[6:], resumed):  # step 3 = micro-batches 6, 7
        assert torch.equal(x_full, x_res) and torch.equal(y_full, y_res)


def test_training_stream_differs_by_rank_seed_and_step():
    gen = SelectiveCopyingGenerator(n_tokens=4, n_noise=32)

    def first(seed, step, rank):
        return next(synthetic.training_stream(gen, seed, step, rank, batch_size=8))[0]

    base = first(0, 0, 0)
    assert torch.equal(base, first(0, 0, 0))
    assert not torch.equal(base, first(0, 0, 1))
    assert not torch.equal(base, first(1, 0, 0))
    assert not torch.equal(base, first(0, 1, 0))


def test_prefetcher_yields_the_source_in_order_and_raises_its_error_where_it_happened():
    from seqmamba.data.streams import Prefetcher

    gen = SelectiveCopyingGenerator(n_tokens=4, n_noise=32)
    direct = _take(synthetic.training_stream(gen, 3, 5, 0, batch_size=4), 12)
    fetched = Prefetcher(synthetic.training_stream(gen, 3, 5, 0, batch_size=4), depth=3, pin_memory=True)
    for (x, y), (x2, y2) in zip(direct, _take(fetched, 12)):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    fetched.close()
    fetched._thread.join(timeout=5)
    assert not fetched._thread.is_alive(), "close() stops the producer thread"

    def failing():
        yield 1
        yield 2
        raise RuntimeError("bad record 3")

    it = Prefetcher(failing(), depth=2)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="bad record 3"):
        next(it)
    finite = Prefetcher(iter([1, 2]), depth=1)
    assert list(finite) == [1, 2] and list(finite) == []
    unraised, hook = [], sys.unraisablehook  # the refused object's __del__ must not raise (it did: no _stop yet)
    sys.unraisablehook = unraised.append
    try:
        with pytest.raises(ValueError, match="prefetch depth must be >= 1, got 0"):
            Prefetcher(iter([]), depth=0)
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not unraised, unraised[0].exc_value


def test_validation_set_is_fixed_and_independent_of_the_training_seed():
    cfg_a = _cfg("induction_heads", seed=0)
    cfg_b = _cfg("induction_heads", seed=5)
    val_a = TASKS.get("induction_heads")(cfg_a).val_sets()["val"]
    val_b = TASKS.get("induction_heads")(cfg_b).val_sets()["val"]
    assert len(val_a) == len(val_b) > 0
    for (xa, ya), (xb, yb) in zip(val_a, val_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    train_first = next(TASKS.get("induction_heads")(cfg_a).train_batches(0))[0]
    assert not torch.equal(train_first, val_a[0][0][: train_first.shape[0]])


# ---------------------------------------------------------------------------------------------
# scoring: only the scored positions, no axis mix-ups
# ---------------------------------------------------------------------------------------------
class CopyOracle(nn.Module):
    """Stand-in backbone that solves selective copying exactly (logit 20 on the right token)."""

    def __init__(self, vocab_size, padded_vocab, n_tokens):
        super().__init__()
        self.vocab_size, self.padded_vocab, self.n_tokens = vocab_size, padded_vocab, n_tokens
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.padded_vocab) + self.dummy
        region = input_ids[:, : length - self.n_tokens]
        for row in range(batch):
            data = region[row][region[row] != 0]
            logits[row, length - self.n_tokens + torch.arange(self.n_tokens), data] = 20.0
        return logits


class InductionOracle(nn.Module):
    """Stand-in backbone that solves induction heads exactly, at any length."""

    def __init__(self, special, padded_vocab):
        super().__init__()
        self.special, self.padded_vocab = special, padded_vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        batch, length = input_ids.shape
        first = (input_ids == self.special).float().argmax(dim=1)
        answer = input_ids.gather(1, (first + 1)[:, None])[:, 0]
        logits = torch.zeros(batch, length, self.padded_vocab) + self.dummy
        logits[torch.arange(batch), -1, answer] = 20.0
        return logits


def test_scored_loss_uses_only_the_last_positions_and_the_real_vocabulary():
    torch.manual_seed(0)
    vocab, n_out = 10, 4
    logits = torch.randn(3, 12, 16)  # padded vocabulary of 16
    targets = torch.randint(0, vocab, (3, n_out))
    loss, correct = scored_loss_and_correct(logits, targets, vocab)
    manual = torch.stack(
        [
            -torch.log_softmax(logits[b, 12 - n_out + i, :vocab], dim=0)[targets[b, i]]
            for b in range(3)
            for i in range(n_out)
        ]
    ).mean()
    torch.testing.assert_close(loss, manual, rtol=1e-6, atol=1e-6)
    assert correct.shape == (3, n_out)
    # changing unscored positions or padded classes changes nothing
    other = logits.clone()
    other[:, : 12 - n_out] = 100.0
    other[..., vocab:] = 100.0
    loss_other, correct_other = scored_loss_and_correct(other, targets, vocab)
    torch.testing.assert_close(loss, loss_other)
    assert torch.equal(correct, correct_other)


def test_selective_copying_oracle_scores_perfectly_and_a_constant_model_at_chance():
    cfg = _cfg("selective_copying", dataset={"vocab_size": 10, "n_tokens": 4, "n_noise": 20})
    task = TASKS.get("selective_copying")(cfg)
    batches = task.val_sets()["val"]
    perfect = task.evaluate(CopyOracle(10, 16, 4), batches)
    assert perfect["acc"] == 1.0 and perfect["loss"] < 1e-6
    flat = task.evaluate(lambda_model(lambda x: torch.zeros(x.shape[0], x.shape[1], 16)), batches)
    assert flat["acc"] < 0.3 and abs(flat["loss"] - torch.log(torch.tensor(10.0)).item()) < 1e-4


def test_training_step_of_a_real_backbone_backpropagates_through_the_scored_positions():
    cfg = _cfg("induction_heads", dataset={"seq_len": 16}, trainer={"batch_size": 4})
    task = TASKS.get("induction_heads")(cfg)
    model = task.build_model()
    loss, metrics = task.training_step(model, next(task.train_batches(0)))
    loss.backward()
    assert set(metrics) == {"loss", "acc"} and torch.isfinite(loss)
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_induction_heads_length_warmup_changes_the_training_length_only():
    task = TASKS.get("induction_heads")(_cfg("induction_heads", dataset={"seq_len": 32}))
    task.set_seq_len(12)
    assert next(task.train_batches(0))[0].shape[1] == 12
    assert task.val_sets()["val"][0][0].shape[1] == 32


def test_synthetic_tasks_have_no_generate_verb():
    task = TASKS.get("induction_heads")(_cfg("induction_heads"))
    with pytest.raises(NotImplementedError, match="no generate verb"):
        task.generate(nn.Linear(1, 1), "unused")


# ---------------------------------------------------------------------------------------------
# length extrapolation eval
# ---------------------------------------------------------------------------------------------
def test_extrapolation_plan_shrinks_the_batch_as_the_length_grows():
    cfg = _cfg("induction_heads", eval={"min_log2_len": 6, "max_log2_len": 20, "tokens_per_length": 2**18,
                                        "min_samples": 16, "max_samples": 1024, "tokens_per_batch": 2**16})
    plan = TASKS.get("induction_heads")(cfg).extrapolation_plan()
    assert [p["length"] for p in plan] == [2**k for k in range(6, 21)]
    for item in plan:
        assert item["batch_size"] * item["length"] <= max(2**16, item["length"]), "memory per batch stays bounded"
        assert 16 <= item["n_samples"] <= 1024
    assert plan[-1]["batch_size"] == 1


def test_induction_eval_writes_table_json_and_plot_and_an_oracle_scores_100_at_every_length(tmp_path):
    cfg = _cfg("induction_heads", dataset={"seq_len": 64},
               eval={"min_log2_len": 6, "max_log2_len": 9, "tokens_per_length": 2**12, "min_samples": 8,
                     "max_samples": 64, "tokens_per_batch": 2**11})
    task = TASKS.get("induction_heads")(cfg)
    results = task.eval_checkpoint(InductionOracle(special=15, padded_vocab=16), str(tmp_path))
    assert [r["length"] for r in results["extrapolation"]] == [64, 128, 256, 512]
    assert all(r["acc"] == 1.0 for r in results["extrapolation"])
    with open(tmp_path / "extrapolation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["length"]) for r in rows] == [64, 128, 256, 512]
    assert json.loads((tmp_path / "extrapolation.json").read_text())["train_length"] == 64
    assert os.path.getsize(tmp_path / "extrapolation.png") > 1000


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class lambda_model(nn.Module):  # noqa: N801 - reads like a function at the call site
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fn(x) + self.dummy


def _cfg(task_name, seed=0, dataset=None, trainer=None, eval=None):
    """The task's composed Hydra config with a few values changed (validation sets kept small)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from seqmamba.cli import configs_dir

    with initialize_config_dir(config_dir=configs_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task_name}", f"seed={seed}", "task.val_samples=64"])
    OmegaConf.set_struct(cfg, False)
    for key, values in (("dataset", dataset), ("trainer", trainer), ("eval", eval)):
        for name, value in (values or {}).items():
            OmegaConf.update(cfg, f"{key}.{name}", value)
    return cfg


# ---------------------------------------------------------------------------------------------
# the acceptance target (slow: a few minutes on a 2-core CPU)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_induction_heads_default_run_reaches_99_percent_and_extrapolates_to_16x(tmp_path):
    from seqmamba.cli import main

    assert main(["run", "task=induction_heads", "trainer.progress=false", f"hydra.run.dir={tmp_path}"]) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["eval"]["val"]["acc"] >= 0.99
    by_length = {row["length"]: row["acc"] for row in results["eval"]["extrapolation"]}
    train_len = json.loads((tmp_path / "extrapolation.json").read_text())["train_length"]
    assert by_length[train_len] >= 0.99 and by_length[16 * train_len] >= 0.99

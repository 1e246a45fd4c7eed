"""Task.generate: the default ``seqmamba generate`` for tasks whose model can generate."""
from __future__ import annotations

import pytest
import torch

from seqmamba.models import MambaLM
from seqmamba.tasks.base import Task


def tiny_lm() -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(d_model=16, n_layer=2, vocab_size=12, ssm_cfg={"d_state": 4}).eval()


def task_with(**generate) -> Task:
    return Task({"seed": 3, "n_samples": 5, "generate": {"prompt": "1 2 3", "max_new_tokens": 7,
                                                        "batch_size": 2, **generate}})


def read_samples(out_dir) -> list:
    return [line.split() for line in (out_dir / "samples.txt").read_text().splitlines()]


def test_generate_writes_n_samples_that_continue_the_prompt_within_the_vocabulary(tmp_path):
    result = task_with().generate(tiny_lm(), str(tmp_path))
    samples = read_samples(tmp_path)
    assert result["n_samples"] == 5 and len(samples) == 5
    for sample in samples:
        assert sample[:3] == ["1", "2", "3"] and len(sample) == 3 + 7
        assert all(0 <= int(t) < 12 for t in sample)  # padded vocabulary slots are never sampled


def test_generate_is_reproducible_for_a_seed_and_greedy_rows_are_identical(tmp_path):
    model = tiny_lm()
    task_with().generate(model, str(tmp_path / "a"))
    task_with().generate(model, str(tmp_path / "b"))
    assert read_samples(tmp_path / "a") == read_samples(tmp_path / "b")
    task_with(temperature=0).generate(model, str(tmp_path / "g"))
    greedy = read_samples(tmp_path / "g")
    assert all(row == greedy[0] for row in greedy)
    ids = torch.tensor([[1, 2, 3]])
    expected = model.generate(ids, 7, temperature=0)[0].tolist()
    assert [int(t) for t in greedy[0]] == expected


@pytest.mark.parametrize("prompt, message", [("1 x 3", "'x' is not a token id"), ("1 99", "outside the vocabulary"),
                                             ("", "prompt is empty")])
def test_generate_rejects_bad_prompts_naming_the_problem(tmp_path, prompt, message):
    with pytest.raises(ValueError, match=message):
        task_with(prompt=prompt).generate(tiny_lm(), str(tmp_path))
    assert not (tmp_path / "samples.txt").exists()


def test_generate_rejects_out_of_range_sampling_settings(tmp_path):
    with pytest.raises(ValueError, match="top_p"):
        task_with(top_p=1.5).generate(tiny_lm(), str(tmp_path))

"""Deterministic data streams any task can use: seeded generators, resumable training streams, fixed sets.

Every batch comes from its own ``torch.Generator`` seeded from a tuple of integers (run seed, stream,
step, rank, micro-batch), mixed by numpy's ``SeedSequence`` so neighbouring tuples give unrelated
streams. The batch for training step k on rank r is therefore a pure function of (seed, k, r): a run
resumed at step k sees exactly the batches the uninterrupted run would have seen, and validation sets
(another stream) never overlap the training stream.

A "sampler" here is any object with ``sample(batch_size, generator, **kwargs) -> batch``.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Sequence

import numpy as np
import torch

# Stream ids keep training, validation and evaluation draws apart even for equal (step, rank).
TRAIN_STREAM = 0
VALIDATION_STREAM = 1
EXTRAPOLATION_STREAM = 2


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` whose state is a well-mixed function of the non-negative ``keys``."""
    for key in keys:
        if int(key) < 0:
            raise ValueError(f"seed components must be non-negative integers, got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def training_stream(
    sampler, seed: int, start_step: int, rank: int, batch_size: int, micro_batches: int = 1
) -> Iterator[Any]:
    """Infinite training batches from ``start_step`` on: ``micro_batches`` batches per step, batch
    (step, micro) on ``rank`` drawn from ``seeded_generator(seed, TRAIN_STREAM, step, rank, micro)``."""
    step = int(start_step)
    while True:
        for micro in range(micro_batches):
            yield sampler.sample(batch_size, seeded_generator(seed, TRAIN_STREAM, step, rank, micro))
        step += 1


def fixed_batches(
    sampler,
    seed: int,
    n_samples: int,
    batch_size: int,
    stream: int = VALIDATION_STREAM,
    set_key: Sequence[int] = (),
    **sample_kwargs,
) -> List[Any]:
    """A fixed held-out set of ``n_samples`` examples, generated once, split into batches.

    ``set_key`` (e.g. the sequence length) tells sets of the same stream apart; a set depends only on
    (seed, stream, set_key, n_samples) and the batch size, never on the training run's progress."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"need n_samples >= 1 and batch_size >= 1, got {n_samples}, {batch_size}")
    batches = []
    for index, start in enumerate(range(0, n_samples, batch_size)):
        size = min(batch_size, n_samples - start)
        batches.append(sampler.sample(size, seeded_generator(seed, stream, *set_key, index), **sample_kwargs))
    return batches



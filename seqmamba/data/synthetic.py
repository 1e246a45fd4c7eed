"""Seeded generators for the Mamba paper's synthetic tasks: selective copying and induction heads.

Every batch comes from its own ``torch.Generator`` seeded from a tuple of integers (run seed, stream,
step, rank, micro-batch), mixed by numpy's ``SeedSequence`` so neighbouring tuples give unrelated
streams. The batch for training step k on rank r is therefore a pure function of (seed, k, r): a run
resumed at step k sees exactly the batches the uninterrupted run would have seen, and validation sets
(another stream) never overlap the training stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch

from seqmamba.registry import DATASETS

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


@DATASETS.register("selective_copying")
@dataclass
class SelectiveCopyingGenerator:
    """Selective copying (Mamba paper, Table 1).

    A region of ``n_noise + n_tokens`` positions holds ``n_tokens`` data tokens at random positions
    (in random order of value, kept in positional order), the rest is the noise token 0. Then
    ``n_tokens`` marker tokens (``vocab_size - 1``) follow; at marker i the model must output the
    i-th data token. Data tokens are drawn from 1 .. vocab_size - 2, as in the public generator.

    ``sample`` returns ``inputs`` (batch, n_noise + 2 * n_tokens) and ``targets`` (batch, n_tokens):
    the targets are scored at the last ``n_tokens`` positions of the sequence.
    """

    vocab_size: int = 16
    n_tokens: int = 16
    n_noise: int = 4080

    def __post_init__(self):
        if self.vocab_size < 3:
            raise ValueError(
                f"selective copying needs vocab_size >= 3 (noise, marker and at least one data token), "
                f"got {self.vocab_size}"
            )
        if self.n_tokens < 1 or self.n_noise < 0:
            raise ValueError(f"need n_tokens >= 1 and n_noise >= 0, got n_tokens={self.n_tokens}, n_noise={self.n_noise}")

    @property
    def noise_token(self) -> int:
        return 0

    @property
    def marker_token(self) -> int:
        return self.vocab_size - 1

    @property
    def seq_len(self) -> int:
        """Length of one input sequence: the data region plus the markers."""
        return self.n_noise + 2 * self.n_tokens

    @property
    def n_scored(self) -> int:
        return self.n_tokens

    def sample(self, batch_size: int, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        region = self.n_noise + self.n_tokens
        # n_tokens distinct positions per row, in increasing order: the first n_tokens of a random
        # permutation of the region, sorted.
        positions = torch.rand(batch_size, region, generator=generator).argsort(dim=1)[:, : self.n_tokens]
        positions = positions.sort(dim=1).values
        data = torch.randint(1, self.vocab_size - 1, (batch_size, self.n_tokens), generator=generator)
        inputs = torch.full((batch_size, self.seq_len), self.noise_token, dtype=torch.long)
        inputs.scatter_(1, positions, data)
        inputs[:, region:] = self.marker_token
        return inputs, data


@DATASETS.register("induction_heads")
@dataclass
class InductionHeadsGenerator:
    """Induction heads / associative recall (Mamba paper, Table 2).

    Ordinary tokens are drawn uniformly from 0 .. vocab_size - 2; the special token ``vocab_size - 1``
    is placed once at a random position p in [0, L - 3] and again at the last position L - 1. The
    target is the token at p + 1 (the one that followed the special token's first occurrence); the
    special token appears exactly twice, so the answer is unambiguous. Scored at the last position.

    ``sample`` returns ``inputs`` (batch, L) and ``targets`` (batch, 1).
    """

    vocab_size: int = 16
    seq_len: int = 256

    def __post_init__(self):
        if self.vocab_size < 3:
            raise ValueError(f"induction heads needs vocab_size >= 3, got {self.vocab_size}")
        if self.seq_len < 3:
            raise ValueError(f"induction heads needs seq_len >= 3 (trigger, answer, trigger), got {self.seq_len}")

    @property
    def special_token(self) -> int:
        return self.vocab_size - 1

    @property
    def n_scored(self) -> int:
        return 1

    def sample(
        self, batch_size: int, generator: torch.Generator, seq_len: int | None = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        length = self.seq_len if seq_len is None else int(seq_len)
        if length < 3:
            raise ValueError(f"induction heads needs seq_len >= 3, got {length}")
        inputs = torch.randint(0, self.vocab_size - 1, (batch_size, length), generator=generator)
        trigger = torch.randint(0, length - 2, (batch_size, 1), generator=generator)
        inputs.scatter_(1, trigger, self.special_token)
        inputs[:, -1] = self.special_token
        targets = inputs.gather(1, trigger + 1)
        return inputs, targets


def training_stream(
    generator_config, seed: int, start_step: int, rank: int, batch_size: int, micro_batches: int = 1
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Infinite training batches from ``start_step`` on: ``micro_batches`` batches per step, batch
    (step, micro) on ``rank`` drawn from ``seeded_generator(seed, TRAIN_STREAM, step, rank, micro)``."""
    step = int(start_step)
    while True:
        for micro in range(micro_batches):
            yield generator_config.sample(batch_size, seeded_generator(seed, TRAIN_STREAM, step, rank, micro))
        step += 1


def fixed_batches(
    generator_config,
    seed: int,
    n_samples: int,
    batch_size: int,
    stream: int = VALIDATION_STREAM,
    set_key: Sequence[int] = (),
    **sample_kwargs,
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """A fixed held-out set of ``n_samples`` examples, generated once, split into batches.

    ``set_key`` (e.g. the sequence length) tells sets of the same stream apart; a set depends only on
    (seed, stream, set_key, n_samples) and the batch size, never on the training run's progress."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"need n_samples >= 1 and batch_size >= 1, got {n_samples}, {batch_size}")
    batches = []
    for index, start in enumerate(range(0, n_samples, batch_size)):
        size = min(batch_size, n_samples - start)
        batches.append(generator_config.sample(size, seeded_generator(seed, stream, *set_key, index), **sample_kwargs))
    return batches


def extrapolation_lengths(min_log2_len: int, max_log2_len: int) -> Sequence[int]:
    if not 2 <= min_log2_len <= max_log2_len:
        raise ValueError(f"need 2 <= min_log2_len <= max_log2_len, got {min_log2_len}, {max_log2_len}")
    return [2**k for k in range(min_log2_len, max_log2_len + 1)]

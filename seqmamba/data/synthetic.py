"""Seeded generators for the Mamba paper's synthetic tasks: selective copying and induction heads.

Every batch comes from its own ``torch.Generator`` seeded from a tuple of integers (run seed, stream,
step, rank, micro-batch), mixed by numpy's ``SeedSequence`` so neighbouring tuples give unrelated
streams. The batch for training step k on rank r is therefore a pure function of (seed, k, r): a run
resumed at step k sees exactly the batches the uninterrupted run would have seen, and validation sets
(another stream) never overlap the training stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

from seqmamba.registry import DATASETS

from .streams import (  # noqa: F401  (re-exported: the shared helpers moved to data/streams.py)
    EXTRAPOLATION_STREAM,
    TRAIN_STREAM,
    VALIDATION_STREAM,
    fixed_batches,
    seeded_generator,
    training_stream,
)


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
        # n_tokens distinct positions per row, uniformly among all subsets, in increasing order: the
        # indices of the n_tokens largest of `region` uniform draws (top-k is linear in the region;
        # a full argsort made the 64 x 4096 paper batch cost 13 ms on a CPU core, more than the GPU step)
        scores = torch.rand(batch_size, region, generator=generator)
        positions = scores.topk(self.n_tokens, dim=1, sorted=False).indices.sort(dim=1).values
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


def extrapolation_lengths(min_log2_len: int, max_log2_len: int) -> Sequence[int]:
    if not 2 <= min_log2_len <= max_log2_len:
        raise ValueError(f"need 2 <= min_log2_len <= max_log2_len, got {min_log2_len}, {max_log2_len}")
    return [2**k for k in range(min_log2_len, max_log2_len + 1)]

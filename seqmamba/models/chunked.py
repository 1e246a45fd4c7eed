"""Inference over sequences longer than memory: the model runs ``chunk_len`` tokens at a time and every
layer carries its state (Mamba: conv window + SSM state, through the scan's ``initial_state`` /
``return_last_state``; S4D: its complex state; attention / Hyena: their KV cache / input history) from one
chunk to the next through an :class:`InferenceParams`. The result equals one full pass (fp32: to float
rounding; tests/test_chunked_inference.py), at the activation memory of one chunk.

* :func:`iter_chunked_features` yields ``(start, features (batch, chunk, d_model))`` so a caller can pool
  or write each chunk and never hold (batch, L, d_model);
* :func:`chunked_features` / :func:`chunked_logits` concatenate them (logits through the model's forward).

The model needs ``features(input_ids, inference_params=None)`` and ``allocate_inference_cache`` (MambaLM,
or anything with the same two methods). The cache of SSM mixers does not grow with L; attention and
Hyena keep L positions, so for them the memory saving is in the activations only.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch import nn

from ..modules import InferenceParams

__all__ = ["iter_chunked_features", "chunked_features", "chunked_logits"]


def _check(model: nn.Module, input_ids: torch.Tensor, chunk_len: int) -> None:
    if not isinstance(chunk_len, int) or chunk_len < 1:
        raise ValueError(f"chunked inference: chunk_len must be a positive int, got {chunk_len!r}")
    if input_ids.dim() != 2:
        raise ValueError(f"chunked inference: input_ids has shape {tuple(input_ids.shape)}, expected (batch, L)")
    for name in ("features", "allocate_inference_cache"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"chunked inference: {type(model).__name__} has no {name}(); "
                            "it needs features(input_ids, inference_params) and allocate_inference_cache")


def _chunks(model: nn.Module, input_ids: torch.Tensor, chunk_len: int, call) -> Iterator[Tuple[int, torch.Tensor]]:
    _check(model, input_ids, chunk_len)
    batch, length = input_ids.shape
    params = InferenceParams.allocated_for(model, batch, length)
    for start in range(0, length, chunk_len):
        chunk = input_ids[:, start:start + chunk_len]
        out = call(chunk, params)
        params.seqlen_offset += chunk.shape[1]
        yield start, out


@torch.no_grad()
def iter_chunked_features(model: nn.Module, input_ids: torch.Tensor,
                          chunk_len: int) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(start, model.features(...)[:, start:start + chunk_len])`` for each chunk, in order."""
    yield from _chunks(model, input_ids, chunk_len, lambda ids, p: model.features(ids, inference_params=p))


@torch.no_grad()
def chunked_features(model: nn.Module, input_ids: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """``model.features(input_ids)`` (batch, L, d_model), computed ``chunk_len`` tokens at a time."""
    return torch.cat([out for _, out in iter_chunked_features(model, input_ids, chunk_len)], dim=1)


@torch.no_grad()
def chunked_logits(model: nn.Module, input_ids: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """``model(input_ids)`` logits (batch, L, vocab), computed ``chunk_len`` tokens at a time."""
    parts = _chunks(model, input_ids, chunk_len, lambda ids, p: model(ids, inference_params=p))
    return torch.cat([out for _, out in parts], dim=1)

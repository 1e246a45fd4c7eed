"""Buffers the op wrappers allocate for kernels to fill, with a debug switch that makes unwritten elements visible.

The CPU interpreter hands kernels fresh (zeroed) pages; a GPU's caching allocator hands back whatever the last
user left. A kernel that reads an element of its output or scratch buffer before (or without) writing it can
therefore pass every interpreter test and be wrong on the GPU. Under ``DEBUG_NAN_FILL`` every buffer allocated
through ``empty`` / ``empty_like`` here starts as NaN (integers: INT_SENTINEL), on the interpreter and the GPU.
Buffers that kernels accumulate into with atomics start as zeros on purpose (``launch.zeroed_views``).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

# Set ``SEQMAMBA_DEBUG_NAN_FILL=1`` or call ``set_debug_nan_fill(True)`` (the op tests do). Off by default: the fill
# costs a launch per buffer.
DEBUG_NAN_FILL = os.environ.get("SEQMAMBA_DEBUG_NAN_FILL", "0") not in ("", "0")
INT_SENTINEL = -0x5A5A5A5A  # what integer buffers start as under the debug switch (fits int32 and int64)


def set_debug_nan_fill(enabled: bool) -> bool:
    """Turns the NaN fill of new op buffers on or off; returns the previous setting."""
    global DEBUG_NAN_FILL
    previous, DEBUG_NAN_FILL = DEBUG_NAN_FILL, bool(enabled)
    return previous


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fills ``t`` in place with NaN (floating / complex) or INT_SENTINEL (integers; bool: True); returns it.
    Fake tensors (torch.compile's shape propagation) hold no memory and are returned as they are."""
    if isinstance(t, torch._subclasses.fake_tensor.FakeTensor):
        return t
    if t.is_floating_point() or t.is_complex():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    if t.dtype == torch.uint8:
        return t.fill_(255)
    return t.fill_(INT_SENTINEL if t.dtype in (torch.int32, torch.int64) else -1)


def empty(shape: Sequence[int], device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty`` for buffers a kernel is meant to overwrite completely (NaN-filled under DEBUG_NAN_FILL)."""
    t = torch.empty(tuple(shape), device=device, dtype=dtype)
    return poison(t) if DEBUG_NAN_FILL else t


def empty_like(ref: torch.Tensor, dtype: Optional[torch.dtype] = None, **kwargs) -> torch.Tensor:
    """``torch.empty_like`` for buffers a kernel is meant to overwrite completely (NaN-filled under
    DEBUG_NAN_FILL); keyword arguments go to torch.empty_like (e.g. memory_format)."""
    t = torch.empty_like(ref, dtype=dtype, **kwargs)
    return poison(t) if DEBUG_NAN_FILL else t

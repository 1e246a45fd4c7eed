"""Buffers the op wrappers allocate for kernels to fill, with a debug switch that makes unwritten elements visible.

The CPU interpreter hands kernels fresh (zeroed) pages; a GPU's caching allocator hands back whatever the last
user left. A kernel that reads an element of its output or scratch buffer before (or without) writing it can
therefore pass every interpreter test and be wrong on the GPU. Under ``DEBUG_NAN_FILL`` every buffer allocated
through ``empty`` / ``empty_like`` here starts as NaN (integers: INT_SENTINEL), on the interpreter and the GPU.
Buffers that kernels accumulate into with atomics start as zeros on purpose (``launch.zeroed_views``).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

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


# The split kernels' scratch (decode_linear's split-K GEMM, the conv update fused with x_proj): each program
# writes its fp32 partial to a slot, and the last of a tile's programs to count itself in sums the slots and
# zeroes the tile's counter. (device, scratch elements, tiles) -> (fp32 scratch, int32 counters), allocated once
# and kept: a CUDA graph keeps the addresses it captured, so nothing here is ever freed or replaced. Launches that
# share a key must run one after another (one stream).
SPLIT_SCRATCH: Dict[Tuple[int, int, int], Tuple[torch.Tensor, torch.Tensor]] = {}


def split_scratch(device: torch.device, part_numel: int, tiles: int) -> Tuple[torch.Tensor, torch.Tensor]:
    key = (device.index if device.type == "cuda" else -1, part_numel, tiles)
    found = SPLIT_SCRATCH.get(key)
    if found is not None:
        return found
    part = empty((part_numel,), device, torch.float32)
    count = torch.zeros(tiles, device=device, dtype=torch.int32)
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # First seen inside a graph capture (no warm-up call before it): the counters' zero fill is captured
        # and runs before the kernel at every replay, but has not run now, so eager calls must not share them.
        return part, count
    SPLIT_SCRATCH[key] = (part, count)
    return part, count

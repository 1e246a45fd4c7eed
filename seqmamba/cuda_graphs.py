"""CUDA-graph helpers shared by generation (the captured decode step and prefill) and the trainer
(``trainer.cuda_graph``): PyTorch's recipe of warming up on a side stream before a capture."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Tuple

import torch


@contextlib.contextmanager
def side_stream(device=None):
    """Run the block on a fresh CUDA stream ordered after, and before, the current one (warm-up work before a
    capture: Triton compilation, cuBLAS handles, allocator pools)."""
    current = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


def warm_up_and_capture(fn: Callable[[], Any], n_warmup: int) -> Tuple[torch.cuda.CUDAGraph, Any]:
    """``fn()`` run ``n_warmup`` times on a side stream, then captured as a CUDA graph. Returns (graph, the
    captured call's outputs: static tensors that every replay rewrites)."""
    with side_stream():
        for _ in range(n_warmup):
            fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph, output

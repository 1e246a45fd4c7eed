"""The ``backend`` argument every op takes: one vocabulary, one rule for "auto"."""
from __future__ import annotations

from typing import Optional

import torch

BACKENDS = ("auto", "reference", "torch", "triton")


def resolve_backend(op: str, backend: str, on_cuda: bool) -> str:
    """Validate ``backend`` and resolve "auto": CUDA tensors -> "triton", everything else -> "torch".

    Under ``torch.use_deterministic_algorithms(True)`` (``trainer.deterministic=true``) "auto" picks
    "torch" on CUDA too: the Triton backward kernels sum some gradients (dA, dB, dC, dD, d delta_bias)
    with float atomics, whose order, and so whose last bits, change from run to run.
    Ops without a separate fast CPU path treat "torch" and "reference" alike.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if on_cuda and not torch.are_deterministic_algorithms_enabled() else "torch"
    return backend


def records_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an op on ``tensors`` (None entries skipped) is recorded by autograd: grad mode is on and one
    of them requires grad. The Triton wrappers take their no-autograd path otherwise."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)

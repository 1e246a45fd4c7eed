"""The ``backend`` argument every op takes: one vocabulary, one rule for "auto"."""
from __future__ import annotations

BACKENDS = ("auto", "reference", "torch", "triton")


def resolve_backend(op: str, backend: str, on_cuda: bool) -> str:
    """Validate ``backend`` and resolve "auto": CUDA tensors -> "triton", everything else -> "torch".

    Ops without a separate fast CPU path treat "torch" and "reference" alike.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if on_cuda else "torch"
    return backend

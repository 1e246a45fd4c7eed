"""Public entry point of the selective scan: argument checks, then dispatch to a backend.

Backends:
  "reference"  sequential fp32 loop (seqmamba.ops.selective_scan.reference), autograd by PyTorch.
  "torch"      fast pure-PyTorch CPU path (seqmamba.ops.selective_scan.torch_chunked).
  "triton"     Triton kernels (seqmamba.ops.selective_scan.triton_kernels, launched by triton_launch, autograd in
               triton_autograd); CPU tensors only under
               TRITON_INTERPRET=1.
  "auto"       CUDA tensors -> "triton", everything else -> "torch".
"""
from __future__ import annotations

from typing import Optional

import torch

from ..backend import resolve_backend


def _shape_error(name: str, t: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected {expected}")


def check_selective_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """Validate shapes/dtypes; raise ValueError naming the argument, its shape and the expected one."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise _shape_error("u", u, "(batch, dim, L)")
    batch, dim, L = u.shape
    if delta.shape != u.shape:
        raise _shape_error("delta", delta, f"{(batch, dim, L)} (same as u)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise _shape_error("A", A, f"({dim}, N)")
    N = A.shape[1]
    if N > 256:
        raise ValueError(f"selective_scan: A has d_state N={N}; at most 256 is supported")
    if A.dtype != torch.float32:
        raise ValueError(f"selective_scan: A must be float32, got {A.dtype}")
    for name, X in (("B", B), ("C", C)):
        if X.dim() == 2:
            if X.shape != (dim, N):
                raise _shape_error(name, X, f"({dim}, {N}) or ({batch}, {N}, {L}) or ({batch}, G, {N}, {L})")
        elif X.dim() == 3:
            if X.shape != (batch, N, L):
                raise _shape_error(name, X, f"({batch}, {N}, {L})")
        elif X.dim() == 4:
            if X.shape[0] != batch or X.shape[2:] != (N, L) or X.shape[1] < 1 or dim % X.shape[1] != 0:
                raise _shape_error(name, X, f"({batch}, G, {N}, {L}) with G dividing dim={dim}")
        else:
            raise _shape_error(name, X, f"({dim}, {N}) or ({batch}, {N}, {L}) or ({batch}, G, {N}, {L})")
        if X.dim() == 2 and X.is_complex():
            raise ValueError(f"selective_scan: complex {name} is not supported")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            if t.shape != (dim,):
                raise _shape_error(name, t, f"({dim},)")
            if t.dtype != torch.float32:
                raise ValueError(f"selective_scan: {name} must be float32, got {t.dtype}")
    if z is not None and z.shape != u.shape:
        raise _shape_error("z", z, f"{(batch, dim, L)} (same as u)")
    if initial_state is not None and initial_state.shape != (batch, dim, N):
        raise _shape_error("initial_state", initial_state, f"({batch}, {dim}, {N})")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Optional[torch.Tensor] = None,
    backend: str = "auto",
):
    """mamba_ssm's ``selective_scan_fn`` (same first ten arguments, same shapes) plus ``initial_state``.

    u, delta, z: (batch, dim, L), any strides. A: (dim, N) fp32. B, C: (dim, N), (batch, N, L) or
    (batch, G, N, L). D, delta_bias: (dim,) fp32. initial_state: (batch, dim, N).
    Returns ``out`` (u's dtype) or ``(out, last_state)`` with last_state (batch, dim, N) fp32.
    """
    backend = resolve_backend("selective_scan", backend, u.is_cuda)
    check_selective_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    args = (u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(return_last_state), initial_state)
    if backend == "reference":
        from .reference import selective_scan_ref

        return selective_scan_ref(*args)
    if backend == "torch":
        from .torch_chunked import selective_scan_torch

        return selective_scan_torch(*args)
    from .triton_autograd import selective_scan_triton

    return selective_scan_triton(*args)

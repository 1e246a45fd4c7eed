"""Shared pytest setup.

Without CUDA, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before any
``@triton.jit`` function is defined, i.e. before the first kernel module is imported, so it is set here.
"""
import os

try:
    import torch

    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover - torch is a hard dependency
    _has_cuda = False

if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

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


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _process_wide_torch_switches_restored():
    """A test that trains with trainer.deterministic=true turns torch.use_deterministic_algorithms on for the
    process (as the trainer documents); restore it after every test, with cuDNN's benchmark flag. Left on, it
    sent every later test's "auto" backend to the PyTorch scan (twelfth session: the torch.compile tests,
    run after test_trainer.py's CUDA-graph test in one process, compiled the wrong scan and failed)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def nan_filled_buffers():
    """Every buffer the op wrappers allocate starts as NaN (integers: a sentinel; seqmamba/ops/buffers.py), so an
    element a kernel reads without having written it shows up (the interpreter's fresh memory is zeros, a GPU's
    whatever its last user left). The op test modules use it for every test:
    ``pytestmark = pytest.mark.usefixtures("nan_filled_buffers")``."""
    from seqmamba.ops import buffers

    previous = buffers.set_debug_nan_fill(True)
    yield
    buffers.set_debug_nan_fill(previous)

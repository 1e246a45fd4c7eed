"""Error measures and markers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""
import pytest
import torch


def cuda_only(test):
    """Marks a GPU test (``-m gpu`` selects them) and skips it where no CUDA device is present."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")(test))


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64; fails on non-finite values in ``actual``."""
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), "non-finite values"
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (for logits, where one bad entry matters)."""
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), "non-finite values"
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()

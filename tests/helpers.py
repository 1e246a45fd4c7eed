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


def force_lanes_forward(monkeypatch, **options) -> list:
    """The scan's one-channel-per-lane forward (FWD_CONFIG lanes) at every shape, in training too, plus ``options``
    (other FWD_CONFIG entries); returns the list that records each _lanes_forward_ok answer (which forward ran)."""
    import importlib

    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    for key, value in dict(lanes=True, lanes_min_warps_per_sm=0, lanes_training=True, **options).items():
        monkeypatch.setitem(launch.FWD_CONFIG, key, value)
    used, check = [], launch._lanes_forward_ok
    monkeypatch.setattr(launch, "_lanes_forward_ok", lambda *a: used.append(check(*a)) or used[-1])
    return used


def record_launch_flags(monkeypatch, launches) -> list:
    """Wraps triton_launch's cached launches (``launches``: {attribute name, e.g. "_launch_fwd": constexpr keys}) so
    each call appends the tuple of those keys' values to the returned list (one list for all of them, in call order),
    then launches as before."""
    import importlib

    launch = importlib.import_module("seqmamba.ops.selective_scan.triton_launch")
    seen = []
    for name, keys in launches.items():
        def recording(grid, tensors, ints, constexprs, *rest, _run=getattr(launch, name), _keys=tuple(keys), **kw):
            seen.append(tuple(constexprs[key] for key in _keys))
            return _run(grid, tensors, ints, constexprs, *rest, **kw)
        monkeypatch.setattr(launch, name, recording)
    return seen

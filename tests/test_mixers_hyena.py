"""Hyena: FFT long convolution vs the direct sum, the implicit filter's window, cached (O(t) per step)
inference vs the parallel pass, causality, and a broken kernel caught."""
import pytest
import torch

from seqmamba.modules import InferenceParams
from seqmamba.modules.hyena import HyenaInner, HyenaOperator, ImplicitFilter
from seqmamba.modules.lti import direct_causal_conv, fft_causal_conv

RTOL = 1e-4


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_inner(channels=6):
    return HyenaInner(channels, l_max=32, filter_order=8, bands=2)


def test_fft_path_equals_direct_convolution():
    inner = small_inner()
    u = torch.randn(2, 6, 40)
    with torch.no_grad():
        y = inner(u)
        ref = direct_causal_conv(u, inner.filter(40)) + inner.bias.double()[:, None] * u.double()
    assert rel_err(y, ref) < RTOL


def test_filter_is_windowed_and_defined_past_l_max():
    filt = ImplicitFilter(8, l_max=16, filter_order=8, bands=2)
    with torch.no_grad():
        h = filt(64)
        assert h.shape == (8, 64)
        # the exponential window: the fastest channel's filter is at most MLP-bound * exp(-15 * t)
        window = torch.exp(-filt.deltas[:, None] * torch.arange(64.0)[None] / 16)
        assert window[-1, 16] < 1e-2 + 1e-6
        assert torch.allclose(filt(10, start=5), h[:, 5:15], atol=1e-6)  # any lag range, same values


def test_step_and_chunks_equal_parallel():
    inner = small_inner(4)
    u = torch.randn(3, 4, 25)
    with torch.no_grad():
        y = inner(u)
        cache = inner.allocate(3, 25)
        steps = torch.cat([inner(u[..., t:t + 1], cache, t) for t in range(25)], dim=-1)
        assert rel_err(steps, y) < RTOL
        cache = inner.allocate(3, 25)
        bounds = [0, 3, 4, 17, 25]
        chunks = torch.cat([inner(u[..., a:b], cache, a) for a, b in zip(bounds, bounds[1:])], dim=-1)
        assert rel_err(chunks, y) < RTOL
        with pytest.raises(ValueError, match="max_seqlen=25"):
            inner(u[..., :1], cache, 25)


def test_operator_causal_and_chunked():
    op = HyenaOperator(8, l_max=16, filter_order=8, bands=2, layer_idx=0)
    x = torch.randn(2, 20, 8)
    with torch.no_grad():
        y = op(x)
        x2 = x.clone()
        x2[:, 11] += 3.0
        y2 = op(x2)
        assert (y[:, :11] - y2[:, :11]).abs().max() < 1e-6
        assert (y[:, 11:] - y2[:, 11:]).abs().max() > 1e-3
        params = InferenceParams(max_seqlen=20, max_batch_size=2)
        outs = []
        for a, b in [(0, 1), (1, 2), (2, 9), (9, 20)]:
            outs.append(op(x[:, a:b], inference_params=params))
            params.seqlen_offset = b
        assert rel_err(torch.cat(outs, dim=1), y) < RTOL


def test_broken_kernel_is_caught():
    inner = small_inner(4)
    u = torch.randn(2, 4, 30)
    with torch.no_grad():
        h = inner.filter(30)
        ref = direct_causal_conv(u, h)
        assert rel_err(fft_causal_conv(u, h), ref) < RTOL
        shifted = torch.cat([torch.zeros(4, 1), h[:, :-1]], dim=-1)
        assert rel_err(fft_causal_conv(u, shifted), ref) > 1e-2
        # circular (no zero padding) convolution: the wrap-around is visible
        circ = torch.fft.irfft(torch.fft.rfft(u, n=30) * torch.fft.rfft(h, n=30), n=30)
        assert rel_err(circ, ref) > 1e-3


def test_gradients_reach_the_filter():
    op = HyenaOperator(8, l_max=16, filter_order=8, bands=2)
    op(torch.randn(2, 12, 8)).square().mean().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert op.inner.filter.mlp[0].weight.grad.abs().sum() > 0

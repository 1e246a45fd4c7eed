"""S4D (diagonal LTI SSM): FFT kernel path vs direct convolution vs the plain recurrence, chunked / stepped
inference vs the parallel pass, causality, and checks that a broken kernel fails."""
import math

import pytest
import torch

from seqmamba.modules import InferenceParams
from seqmamba.modules.lti import (S4D_INITS, S4DInner, ShortConv, direct_causal_conv, fft_causal_conv, fft_size,
                                  s4d_recurrence_ref)
from seqmamba.registry import MIXERS

RTOL = 1e-4


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_fft_size_is_the_next_7_smooth_length():
    def smooth(m):
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 600)) + [2 * 4112, 2 * 2 ** 20, 2 * 1000003]:
        m = fft_size(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m)), n
    assert fft_size(2 * 4112) == 8232  # the paper's selective copying: 8224 = 2^5 x 257 is not


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_short_conv_is_the_zero_padded_depthwise_conv_and_runs_on_in_chunks(kernel_size):
    """ShortConv (H3's shift SSM / the Mamba arch's conv, through seqmamba.ops.causal_conv1d) equals grouped
    F.conv1d over the input left-padded with K - 1 zeros, with gradients; chunks with a cache equal one pass."""
    conv = ShortConv(6, kernel_size)
    x = torch.randn(2, 6, 23, requires_grad=True)
    y = conv(x)
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (kernel_size - 1, 0)), conv.conv1d.weight,
                                     conv.conv1d.bias, groups=6)
    assert rel_err(y, ref) < 1e-6
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, conv.conv1d.weight, conv.conv1d.bias), g)
    ref_grads = torch.autograd.grad(ref, (x, conv.conv1d.weight, conv.conv1d.bias), g)
    for a, b in zip(grads, ref_grads):
        assert rel_err(a, b) < 1e-5
    cache = conv.allocate(2)
    with torch.no_grad():
        parts = [conv(x[..., a:b], cache, a) for a, b in [(0, 2), (2, 3), (3, 23)]]
    assert rel_err(torch.cat(parts, dim=-1), y.detach()) < 1e-6


@pytest.mark.parametrize("L", [33, 257, 300])
def test_fft_conv_equals_direct_convolution(L):
    # 2 x 257 = 514 has the prime factor 257: the FFT runs at fft_size(514) = 525, still a linear convolution
    u, k = torch.randn(2, 5, L), torch.randn(5, L)
    assert rel_err(fft_causal_conv(u, k), direct_causal_conv(u, k)) < 1e-5
    # no circular wrap-around: an impulse at the end leaves the start untouched
    u = torch.zeros(1, 1, 16)
    u[..., -1] = 1.0
    assert fft_causal_conv(u, torch.ones(1, 16))[..., :-1].abs().max() < 1e-6


@pytest.mark.parametrize("init", S4D_INITS)
def test_parallel_forward_equals_recurrence_reference(init):
    layer = S4DInner(6, d_state=8, init=init)
    u = torch.randn(2, 6, 41)
    dA, dB, C, factor = layer.discrete()
    y_ref, _ = s4d_recurrence_ref(u, dA, dB, C, layer.D.detach(), factor)
    with torch.no_grad():
        assert rel_err(layer(u), y_ref) < RTOL
        K = layer.kernel(41)
        assert rel_err(fft_causal_conv(u, K), direct_causal_conv(u, K)) < RTOL


def test_init_values_and_zoh():
    lin, inv, real = (S4DInner(3, d_state=8, init=i) for i in S4D_INITS)
    A = lin._A()
    assert torch.allclose(A.real, torch.full_like(A.real, -0.5))
    assert torch.allclose(A.imag[0], math.pi * torch.arange(4.0))
    assert torch.allclose(inv._A().imag[0], 8 / math.pi * (8 / (2 * torch.arange(4.0) + 1) - 1))
    assert torch.allclose(real._A().real[0], -torch.arange(1.0, 9.0)) and real.modes == 8
    # ZOH: dB = (exp(dt A) - 1) / A, which for a tiny dt is dt (Euler)
    dt = torch.exp(lin.log_dt.detach())[:, None]
    dA, dB, _, _ = lin.discrete()
    assert torch.allclose(dA, torch.exp(dt * A), atol=1e-6)
    assert torch.allclose(dB, (torch.exp(dt * A) - 1) / A, atol=1e-6)
    with pytest.raises(ValueError, match="init must be one of"):
        S4DInner(3, init="legs")
    with pytest.raises(ValueError, match="d_state must be even"):
        S4DInner(3, d_state=7, init="lin")


@pytest.mark.parametrize("init", ["lin", "real"])
def test_step_and_chunks_equal_parallel(init):
    layer = S4DInner(4, d_state=8, init=init)
    u = torch.randn(3, 4, 29)
    with torch.no_grad():
        y = layer(u)
        cache = layer.allocate(3)
        steps = torch.stack([layer(u[..., t:t + 1], cache, t)[..., 0] for t in range(29)], dim=-1)
        assert rel_err(steps, y) < RTOL
        cache = layer.allocate(3)
        bounds = [0, 1, 7, 8, 20, 29]
        chunks = torch.cat([layer(u[..., a:b], cache, a) for a, b in zip(bounds, bounds[1:])], dim=-1)
        assert rel_err(chunks, y) < RTOL
        dA, dB, C, f = layer.discrete()
        _, last = s4d_recurrence_ref(u, dA, dB, C, layer.D, f)
        assert rel_err(torch.view_as_real(cache["ssm"]), torch.view_as_real(last)) < RTOL


def test_causal():
    layer = S4DInner(4, d_state=8)
    u = torch.randn(1, 4, 32)
    with torch.no_grad():
        y = layer(u)
        u2 = u.clone()
        u2[..., 17] += 5.0
        y2 = layer(u2)
    assert torch.equal(y[..., :17], y2[..., :17]) or (y[..., :17] - y2[..., :17]).abs().max() < 1e-6
    assert (y[..., 17:] - y2[..., 17:]).abs().max() > 1e-2


def test_broken_kernel_is_caught():
    """The checks above must fail on an off-by-one kernel or a wrong discretisation."""
    layer = S4DInner(4, d_state=8)
    u = torch.randn(2, 4, 30)
    with torch.no_grad():
        dA, dB, C, f = layer.discrete()
        y_ref, _ = s4d_recurrence_ref(u, dA, dB, C, layer.D, f)
        K = layer.kernel(30)
        skip = layer.D[:, None] * u
        shifted = torch.cat([torch.zeros(4, 1), K[:, :-1]], dim=-1)  # off by one lag
        assert rel_err(fft_causal_conv(u, K) + skip, y_ref) < RTOL
        assert rel_err(fft_causal_conv(u, shifted) + skip, y_ref) > 1e-2
        euler = 2 * torch.einsum("em,eml->el", C * torch.exp(layer.log_dt)[:, None],
                                 dA[..., None] ** torch.arange(30)).real  # Euler's dB instead of ZOH
        assert rel_err(fft_causal_conv(u, euler) + skip, y_ref) > 1e-3


def test_s4d_mixer_chunked_equals_parallel_and_trains():
    mixer = MIXERS.get("s4d")(16, d_state=8, layer_idx=0)
    x = torch.randn(2, 12, 16, requires_grad=True)
    y = mixer(x)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters())
    with torch.no_grad():
        params = InferenceParams(max_seqlen=12, max_batch_size=2)
        outs = []
        for a, b in [(0, 5), (5, 6), (6, 12)]:
            outs.append(mixer(x[:, a:b], inference_params=params))
            params.seqlen_offset = b
        assert rel_err(torch.cat(outs, dim=1), y) < RTOL


def test_blocked_kernel_equals_one_block_with_gradients():
    layer = S4DInner(4, d_state=8)
    u = torch.randn(2, 4, 50)

    def run(block):
        layer.zero_grad()
        layer.kernel_block = block
        y = layer(u)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in layer.parameters()]

    y_one, g_one = run(4096)
    y_blk, g_blk = run(16)  # 50 = 16 + 16 + 16 + 2
    assert rel_err(y_blk, y_one) < 1e-5
    for a, b in zip(g_blk, g_one):
        assert rel_err(a, b) < 1e-4


def test_chunks_longer_than_a_kernel_block_carry_the_state():
    layer = S4DInner(3, d_state=8)
    layer.kernel_block = 8
    u = torch.randn(2, 3, 45)
    with torch.no_grad():
        y = layer(u)
        cache = layer.allocate(2)
        chunks = torch.cat([layer(u[..., a:b], cache, a) for a, b in [(0, 19), (19, 20), (20, 45)]], dim=-1)
    assert rel_err(chunks, y) < RTOL

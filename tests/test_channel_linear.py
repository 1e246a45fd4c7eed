"""seqmamba/ops/channel_linear.py (the one-pass backward of x_proj / dt_proj) against float64 products, under the
Triton interpreter: edge lengths, several programs per batch row, strided views, accumulation into dx."""
import pytest
import torch

from seqmamba.ops import channel_linear

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # conftest.py: the wrappers' buffers start as NaN


def _reference(w, dy, x, dx0=None):
    w, dy, x = w.double(), dy.double(), x.double()
    dx = torch.einsum("mk,bml->bkl", w, dy)
    if dx0 is not None:
        dx = dx + dx0.double()
    return dx, torch.einsum("bml,bkl->mk", dy, x)


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("M,K,L", [(36, 20, 200), (20, 4, 1), (20, 4, 70), (5, 12, 129), (40, 3, 200)])
def test_linear_backward_matches_float64(monkeypatch, M, K, L):
    """M / K not powers of two (the tiles' padding), L = 1, one block plus some, and 200 steps over four programs per
    row (the partial weight gradients' sum; the last program has 8 steps)."""
    monkeypatch.setattr(channel_linear, "PROGRAMS_PER_SM", 4)
    torch.manual_seed(M * 1000 + L)
    batch = 2
    w = torch.randn(M, K)
    rows = torch.randn(batch, M + 3, L)  # dy as rows of a larger buffer, as d dt / dB / dC sit in x_proj's gradient
    dy, x = rows[:, 1:M + 1], torch.randn(batch, K, L)
    steps, per_row = channel_linear._launch_shape(batch, L, 64, torch.device("cpu"), 4)
    assert per_row == min(4, -(-L // 64)) and steps * (per_row - 1) < L <= steps * per_row
    dx, dw = channel_linear.linear_backward(w, dy, x)
    ref_dx, ref_dw = _reference(w, dy, x)
    assert dx.shape == (batch, K, L) and dw.shape == (M, K) and dw.dtype == w.dtype
    assert _rel(dx, ref_dx) < 1e-6 and _rel(dw, ref_dw) < 1e-6


@pytest.mark.parametrize("K", [24, 5])
def test_linear_backward_accumulates_into_a_strided_dx(K):
    """accumulate=True adds W^T dy to what dx holds, here the x half of a (batch, 2 K, L) buffer; the other half is
    untouched."""
    torch.manual_seed(1)
    M, L = 12, 90
    w, dy, x = torch.randn(M, K), torch.randn(2, M, L), torch.randn(2, K, L)
    buf = torch.randn(2, 2 * K, L)
    before = buf.clone()
    dx, dw = channel_linear.linear_backward(w, dy, x, dx=buf[:, :K], accumulate=True)
    ref_dx, ref_dw = _reference(w, dy, x, before[:, :K])
    assert dx.data_ptr() == buf.data_ptr()
    assert _rel(buf[:, :K], ref_dx) < 1e-6 and _rel(dw, ref_dw) < 1e-6
    assert torch.equal(buf[:, K:], before[:, K:])


def test_linear_backward_bf16_sums_in_fp32():
    """16-bit inputs: products exact, sums in fp32 (dx rounded once to bf16; dW summed in fp32 over every step)."""
    torch.manual_seed(2)
    M, K, L = 64, 4, 300
    w = torch.randn(M, K).bfloat16()
    dy, x = torch.randn(3, M, L).bfloat16(), torch.randn(3, K, L).bfloat16()
    dx, dw = channel_linear.linear_backward(w, dy, x)
    ref_dx, ref_dw = _reference(w, dy, x)
    assert dx.dtype == torch.bfloat16 and dw.dtype == torch.bfloat16
    assert _rel(dx, ref_dx) < 8e-3 and _rel(dw.float(), ref_dw) < 8e-3


def test_linear_backward_rejects_mismatched_shapes_and_tiles_too_large_and_knows_where_it_applies():
    w = torch.randn(6, 5)
    with pytest.raises(ValueError, match="do not fit"):
        channel_linear.linear_backward(w, torch.randn(2, 6, 10), torch.randn(2, 4, 10))
    with pytest.raises(ValueError, match="accumulate"):
        channel_linear.linear_backward(w, torch.randn(2, 6, 10), torch.randn(2, 5, 10), accumulate=True)
    with pytest.raises(ValueError, match="MAX_TILE"):
        channel_linear.linear_backward(torch.randn(300, 80), torch.randn(1, 300, 4), torch.randn(1, 80, 4))
    with pytest.raises(ValueError, match="MAX_TILE"):
        channel_linear.linear_forward(torch.randn(300, 80), torch.randn(1, 80, 4))
    dy = torch.randn(1, 6, 10)
    assert channel_linear.applies(torch.randn(128, 4), dy)  # the paper's dt_proj at D 64: a 128 x 16 tile
    assert channel_linear.applies(torch.randn(256, 8), dy)  # the D 128 DNA model's
    assert not channel_linear.applies(torch.randn(512, 16), dy)  # D 256: not timed, the GEMMs
    assert not channel_linear.applies(torch.randn(36, 128), dy)  # x_proj (x = d_inner channels): the GEMMs won
    assert not channel_linear.applies(torch.randn(1536, 48), dy)  # 130M's dt_proj: the batched GEMMs
    assert not channel_linear.applies(torch.randn(128, 4), dy.to(torch.float64))


@pytest.mark.parametrize("M,K,L", [(20, 4, 1), (36, 12, 130), (128, 4, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_forward_matches_bmm(M, K, L, dtype):
    """y = W x against float64 products of the weight in x's dtype, as torch.bmm ran it in the inner node (x as
    strided rows of a larger buffer, as dt sits in x_proj's output): L = 1, two blocks plus some, one whole block."""
    torch.manual_seed(M + L)
    w = torch.randn(M, K)
    rows = torch.randn(2, K + 5, L).to(dtype)
    x = rows[:, 2:K + 2]
    y = channel_linear.linear_forward(w, x)
    ref = torch.einsum("mk,bkl->bml", w.to(dtype).double(), x.double())  # bmm's products, exact
    assert y.shape == ref.shape and y.dtype == dtype and y.is_contiguous()
    # bf16: one rounding of y (the interpreter converts fp32 to bf16 by truncation: rms ~3.3e-3 relative)
    assert _rel(y, ref) < (1e-6 if dtype == torch.float32 else 6e-3)
    with pytest.raises(ValueError, match="do not fit"):
        channel_linear.linear_forward(torch.randn(M, K + 1), x)


def test_no_steps_give_zero_gradients_and_an_empty_output():
    w = torch.randn(8, 3)
    dx, dw = channel_linear.linear_backward(w, torch.randn(2, 8, 0), torch.randn(2, 3, 0))
    assert dx.shape == (2, 3, 0) and torch.equal(dw, torch.zeros(8, 3))
    assert channel_linear.linear_forward(w, torch.randn(2, 3, 0)).shape == (2, 8, 0)

"""seqmamba.modules: the Mamba mixer's names, shapes, initialisation and numerics; Block; RMSNorm."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import seqmamba.modules.mamba as mamba_module

from seqmamba.modules import Block, GatedMLP, Mamba, RMSNorm


def make_mamba(**kwargs):
    torch.manual_seed(0)
    return Mamba(d_model=16, d_state=8, d_conv=4, expand=2, layer_idx=0, **kwargs)


def test_mamba_parameter_names_and_shapes_match_mamba_ssm():
    m = make_mamba()
    d_inner, dt_rank, N = 32, math.ceil(16 / 16), 8
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "A_log": (d_inner, N),
        "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, 16),
        "conv1d.weight": (d_inner, 1, 4),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * N, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "out_proj.weight": (16, d_inner),
    }
    with_bias = Mamba(d_model=16, bias=True, conv_bias=False)
    assert with_bias.in_proj.bias is not None and with_bias.out_proj.bias is not None
    assert with_bias.conv1d.bias is None


def test_mamba_init_is_s4d_real_with_unit_D_in_fp32():
    m = Mamba(d_model=16, d_state=8, dtype=torch.bfloat16)
    assert m.A_log.dtype == torch.float32 and m.D.dtype == torch.float32
    assert m.in_proj.weight.dtype == torch.bfloat16
    expected_A = torch.arange(1, 9, dtype=torch.float32).expand(32, 8)
    torch.testing.assert_close(torch.exp(m.A_log), expected_A)
    assert torch.equal(m.D, torch.ones(32))
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_proj.bias._no_reinit


@pytest.mark.parametrize("dt_min,dt_max,floor", [(0.001, 0.1, 1e-4), (0.01, 0.05, 0.02)])
def test_mamba_dt_bias_is_inverse_softplus_of_log_uniform_dt(dt_min, dt_max, floor):
    torch.manual_seed(1)
    m = Mamba(d_model=64, dt_min=dt_min, dt_max=dt_max, dt_init_floor=floor)
    dt = F.softplus(m.dt_proj.bias.detach())
    low = max(dt_min, floor)
    assert dt.min() >= low * (1 - 1e-4) and dt.max() <= max(dt_max, floor) * (1 + 1e-4)
    # log-uniform: the log of dt spreads over the range (not all at one end)
    if floor < dt_min:
        span = math.log(dt_max) - math.log(dt_min)
        assert (dt.log().max() - dt.log().min()) > 0.5 * span


def test_mamba_dt_proj_weight_init_random_and_constant():
    bound = 4 ** -0.5 * 2.0  # dt_rank = ceil(64 / 16) = 4, dt_scale = 2
    m = Mamba(d_model=64, dt_scale=2.0)
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > 0.5 * bound
    c = Mamba(d_model=64, dt_scale=2.0, dt_init="constant")
    assert torch.all(c.dt_proj.weight == bound)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(d_model=64, dt_init="xavier")


def test_mamba_output_is_causal():
    m = make_mamba()
    x = torch.randn(2, 24, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 15:] += torch.randn_like(x2[:, 15:])
    y2 = m(x2)
    torch.testing.assert_close(y[:, :15], y2[:, :15])
    assert (y[:, 15:] - y2[:, 15:]).abs().max() > 1e-3


def test_mamba_auto_backend_matches_reference_scan_forward_and_grads():
    m = make_mamba()
    x = torch.randn(2, 33, 16, requires_grad=True)
    y_auto = m(x)
    g_auto = torch.autograd.grad(y_auto.square().sum(), [x] + list(m.parameters()))
    m.scan_backend = "reference"
    y_ref = m(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x] + list(m.parameters()))
    torch.testing.assert_close(y_auto, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_auto, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(g.abs().sum() > 0 for g in g_ref)  # every parameter receives gradient


def test_mamba_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"expected \(batch, L, 16\)"):
        make_mamba()(torch.randn(2, 5, 8))


def test_mamba_step_matches_parallel_forward():
    m = make_mamba()
    x = torch.randn(2, 11, 16)
    y = m(x)
    conv_state, ssm_state = m.allocate_inference_cache(2, 11)
    assert conv_state.shape == (2, 32, 4) and ssm_state.shape == (2, 32, 8) and ssm_state.dtype == torch.float32
    steps = [m.step(x[:, t:t + 1], conv_state, ssm_state)[0] for t in range(11)]
    torch.testing.assert_close(torch.cat(steps, dim=1), y, rtol=1e-4, atol=1e-5)


def test_rmsnorm_matches_formula_and_keeps_input_dtype():
    norm = RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8) * 3
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_block_adds_residual_in_fp32_then_norms_then_mixes():
    torch.manual_seed(0)
    mixer = torch.nn.Linear(8, 8)
    block = Block(8, mixer_cls=lambda d: _NoCacheMixer(mixer), residual_in_fp32=True)
    hidden, residual = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    out, new_residual = block(hidden, residual)
    torch.testing.assert_close(new_residual, hidden + residual)
    torch.testing.assert_close(out, mixer(block.norm(hidden + residual)))
    # first block: no residual yet, the input itself becomes the residual; kept in fp32 from bf16 input
    out, new_residual = block(hidden.to(torch.bfloat16), None)
    assert new_residual.dtype == torch.float32


def test_block_with_gated_mlp_has_second_norm_and_mlp():
    block = Block(16, mixer_cls=lambda d: Mamba(d, d_state=4), mlp_cls=lambda d: GatedMLP(d, 32, multiple_of=16))
    keys = set(block.state_dict())
    assert {"norm2.weight", "mlp.fc1.weight", "mlp.fc2.weight"} <= keys
    out, residual = block(torch.randn(1, 6, 16))
    assert out.shape == residual.shape == (1, 6, 16)


class _NoCacheMixer(torch.nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x, inference_params=None):
        return self.linear(x)


def test_cached_ssm_constants_follow_in_place_parameter_updates():
    """The decode step caches A = -exp(A_log), D, dt_bias under no_grad; an in-place update must refresh them."""
    m = make_mamba()
    x = torch.randn(2, 1, 16)
    with torch.no_grad():
        first = m.step(x, *m.allocate_inference_cache(2, 1))[0]
        assert m._ssm_constants()[0] is m._ssm_constants()[0]  # cached between calls
        m.A_log.add_(0.5)
        m.dt_proj.bias.add_(1.0)
        m.D.mul_(-1.0)
        cached = m.step(x, *m.allocate_inference_cache(2, 1))[0]
    fresh = m.step(x, *m.allocate_inference_cache(2, 1))[0]  # grad enabled: computed afresh, no cache
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)
    assert not torch.allclose(first, cached)


def test_ssm_constants_cache_sees_writes_that_bypass_autograd_once_their_versions_are_bumped():
    """A CUDA-graph replay of the optimizer writes the parameters without bumping their version counters
    (emulated here by writes through ``.data``): the cache cannot see that, so the trainer's graphed step
    bumps them with ``torch.autograd.graph.increment_version`` after every replay (seqmamba/train/cuda_graph.py)."""
    m = make_mamba()
    with torch.no_grad():
        before = m._ssm_constants()[0].clone()
        m.A_log.data.add_(0.5)  # no version bump: the stale cache is what a replay would leave
        assert torch.equal(m._ssm_constants()[0], before)
        torch.autograd.graph.increment_version(list(m.parameters()))
        torch.testing.assert_close(m._ssm_constants()[0], -torch.exp(m.A_log.float()), rtol=0, atol=0)


def test_fused_add_norm_helper_equals_the_blocks_unfused_add_and_norm():
    from seqmamba.modules.norm import LayerNorm, fused_add_norm

    torch.manual_seed(0)
    hidden, residual = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    for norm in (RMSNorm(8), LayerNorm(8)):
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        block = Block(8, mixer_cls=lambda d: torch.nn.Identity(), norm_cls=lambda d: norm, residual_in_fp32=True)
        expected_out, expected_residual = block._add_norm(hidden, residual, norm)
        out, new_residual = fused_add_norm(hidden, residual, norm, prenorm=True, residual_in_fp32=True)
        torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new_residual, expected_residual)


@pytest.mark.parametrize("x_proj_cf", [False, True], ids=["x_proj-time-major", "x_proj-channels-first"])
@pytest.mark.parametrize("project", ["mm", "bmm", "bmm-input-grad"])
@pytest.mark.parametrize("bias", [False, True])
def test_mamba_channels_first_and_time_major_layouts_give_the_same_outputs_and_gradients(monkeypatch, bias, project,
                                                                                        x_proj_cf):
    # CUDA takes the channels-first layout (in_proj as W @ h^T); CI has no GPU, so force both here.
    # "bmm-input-grad": the batched GEMM through _LayoutKeepingLinear (PROJECT_CHANNELS_INPUT_GRAD);
    # x_proj_cf: X_PROJ_CHANNELS_FIRST, x_proj as W @ x_conv too (dt / B / C as row blocks of its output).
    monkeypatch.setattr(mamba_module, "PROJECT_CHANNELS", project.split("-")[0])
    monkeypatch.setattr(mamba_module, "PROJECT_CHANNELS_INPUT_GRAD", project == "bmm-input-grad")
    monkeypatch.setattr(mamba_module, "X_PROJ_CHANNELS_FIRST", x_proj_cf)
    torch.manual_seed(0)
    layer = Mamba(24, d_state=8, bias=bias).double()
    h = torch.randn(2, 13, 24, dtype=torch.double, requires_grad=True)
    results = []
    for flag in (True, False):
        layer.channels_first = flag
        out = layer(h)
        grads = torch.autograd.grad(out.square().sum(), [h, *layer.parameters()])
        results.append((out, grads))
    layer.channels_first = None
    (out_cf, grads_cf), (out_tm, grads_tm) = results
    torch.testing.assert_close(out_cf, out_tm, rtol=1e-10, atol=1e-12)
    for g_cf, g_tm in zip(grads_cf, grads_tm):
        torch.testing.assert_close(g_cf, g_tm, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("project", ["mm", "bmm"])
def test_mamba_channels_first_forward_copies_no_sequence_sized_tensor(monkeypatch, project):
    """W @ h^T must not go through torch.matmul's fold, which ends in a transposed copy of the whole
    projection (~0.9 ms per call at (64, 3072, 2048) on an H100); only B / C (N rows) are made contiguous.
    Copies made inside the ops (the CPU scan's own workspace) are not the block's and are not counted."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    monkeypatch.setattr(mamba_module, "PROJECT_CHANNELS", project)
    monkeypatch.setattr(mamba_module, "X_PROJ_CHANNELS_FIRST", False)  # x_proj time-major: B / C copied (N rows)
    package_dir = os.path.dirname(os.path.dirname(mamba_module.__file__))  # .../seqmamba (installed or not)
    batch, L, d_model = 3, 40, 16
    layer = Mamba(d_model, d_state=4).eval()
    layer.channels_first = True
    copied = []

    class CopyLog(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.clone.default, torch.ops.aten.copy_.default):
                frames = [f.filename for f in traceback.extract_stack() if f.filename.startswith(package_dir)]
                if frames and frames[-1] == mamba_module.__file__:
                    copied.append(args[0].numel())
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), CopyLog():
        layer(torch.randn(batch, L, d_model))
    assert copied and max(copied) <= batch * layer.d_state * L, copied
    # X_PROJ_CHANNELS_FIRST (the default): B / C are rows of x_proj's channels-first output, handed over as is
    monkeypatch.setattr(mamba_module, "X_PROJ_CHANNELS_FIRST", True)
    copied.clear()
    with torch.no_grad(), CopyLog():
        layer(torch.randn(batch, L, d_model))
    assert copied == [], copied


def test_mamba_x_proj_channels_first_hands_the_scan_b_and_c_as_l_contiguous_views(monkeypatch):
    """X_PROJ_CHANNELS_FIRST: the scan gets B / C (batch, N, L) with unit time stride as views of one
    (batch, dt_rank + 2N, L) tensor (batch stride (dt_rank + 2N) L, so not contiguous), and its outputs and every
    gradient match the time-major x_proj's (the switch off)."""
    seen = []
    real = mamba_module.selective_scan

    def spy(u, delta, A, B, C, *args, **kwargs):
        seen.append((B.shape, B.stride(), C.stride(), B.is_contiguous()))
        return real(u, delta, A, B, C, *args, **kwargs)

    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    torch.manual_seed(0)
    layer = Mamba(24, d_state=8).double()
    layer.channels_first = True
    h = torch.randn(3, 13, 24, dtype=torch.double, requires_grad=True)
    results = []
    for flag in (False, True):
        monkeypatch.setattr(mamba_module, "X_PROJ_CHANNELS_FIRST", flag)
        out = layer(h)
        results.append((out, torch.autograd.grad(out.square().sum(), [h, *layer.parameters()])))
    (shape, b_stride, c_stride, contiguous) = seen[1]
    rows = layer.dt_rank + 2 * layer.d_state
    assert shape == (3, 8, 13) and b_stride == c_stride == (rows * 13, 13, 1) and not contiguous, seen
    assert seen[0][3]  # off: B made contiguous
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_linear_of_a_channels_first_view_returns_its_gradient_channels_first(bias):
    """_linear on (batch, in, L).transpose(1, 2): values and every gradient as F.linear's (fp64), and x's
    gradient in x's own layout, L contiguous (the batched matmul's autograd gives it time-major, which the Mamba
    block then copies or adds with strides; _LayoutKeepingLinear)."""
    torch.manual_seed(0)
    x_cf = torch.randn(3, 5, 7, dtype=torch.double, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True) if bias else None
    leaves = [x_cf, weight] + ([b] if bias else [])
    out = mamba_module._linear(x_cf.transpose(1, 2), weight, b)
    expected = F.linear(x_cf.transpose(1, 2), weight, b)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, g)
    for got, want in zip(grads, torch.autograd.grad(expected, leaves, g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert grads[0].is_contiguous(), grads[0].stride()  # (batch, in, L) with L contiguous


def test_linear_of_a_channels_first_view_under_autocast_keeps_dtypes_and_sums_weight_grads_in_fp32():
    torch.manual_seed(0)
    x_cf = torch.randn(8, 6, 33).bfloat16().requires_grad_(True)
    weight = torch.randn(5, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mamba_module._linear(x_cf.transpose(1, 2), weight)
    assert out.dtype == torch.bfloat16
    g = torch.randn(out.shape).bfloat16()
    dx, dw = torch.autograd.grad(out, [x_cf, weight], g)
    assert dx.dtype == torch.bfloat16 and dw.dtype == torch.float32 and dx.is_contiguous()
    # the weight gradient from bf16 products summed in fp32 over the batch: close to the fp64 sum of the same
    # bf16 operands (a bf16 sum over 8 rows would be off by ~1e-2 relative)
    want = torch.einsum("blo,bil->oi", g.double(), x_cf.detach().double())
    assert (dw.double() - want).abs().max() <= 1e-2 * want.abs().max()
    torch.testing.assert_close(dx.double(), torch.einsum("oi,blo->bil", weight.detach().bfloat16().double(),
                                                         g.double()), rtol=2e-2, atol=2e-2)


def test_mamba_channels_first_backward_hands_the_scan_an_L_contiguous_dout(monkeypatch):
    """out_proj's gradient of y reaches the scan's backward as (batch, d_inner, L) L-contiguous, so the scan
    need not copy it (the Triton backward copies a strided dout first: ~220 us at (64, 128, 4112) on an H200)."""
    seen = []
    real = mamba_module.selective_scan

    def spy(*args, **kwargs):
        y = real(*args, **kwargs)
        y.register_hook(lambda g: seen.append((g.shape, g.stride())))
        return y

    monkeypatch.setattr(mamba_module, "selective_scan", spy)
    layer = make_mamba()
    layer.channels_first = True
    h = torch.randn(2, 11, 16, requires_grad=True)
    layer(h).square().sum().backward()
    (shape, stride), = seen
    assert stride[-1] == 1 and stride[1] == shape[-1], (shape, stride)


def test_linear_of_a_channels_first_view_at_batch_one_also_returns_its_gradient_channels_first():
    x_cf = torch.randn(1, 5, 9, dtype=torch.double, requires_grad=True)
    weight = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    out = mamba_module._linear(x_cf.transpose(1, 2), weight)
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, [x_cf, weight], g)
    assert dx.is_contiguous(), dx.stride()
    torch.testing.assert_close(dx, torch.einsum("oi,blo->bil", weight.detach(), g))
    torch.testing.assert_close(dw, torch.einsum("blo,bil->oi", g, x_cf.detach()))


def test_channels_first_linear_switch_off_gives_the_batched_matmuls_time_major_gradient(monkeypatch):
    """CHANNELS_FIRST_LINEAR_GRAD = False (what the benchmarks time as "before") takes bmm's own autograd."""
    monkeypatch.setattr(mamba_module, "CHANNELS_FIRST_LINEAR_GRAD", False)
    x_cf = torch.randn(2, 5, 9, dtype=torch.double, requires_grad=True)
    weight = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    out = mamba_module._linear(x_cf.transpose(1, 2), weight)
    dx, = torch.autograd.grad(out, [x_cf], torch.ones_like(out))
    assert not dx.is_contiguous() and dx.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("bias", [False, True])
def test_project_channels_returns_its_inputs_gradient_time_major(monkeypatch, bias):
    """_project_channels' batched GEMM (channels-first, "bmm"): values and every gradient as F.linear's (fp64),
    and x's gradient (batch, L, in) contiguous, x's own layout (_LayoutKeepingLinear), also for a strided slice of x
    (dt, a slice of x_proj's output)."""
    monkeypatch.setattr(mamba_module, "PROJECT_CHANNELS_INPUT_GRAD", True)
    torch.manual_seed(0)
    whole = torch.randn(3, 9, 7, dtype=torch.double, requires_grad=True)
    x = whole[..., :5]  # (3, 9, 5), row stride 7
    weight = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True) if bias else None
    out = mamba_module._project_channels(x, weight, b, channels_first=True)
    expected = F.linear(x, weight, b).transpose(1, 2)
    assert out.shape == (3, 4, 9) and out.stride(-1) == 1
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    leaves = [x, weight] + ([b] if bias else [])
    grads = torch.autograd.grad(out, leaves, g)
    for got, want in zip(grads, torch.autograd.grad(expected, leaves, g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert grads[0].is_contiguous(), grads[0].stride()
    weight32 = weight.detach().float().requires_grad_()
    x16 = x.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = mamba_module._project_channels(x16, weight32, None, True)
    dx16, dw = torch.autograd.grad(out16, [x16, weight32], g.bfloat16())
    assert out16.dtype == torch.bfloat16 and dx16.dtype == torch.bfloat16 and dw.dtype == torch.float32
    assert dx16.is_contiguous()
    torch.testing.assert_close(dw.double(), grads[1], rtol=3e-2, atol=3e-2 * grads[1].abs().max().item())


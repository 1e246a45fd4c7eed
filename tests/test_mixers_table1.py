"""Every registered mixer: causal, chunked / stepped inference equal to the parallel pass, gradients;
Table 1's mamba_s6 equals the Mamba mixer; attention equals an explicit softmax; MambaLM builds a
per-layer list of mixers from the registry."""
import math

import pytest
import torch

from seqmamba.models import MambaLM
from seqmamba.modules import InferenceParams, Mamba, build_block
from seqmamba.modules.baselines import ARCHS, INNERS
from seqmamba.registry import MIXERS
from helpers import cuda_only

D = 8
SMALL = {"s4d": {"d_state": 8}, "hyena": {"l_max": 16, "filter_order": 8, "bands": 2},
         "attention": {"num_heads": 2}}
for _arch in ARCHS:
    SMALL[f"{_arch}_s4d"] = {"d_state": 8}
    SMALL[f"{_arch}_hyena"] = {"l_max": 16, "filter_order": 8, "bands": 2}
ALL = ["mamba", "attention", "s4d", "hyena"] + [f"{a}_{i}" for a in ARCHS for i in INNERS]


def make(name, layer_idx=0):
    torch.manual_seed(0)
    return MIXERS.get(name)(D, layer_idx=layer_idx, **SMALL.get(name, {}))


def run_in_chunks(mixer, x, bounds):
    """The mixer over x (batch, L, D) chunk by chunk ([(start, end), ...] covering L), with one inference cache."""
    params = InferenceParams(max_seqlen=x.shape[1], max_batch_size=x.shape[0])
    outs = []
    for a, b in bounds:
        outs.append(mixer(x[:, a:b], inference_params=params))
        params.seqlen_offset = b
    return torch.cat(outs, dim=1)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def test_registry_names():
    assert set(ALL) <= set(MIXERS.names())
    assert MIXERS.get("mamba") is Mamba


@pytest.mark.parametrize("name", ALL)
def test_causal_chunked_and_trainable(name):
    mixer = make(name)
    x = torch.randn(2, 14, D)
    y = mixer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    missing = [n for n, p in mixer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    with torch.no_grad():
        x2 = x.clone()
        x2[:, 9] += 2.0
        y2 = mixer(x2)
        assert (y2[:, :9] - y[:, :9]).abs().max() < 1e-5, "output before t changed when input t did"
        assert (y2[:, 9:] - y[:, 9:]).abs().max() > 1e-4
        chunked = run_in_chunks(mixer, x, [(0, 3), (3, 4), (4, 5), (5, 11), (11, 14)])  # chunks and single steps
        assert rel_err(chunked, y) < 1e-4


@pytest.mark.parametrize("name", [f"{a}_{i}" for a in ARCHS for i in INNERS])
def test_table1_mixers_channels_first_equals_time_major(name):
    """GatedMixer's CUDA layout (in_proj as W @ h^T: the inner layer, and S6's delta / B / C, L-contiguous;
    out_proj through y's strides) forced on the CPU gives the time-major layout's outputs and gradients, for
    the parallel pass and chunked inference."""
    x = torch.randn(2, 14, D, dtype=torch.float64)
    results = []
    for channels_first in (False, True):
        mixer = make(name).double()
        mixer.channels_first = channels_first
        xi = x.clone().requires_grad_()
        y = mixer(xi)
        y.square().sum().backward()
        grads = {n: p.grad for n, p in mixer.named_parameters()}
        with torch.no_grad():
            chunked = run_in_chunks(mixer, x, [(0, 5), (5, 6), (6, 14)])
        results.append((y.detach(), xi.grad, grads, chunked))
    (y0, dx0, g0, c0), (y1, dx1, g1, c1) = results
    assert rel_err(y1, y0) < 1e-10 and rel_err(dx1, dx0) < 1e-10 and rel_err(c1, c0) < 1e-10
    for n in g0:
        # S4D and Hyena compute in fp32 by design (lti.fft_causal_conv and the skip: u.float()), so their skip
        # weights' gradients are fp32 sums, whose order follows the layout of the gradient reaching them
        # (L-contiguous on the channels-first path since _LayoutKeepingLinear): fp32 rounding, 5.6e-8 for
        # inner.D of h3_s4d, 6.7e-8 for inner.bias of h3_hyena
        tol = 1e-6 if n.startswith("inner.") and not name.endswith("_s6") else 1e-10
        assert rel_err(g1[n], g0[n]) < tol, n


@cuda_only
@pytest.mark.parametrize("name", [f"{a}_{i}" for a in ARCHS for i in INNERS])
def test_table1_mixers_on_cuda_layout_match_time_major(monkeypatch, name):
    """On CUDA (Triton scan, cuFFT) the channels-first default equals the time-major layout at the selective-copying
    width (fp32, TF32 off), and its chunked inference equals its parallel pass."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    x = torch.randn(2, 300, 64, device="cuda")
    outs = {}
    for channels_first in (False, True):
        torch.manual_seed(0)
        mixer = MIXERS.get(name)(64, layer_idx=0, **SMALL.get(name, {})).cuda()
        mixer.channels_first = channels_first
        with torch.no_grad():
            outs[channels_first] = mixer(x)
            if channels_first:
                chunked = run_in_chunks(mixer, x, [(0, 129), (129, 130), (130, 300)])
                assert rel_err(chunked, outs[True]) < 1e-4
    assert rel_err(outs[True], outs[False]) < 1e-4


def test_mamba_s6_equals_the_mamba_mixer():
    ref = Mamba(D, d_state=4)
    ours = MIXERS.get("mamba_s6")(D, d_state=4)
    renames = {"in_proj.weight": "in_proj.weight", "conv.conv1d.weight": "conv1d.weight",
               "conv.conv1d.bias": "conv1d.bias", "inner.x_proj.weight": "x_proj.weight",
               "inner.dt_proj.weight": "dt_proj.weight", "inner.dt_proj.bias": "dt_proj.bias",
               "inner.A_log": "A_log", "inner.D": "D", "out_proj.weight": "out_proj.weight"}
    assert set(renames) == set(ours.state_dict())
    ours.load_state_dict({k: ref.state_dict()[v] for k, v in renames.items()})
    x = torch.randn(2, 11, D)
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) < 1e-5


def test_attention_equals_explicit_softmax():
    attn = make("attention")
    x = torch.randn(2, 7, D)
    q, k, v = attn.in_proj(x).split(D, dim=-1)
    q, k, v = (t.view(2, 7, 2, 4).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    ref = attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-6)
    gqa = MIXERS.get("attention")(D, num_heads=4, num_heads_kv=2)
    assert gqa(x).shape == x.shape
    with pytest.raises(ValueError, match="rotary_emb_dim"):
        MIXERS.get("attention")(D, num_heads=2, rotary_emb_dim=4)


def test_mamba_lm_per_layer_mixers_and_errors():
    cfg = {"layer": ["mamba", {"layer": "h3_s4d", "d_state": 8}, "Mamba1"], "d_state": 4}
    model = MambaLM(d_model=D, n_layer=3, vocab_size=11, ssm_cfg=cfg)
    kinds = [type(layer.mixer).__name__ for layer in model.backbone.layers]
    assert kinds == ["Mamba", "H3S4DMixer", "Mamba"]
    assert model.backbone.layers[0].mixer.d_state == 4 and model.backbone.layers[1].mixer.inner.d_state == 8
    model = MambaLM(d_model=D, n_layer=2, vocab_size=11, attn_layer_idx=[1], attn_cfg={"num_heads": 2})
    assert type(model.backbone.layers[1].mixer).__name__ == "CausalSelfAttention"
    assert model(torch.randint(0, 11, (2, 5))).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="did you mean 'hyena'"):
        MambaLM(d_model=D, n_layer=1, vocab_size=11, ssm_cfg={"layer": "hyenna"})
    with pytest.raises(ValueError, match="lists 1 mixers but n_layer=2"):
        MambaLM(d_model=D, n_layer=2, vocab_size=11, ssm_cfg={"layer": ["mamba"]})
    with pytest.raises(ValueError, match="mixer 's4d'.*bogus"):
        MambaLM(d_model=D, n_layer=1, vocab_size=11, ssm_cfg={"layer": [{"layer": "s4d", "bogus": 1}]})
    with pytest.raises(ValueError, match="'d_stat' \\(did you mean 'd_state'\\?\\) are taken by no mixer"):
        MambaLM(d_model=D, n_layer=1, vocab_size=11, ssm_cfg={"layer": "s4d", "d_stat": 8})


def test_shared_ssm_cfg_goes_to_the_mixers_that_take_it():
    """The model config's d_state / d_conv / expand must not break a switch to another mixer."""
    shared = {"d_state": 8, "d_conv": 3, "expand": 2}
    model = MambaLM(d_model=D, n_layer=3, vocab_size=11, ssm_cfg={"layer": ["mamba", "attention", "h3_s4d"],
                                                                  "num_heads": 2, **shared})
    mamba, attn, h3 = (layer.mixer for layer in model.backbone.layers)
    assert mamba.d_conv == 3 and attn.num_heads == 2 and h3.inner.d_state == 8 and h3.conv.kernel_size == 3
    with pytest.warns(UserWarning, match=r"\['d_conv', 'd_state', 'expand'\] are taken by none"):
        MambaLM(d_model=D, n_layer=1, vocab_size=11, ssm_cfg={"layer": "hyena", **shared})


def test_build_block_for_other_backbones():
    block = build_block(D, {"layer": "nogate_s6", "d_state": 4}, layer_idx=0, d_intermediate=16)
    h, residual = block(torch.randn(2, 6, D))
    assert h.shape == residual.shape == (2, 6, D)
    assert type(block.mixer).__name__ == "NogateS6Mixer" and block.mlp is not None


def test_mamba_lm_weight_init_keeps_the_inner_layers_own_biases():
    """MambaLM's _init_weights zeroes Linear biases; dt_proj's inverse-softplus bias and the Hyena filter's
    MLP biases must survive it (a zero dt bias would start every S6 channel at dt = softplus(0))."""
    model = MambaLM(d_model=D, n_layer=2, vocab_size=11, ssm_cfg={"layer": ["mamba_s6", "hyena"]})
    s6, hyena = model.backbone.layers[0].mixer, model.backbone.layers[1].mixer
    dt = torch.nn.functional.softplus(s6.inner.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6 and dt.std() > 0
    assert hyena.inner.filter.mlp[0].bias.abs().sum() > 0


@pytest.mark.parametrize("inner", ["s4d", "hyena"])
def test_nogate_lti_mixer_is_linear_and_its_activation_is_not(inner):
    """Without an activation the nogate mixer around an LTI inner layer is a linear map of its input (why it
    cannot select the j-th data token in selective copying, REPRODUCTION.md); with activation="gelu" the output is the
    GELU of the inner layer's, before out_proj, and chunked / stepped inference still equals one pass."""
    name = f"nogate_{inner}"
    torch.manual_seed(0)
    linear = MIXERS.get(name)(D, layer_idx=0, **SMALL[name]).double()
    torch.manual_seed(0)
    gelu = MIXERS.get(name)(D, layer_idx=0, activation="gelu", **SMALL[name]).double()
    x1, x2 = torch.randn(2, 2, 14, D, dtype=torch.float64)
    with torch.no_grad():
        combo = linear(2.0 * x1 - 3.0 * x2)
        # 1e-6: the inner layers compute their kernels / FFTs in fp32 whatever the module's dtype
        assert rel_err(combo, 2.0 * linear(x1) - 3.0 * linear(x2)) < 1e-6
        y = gelu(x1)
        xs = x1 @ gelu.in_proj.weight.T
        inner = gelu.inner(xs.transpose(1, 2).contiguous(), None, 0).transpose(1, 2)
        assert rel_err(y, torch.nn.functional.gelu(inner) @ gelu.out_proj.weight.T) < 1e-6
        assert rel_err(gelu(2.0 * x1 - 3.0 * x2), 2.0 * y - 3.0 * gelu(x2)) > 1e-2
        assert rel_err(run_in_chunks(gelu, x1, [(0, 3), (3, 4), (4, 11), (11, 14)]), y) < 1e-5
    assert "activation='gelu'" in repr(gelu)


def test_activation_is_for_the_nogate_architecture_only():
    with pytest.raises(ValueError, match="only the nogate architecture takes one"):
        MIXERS.get("h3_s4d")(D, layer_idx=0, activation="gelu", d_state=8)
    with pytest.raises(ValueError, match=r"must be one of \['gelu', 'silu'\]"):
        MIXERS.get("nogate_s4d")(D, layer_idx=0, activation="relu", d_state=8)
    with pytest.warns(UserWarning, match=r"\['activation'\] are taken by none of this model's mixers"):
        MambaLM(d_model=D, n_layer=1, vocab_size=11, ssm_cfg={"layer": "h3_s4d", "activation": "gelu"})
    model = MambaLM(d_model=D, n_layer=2, vocab_size=11,
                    ssm_cfg={"layer": ["nogate_s4d", "mamba"], "activation": "silu", "d_state": 8})
    assert model.backbone.layers[0].mixer.activation == "silu"

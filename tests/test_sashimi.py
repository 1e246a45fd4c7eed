"""SaShiMi U-Net: causality through every pooling level, recurrent step = parallel forward, O(1) state."""
import pytest
import torch

from helpers import max_rel_err
from seqmamba.models.sashimi import SaShiMi
from seqmamba.registry import BACKBONES


def tiny(pool=(2, 3), **kw):
    torch.manual_seed(0)
    return SaShiMi(vocab_size=256, d_model=16, n_layers=1, pool=pool, **kw).eval()


@pytest.mark.parametrize("t", [0, 1, 5, 6, 11, 17])  # block boundaries of both levels (frames 2 and 6) and inside
def test_perturbing_sample_t_changes_no_earlier_output_at_any_pooling_level(t):
    model = tiny()
    x = torch.randint(0, 256, (2, 24))
    x2 = x.clone()
    x2[:, t] = (x2[:, t] + 101) % 256
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.equal(a[:, :t], b[:, :t])
    assert (a[:, t:] - b[:, t:]).abs().max() > 0  # the change does reach position t onward


def test_each_level_is_causal_on_its_own_features():
    # a perturbation at t must not reach the coarse levels' outputs that feed positions < t
    model = tiny(pool=(4, 4))
    x = torch.randint(0, 256, (1, 64))
    grads = []
    emb = model.embedding(x).detach().requires_grad_(True)
    skips, h = [], emb
    for stage, pool in zip(model.down, model.down_pool):
        h = stage(h)
        skips.append(h)
        h = pool(h)
    h = model.center(h)
    for k in reversed(range(2)):
        h = model.up[k](model.up_pool[k](h) + skips[k])
    for t in (15, 16, 40):
        g, = torch.autograd.grad(h[0, t].sum(), emb, retain_graph=True)
        grads.append(g)
        assert g[0, t + 1:].abs().max() == 0, f"output {t} depends on later inputs"


@pytest.mark.parametrize("pool,length", [((2, 3), 25), ((4, 4), 40)])
def test_recurrent_step_equals_parallel_logits(pool, length):
    model = tiny(pool=pool)
    x = torch.randint(0, 256, (3, length))
    with torch.no_grad():
        parallel = model(x)
        cache = model.allocate_inference_cache(3)
        recurrent = torch.stack([model.step(x[:, t], cache) for t in range(length)], dim=1)
    assert max_rel_err(recurrent, parallel) < 1e-4


def test_generate_matches_parallel_scoring_of_its_own_samples():
    model = tiny(pool=(4, 4))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model.generate(torch.full((2, 1), 128), 40, generator=g, temperature=1.0)
        assert out.shape == (2, 41)
        # the state after generation has advanced exactly one step per consumed sample
        cache = model.allocate_inference_cache(2)
        logits = torch.stack([model.step(out[:, t], cache) for t in range(40)], 1)
        assert max_rel_err(logits, model(out[:, :40])) < 1e-4


def test_state_size_is_independent_of_sequence_length():
    model = tiny(pool=(4, 4))
    c1, c2 = model.allocate_inference_cache(2, 100), model.allocate_inference_cache(2, 100000)
    size = lambda c: sum(t.numel() for t in c.pool_in + c.pool_out) + sum(
        s.numel() for ip in c.down + c.up + [c.center] for st in ip.key_value_memory_dict.values() for s in st)
    assert size(c1) == size(c2)


def test_registered_and_mixer_errors():
    assert BACKBONES.get("sashimi") is SaShiMi
    with pytest.raises((KeyError, ValueError), match="unknown mixer 'attn'"):
        SaShiMi(d_model=8, n_layers=1, mixer="attn")
    with pytest.raises(ValueError, match="pooling factors"):
        SaShiMi(d_model=8, n_layers=1, pool=[0])


def test_default_sizes_match_the_paper():
    n6 = sum(p.numel() for p in SaShiMi(d_model=64, n_layers=8).parameters())
    assert 5.8e6 < n6 < 6.6e6  # paper: 6.1M
    assert len(SaShiMi(d_model=64, n_layers=8).down[0].layers) == 8


def test_step_rejects_mismatched_batch():
    model = tiny()
    cache = model.allocate_inference_cache(2)
    with pytest.raises(ValueError, match="batch 3"):
        model.step(torch.zeros(3, dtype=torch.long), cache)


@pytest.mark.parametrize("center", ["attention", "s4d"])
def test_other_center_mixers_keep_recurrent_equal_to_parallel(center):
    # Table 5 varies the center blocks: attention (a key/value cache per level) and S4D
    torch.manual_seed(0)
    model = SaShiMi(vocab_size=256, d_model=16, n_layers=1, pool=(2, 2), center_mixer=center,
                    center_mixer_cfg={"num_heads": 4} if center == "attention" else {}).eval()
    x = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        parallel = model(x)
        cache = model.allocate_inference_cache(2, 20)
        recurrent = torch.stack([model.step(x[:, t], cache) for t in range(20)], dim=1)
    assert max_rel_err(recurrent, parallel) < 1e-4

"""Chunked inference (seqmamba.models.chunked) equals one full pass: the conv and SSM states (and the KV
cache / input history of attention and Hyena) carry across chunks."""
import pytest
import torch

from seqmamba.models import MambaLM
from seqmamba.models.chunked import chunked_features, chunked_logits, iter_chunked_features

VOCAB, L = 11, 24


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def mamba_model():
    torch.manual_seed(0)
    return MambaLM(d_model=16, n_layer=2, vocab_size=VOCAB, ssm_cfg={"d_state": 4}).eval()


@pytest.mark.parametrize("chunk_len", [1, 5, 8, L, 100])  # single tokens, non-dividing, dividing, whole, longer
def test_chunked_features_equal_full_pass(mamba_model, chunk_len):
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, L))
    with torch.no_grad():
        full = mamba_model.features(ids)
    chunked = chunked_features(mamba_model, ids, chunk_len)
    assert chunked.shape == full.shape
    assert rel_err(chunked, full) < 1e-5


def test_chunked_logits_and_iterator(mamba_model):
    ids = torch.randint(0, VOCAB, (3, L))
    with torch.no_grad():
        logits = mamba_model(ids)
    assert rel_err(chunked_logits(mamba_model, ids, 7), logits) < 1e-5
    starts = [(start, out.shape[1]) for start, out in iter_chunked_features(mamba_model, ids, 10)]
    assert starts == [(0, 10), (10, 10), (20, 4)]


def test_chunked_with_mixed_mixers():
    torch.manual_seed(0)
    layers = ["mamba", {"layer": "mamba_s4d", "d_state": 8}, "attention",
              {"layer": "hyena", "l_max": 16, "filter_order": 8, "bands": 2}, "h3_s6"]
    model = MambaLM(d_model=16, n_layer=len(layers), vocab_size=VOCAB, ssm_cfg={"layer": layers},
                    attn_cfg={"num_heads": 2}).eval()
    ids = torch.randint(0, VOCAB, (2, L))
    with torch.no_grad():
        full = model.features(ids)
    for chunk_len in (3, 1):
        assert rel_err(chunked_features(model, ids, chunk_len), full) < 1e-5


def test_bad_arguments(mamba_model):
    ids = torch.randint(0, VOCAB, (2, L))
    with pytest.raises(ValueError, match="chunk_len must be a positive int, got 0"):
        chunked_features(mamba_model, ids, 0)
    with pytest.raises(ValueError, match=r"expected \(batch, L\)"):
        chunked_features(mamba_model, ids[0], 4)
    with pytest.raises(TypeError, match="no features"):
        chunked_features(torch.nn.Linear(2, 2), ids, 4)

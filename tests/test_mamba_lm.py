"""MambaLM: mamba_ssm-compatible construction, init, keys; recurrent decoding equals the parallel forward."""
import importlib
import math
from dataclasses import dataclass

import pytest
import torch

from seqmamba.models import MambaConfig, MambaLM
from seqmamba.registry import BACKBONES
from helpers import cuda_only, max_rel_err as rel_err

VOCAB = 37  # padded to 40


def tiny_lm(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(d_model=32, n_layer=2, vocab_size=VOCAB, ssm_cfg={"d_state": 8})
    config.update(kwargs)
    return MambaLM(**config).eval()


def randomize(model, seed=1):
    """Random weights with long memory and a strong SSM path (slow decay A, large dt, unit-variance
    projections), so a 0.1% error in a carried state shows up above the 1e-4 tolerance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.empty(p.shape).uniform_(math.log(0.05), math.log(1.0), generator=g))
            elif name.endswith("dt_proj.bias"):
                p.copy_(torch.empty(p.shape).uniform_(-3, 0, generator=g))
            elif name.endswith("embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:  # D, norms, conv bias
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@torch.no_grad()
def prefill_then_step(model, ids, prefill_len, after_prefill=None, **cache_kwargs):
    """Logits (batch, L - prefill_len + 1, vocab) of positions prefill_len - 1 .. L - 1: the first prefill_len
    tokens through ``prefill``, then one ``step`` per token. ``after_prefill(params)`` may touch the cache."""
    params = model.new_inference_params(ids.shape[0], ids.shape[1], **cache_kwargs)
    decoded = [model.prefill(ids[:, :prefill_len], params)]
    if after_prefill is not None:
        after_prefill(params)
    params.seqlen_offset = prefill_len
    for t in range(prefill_len, ids.shape[1]):
        decoded.append(model.step(ids[:, t], params))
        params.seqlen_offset += 1
    return torch.stack(decoded, dim=1)


def test_state_dict_keys_are_mamba_ssm_keys():
    model = tiny_lm()
    keys = set(model.state_dict())
    mixer = {"A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
             "dt_proj.bias", "out_proj.weight"}
    expected = {"backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight"}
    for i in range(2):
        expected |= {f"backbone.layers.{i}.norm.weight"} | {f"backbone.layers.{i}.mixer.{k}" for k in mixer}
    assert keys == expected


def test_vocab_is_padded_and_head_is_tied():
    model = tiny_lm()
    assert model.padded_vocab_size == 40 and model.backbone.embedding.weight.shape == (40, 32)
    assert model.lm_head.weight is model.backbone.embedding.weight
    untied = tiny_lm(tie_embeddings=False, pad_vocab_size_multiple=1)
    assert untied.padded_vocab_size == VOCAB and untied.lm_head.weight is not untied.backbone.embedding.weight


def test_init_follows_mamba_ssm_init_weights():
    torch.manual_seed(0)
    n_layer = 4
    model = MambaLM(d_model=64, n_layer=n_layer, vocab_size=1000, ssm_cfg={"bias": True})
    emb = model.backbone.embedding.weight
    assert abs(emb.std().item() - 0.02) < 0.002
    for layer in model.backbone.layers:
        mixer = layer.mixer
        # kaiming_uniform(a=sqrt(5)) bound is 1/sqrt(fan_in), then divided by sqrt(n_layer)
        bound = 1 / math.sqrt(mixer.d_inner) / math.sqrt(n_layer)
        w = mixer.out_proj.weight.abs().max().item()
        assert 0.9 * bound < w <= bound
        assert torch.all(mixer.in_proj.bias == 0) and torch.all(mixer.out_proj.bias == 0)
        assert mixer.dt_proj.bias.abs().min() > 0  # _no_reinit: keeps the inverse-softplus dt


def test_constructor_from_config_dict_dataclass_and_positional_config():
    cfg = {"d_model": 16, "n_layer": 1, "vocab_size": 11, "ssm_cfg": {"d_state": 4}, "pad_vocab_size_multiple": 4}
    a = MambaLM.from_config(cfg)
    b = MambaLM.from_config(MambaConfig(**cfg))
    c = MambaLM(MambaConfig(**cfg))
    for m in (a, b, c):
        assert m.padded_vocab_size == 12 and m.backbone.layers[0].mixer.d_state == 4

    @dataclass
    class OtherConfig:
        d_model: int = 16
        n_layer: int = 1
        vocab_size: int = 11

    assert MambaLM.from_config(OtherConfig()).config.d_model == 16
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['d_modle'\]"):
        MambaLM.from_config({"d_modle": 16, "n_layer": 1, "vocab_size": 11})
    with pytest.raises(ValueError, match="attn_layer_idx"):
        MambaLM(d_model=16, n_layer=2, vocab_size=11, attn_layer_idx=[2])
    with pytest.raises(ValueError, match="Mamba2"):
        MambaLM(d_model=16, n_layer=1, vocab_size=11, ssm_cfg={"layer": "Mamba2"})


def test_registered_as_mamba_lm_backbone():
    assert BACKBONES.get("mamba_lm") is MambaLM


def test_forward_shapes_last_tokens_and_hidden_features():
    model = tiny_lm()
    ids = torch.randint(0, VOCAB, (3, 10))
    logits = model(ids)
    assert logits.shape == (3, 10, 40)
    torch.testing.assert_close(model(ids, num_last_tokens=2), logits[:, -2:])
    hidden = model.features(ids)
    assert hidden.shape == (3, 10, 32)
    torch.testing.assert_close(model.backbone(ids), hidden)
    torch.testing.assert_close(model.lm_head(hidden), logits)


def test_bf16_model_keeps_fp32_residual_and_ssm_params():
    model = MambaLM(d_model=32, n_layer=2, vocab_size=VOCAB, dtype=torch.bfloat16)
    logits = model(torch.randint(0, VOCAB, (2, 8)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert model.backbone.layers[0].mixer.A_log.dtype == torch.float32


@pytest.mark.parametrize("prefill_len,total_len", [(1, 6), (7, 24), (13, 40), (4, 64)])
def test_token_by_token_decoding_equals_parallel_forward(prefill_len, total_len):
    model = randomize(tiny_lm(tie_embeddings=False))
    ids = torch.randint(0, VOCAB, (2, total_len))
    with torch.no_grad():
        parallel = model(ids)
    decoded = prefill_then_step(model, ids, prefill_len)
    assert rel_err(decoded, parallel[:, prefill_len - 1:]) < 1e-4


def test_decoding_with_bf16_ssm_states_stays_within_bf16_rounding_of_the_parallel_forward():
    """ssm_state_dtype=torch.bfloat16 (mamba_ssm's cache for a bf16 model): the cache holds bf16 states, the
    decoded logits differ from the parallel forward by bf16 rounding (more than the fp32 cache's 1e-4, so the
    option took effect) and no more (1e-2)."""
    model = randomize(tiny_lm(tie_embeddings=False))
    ids = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        parallel = model(ids)
    dtypes = []

    def record(params):
        dtypes.extend(ssm_state.dtype for _, ssm_state in params.key_value_memory_dict.values())

    decoded = prefill_then_step(model, ids, 9, after_prefill=record, ssm_state_dtype=torch.bfloat16)
    assert dtypes == [torch.bfloat16] * 2
    assert 1e-4 < rel_err(decoded, parallel[:, 8:]) < 1e-2


def test_decoding_check_detects_a_small_state_error():
    """The tolerance above is meaningful: scaling the carried SSM state by 0.999 breaks it."""
    model = randomize(tiny_lm(tie_embeddings=False))
    ids = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        parallel = model(ids)

    def perturb_ssm_states(params):
        for _, ssm_state in params.key_value_memory_dict.values():
            ssm_state.mul_(0.999)

    decoded = prefill_then_step(model, ids, 7, after_prefill=perturb_ssm_states)
    assert rel_err(decoded, parallel[:, 6:]) > 1e-4


def test_chunked_prefill_continues_from_cached_states():
    model = randomize(tiny_lm(tie_embeddings=False))
    ids = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        parallel = model(ids)
        params = model.new_inference_params(2, 30)
        pieces = []
        for start, end in ((0, 3), (3, 4), (4, 17), (17, 30)):  # shorter and longer than d_conv
            params.seqlen_offset = start
            pieces.append(model(ids[:, start:end], inference_params=params))
    assert rel_err(torch.cat(pieces, dim=1), parallel) < 1e-4


def test_cache_allocated_lazily_like_mamba_ssm():
    from seqmamba.modules import InferenceParams

    model = randomize(tiny_lm(tie_embeddings=False))
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        parallel = model(ids)
        params = InferenceParams(max_seqlen=9, max_batch_size=2)
        first = model(ids[:, :5], inference_params=params, num_last_tokens=1)
        params.seqlen_offset = 5
        nxt = model(ids[:, 5:6], inference_params=params, num_last_tokens=1)
    assert set(params.key_value_memory_dict) == {0, 1}
    assert rel_err(first[:, -1], parallel[:, 4]) < 1e-4 and rel_err(nxt[:, -1], parallel[:, 5]) < 1e-4


def test_input_longer_than_cache_or_wrong_batch_is_refused():
    model = tiny_lm()
    params = model.new_inference_params(2, 8)
    with pytest.raises(ValueError, match="max_seqlen=8"):
        model(torch.zeros(2, 9, dtype=torch.long), inference_params=params)
    with pytest.raises(ValueError, match="max_batch_size=2"):
        model(torch.zeros(3, 4, dtype=torch.long), inference_params=params)
    with pytest.raises(ValueError, match="batch 2"):
        model(torch.zeros(1, 4, dtype=torch.long), inference_params=params)


def test_one_batch_overfits_in_a_few_steps():
    model = tiny_lm().train()
    ids = torch.randint(0, VOCAB, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_decoding_with_triton_kernels_equals_parallel_forward():
    """The Triton scan, conv update and state update (interpreted on the CPU, compiled on a GPU) plug into the
    same paths."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = randomize(tiny_lm(tie_embeddings=False)).to(device)
    ids = torch.randint(0, VOCAB, (2, 12), device=device)
    with torch.no_grad():
        reference = model(ids)
        model.set_scan_backend("triton")
        if not ids.is_cuda:
            assert __import__("os").environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET on CPU"
        parallel = model(ids)
        decoded = prefill_then_step(model, ids, 5)
    assert rel_err(parallel, reference) < 1e-4
    assert rel_err(decoded, reference[:, 4:]) < 1e-4


@cuda_only
def test_decoding_on_cuda_equals_parallel_forward():
    model = randomize(tiny_lm(tie_embeddings=False)).cuda()
    ids = torch.randint(0, VOCAB, (2, 40), device="cuda")
    with torch.no_grad():
        parallel = model(ids)
    assert rel_err(prefill_then_step(model, ids, 11), parallel[:, 10:]) < 1e-4


@cuda_only
@pytest.mark.parametrize("large_batch_path", [False, True], ids=["dt-inside", "large-batch-paths"])
def test_gpu_generate_with_bf16_ssm_states_in_a_cuda_graph(monkeypatch, large_batch_path):
    """generate(cg=True, ssm_state_dtype=torch.bfloat16): the Triton state update on a bf16 cache under a CUDA
    graph, a graph of its own (the cache key holds the state dtype); the step-by-step logits within bf16 rounding
    of the parallel forward. With the large-batch paths forced (DECODE_DT_PROJ_MAX_BYTES 0): bf16 states run the
    row-block kernel (dt by a tensor-core product), and fp32 states the dt GEMM first, within 1e-4."""
    kernels = importlib.import_module("seqmamba.ops.selective_state_update.triton_kernels")
    rows, launch = [], kernels._launch_rows
    monkeypatch.setattr(kernels, "_launch_rows", lambda *a, **k: rows.append(1) or launch(*a, **k))
    if large_batch_path:
        monkeypatch.setattr(kernels, "DECODE_DT_PROJ_MAX_BYTES", 0)
    model = randomize(tiny_lm(tie_embeddings=False)).cuda()
    ids = torch.randint(0, VOCAB, (2, 40), device="cuda")
    with torch.no_grad():
        parallel = model(ids)
    assert rel_err(prefill_then_step(model, ids, 11, ssm_state_dtype=torch.bfloat16), parallel[:, 10:]) < 1e-2
    assert bool(rows) == large_batch_path
    rows.clear()
    assert rel_err(prefill_then_step(model, ids, 11), parallel[:, 10:]) < 1e-4  # fp32 states: never row blocks
    assert not rows
    out = model.generate(ids[:, :8], 6, temperature=0, cg=True, ssm_state_dtype=torch.bfloat16)
    graphs = model.__dict__["_cuda_graph_steps"]
    (key,) = graphs
    assert out.shape == (2, 14) and (("ssm_state_dtype", torch.bfloat16),) in key
    states = [s.dtype for _, s in graphs[key].inference_params.key_value_memory_dict.values()]
    assert states == [torch.bfloat16] * 2


@cuda_only
def test_fused_add_norm_on_cuda_gives_the_unfused_logits_and_keys():
    unfused = randomize(tiny_lm(tie_embeddings=False)).cuda()
    fused = tiny_lm(tie_embeddings=False, fused_add_norm=True).cuda()
    assert list(fused.state_dict()) == list(unfused.state_dict())
    fused.load_state_dict(unfused.state_dict())
    ids = torch.randint(0, VOCAB, (2, 30), device="cuda")
    with torch.no_grad():
        expected = unfused(ids)
        assert rel_err(fused(ids), expected) < 1e-5
    assert rel_err(prefill_then_step(fused, ids, 7), expected[:, 6:]) < 1e-4
    # the fused path is differentiable (Triton backward) and gives the unfused gradients
    for model in (fused, unfused):
        model.zero_grad()
        model(ids).float().square().mean().backward()
    for (name, p_fused), p_unfused in zip(fused.named_parameters(), unfused.parameters()):
        assert rel_err(p_fused.grad, p_unfused.grad) < 1e-4, name


@cuda_only
def test_cuda_graph_is_recaptured_after_an_in_place_weight_update():
    model = randomize(tiny_lm(tie_embeddings=False, fused_add_norm=True)).cuda()
    prompt = torch.randint(0, VOCAB, (2, 5), device="cuda")
    model.generate(prompt, 6, temperature=0, cg=True)
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.A_log.add_(1.0)  # feeds the cached A of the decode step
            layer.mixer.dt_proj.bias.add_(2.0)
    graphed = model.generate(prompt, 12, temperature=0, cg=True)
    eager = model.generate(prompt, 12, temperature=0)
    assert torch.equal(graphed, eager)


@pytest.mark.parametrize("ssm_cfg", [{"d_state": 4}, {"layer": ["mamba", {"layer": "h3_s4d", "d_state": 8}]}])
def test_activation_checkpointing_gives_the_same_gradients(ssm_cfg):
    torch.manual_seed(0)
    model = MambaLM(d_model=16, n_layer=2, vocab_size=11, ssm_cfg=ssm_cfg, d_intermediate=32)
    ids = torch.randint(0, 11, (2, 9))

    def grads():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_plain, plain = grads()
    calls = []
    mixer = model.backbone.layers[0].mixer
    plain_forward = mixer.forward
    mixer.forward = lambda *a, **k: calls.append(1) or plain_forward(*a, **k)  # (hooks do not fire on recompute)
    model.set_activation_checkpointing(True)
    loss_ckpt, ckpt = grads()
    del mixer.forward
    assert len(calls) == 2  # block 0 ran again in backward: its activations were recomputed
    torch.testing.assert_close(loss_ckpt, loss_plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # inference is untouched
        torch.testing.assert_close(model(ids), model.set_activation_checkpointing(False)(ids))


# -- the embedding's weight gradient as one GEMM (mamba_lm.EMBEDDING_GEMM_MAX_ROWS) -------------------------
def test_one_hot_gemm_embedding_gradient_equals_the_embedding_backward():
    """_OneHotGradEmbedding: the same output as F.embedding and, in float64, the same weight gradient (every row,
    including rows no token uses, and a row every token uses); embed_tokens takes it only on CUDA with a weight
    gradient to compute, for tables within max_rows."""
    from seqmamba.models import mamba_lm

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 12, (3, 50), generator=g)  # rows 12-15 unused
    ids[:, -1] = 5
    grad = torch.randn(3, 50, 8, generator=g, dtype=torch.float64)
    out = mamba_lm._OneHotGradEmbedding.apply(ids, weight)
    (gemm_grad,) = torch.autograd.grad(out, weight, grad)
    ref = torch.nn.functional.embedding(ids, weight)
    (ref_grad,) = torch.autograd.grad(ref, weight, grad)
    assert torch.equal(out, ref)
    assert torch.allclose(gemm_grad, ref_grad, rtol=1e-12, atol=1e-12) and gemm_grad[12:].abs().max() == 0
    embedding = torch.nn.Embedding(16, 8)
    plain = mamba_lm.embed_tokens(embedding, ids, max_rows=64)  # the CPU: the plain embedding
    assert plain.grad_fn.__class__.__name__ == "EmbeddingBackward0"


@cuda_only
def test_gpu_one_hot_gemm_embedding_in_the_model_matches_and_captures_in_a_cuda_graph(monkeypatch):
    """With EMBEDDING_GEMM_MAX_ROWS on (the default, 64), a tiny MambaLM's loss gradients on CUDA equal the plain
    embedding's (the tied table included, to fp32 summation order), and a training step with it captures and replays
    in a CUDA graph (no host sync in the backward)."""
    from seqmamba.models import mamba_lm

    model = randomize(tiny_lm()).cuda().train()
    ids = torch.randint(0, VOCAB, (4, 64), device="cuda")

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids).float().logsumexp(-1).mean().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    monkeypatch.setattr(mamba_lm, "EMBEDDING_GEMM_MAX_ROWS", 0)  # the plain embedding backward
    plain = grads()
    monkeypatch.setattr(mamba_lm, "EMBEDDING_GEMM_MAX_ROWS", 64)
    calls, apply = [], mamba_lm._OneHotGradEmbedding.apply
    monkeypatch.setattr(mamba_lm._OneHotGradEmbedding, "apply", lambda *a: calls.append(1) or apply(*a))
    gemm = grads()
    assert calls == [1]  # 40 padded rows <= 64: the GEMM path ran
    for name in plain:
        assert rel_err(gemm[name], plain[name]) < 1e-5, name
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        grads()  # warm-up on the side stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    model.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        model(ids).float().logsumexp(-1).mean().backward()
    model.zero_grad(set_to_none=False)
    graph.replay()
    torch.cuda.synchronize()
    emb = model.backbone.embedding.weight
    assert rel_err(emb.grad, plain["backbone.embedding.weight"]) < 1e-5

"""Sampling and the generation loop: parameter checks, greedy = argmax of the parallel forward,
seeded reproducibility, top-k/top-p/min-p/repetition penalty, eos handling, cache limits."""
import pytest
import torch

from seqmamba.models import MambaLM
from seqmamba.models.generation import (apply_repetition_penalty, filter_logits, generate, sample_next_token,
                                        validate_sampling_args)
from helpers import cuda_only

VOCAB = 37


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    model = MambaLM(d_model=32, n_layer=2, vocab_size=VOCAB, ssm_cfg={"d_state": 8}, tie_embeddings=False).eval()
    with torch.no_grad():  # inputs that matter more than the 0.02-std init makes them
        model.backbone.embedding.weight.normal_(0, 1)
    return model


class CountingModel(torch.nn.Module):
    """Deterministic model for the loop's bookkeeping: after token t it predicts (t + 1) % vocab,
    except that row 0 predicts eos (0) right after token 3. No ``prefill``: the loop steps the prompt."""

    vocab_size = 8

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.steps_seen = 0

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None):
        return {"last": torch.zeros(batch_size, dtype=torch.long)}

    def step(self, input_ids, inference_params):
        self.steps_seen += 1
        token = input_ids[:, 0]
        nxt = (token + 1) % self.vocab_size
        nxt[0] = 0 if token[0] == 3 else nxt[0]
        # pad the logits to 10 columns with a huge value the loop must never sample (vocab padding)
        logits = torch.full((input_ids.shape[0], 10), -10.0)
        logits[:, 8:] = 100.0
        logits[torch.arange(len(nxt)), nxt] = 10.0
        return logits


@pytest.mark.parametrize("kwargs,name", [
    ({"temperature": -0.1}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_p": 1.5}, "top_p"), ({"top_p": -0.1}, "top_p"), ({"min_p": 2.0}, "min_p"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"), ({"temperature": float("nan")}, "temperature"),
])
def test_out_of_range_sampling_parameters_are_rejected_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        validate_sampling_args(**kwargs)
    with pytest.raises(ValueError, match=name):
        tiny_lm().generate(torch.zeros(1, 3, dtype=torch.long), 2, **kwargs)


def test_greedy_generation_equals_argmax_of_the_parallel_forward():
    model = tiny_lm()
    prompt = torch.randint(0, VOCAB, (3, 5))
    out = model.generate(prompt, 12, temperature=0)
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            nxt = model(seq)[:, -1, :VOCAB].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)
    assert torch.equal(model.generate(prompt, 12, top_k=1), seq)  # top_k=1 is greedy too


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed():
    model = tiny_lm()
    prompt = torch.randint(0, VOCAB, (4, 3))
    kw = dict(temperature=1.5, top_k=20, top_p=0.95, min_p=0.01)
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(7), **kw)
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(7), **kw)
    c = model.generate(prompt, 20, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 23) and torch.equal(a[:, :3], prompt) and a.max() < VOCAB


def test_samples_follow_the_softmax_at_the_given_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(40000, 4)
    draws = sample_next_token(logits, temperature=2.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    expected = torch.softmax(logits[0] / 2.0, dim=-1)
    # 4 standard errors of a binomial proportion at n = 40000 is at most 0.01
    assert (freq - expected).abs().max() < 0.01


def test_top_k_top_p_min_p_keep_exactly_the_allowed_tokens():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03]])
    logits = probs.log()
    kept = lambda out: torch.isfinite(out[0]).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [0, 1]
    assert kept(filter_logits(logits, top_p=0.7)) == [0, 1]  # 0.5 < 0.7 <= 0.75
    assert kept(filter_logits(logits, top_p=0.75)) == [0, 1]
    assert kept(filter_logits(logits, top_p=0.76)) == [0, 1, 2]
    assert kept(filter_logits(logits, top_p=0.1)) == [0]  # the top token always stays
    assert kept(filter_logits(logits, min_p=0.2)) == [0, 1, 2]  # threshold 0.1
    assert kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3, 4]


def test_repetition_penalty_lowers_seen_tokens_on_both_signs():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -4.0, 1.0]]))
    model = tiny_lm()
    prompt = torch.randint(0, VOCAB, (2, 4))
    plain = model.generate(prompt, 16, temperature=0)
    penalised = model.generate(prompt, 16, temperature=0, repetition_penalty=1e4)
    # with an overwhelming penalty no generated token repeats an earlier one while unseen ones remain
    for row in penalised:
        new = row[4:].tolist()
        assert all(tok not in row[:4 + i].tolist() for i, tok in enumerate(new))
    assert not torch.equal(plain, penalised)


def test_eos_stops_each_row_and_pads_after_it_and_padded_vocab_is_never_sampled():
    model = CountingModel()
    prompt = torch.tensor([[1], [4]])
    out = generate(model, prompt, 6, temperature=0, eos_token_id=0, pad_token_id=9, vocab_size=8)
    # row 0: 1 -> 2 -> 3 -> eos, then padding; row 1 counts on and wraps 7 -> 0 (= eos) and stops
    assert out[0].tolist()[:4] == [1, 2, 3, 0] and all(t == 9 for t in out[0].tolist()[4:])
    assert out[1].tolist()[:5] == [4, 5, 6, 7, 0]
    assert out.shape[1] == 5  # both rows finished after 4 new tokens: the loop stopped early
    no_eos = generate(model, prompt, 6, temperature=0, vocab_size=8)
    assert no_eos.shape == (2, 7) and no_eos.max() < 8


def test_model_without_prefill_is_stepped_through_the_prompt():
    model = CountingModel()
    generate(model, torch.tensor([[1, 2, 3, 4]]), 3, temperature=0, vocab_size=8)
    assert model.steps_seen == 4 + 2  # every prompt token, then one step per new token but the last


def test_prompt_longer_than_the_cache_is_refused():
    model = tiny_lm()
    with pytest.raises(ValueError, match=r"prompt has 10 tokens, longer than the cache \(max_seqlen=8\)"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 2, max_seqlen=8)
    with pytest.raises(ValueError, match="exceeds the cache"):
        model.generate(torch.zeros(1, 6, dtype=torch.long), 4, max_seqlen=8)
    with pytest.raises(ValueError, match="input_ids"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 2)
    assert model.generate(torch.zeros(2, 3, dtype=torch.long), 0).shape == (2, 3)


def test_cuda_graph_flag_needs_cuda_tensors():
    with pytest.raises(ValueError, match="CUDA"):
        tiny_lm().generate(torch.zeros(1, 3, dtype=torch.long), 2, cg=True)
    with pytest.raises(ValueError, match="cg_prefill=True needs cg=True"):
        tiny_lm().generate(torch.zeros(1, 3, dtype=torch.long), 2, cg_prefill=True)


@cuda_only
def test_cuda_graph_prefill_equals_the_eager_prefill_and_recaptures_for_a_new_length():
    from seqmamba.models.generation import CUDAGraphPrefill

    model = tiny_lm().cuda()
    captures = []
    init = CUDAGraphPrefill.__init__

    def counting_init(self, *args, **kwargs):
        captures.append(args[2] if len(args) > 2 else kwargs["prompt_len"])
        init(self, *args, **kwargs)

    CUDAGraphPrefill.__init__ = counting_init
    try:
        for prompt_len, seed in ((9, 0), (9, 1), (5, 2)):  # the second replays the first's graph
            prompt = torch.randint(0, VOCAB, (3, prompt_len), device="cuda",
                                   generator=torch.Generator(device="cuda").manual_seed(seed))
            eager = model.generate(prompt, 12, temperature=0, max_seqlen=24)
            graphed = model.generate(prompt, 12, temperature=0, cg=True, cg_prefill=True, max_seqlen=24)
            assert torch.equal(eager, graphed), (prompt_len, seed)
    finally:
        CUDAGraphPrefill.__init__ = init
    assert captures == [9, 5]


@cuda_only
def test_cuda_graph_decoding_equals_eager_decoding():
    model = tiny_lm().cuda()
    prompt = torch.randint(0, VOCAB, (3, 9), device="cuda")
    eager = model.generate(prompt, 24, temperature=0)
    graphed = model.generate(prompt, 24, temperature=0, cg=True)
    graphed_again = model.generate(prompt, 24, temperature=0, cg=True)  # reuses the captured graph
    assert torch.equal(eager, graphed) and torch.equal(graphed, graphed_again)


def _load_generation_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generation.py"
    spec = importlib.util.spec_from_file_location("bench_generation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _run_benchmark(bench, argv):
    threads = torch.get_num_threads()
    try:
        bench.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_generation_benchmark_quick_mode_runs_and_prints_ratios(capsys, tmp_path):
    import csv

    bench = _load_generation_benchmark()
    out, plot = tmp_path / "rows.csv", tmp_path / "decode.png"
    _run_benchmark(bench, ["--quick", "--out", str(out), "--plot", str(plot)])
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith(("  q64 ", "  q96 "))]
    # two tiny sizes x batches 1 2 4 8 16 (the last from the doubling); the fake Transformer OOM from batch 4 on
    assert [line.split()[1] for line in table] == ["1", "2", "4", "8", "16"] * 2
    assert sum(" OOM " in line for line in table) == 2 and sum("(OOM)" in line for line in table) == 4
    assert sum(line.endswith("x") for line in table) == 4  # the ratios where both models ran
    assert "q64: Mamba 16+, Transformer 2; q96: Mamba 16+, Transformer 2" in printed
    rows = list(csv.DictReader(out.open()))
    by_status = {}
    for row in rows:
        by_status.setdefault((row["model"], row["status"]), []).append(int(row["batch"]))
    assert by_status == {("Mamba", "ok"): [1, 2, 4, 8, 16] * 2, ("Transformer", "ok"): [1, 2] * 2,
                         ("Transformer", "oom"): [4, 4], ("Transformer", "skipped"): [8, 8]}
    ratios = [float(r["mamba_over_transformer_decode"]) for r in rows if r["mamba_over_transformer_decode"]]
    assert len(ratios) == 8 and all(r > 0 for r in ratios)  # (size, batch 1 and 2) x both models' rows
    assert [r["batch"] for r in rows if r["largest_fit"] == "True"] == ["16", "2", "16", "2"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generation_benchmark_single_size_and_size_names(capsys, tmp_path):
    import json

    bench = _load_generation_benchmark()
    out = tmp_path / "rows.json"
    _run_benchmark(bench, ["--device", "cpu", "--dtype", "fp32", "--threads", "1", "--n-layer", "2", "--d-model", "32",
                           "--n-head", "4", "--vocab-size", "64", "--prompt-len", "8", "--gen-len", "3",
                           "--batch-sizes", "2", "1", "--repeats", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["size"], r["model"], r["batch"], r["status"]) for r in rows] == [
        ("2x32", "Mamba", 1, "ok"), ("2x32", "Mamba", 2, "ok"), ("2x32", "Transformer", 1, "ok"),
        ("2x32", "Transformer", 2, "ok")]
    assert "largest batch" not in capsys.readouterr().out  # no doubling search without --sizes or --max-batch

    _run_benchmark(bench, ["--quick", "--time-limit-s", "1e-9", "--out", str(out)])  # nothing runs, nothing breaks
    assert {r["status"] for r in json.loads(out.read_text())["rows"]} == {"time"}
    assert "(time): not run" in capsys.readouterr().out

    args = bench.parse_args(["--sizes", "1.3b", "130M"])
    assert [s.name for s in args.sizes] == ["130m", "1.4b"] and args.max_batch == 1024
    assert args.batch_sizes == [1, 16, 64, 128, 256] and args.time_limit_s == 480
    assert [s.gpt_n_layer for s in bench.parse_args(["--sizes", "all"]).sizes] == [12, 24, 24, 24]
    for bad in (["--sizes", "7b"], ["--sizes", "130m", "--n-layer", "4"], ["--gen-len", "1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_greedy_generation_with_every_kind_of_mixer_equals_the_parallel_argmax():
    torch.manual_seed(0)
    layers = ["mamba", "attention", {"layer": "s4d", "d_state": 8},
              {"layer": "hyena", "l_max": 16, "filter_order": 8, "bands": 2}, "h3_s6", "mamba_s4d"]
    model = MambaLM(d_model=16, n_layer=len(layers), vocab_size=13, ssm_cfg={"layer": layers},
                    attn_cfg={"num_heads": 2}).eval()
    prompt = torch.randint(0, 13, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    with torch.no_grad():
        logits = model(out[:, :-1])[..., :13]
    assert torch.equal(logits[:, 4:].argmax(-1), out[:, 5:])
    with pytest.raises(ValueError, match="CausalSelfAttention, HyenaInner index their cache by position"):
        model.generate(prompt, max_new_tokens=2, cg=True)


def test_graph_walk_keys_the_parameters_as_model_parameters_orders_them_and_names_position_indexed_modules():
    """generate(cg=True)'s one walk over the modules (_walk_for_graphs): the graph cache's key is every parameter's
    (address, version) in model.parameters() order (a shared parameter once); an in-place update changes it; the
    position-indexed mixers are named as the separate module walk named them."""
    from seqmamba.models.generation import _walk_for_graphs

    layers = ["mamba", "attention", {"layer": "hyena", "l_max": 16, "filter_order": 8, "bands": 2}]
    model = MambaLM(d_model=16, n_layer=len(layers), vocab_size=13, ssm_cfg={"layer": layers},
                    attn_cfg={"num_heads": 2})
    key, by_position = _walk_for_graphs(model)
    assert key == tuple((p.data_ptr(), p._version) for p in model.parameters())
    assert by_position == sorted({type(m).__name__ for m in model.modules() if getattr(m, "step_reads_offset", False)})
    assert by_position == ["CausalSelfAttention", "HyenaInner"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert _walk_for_graphs(model)[0] != key
    assert _walk_for_graphs(MambaLM(d_model=16, n_layer=2, vocab_size=13))[1] == []


def test_generation_benchmark_gpt_decodes_its_projections_through_decode_linear(monkeypatch):
    """Both models' decode projections take decode_linear (one rule, one kernel choice: --decode-linear), and the
    GPT's one-token step equals its prompt forward's last position."""
    bench = _load_generation_benchmark()
    calls = []

    def counting(x, weight, bias=None, backend="auto"):
        calls.append(tuple(weight.shape))
        return torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setattr(bench, "decode_linear", counting)
    torch.manual_seed(0)
    gpt = bench.GPT(vocab_size=32, d_model=16, n_layer=2, n_head=4, max_len=8).eval()
    ids = torch.randint(0, 32, (3, 5))
    with torch.no_grad():
        full = gpt(ids, gpt.allocate_kv_cache(3), torch.arange(5))
        assert calls == []  # the prompt's forward: plain nn.Linear
        cache = gpt.allocate_kv_cache(3)
        gpt(ids[:, :4], cache, torch.arange(4))
        mask = (torch.arange(8) <= 4).view(1, 1, 1, -1)
        step = gpt(ids[:, 4:], cache, torch.tensor([4]), mask)
    assert calls == [(48, 16), (16, 16), (64, 16), (16, 64)] * 2  # qkv, proj, MLP up, MLP down per block
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)

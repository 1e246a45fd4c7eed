"""Generation throughput: Mamba (fixed-size recurrent state) vs a Transformer with a KV cache.

Random weights, vocab 50280, bf16; both models decode greedily under a captured CUDA graph and prefill the
prompt in one parallel pass. Each model runs alone on the GPU (built, swept over the batch sizes, deleted).
Per (size, model, batch), from generate calls timed whole and split where the prefill ends:

  prefill ms     the prompt's forward (the cache filled)
  ms/token       decode latency per generated token (batch-wide step): (T(gen) - T(prefill)) / (gen - 1)
  decode tok/s   batch / (ms/token)
  e2e tok/s      end to end, batch * gen / T(gen): prefill + decode, the Mamba paper's Figure 8 metric
  peak GB        torch.cuda.max_memory_allocated over the row (reset before it): weights + cache + activations

and the ratios Mamba / Transformer. ``--sizes`` runs the Mamba paper's sizes against GPT-3-style
Transformers of matching size:

  130m  Mamba 24 layers, d_model 768    vs  125m  Transformer 12 layers, d_model 768, 12 heads
  370m  Mamba 48 layers, d_model 1024   vs  350m  Transformer 24 layers, d_model 1024, 16 heads
  790m  Mamba 48 layers, d_model 1536   vs  760m  Transformer 24 layers, d_model 1536, 16 heads
  1.4b  Mamba 48 layers, d_model 2048   vs  1.3b  Transformer 24 layers, d_model 2048, 32 heads

at batch 1, 16, 64, 128, 256 and then, per model, doubling batches up to --max-batch (1024) until one runs
out of memory: an OOM is reported as a row (memory freed, larger batches of that model skipped), so each
model's largest batch that fits is found to a factor of 2. Rows past --time-limit-s (default 480 s with
--sizes) are not run but listed, so the table still prints. Without --sizes: one size from --n-layer,
--d-model, --n-head (default the 130M pair), batch 1 and 64, no search. The table printed last holds every
row; --out writes them all as CSV (or JSON for a .json path), --plot a PNG of decode tokens/s against batch.

    python benchmarks/bench_generation.py --sizes all --out gen.csv --plot gen.png   # H200: ~4 min (estimate)
    python benchmarks/bench_generation.py --sizes 130m 1.4b                           # a subset
    python benchmarks/bench_generation.py                  # one size (130M), prompt 2048, generate 128, batch 1, 64
    python benchmarks/bench_generation.py --quick          # tiny CPU smoke run (seconds): sweep, fake OOM, CSV, PNG
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.models import MambaLM
from seqmamba.ops import decode_linear, launch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from switches import add_switches, apply_switches  # noqa: E402

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
MODELS = ("Mamba", "Transformer")


# ------------------------------------------------------------------------------------------ GPT baseline
def project(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """linear(x); for one token per sequence (decode), through ``decode_linear`` as Mamba's step does, so both
    models' projections take the same kernel by the same rule (cuBLAS or the split-K kernel; --decode-linear)."""
    if x.shape[1] != 1:
        return linear(x)
    y = decode_linear(x.reshape(-1, x.shape[-1]), linear.weight, linear.bias)
    return y.view(*x.shape[:-1], y.shape[-1])


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"--n-head {n_head} must divide --d-model {d_model}")
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, kv_cache, positions, attn_mask):
        """x (batch, T, d). kv_cache (2, batch, heads, max_len, head_dim) is written at ``positions`` (T,).
        Prefill (attn_mask None) attends causally within x; decode attends over the whole cache under
        ``attn_mask`` (batch or 1, 1, 1, max_len), so the shapes never change and the step can be graph-captured."""
        batch, T, d = x.shape
        q, k, v = project(self.qkv, x).view(batch, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        kv_cache[0].index_copy_(2, positions, k)
        kv_cache[1].index_copy_(2, positions, v)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, kv_cache[0], kv_cache[1], attn_mask=attn_mask)
        return project(self.proj, y.transpose(1, 2).reshape(batch, T, d))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, kv_cache, positions, attn_mask):
        x = x + self.attn(self.ln_1(x), kv_cache, positions, attn_mask)
        up, act, down = self.mlp
        return x + project(down, act(project(up, self.ln_2(x))))


class GPT(nn.Module):
    """GPT-style decoder (pre-LN, learned positions, tied head) with a preallocated KV cache."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, n_head: int, max_len: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(GPTBlock(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.n_head, self.head_dim, self.max_len = n_head, d_model // n_head, max_len

    def allocate_kv_cache(self, batch: int):
        p = self.wte.weight
        return torch.zeros(len(self.blocks), 2, batch, self.n_head, self.max_len, self.head_dim,
                           device=p.device, dtype=p.dtype)

    def forward(self, input_ids, kv_cache, positions, attn_mask=None):
        """Logits of the last position (batch, vocab)."""
        x = self.wte(input_ids) + self.wpe(positions)
        for block, layer_cache in zip(self.blocks, kv_cache):
            x = block(x, layer_cache, positions, attn_mask)
        return self.lm_head(self.ln_f(x[:, -1]))


class GPTGenerator:
    """Greedy decoding for the GPT; the one-token step optionally captured as a CUDA graph."""

    def __init__(self, model: GPT, batch: int, use_cuda_graph: bool):
        self.model, self.batch = model, batch
        device = model.wte.weight.device
        self.kv_cache = model.allocate_kv_cache(batch)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.arange = torch.arange(model.max_len, device=device)
        self.graph = None
        if use_cuda_graph:
            self._capture()

    @torch.no_grad()  # the KV cache views are written in place: no autograd history may be recorded
    def _capture(self):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()

    def _step(self):
        mask = (self.arange <= self.position).view(1, 1, 1, -1)
        return self.model(self.token, self.kv_cache, self.position, mask)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int,
                 on_prefilled: Callable[[], None] | None = None) -> torch.Tensor:
        """Greedy continuation; ``on_prefilled()`` is called once the prompt's forward has been issued."""
        prompt_len = prompt.shape[1]
        positions = torch.arange(prompt_len, device=prompt.device)
        logits = self.model(prompt, self.kv_cache, positions)
        if on_prefilled is not None:
            on_prefilled()
        out = [prompt]
        for i in range(max_new_tokens):
            nxt = logits.argmax(dim=-1, keepdim=True)
            out.append(nxt)
            if i == max_new_tokens - 1:
                break
            self.token.copy_(nxt)
            self.position.fill_(prompt_len + i)
            if self.graph is not None:
                self.graph.replay()
                logits = self.logits
            else:
                logits = self._step()
        return torch.cat(out, dim=1)


# ------------------------------------------------------------------------------------------ sizes
class Size(NamedTuple):
    """A Mamba shape and the Transformer of about the same parameter count it is compared with."""

    name: str  # the Mamba's name, the size's key in the table and the files
    n_layer: int
    d_model: int  # both models
    gpt_name: str
    gpt_n_layer: int
    n_head: int


PAPER_SIZES = (Size("130m", 24, 768, "125m", 12, 12), Size("370m", 48, 1024, "350m", 24, 16),
               Size("790m", 48, 1536, "760m", 24, 16), Size("1.4b", 48, 2048, "1.3b", 24, 32))
QUICK_SIZES = (Size("q64", 2, 64, "q64", 1, 4), Size("q96", 2, 96, "q96", 1, 4))
SWEEP_BATCHES = [1, 16, 64, 128, 256]
SWEEP_MAX_BATCH = 1024
SWEEP_TIME_LIMIT_S = 480.0  # the sweep's estimate is ~5 min on an H200: a guard, so the table prints inside 10 min


def resolve_sizes(names: Sequence[str]) -> list[Size]:
    """``all`` or size names (the Mamba's 130m.. or the Transformer's 125m..), in size order."""
    by_name = {}
    for size in PAPER_SIZES:
        by_name[size.name] = by_name[size.gpt_name] = size
    if any(name.lower() == "all" for name in names):
        return list(PAPER_SIZES)
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown:
        raise ValueError(f"unknown size(s) {unknown}; choose from all, "
                         + ", ".join(f"{s.name} (or {s.gpt_name})" for s in PAPER_SIZES))
    chosen = {by_name[name.lower()] for name in names}
    return [size for size in PAPER_SIZES if size in chosen]


# ------------------------------------------------------------------------------------------ runners
def _nbytes(tree) -> int:
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_nbytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(_nbytes(v) for v in tree)
    return 0


class MambaRunner:
    """Greedy generation through seqmamba's own ``MambaLM.generate`` (its CUDA-graph decode)."""

    name = "Mamba"

    def __init__(self, model: MambaLM, max_seqlen: int, use_cuda_graph: bool, cg_prefill: bool = False,
                 ssm_state_dtype: torch.dtype | None = None):
        self.model, self.max_seqlen, self.use_cuda_graph = model, max_seqlen, use_cuda_graph
        self.cg_prefill = cg_prefill
        self.cache_kwargs = {} if ssm_state_dtype is None else {"ssm_state_dtype": ssm_state_dtype}
        self.cache_bytes_per_sequence = _nbytes(model.allocate_inference_cache(1, max_seqlen, **self.cache_kwargs))

    def prepare(self, batch: int) -> None:
        """Nothing ahead: the first generate at a batch size allocates the states and captures the graph."""

    def generate(self, prompt: torch.Tensor, max_new_tokens: int,
                 on_prefilled: Callable[[], None] | None = None) -> torch.Tensor:
        model = self.model
        if on_prefilled is not None and self.cg_prefill:
            return self._generate_with_graphed_prefill(prompt, max_new_tokens, on_prefilled)
        if on_prefilled is not None:
            prefill = model.prefill

            def prefill_then_mark(input_ids, inference_params):
                logits = prefill(input_ids, inference_params)
                on_prefilled()
                return logits

            model.prefill = prefill_then_mark  # an instance attribute, for this call: generate() calls model.prefill
        try:
            # one cache size for every call, so the captured decode graph is reused
            return model.generate(prompt, max_new_tokens, temperature=0, cg=self.use_cuda_graph,
                                  cg_prefill=self.cg_prefill, max_seqlen=self.max_seqlen, **self.cache_kwargs)
        finally:
            if on_prefilled is not None:
                del model.prefill

    def _generate_with_graphed_prefill(self, prompt, max_new_tokens, on_prefilled):
        """The prefill is a graph replay here (model.prefill runs only inside its capture, where no host sync is
        allowed): the mark follows the replay instead."""
        from seqmamba.models import generation

        replay = generation.CUDAGraphPrefill.__call__

        def replay_then_mark(graph, input_ids, inference_params):
            logits = replay(graph, input_ids, inference_params)
            on_prefilled()
            return logits

        generation.CUDAGraphPrefill.__call__ = replay_then_mark
        try:
            return self.model.generate(prompt, max_new_tokens, temperature=0, cg=True, cg_prefill=True,
                                       max_seqlen=self.max_seqlen, **self.cache_kwargs)
        finally:
            generation.CUDAGraphPrefill.__call__ = replay

    def release(self) -> None:
        # the captured graph with its states and memory pool (seqmamba.models.generation caches it on the model)
        self.model.__dict__.pop("_cuda_graph_steps", None)


class TransformerRunner:
    """Greedy generation through :class:`GPTGenerator` (KV cache allocated and decode step captured per batch)."""

    name = "Transformer"

    def __init__(self, model: GPT, use_cuda_graph: bool):
        self.model, self.use_cuda_graph, self.generator = model, use_cuda_graph, None
        p = model.wte.weight
        self.cache_bytes_per_sequence = (len(model.blocks) * 2 * model.n_head * model.max_len * model.head_dim
                                         * p.element_size())

    def prepare(self, batch: int) -> None:
        self.generator = None
        self.generator = GPTGenerator(self.model, batch, self.use_cuda_graph)

    def generate(self, prompt: torch.Tensor, max_new_tokens: int,
                 on_prefilled: Callable[[], None] | None = None) -> torch.Tensor:
        return self.generator.generate(prompt, max_new_tokens, on_prefilled)

    def release(self) -> None:
        self.generator = None


def build_runner(model_name: str, size: Size, args, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    max_len = args.prompt_len + args.gen_len
    use_cg = device.type == "cuda" and not args.no_cuda_graph
    if model_name == "Mamba":
        # fused_add_norm as in the official mamba configs: one Triton kernel per add + RMSNorm on CUDA.
        model = MambaLM(d_model=size.d_model, n_layer=size.n_layer, vocab_size=args.vocab_size,
                        fused_add_norm=not args.no_fused_add_norm, device=device,
                        dtype=dtype).eval().set_scan_backend(args.scan_backend)
        return MambaRunner(model, max_len, use_cg, cg_prefill=use_cg and args.cg_prefill,
                           ssm_state_dtype=getattr(torch, args.ssm_state_dtype) if args.ssm_state_dtype else None)
    with torch.device(device):  # initialized where it runs: no multi-GB copy from the host
        model = GPT(args.vocab_size, size.d_model, size.gpt_n_layer, size.n_head, max_len=max_len)
    return TransformerRunner(model.to(dtype=dtype).eval(), use_cg)


# ------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_generate(runner, prompt: torch.Tensor, gen_len: int, device: torch.device) -> tuple[float, float]:
    """(prefill ms, total ms) of one greedy generate call: wall time, synchronized at the start, when the
    prefill's forward is done and at the end."""
    marks = []

    def on_prefilled():
        _sync(device)
        marks.append(time.perf_counter())

    _sync(device)
    start = time.perf_counter()
    runner.generate(prompt, gen_len, on_prefilled)
    _sync(device)
    end = time.perf_counter()
    return (marks[0] - start) * 1e3, (end - start) * 1e3


def is_oom(error: BaseException | None) -> bool:
    """Out of memory, or an error raised while unwinding from one (a CUDA graph capture ended by it, say)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, OutOfMemoryError) or (
                isinstance(error, RuntimeError) and ("out of memory" in text.lower() or "ALLOC_FAILED" in text)):
            return True
        error = error.__cause__ or error.__context__
    return False


def measure_row(runner, batch: int, args, device: torch.device, fake_oom_at: int | None) -> dict:
    """One (model, batch) row: a short warm-up generate (kernels compiled, decode graph captured, the row's
    memory peak reached), then timed full generate calls, up to --repeats while they fit --row-budget-s.
    Running out of memory makes an ``oom`` row; the caller frees the memory."""
    cuda = device.type == "cuda"
    row: dict = {"batch": batch, "status": "ok", "cache_gb": batch * runner.cache_bytes_per_sequence / 1e9}
    runs: list[tuple[float, float]] = []
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            row["base_gb"] = torch.cuda.memory_allocated(device) / 1e9
        runner.prepare(batch)
        if fake_oom_at is not None and batch >= fake_oom_at:
            raise OutOfMemoryError(f"fake out of memory at batch {batch} (--fake-oom {runner.name}:{fake_oom_at})")
        prompt = torch.randint(0, args.vocab_size, (batch, args.prompt_len), device=device)
        runner.generate(prompt, 2)
        spent = 0.0
        while len(runs) < args.repeats:
            runs.append(timed_generate(runner, prompt, args.gen_len, device))
            spent += runs[-1][1] / 1e3
            if spent + runs[-1][1] / 1e3 > args.row_budget_s:
                break  # another run would overrun the row's time budget
        if cuda:
            row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    except Exception as error:  # only running out of memory is a result; anything else is a bug
        if not is_oom(error):
            raise
        row["status"] = "oom"
        row["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"[:200]
    finally:
        runner.release()
    if row["status"] == "ok":
        prefill_ms = statistics.median(p for p, _ in runs)
        total_ms = statistics.median(t for _, t in runs)
        decode_ms = statistics.median(t - p for p, t in runs)
        ms_per_token = decode_ms / (args.gen_len - 1)
        row.update(prefill_ms=prefill_ms, ms_per_token=ms_per_token, total_ms=total_ms, runs=len(runs),
                   decode_tokens_per_s=batch / ms_per_token * 1e3,
                   e2e_tokens_per_s=batch * args.gen_len / total_ms * 1e3)
    return row


NOT_RUN = {"skipped": "not run: a smaller batch of this model ran out of memory",
           "time": "not run: --time-limit-s was reached"}


def not_run_row(ident: dict, batch: int, status: str) -> dict:
    return {**ident, "batch": batch, "status": status, "error": NOT_RUN[status]}


def sweep_model(runner, ident: dict, args, device: torch.device, fake_oom_at: int | None, deadline: float | None,
                all_rows: list[dict], emit: Callable[[dict], None]) -> None:
    """The listed batches, then doubling up to --max-batch, until the model runs out of memory (or the clock
    passes ``deadline``); each row is appended to ``all_rows`` and then passed to ``emit``."""
    rows: list[dict] = []
    stopped = None  # "skipped" after an OOM, "time" past the deadline: the remaining batches are not run

    def run(batch: int) -> None:
        nonlocal stopped
        if stopped is None and deadline is not None and time.perf_counter() > deadline:
            stopped = "time"
        if stopped is not None:
            row = not_run_row(ident, batch, stopped)
        else:
            row = {**ident, **measure_row(runner, batch, args, device, fake_oom_at)}
            release_memory(device)  # after measure_row returned: its frames (and an OOM's traceback) are gone
            if row["status"] == "oom":
                stopped = "skipped"
        rows.append(row)
        all_rows.append(row)
        emit(row)

    for batch in args.batch_sizes:
        run(batch)
    batch = args.batch_sizes[-1]
    while stopped is None and args.max_batch and batch < args.max_batch:
        batch = min(2 * batch, args.max_batch)
        run(batch)
    fitted = [r for r in rows if r["status"] == "ok"]
    for r in rows:
        r["largest_fit"] = bool(fitted) and r is max(fitted, key=lambda f: f["batch"])


def count_step_kernels(step: Callable[[], object]) -> str:
    """Number of CUDA kernels one eager decode step launches (what a captured graph replays), via the profiler."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad():
            step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize()
        return str(sum(1 for e in prof.events() if e.device_type.name == "CUDA"))
    except Exception as error:  # noqa: BLE001 - a diagnostic only: never lose the table over it
        return f"? ({type(error).__name__}: {error})"


def step_fn(runner, device) -> Callable[[], object]:
    """One eager decode step at batch 1."""
    if isinstance(runner, MambaRunner):
        params = runner.model.new_inference_params(1, 8)
        params.seqlen_offset = 1
        ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        return lambda: runner.model.step(ids, params)
    generator = GPTGenerator(runner.model, 1, use_cuda_graph=False)
    generator.position.fill_(1)
    return lambda: generator._step()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied head is listed once


# ------------------------------------------------------------------------------------------ results
ROW_FIELDS = ["size", "model", "n_layer", "d_model", "n_head", "params_m", "batch", "status", "prefill_ms",
              "ms_per_token", "decode_tokens_per_s", "e2e_tokens_per_s", "total_ms", "peak_gb", "base_gb",
              "cache_gb", "runs", "largest_fit", "mamba_over_transformer_decode",
              "mamba_over_transformer_prefill", "mamba_over_transformer_e2e", "error"]
RATIOS = {"mamba_over_transformer_decode": "decode_tokens_per_s", "mamba_over_transformer_prefill": "prefill_ms",
          "mamba_over_transformer_e2e": "e2e_tokens_per_s"}


def add_ratios(rows: list[dict]) -> None:
    """Mamba / Transformer at each (size, batch) both ran, written on both rows."""
    ok = {(r["size"], r["batch"], r["model"]): r for r in rows if r["status"] == "ok"}
    for r in rows:
        mamba, trans = ok.get((r["size"], r["batch"], "Mamba")), ok.get((r["size"], r["batch"], "Transformer"))
        for ratio, field in RATIOS.items():
            r[ratio] = mamba[field] / trans[field] if mamba and trans else None


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_rows(path: str, rows: list[dict], meta: dict) -> None:
    """All rows as CSV, or as JSON ({"meta": ..., "rows": [...]}) for a .json path; replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".json":
        tmp.write_text(json.dumps({"meta": meta, "rows": [{k: r.get(k) for k in ROW_FIELDS} for r in rows]},
                                  indent=1))
    else:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _csv_value(r.get(k)) for k in ROW_FIELDS})
    os.replace(tmp, path)


def write_plot(path: str, rows: list[dict], sizes: Sequence[Size], title: str) -> None:
    """Decode tokens/s against batch (log-log), one panel per size, both models; e2e tokens/s dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for model, color in zip(MODELS, ("C0", "C1")):
            mine = [r for r in rows if r["size"] == size.name and r["model"] == model]
            ok = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: r["batch"])
            ooms = [r["batch"] for r in mine if r["status"] == "oom"]
            label = f"{model} {size.name if model == 'Mamba' else size.gpt_name}"
            if ooms:
                label += f" (OOM at {min(ooms)})"
            if ok:
                batches = [r["batch"] for r in ok]
                ax.plot(batches, [r["decode_tokens_per_s"] for r in ok], "o-", color=color, label=label + " decode")
                ax.plot(batches, [r["e2e_tokens_per_s"] for r in ok], "s--", color=color, alpha=0.45,
                        markersize=4, label="  end to end")
            elif ooms:
                ax.plot([], [], "o-", color=color, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        tried = sorted({r["batch"] for r in rows if r["size"] == size.name and r["status"] in ("ok", "oom")})
        if tried:
            ax.set_xticks(tried, [str(b) for b in tried], fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("batch")
        ax.set_title(f"{size.name} Mamba vs {size.gpt_name} Transformer")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("tokens/s")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _model_cells(row: dict | None, implied_oom: bool, cuda: bool) -> str:
    if row is None or row["status"] != "ok":
        if row is None:
            mark = "(OOM)" if implied_oom else "-"
        else:
            mark = {"oom": "OOM", "skipped": "(OOM)", "time": "(time)"}[row["status"]]
        return f"{mark:>10} {'':>11} {'':>10} {'':>7}"
    peak = f"{row['peak_gb']:7.1f}" if cuda and row.get("peak_gb") is not None else f"{'-':>7}"
    return (f"{row['prefill_ms']:10.1f} {row['decode_tokens_per_s']:11.0f} {row['e2e_tokens_per_s']:10.0f} "
            f"{peak}")


def format_table(rows: list[dict], sizes: Sequence[Size], cuda: bool) -> list[str]:
    by_key = {(r["size"], r["batch"], r["model"]): r for r in rows}
    cols = f"{'prefill ms':>10} {'decode t/s':>11} {'e2e t/s':>10} {'peak GB':>7}"
    lines = [f"{'':>5} {'':>5} | {'Mamba':^41} | {'Transformer':^41} | {'Mamba/Transformer':^24}",
             f"{'size':>5} {'batch':>5} | {cols} | {cols} | {'decode':>7} {'prefill':>8} {'e2e':>7}"]
    lines.append("-" * len(lines[1]))
    for size in sizes:
        mine = [r for r in rows if r["size"] == size.name]
        first_oom = {m: min((r["batch"] for r in mine if r["model"] == m and r["status"] == "oom"), default=None)
                     for m in MODELS}
        for batch in sorted({r["batch"] for r in mine}):
            cells = []
            for m in MODELS:
                row = by_key.get((size.name, batch, m))
                cells.append(_model_cells(row, first_oom[m] is not None and batch > first_oom[m], cuda))
            ratio_row = by_key.get((size.name, batch, "Mamba")) or {}
            ratios = [ratio_row.get(k) for k in RATIOS]
            ratio_text = " ".join(f"{v:{w - 1}.2f}x" if v is not None else f"{'-':>{w}}"
                                  for v, w in zip(ratios, (7, 8, 7)))
            lines.append(f"{size.name:>5} {batch:>5} | {cells[0]} | {cells[1]} | {ratio_text}")
    return lines


def largest_batch_lines(rows: list[dict], sizes: Sequence[Size], max_batch: int) -> list[str]:
    parts = []
    for size in sizes:
        text = []
        for m in MODELS:
            mine = [r for r in rows if r["size"] == size.name and r["model"] == m]
            fits = [r["batch"] for r in mine if r["status"] == "ok"]
            hit_limit = any(r["status"] == "oom" for r in mine)
            timed_out = any(r["status"] == "time" for r in mine)
            text.append(f"{m} {max(fits) if fits else 'none'}{'' if hit_limit or not fits else '+'}"
                        + (" (time limit)" if timed_out else ""))
        parts.append(f"{size.name}: {', '.join(text)}")
    return [f"largest batch that fit (doubling up to {max_batch}; '+': no OOM up to there): " + "; ".join(parts)]


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny models on the CPU, a smoke test of this script: two sizes, batches 1 2 4 8 then "
                             "doubling to 16, a fake Transformer OOM from batch 4 (so batch 8 is skipped), the CSV "
                             "and the plot (temporary files unless --out/--plot are given); ignores --sizes")
    parser.add_argument("--sizes", nargs="+", default=None, metavar="SIZE",
                        help="sweep the Mamba paper's sizes: all, or some of 130m 370m 790m 1.4b (or the "
                             "Transformers' names 125m 350m 760m 1.3b)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help=f"default {' '.join(map(str, SWEEP_BATCHES))} with --sizes, else 1 64")
    parser.add_argument("--max-batch", type=int, default=None,
                        help=f"after the listed batches, double the batch up to this cap until a model runs out of "
                             f"memory (default {SWEEP_MAX_BATCH} with --sizes, else 0: no search)")
    parser.add_argument("--prompt-len", type=int, default=2048)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=None, help="single size (no --sizes): Mamba depth (24)")
    parser.add_argument("--d-model", type=int, default=None, help="single size: width of both models (768)")
    parser.add_argument("--n-head", type=int, default=None, help="single size: Transformer heads (12)")
    parser.add_argument("--gpt-n-layer", type=int, default=None,
                        help="single size: Transformer depth; default n_layer // 2, so both models have ~the same "
                             "parameters (a Mamba block holds about half the parameters of an attention + MLP "
                             "block, as mamba-130m's 24 layers vs GPT-3 Small's 12)")
    parser.add_argument("--vocab-size", type=int, default=50280)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per row at most (median)")
    parser.add_argument("--row-budget-s", type=float, default=5.0,
                        help="no further timed call in a row once the next would pass this many seconds of "
                             "timed calls (at least one call): large rows run once after their warm-up")
    parser.add_argument("--time-limit-s", type=float, default=None,
                        help="run no further row once this many seconds have passed (the table still prints, those "
                             "rows as '(time)'): default 480 with --sizes, else 0 = none")
    parser.add_argument("--out", default=None, help="write every row here: CSV, or JSON for a .json path")
    parser.add_argument("--plot", default=None, help="write a PNG of tokens/s against batch here (matplotlib)")
    parser.add_argument("--fake-oom", action="append", default=None, metavar="MODEL:BATCH",
                        help="testing: rows of MODEL (Mamba or Transformer) at batch >= BATCH raise "
                             "torch.OutOfMemoryError after their cache is allocated (--quick: Transformer:4)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="decode eagerly on CUDA too")
    parser.add_argument("--cg-prefill", action="store_true",
                        help="Mamba also replays its prefill from a CUDA graph (generate(cg_prefill=True); captured "
                             "in each row's warm-up); the Transformer's prefill stays eager")
    parser.add_argument("--no-fused-add-norm", action="store_true",
                        help="Mamba blocks use the unfused residual add + RMSNorm (several kernels per block)")
    parser.add_argument("--scan-backend", default="auto", help="seqmamba ops backend: auto | torch | triton")
    parser.add_argument("--ssm-state-dtype", choices=["float32", "bfloat16"], default=None,
                        help="Mamba's SSM state dtype in the cache (default fp32; bfloat16: mamba_ssm's for a bf16 "
                             "model, half the state traffic per decode step)")
    parser.add_argument("--decode-dt-proj-max-bytes", type=int, default=None,
                        help="selective_state_update's DECODE_DT_PROJ_MAX_BYTES: above batch x W bytes, dt by one "
                             "GEMM before the state update instead of inside it (default: the module's)")
    parser.add_argument("--decode-dt-proj-rows", default=None, metavar="ROWS,CHANNELS,WARPS",
                        help="selective_state_update's DECODE_DT_PROJ_ROWS: the blocks of the row-block kernel (dt by "
                             "one tensor-core product per block), which runs past DECODE_DT_PROJ_MAX_BYTES for 16-bit "
                             "SSM states (default: the module's, 16,32,4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (--quick uses 1: on a busy small machine OpenMP barriers dominate)")
    add_switches(parser, "decode-linear", "conv-taps", "x-proj-layout")
    args = parser.parse_args(argv)
    args.switched = apply_switches(args)
    if args.decode_dt_proj_max_bytes is not None or args.decode_dt_proj_rows:
        from seqmamba.ops.selective_state_update import triton_kernels as state_update

        if args.decode_dt_proj_max_bytes is not None:
            state_update.DECODE_DT_PROJ_MAX_BYTES = args.decode_dt_proj_max_bytes
        if args.decode_dt_proj_rows:
            parts = args.decode_dt_proj_rows.split(",")
            if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
                parser.error(f"--decode-dt-proj-rows: expected three positive integers ROWS,CHANNELS,WARPS, got "
                             f"{args.decode_dt_proj_rows!r}")
            rows = tuple(int(p) for p in parts)
            state_update.DECODE_DT_PROJ_ROWS = rows

    single = {"--n-layer": args.n_layer, "--d-model": args.d_model, "--n-head": args.n_head,
              "--gpt-n-layer": args.gpt_n_layer}
    if args.quick:
        args.sizes = list(QUICK_SIZES)
        args.batch_sizes = args.batch_sizes or [1, 2, 4, 8]
        args.max_batch = 16 if args.max_batch is None else args.max_batch
        args.prompt_len, args.gen_len, args.vocab_size = 32, 8, 256
        args.dtype, args.device, args.repeats = "fp32", "cpu", 2
        args.fake_oom = ["Transformer:4"] if args.fake_oom is None else args.fake_oom
        args.threads = 1 if args.threads is None else args.threads
    elif args.sizes is not None:
        given = [flag for flag, value in single.items() if value is not None]
        if given:
            parser.error(f"{', '.join(given)} set the single custom size; with --sizes drop them")
        try:
            args.sizes = resolve_sizes(args.sizes)
        except ValueError as error:
            parser.error(str(error))
        args.batch_sizes = args.batch_sizes or list(SWEEP_BATCHES)
        args.max_batch = SWEEP_MAX_BATCH if args.max_batch is None else args.max_batch
        args.time_limit_s = SWEEP_TIME_LIMIT_S if args.time_limit_s is None else args.time_limit_s
    else:
        n_layer, d_model = args.n_layer or 24, args.d_model or 768
        n_head, gpt_n_layer = args.n_head or 12, args.gpt_n_layer or max(1, (args.n_layer or 24) // 2)
        if d_model % n_head:
            parser.error(f"--n-head {n_head} must divide --d-model {d_model}")
        args.sizes = [Size(f"{n_layer}x{d_model}", n_layer, d_model, f"{gpt_n_layer}x{d_model}", gpt_n_layer, n_head)]
        args.batch_sizes = args.batch_sizes or [1, 64]
        args.max_batch = 0 if args.max_batch is None else args.max_batch
    args.time_limit_s = args.time_limit_s or 0.0
    args.batch_sizes = sorted(set(args.batch_sizes))
    if args.batch_sizes[0] < 1 or args.max_batch < 0:
        parser.error("batch sizes must be >= 1 and --max-batch >= 0")
    if args.gen_len < 2 or args.prompt_len < 1:
        parser.error("--gen-len must be >= 2 (decode time is split from the prefill) and --prompt-len >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    fake_oom = {}
    for spec in args.fake_oom or []:
        model, _, batch = spec.partition(":")
        if model not in MODELS or not batch.isdigit():
            parser.error(f"--fake-oom {spec!r}: expected MODEL:BATCH with MODEL one of {', '.join(MODELS)}")
        fake_oom[model] = int(batch)
    args.fake_oom = fake_oom
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    cuda = device.type == "cuda"
    use_cg = cuda and not args.no_cuda_graph
    temporary = tempfile.TemporaryDirectory(prefix="bench_generation_") if args.quick else None
    if temporary is not None:  # --quick writes both files, to a directory removed at the end unless paths are given
        args.out = args.out or os.path.join(temporary.name, "rows.csv")
        args.plot = args.plot or os.path.join(temporary.name, "decode.png")

    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    total_gb = torch.cuda.get_device_properties(device).total_memory / 1e9 if cuda else None
    meta = {"device": name, "device_memory_gb": total_gb, "torch": torch.__version__, "dtype": args.dtype,
            "cuda_graphs": use_cg, "programmatic_launch": launch.PROGRAMMATIC_LAUNCH,
            "fused_add_norm": not args.no_fused_add_norm, "prompt_len": args.prompt_len,
            "gen_len": args.gen_len, "vocab_size": args.vocab_size, "batch_sizes": args.batch_sizes,
            "max_batch": args.max_batch, "repeats": args.repeats, "row_budget_s": args.row_budget_s,
            "time_limit_s": args.time_limit_s, "switches": args.switched,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"device: {name}" + (f" ({total_gb:.1f} GB)" if cuda else "") + f"; torch {torch.__version__}; "
          f"dtype {args.dtype}; CUDA graphs: {use_cg}; Mamba fused add+norm: {not args.no_fused_add_norm}; "
          f"prompt {args.prompt_len}, generate {args.gen_len}, greedy; batches {args.batch_sizes}"
          + (f", then doubling up to {args.max_batch}" if args.max_batch else ""), flush=True)

    started = time.perf_counter()
    rows: list[dict] = []
    legend: list[str] = []

    def save() -> None:
        add_ratios(rows)
        if args.out:
            write_rows(args.out, rows, {**meta, "elapsed_s": time.perf_counter() - started})

    def emit(row: dict) -> None:
        tag = f"[{row['size']} {row['model']} batch {row['batch']}]"
        if row["status"] == "ok":
            peak = f", peak {row['peak_gb']:.1f} GB" if row.get("peak_gb") is not None else ""
            print(f"{tag} prefill {row['prefill_ms']:.1f} ms, {row['ms_per_token']:.3f} ms/token, decode "
                  f"{row['decode_tokens_per_s']:.0f} tok/s, e2e {row['e2e_tokens_per_s']:.0f} tok/s{peak} "
                  f"({row['runs']} runs, {time.perf_counter() - started:.0f} s in)", flush=True)
        elif row["status"] == "oom":
            print(f"{tag} OOM: {row.get('error', '')[:150]}", flush=True)
        else:
            print(f"{tag} {row['error']}", flush=True)
        save()

    deadline = started + args.time_limit_s if args.time_limit_s else None
    for size in args.sizes:
        described = []
        for model_name in MODELS:
            if deadline is not None and time.perf_counter() > deadline:  # not even built
                n_layer = size.n_layer if model_name == "Mamba" else size.gpt_n_layer
                ident = {"size": size.name, "model": model_name, "n_layer": n_layer, "d_model": size.d_model}
                for batch in args.batch_sizes:
                    rows.append(not_run_row(ident, batch, "time"))
                print(f"{model_name} {size.name}: not run, --time-limit-s {args.time_limit_s:g} reached", flush=True)
                save()
                continue
            runner = build_runner(model_name, size, args, device, dtype)
            params = count_params(runner.model)
            n_layer = size.n_layer if model_name == "Mamba" else size.gpt_n_layer
            shape = f"{n_layer} layers, d_model {size.d_model}" + (
                f", {size.n_head} heads" if model_name == "Transformer" else "")
            kernels = f", {count_step_kernels(step_fn(runner, device))} CUDA kernels per decode step" if cuda else ""
            print(f"{model_name} {size.name if model_name == 'Mamba' else size.gpt_name}: {shape}, "
                  f"{params / 1e6:.1f}M params, cache {runner.cache_bytes_per_sequence / 1e6:.1f} MB per sequence"
                  f"{kernels}", flush=True)
            described.append(f"{model_name} {shape} ({params / 1e6:.1f}M)")
            ident = {"size": size.name, "model": model_name, "n_layer": n_layer, "d_model": size.d_model,
                     "n_head": size.n_head if model_name == "Transformer" else None, "params_m": params / 1e6}
            sweep_model(runner, ident, args, device, args.fake_oom.get(model_name), deadline, rows, emit)
            del runner
            release_memory(device)
        if described:
            legend.append(f"{size.name}: " + " vs ".join(described))
    elapsed = time.perf_counter() - started
    save()
    if args.plot:
        write_plot(args.plot, rows, args.sizes,
                   f"greedy decode, prompt {args.prompt_len} + {args.gen_len} new tokens, {args.dtype}, {name}")

    if temporary is not None:
        for path in (args.out, args.plot):
            print(f"wrote {path} ({os.path.getsize(path)} bytes)" + (
                " (temporary)" if path.startswith(temporary.name) else ""))
        temporary.cleanup()
    else:
        for path in (args.out, args.plot):
            if path:
                print(f"wrote {path}")
    print(f"sweep took {elapsed:.0f} s")
    print("\n".join(legend))
    print("\n".join(format_table(rows, args.sizes, cuda)))
    if args.max_batch:
        print("\n".join(largest_batch_lines(rows, args.sizes, args.max_batch)))
    print("peak GB: max allocated over the row (weights + cache + activations); OOM: ran out of memory; (OOM): not "
          "run, a smaller batch of that model ran out. Mamba/Transformer: decode and e2e > 1, prefill < 1 favour Mamba"
          + ("; (time): not run, --time-limit-s reached" if any(r["status"] == "time" for r in rows) else ""))


if __name__ == "__main__":
    main()

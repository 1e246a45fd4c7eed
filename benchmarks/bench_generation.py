"""Generation throughput: Mamba (fixed-size recurrent state) vs a Transformer with a KV cache.

Both models are 130M-shaped (24 layers, d_model 768, vocab 50280, random weights, bf16), both decode
greedily under a captured CUDA graph, both prefill the prompt in one parallel pass. Per batch size:

  prefill ms       one forward over the prompt (the cache filled)
  ms/token         decode latency per generated token (batch-wide step), (T(gen) - T(1)) / (gen - 1)
  tokens/s         end to end, batch * gen / T(gen): prefill + decode, the Mamba paper's Figure 8 metric
  decode tok/s     batch / (ms/token)

and the ratios Mamba / Transformer. Run on the GPU:

    python benchmarks/bench_generation.py                 # prompt 2048, generate 128, batch 1 and 64
    python benchmarks/bench_generation.py --quick         # tiny CPU smoke run (seconds)
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from seqmamba.models import MambaLM


# ------------------------------------------------------------------------------------------ GPT baseline
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
        q, k, v = self.qkv(x).view(batch, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        kv_cache[0].index_copy_(2, positions, k)
        kv_cache[1].index_copy_(2, positions, v)
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, kv_cache[0], kv_cache[1], attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(batch, T, d))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, kv_cache, positions, attn_mask):
        x = x + self.attn(self.ln_1(x), kv_cache, positions, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2-small-shaped decoder (pre-LN, learned positions, tied head) with a preallocated KV cache."""

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
    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        prompt_len = prompt.shape[1]
        positions = torch.arange(prompt_len, device=prompt.device)
        logits = self.model(prompt, self.kv_cache, positions)
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


# ------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time in ms of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(generate: Callable[[torch.Tensor, int], torch.Tensor], prefill: Callable[[torch.Tensor], object],
            prompt: torch.Tensor, gen_len: int, device, repeats: int) -> Dict[str, float]:
    t_prefill = timed(lambda: prefill(prompt), device, repeats)
    t_one = timed(lambda: generate(prompt, 1), device, repeats)
    t_all = timed(lambda: generate(prompt, gen_len), device, repeats)
    batch = prompt.shape[0]
    ms_per_token = (t_all - t_one) / max(gen_len - 1, 1)
    return {"prefill_ms": t_prefill, "ms_per_token": ms_per_token, "tokens_per_s": batch * gen_len / t_all * 1e3,
            "decode_tokens_per_s": batch / ms_per_token * 1e3, "total_ms": t_all}


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
    except Exception as error:  # a diagnostic only: never lose the table over it
        return f"? ({type(error).__name__}: {error})"


def mamba_step_fn(mamba: MambaLM, device) -> Callable[[], object]:
    params = mamba.new_inference_params(1, 8)
    params.seqlen_offset = 1
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    return lambda: mamba.step(ids, params)


def gpt_step_fn(gpt: "GPT", device) -> Callable[[], object]:
    generator = GPTGenerator(gpt, 1, use_cuda_graph=False)
    generator.position.fill_(1)
    return lambda: generator._step()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied head is listed once


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models on the CPU, a smoke test of this script")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--prompt-len", type=int, default=2048)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--gpt-n-layer", type=int, default=None,
                        help="Transformer depth; default n_layer // 2, so both models have ~the same parameters "
                             "(a Mamba block holds about half the parameters of an attention + MLP block, "
                             "as mamba-130m's 24 layers vs GPT-3 Small's 12)")
    parser.add_argument("--vocab-size", type=int, default=50280)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cuda-graph", action="store_true", help="decode eagerly on CUDA too")
    parser.add_argument("--no-fused-add-norm", action="store_true",
                        help="Mamba blocks use the unfused residual add + RMSNorm (several kernels per block)")
    parser.add_argument("--scan-backend", default="auto", help="seqmamba ops backend: auto | torch | triton")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (--quick uses 1: on a busy small machine OpenMP barriers dominate)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.prompt_len, args.gen_len = [1, 4], 32, 8
        args.n_layer, args.d_model, args.n_head, args.vocab_size = 2, 64, 4, 256
        args.dtype, args.device, args.repeats = "fp32", "cpu", 3
        args.threads = 1 if args.threads is None else args.threads
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    use_cg = device.type == "cuda" and not args.no_cuda_graph
    torch.manual_seed(0)

    # fused_add_norm as in the official mamba-130m config: one Triton kernel per add + RMSNorm on CUDA.
    mamba = MambaLM(d_model=args.d_model, n_layer=args.n_layer, vocab_size=args.vocab_size,
                    fused_add_norm=not args.no_fused_add_norm, device=device,
                    dtype=dtype).eval().set_scan_backend(args.scan_backend)
    gpt_n_layer = args.gpt_n_layer or max(1, args.n_layer // 2)
    gpt = GPT(args.vocab_size, args.d_model, gpt_n_layer, args.n_head,
              max_len=args.prompt_len + args.gen_len).to(device=device, dtype=dtype).eval()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; dtype {args.dtype}; CUDA graphs: {use_cg}; "
          f"Mamba fused add+norm: {not args.no_fused_add_norm}; "
          f"prompt {args.prompt_len}, generate {args.gen_len}, greedy")
    print(f"Mamba: {args.n_layer} layers, d_model {args.d_model}, {count_params(mamba) / 1e6:.1f}M params; "
          f"Transformer: {gpt_n_layer} layers, d_model {args.d_model}, {args.n_head} heads, "
          f"{count_params(gpt) / 1e6:.1f}M params")

    rows = []
    for batch in args.batch_sizes:
        prompt = torch.randint(0, args.vocab_size, (batch, args.prompt_len), device=device)

        def mamba_prefill(p):
            with torch.no_grad():
                return mamba.prefill(p, mamba.new_inference_params(p.shape[0], p.shape[1]))

        def mamba_generate(p, n):
            # one cache size for every call, so the captured decode graph is reused
            return mamba.generate(p, n, temperature=0, cg=use_cg, max_seqlen=args.prompt_len + args.gen_len)

        gpt_gen = GPTGenerator(gpt, batch, use_cg)

        def gpt_prefill(p):
            with torch.no_grad():
                return gpt(p, gpt_gen.kv_cache, torch.arange(p.shape[1], device=device))

        results = {"Mamba": measure(mamba_generate, mamba_prefill, prompt, args.gen_len, device, args.repeats),
                   "Transformer": measure(gpt_gen.generate, gpt_prefill, prompt, args.gen_len, device, args.repeats)}
        rows.append((batch, results))
        del gpt_gen
        if device.type == "cuda":
            torch.cuda.empty_cache()

    header = (f"{'batch':>5} {'model':<12} {'prefill ms':>11} {'ms/token':>9} {'tokens/s':>10} "
              f"{'decode tok/s':>13}")
    print(header)
    print("-" * len(header))
    for batch, results in rows:
        for model_name, r in results.items():
            print(f"{batch:>5} {model_name:<12} {r['prefill_ms']:>11.2f} {r['ms_per_token']:>9.3f} "
                  f"{r['tokens_per_s']:>10.1f} {r['decode_tokens_per_s']:>13.1f}")
        m, t = results["Mamba"], results["Transformer"]
        print(f"{batch:>5} {'Mamba/Trans':<12} {m['prefill_ms'] / t['prefill_ms']:>10.2f}x "
              f"{m['ms_per_token'] / t['ms_per_token']:>8.2f}x {m['tokens_per_s'] / t['tokens_per_s']:>9.2f}x "
              f"{m['decode_tokens_per_s'] / t['decode_tokens_per_s']:>12.2f}x")
    if device.type == "cuda":
        print(f"CUDA kernels in one decode step at batch 1: Mamba {count_step_kernels(mamba_step_fn(mamba, device))}, "
              f"Transformer {count_step_kernels(gpt_step_fn(gpt, device))}")
    print("ratios: time columns Mamba/Transformer (lower is better for Mamba), throughput columns Mamba/Transformer "
          "(higher is better for Mamba)")


if __name__ == "__main__":
    main()

"""Where a prompt's forward spends its wall time beyond its GPU work, Mamba (graphed prefill) against the GPT.

The twenty-fourth session measured the 130M prefill at batch 64 at 1.28x the GPT's in GPU time (profile_decode.py
--phase prefill: kernels summed under torch.profiler) but 1.31-1.34x in bench_generation.py's wall time: Mamba's
timed prefill sat 0.9-2.5 ms above its profiled GPU time, the GPT's below its own. This script takes the Mamba
number apart, each part timed on its own (median of --repeats, synchronized before and after):

  eager prefill     model.prefill, launched from Python (wall; and CUDA events around it: the GPU's span)
  graph replay      the captured prefill alone (CUDAGraphPrefill: the input copy + graph.replay()), timed in turn
                    with the eager prefill
  generate preamble the host time generate(cg=True, cg_prefill=True) takes before the replay starts (argument
                    checks, the module walk for position-indexed caches, the graph cache's parameter key)
  generate mark     what bench_generation.py times: generate from a synchronized start to the prefill's end

and for the GPT its eager forward (wall and events) and bench_generation.py's mark. A GPU's span (events) below its
wall is host time the GPU waited for; a replay's span above the eager one is the graph's own cost.

    python benchmarks/bench_prefill_gap.py                         # 130m, batch 64, prompt 2048 (GPU)
    python benchmarks/bench_prefill_gap.py --size 130m --batch 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generation import GPTGenerator, build_runner, resolve_sizes, timed_generate  # noqa: E402
from bench_generation import parse_args as parse_generation_args  # noqa: E402


def wall_and_span(*fns, repeats: int) -> list[tuple[float, float]]:
    """Per function, (median wall ms, median GPU span ms by CUDA events) of ``fn()``, synchronized before and after
    each call. Several functions are timed in turn within each repeat, so a drift of the GPU's clock over the run
    (4-5% between processes at the 130M prefill, twenty-fifth session) falls on all of them alike."""
    walls, spans = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            walls[i].append((time.perf_counter() - t0) * 1e3)
            spans[i].append(start.elapsed_time(end))
    return [(statistics.median(w), statistics.median(s)) for w, s in zip(walls, spans)]


def mamba_rows(runner, prompt: torch.Tensor, gen_len: int, repeats: int) -> list[tuple[str, float, float]]:
    from seqmamba.models import generation

    model, device = runner.model, prompt.device
    prompt_len = prompt.shape[1]
    runner.generate(prompt, 2)  # warm-up: kernels compiled, decode graph and prefill graph captured
    steps = model.__dict__.get("_cuda_graph_steps", {})
    if len(steps) != 1:
        raise RuntimeError(f"expected one captured generation graph on the model after the warm-up, found {len(steps)}")
    graph_step = next(iter(steps.values()))
    prefill_graph = graph_step.prefill_graph(prompt_len)
    params = graph_step.inference_params
    rows = []

    def eager():
        params.seqlen_offset = 0
        with torch.no_grad():
            model.prefill(prompt, params)

    def replay():
        params.seqlen_offset = 0
        prefill_graph(prompt, params)

    (eager_times, replay_times) = wall_and_span(eager, replay, repeats=repeats)
    rows += [("eager prefill", *eager_times), ("graph replay", *replay_times)]

    # the host time from generate's entry to the replay call (the GPU idles: the start is synchronized)
    preambles, original = [], generation.CUDAGraphPrefill.__call__

    def mark_then_replay(graph, input_ids, inference_params):
        preambles.append((time.perf_counter() - entered[-1]) * 1e3)
        return original(graph, input_ids, inference_params)

    entered = []
    generation.CUDAGraphPrefill.__call__ = mark_then_replay
    try:
        for _ in range(repeats):
            torch.cuda.synchronize()
            entered.append(time.perf_counter())
            model.generate(prompt, 2, temperature=0, cg=True, cg_prefill=True, max_seqlen=runner.max_seqlen,
                           **runner.cache_kwargs)
            torch.cuda.synchronize()
    finally:
        generation.CUDAGraphPrefill.__call__ = original
    rows.append(("generate preamble (host)", statistics.median(preambles), float("nan")))
    marks = [timed_generate(runner, prompt, gen_len, device)[0] for _ in range(repeats)]
    rows.append(("generate mark (bench_generation)", statistics.median(marks), float("nan")))
    return rows


def gpt_rows(runner, prompt: torch.Tensor, gen_len: int, repeats: int) -> list[tuple[str, float, float]]:
    model, device = runner.model, prompt.device
    batch, prompt_len = prompt.shape
    runner.prepare(batch)
    runner.generate(prompt, 2)
    generator: GPTGenerator = runner.generator
    positions = torch.arange(prompt_len, device=device)

    def eager():
        with torch.no_grad():
            model(prompt, generator.kv_cache, positions)

    rows = [("eager forward", *wall_and_span(eager, repeats=repeats)[0])]
    marks = [timed_generate(runner, prompt, gen_len, device)[0] for _ in range(repeats)]
    rows.append(("generate mark (bench_generation)", statistics.median(marks), float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="130m", help="130m | 370m | 790m | 1.4b")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=2048)
    parser.add_argument("--gen-len", type=int, default=8, help="new tokens per timed generate (the mark is the prefill)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_prefill_gap.py needs a CUDA GPU (CUDA graphs)")
    device = torch.device("cuda")
    size = resolve_sizes([args.size])[0]
    opts = parse_generation_args(["--prompt-len", str(args.prompt_len), "--gen-len", str(args.gen_len),
                                  "--cg-prefill"])
    prompt = torch.randint(0, opts.vocab_size, (args.batch, args.prompt_len), device=device)
    print(f"{torch.cuda.get_device_name()}: {size.name} vs {size.gpt_name}, batch {args.batch}, prompt "
          f"{args.prompt_len}; ms, median of {args.repeats}")
    print(f"| model | what | wall ms | GPU span ms (events) |\n|---|---|---|---|")
    for name, rows_of in (("Mamba", mamba_rows), ("Transformer", gpt_rows)):
        runner = build_runner(name, size, opts, device, torch.bfloat16)
        for what, wall, span in rows_of(runner, prompt, args.gen_len, args.repeats):
            span_text = "-" if span != span else f"{span:.2f}"
            print(f"| {name} | {what} | {wall:.2f} | {span_text} |", flush=True)
        runner.release()
        del runner
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

"""Where one decode step's GPU time goes, Mamba against the GPT baseline, at a paper size and batch.

Issue 9 asks for 1.4B decode at batch 128 >= 5x the Transformer's tokens/s (measured: 3.30x). Both models decode
under CUDA graphs in ``bench_generation.py``; a graph replays the kernels one eager step launches, so their GPU
times are the eager step's. This script runs one eager step of each model (after a warm-up) under torch.profiler,
prints the kernels by GPU time per step, and the step's memory floor: the bytes it must move (weights, plus the
recurrent states read and written for Mamba, the whole KV cache read for the GPT) at the copy
bandwidth measured in the same run.

    python benchmarks/profile_decode.py --size 1.4b --batch 128          # GPU, ~1 min
    python benchmarks/profile_decode.py --size 130m --batch 64 --top 20
    python benchmarks/profile_decode.py --phase prefill --size 130m --batch 64   # the prompt's forward instead

``--phase prefill`` profiles the prompt's forward of both models (Mamba's ``prefill``: the parallel scan leaving
the last states in the cache; the GPT's forward filling its KV cache) and groups the kernels by kind (the scan,
GEMMs, attention, the conv, norms, elementwise), the breakdown behind issue 9's prefill target (batch 64 within
1.3x of the Transformer's).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generation import GPTGenerator, build_runner, resolve_sizes  # noqa: E402
from bench_generation import parse_args as parse_generation_args  # noqa: E402
from switches import add_switches, apply_switches  # noqa: E402


def runner_options(args) -> argparse.Namespace:
    """bench_generation's options for ``build_runner`` (its own parser: every option it reads is there, with its
    default), eager: the profiled step is the one a CUDA graph would replay."""
    state = ["--ssm-state-dtype", args.ssm_state_dtype] if getattr(args, "ssm_state_dtype", None) else []
    return parse_generation_args(["--prompt-len", str(args.prompt_len), "--gen-len", str(args.gen_len),
                                  "--vocab-size", str(args.vocab_size), "--no-cuda-graph", *state])


def copy_bandwidth(device: torch.device, nbytes: int = 2 ** 30) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 2 * nbytes * 10 / (start.elapsed_time(end) / 1e3)


def profile_step(step, repeats: int, grad: bool = False):
    """(total GPU us per step, [(kernel name, us per step, calls per step)] sorted by time); the step runs under
    no_grad unless ``grad`` (a forward + backward, as profile_scan_step.py profiles)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.set_grad_enabled(grad):
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                step()
            torch.cuda.synchronize()
    kernels = {}
    for event in prof.events():
        if event.device_type.name != "CUDA":
            continue
        us, calls = kernels.get(event.name, (0.0, 0))
        kernels[event.name] = (us + event.device_time / repeats, calls + 1)
    rows = sorted(((name, us, calls / repeats) for name, (us, calls) in kernels.items()), key=lambda r: -r[1])
    return sum(r[1] for r in rows), rows


def ops_by_input_shape(prof, per: float = 1.0, row_limit: int = 20,
                       time_attr: str = "self_device_time_total") -> list[str]:
    """Lines of a table of the PyTorch (aten) ops of a torch.profiler run by their own time (``time_attr``: the GPU
    time of the kernels they launched, by default) and input shapes, most first: which tensors the copies and
    elementwise kernels work on. ``per``: steps to divide by (times and calls per step). Needs
    ``record_shapes=True``. (gpu_dna.py --profile found the DNA split scan's ~60 ms of PyTorch glue this way.)"""
    ops = [e for e in prof.key_averages(group_by_input_shape=True)
           if e.key.startswith("aten::") and getattr(e, time_attr) > 0]
    ops.sort(key=lambda e: -getattr(e, time_attr))
    lines = [f"{'op':30s} {'calls':>8s} {'ms':>9s}  input shapes"]
    lines += [f"{e.key:30s} {e.count / per:8.1f} {getattr(e, time_attr) / 1e3 / per:9.3f}  {str(e.input_shapes)[:110]}"
              for e in ops[:row_limit]]
    return lines


def profile_report(step, steps: int, path: str, row_limit: int = 20) -> str:
    """``steps`` calls of ``step`` under torch.profiler (CUDA): the kernels by their own GPU time, then the PyTorch
    ops by their own GPU time and input shapes, per step; written to ``path`` and returned (gpu_dna.py and
    bench_train_step.py --profile)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=row_limit, max_name_column_width=70)
    text = (f"{table}\nPyTorch ops by their own GPU time and input shapes (per step of {steps}):\n"
            + "\n".join(ops_by_input_shape(prof, per=steps, row_limit=row_limit)) + "\n")
    with open(path, "w") as f:
        f.write(text)
    return text


# Kernel kinds for the prefill breakdown: the first pattern a kernel's name contains decides.
KINDS = [("scan", ("selective_scan",)), ("attention", ("flash", "attention", "fmha", "sdpa")),
         ("GEMM", ("gemm", "sm90_xmma", "cutlass", "nvjet", "ampere", "cublas", "splitk")),
         ("conv", ("causal_conv1d", "conv")), ("norm", ("norm",)), ("embedding / copy", ("embedding", "copy", "cat"))]


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, patterns in KINDS if any(p in name for p in patterns)), "elementwise / other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1.4b", help="130m | 370m | 790m | 1.4b (or the GPT names)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=2048, help="the GPT's cached tokens at the profiled step")
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=50280)
    parser.add_argument("--repeats", type=int, default=5, help="profiled steps (times are per step)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--ssm-state-dtype", choices=["float32", "bfloat16"], default=None,
                        help="Mamba's SSM cache states (default: fp32, generate's default)")
    parser.add_argument("--phase", choices=["decode", "prefill"], default="decode",
                        help="one decode step (default) or the prompt's forward (prefill)")
    add_switches(parser, "decode-linear", "conv-taps", "x-proj-layout")
    args = parser.parse_args()
    apply_switches(args)
    if not torch.cuda.is_available():
        raise SystemExit("profile_decode.py needs a CUDA GPU")
    device = torch.device("cuda")
    size = resolve_sizes([args.size])[0]
    bandwidth = copy_bandwidth(device)
    opts = runner_options(args)
    what_step = ("one eager decode step (what the CUDA graph replays)" if args.phase == "decode"
                 else f"the prompt's forward ({args.prompt_len} tokens per row)")
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s; {size.name} vs "
          f"{size.gpt_name}, batch {args.batch}, {what_step}")
    results = {}
    for name in ("Mamba", "Transformer"):
        runner = build_runner(name, size, opts, device, torch.bfloat16)
        model = runner.model
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        if args.phase == "prefill":
            prompt = torch.randint(0, args.vocab_size, (args.batch, args.prompt_len), device=device)
            if name == "Mamba":
                params = model.new_inference_params(args.batch, args.prompt_len + args.gen_len, **runner.cache_kwargs)
                step = lambda: model.prefill(prompt, params)  # noqa: E731
            else:
                generator = GPTGenerator(model, args.batch, use_cuda_graph=False)
                positions = torch.arange(args.prompt_len, device=device)
                step = lambda: model(prompt, generator.kv_cache, positions)  # noqa: E731
        elif name == "Mamba":
            params = model.new_inference_params(args.batch, args.prompt_len + args.gen_len, **runner.cache_kwargs)
            params.seqlen_offset = args.prompt_len
            ids = torch.zeros(args.batch, 1, dtype=torch.long, device=device)
            model.step(ids, params)  # allocates the states
            states = sum(t.numel() * t.element_size() for pair in params.key_value_memory_dict.values() for t in pair)
            moved = weights + 2 * states  # the states are read and written
            step = lambda: model.step(ids, params)  # noqa: E731
            what = f"weights {weights / 1e9:.2f} GB + states {states / 1e9:.2f} GB read and written"
        else:
            generator = GPTGenerator(model, args.batch, use_cuda_graph=False)
            generator.position.fill_(args.prompt_len)
            # the masked SDPA step reads every cached slot (prompt + generated length), not only those before
            # its position
            cache = generator.kv_cache.numel() * generator.kv_cache.element_size()
            moved = weights + cache
            step = generator._step
            what = f"weights {weights / 1e9:.2f} GB + KV cache read {cache / 1e9:.2f} GB"
        total_us, rows = profile_step(step, args.repeats)
        results[name] = total_us
        if args.phase == "prefill":
            kinds = {}
            for kernel, us, _ in rows:
                kinds[kind_of(kernel)] = kinds.get(kind_of(kernel), 0.0) + us
            print(f"\n{name}: {total_us / 1e3:.2f} ms of GPU time per prompt forward; by kind: "
                  + ", ".join(f"{k} {us / 1e3:.2f} ms ({100 * us / total_us:.0f}%)"
                              for k, us in sorted(kinds.items(), key=lambda kv: -kv[1])))
        else:
            floor_us = moved / bandwidth * 1e6
            print(f"\n{name}: {total_us:.0f} us of GPU time per step, {total_us / floor_us:.2f}x its memory floor "
                  f"({floor_us:.0f} us: {what})")
        print(f"  {'us/step':>9s} {'share':>6s} {'calls':>6s}  kernel")
        for kernel, us, calls in rows[:args.top]:
            print(f"  {us:9.1f} {100 * us / total_us:5.1f}% {calls:6.1f}  {kernel[:110]}")
        del runner, model, step
        torch.cuda.empty_cache()
    if args.phase == "prefill":
        ratio = results["Mamba"] / results["Transformer"]
        print(f"\nGPU time of the prompt's forward, Mamba / Transformer: {ratio:.2f}x "
              f"(issue 9's target at 130M, batch 64: <= 1.3x)")
        return
    print(f"\nGPU time per decode step, Transformer / Mamba: {results['Transformer'] / results['Mamba']:.2f}x "
          f"(issue 9's target at 1.4B, batch 128: >= 5x in tokens/s)")


if __name__ == "__main__":
    main()

"""CPU selective scan: sequential reference vs the chunked PyTorch path vs mambapy's parallel scan.

All three compute the same recurrence (h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
y_t = C_t . h_t + D u_t) on the same data at (batch 2, dim 256, N 16) and L = 1K, 4K, 16K, with
B and C of shape (batch, N, L), D present, no z, no softplus (mambapy's selective_scan does neither
inside the scan). Forward is timed under no_grad; forward+backward takes gradients w.r.t.
u, delta, A, B, C, D. Reported: median wall-clock ms over the repeats and the ratios
reference/torch and mambapy/torch (> 1 means the torch path is faster).

Layouts: the reference and the torch path get mamba_ssm's (batch, dim, L) contiguous tensors;
mambapy gets its own native layout, (batch, L, dim) and (batch, L, N) contiguous, made before
timing. Every path runs with the same torch thread count (--threads, default: torch's default).

A correctness check runs in the same process: the torch path's output and six gradients, and
mambapy's output, against the reference, as ||a - b|| / ||b||.

    python benchmarks/bench_selective_scan_cpu.py                 # L = 1024 4096 16384
    python benchmarks/bench_selective_scan_cpu.py --lengths 1024 --repeats 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from seqmamba.ops.selective_scan.reference import selective_scan_ref
from seqmamba.ops.selective_scan.torch_chunked import selective_scan_torch


def cpu_model_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def make_inputs(batch: int, dim: int, d_state: int, L: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, L, generator=g)
    # delta as Mamba produces it after softplus: positive, log-uniform in [1e-3, 1e-1]
    delta = torch.exp(torch.empty(batch, dim, L).uniform_(-6.9, -2.3, generator=g))
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)  # S4D-real
    B = torch.randn(batch, d_state, L, generator=g)
    C = torch.randn(batch, d_state, L, generator=g)
    D = torch.ones(dim)
    return u, delta, A, B, C, D


def mambapy_scan():
    """mambapy's own MambaBlock.selective_scan (parallel pscan path) as a function of its native layout."""
    from mambapy.mamba import MambaBlock, MambaConfig

    block = MambaBlock(MambaConfig(d_model=128, n_layers=1, d_state=16, pscan=True))  # d_inner = 256
    return block.selective_scan  # (x, delta, A, B, C, D) with x, delta (B, L, ED); B, C (B, L, N)


def time_round_robin(calls: dict, repeats: dict) -> dict:
    """Median ms per named call; one timed run of each call per round, so load that comes and goes
    on a shared machine hits every path alike. Calls with more than 3 repeats get an untimed warm-up.
    Returns {name: (median_ms, last_result)}."""
    times = {name: [] for name in calls}
    results = {}
    for name, fn in calls.items():
        if repeats[name] > 3:
            fn()
    for round_index in range(max(repeats.values())):
        for name, fn in calls.items():
            if round_index < repeats[name]:
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]) * 1e3, results[name]) for name in calls}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def bench_length(L, args, mambapy_fn):
    u, delta, A, B, C, D = make_inputs(args.batch, args.dim, args.d_state, L)
    # mambapy's native layout, built outside the timed region
    x_m, delta_m = u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous()
    B_m, C_m = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
    grad_y = torch.randn(args.batch, args.dim, L, generator=torch.Generator().manual_seed(1))
    grad_y_m = grad_y.transpose(1, 2).contiguous()

    ref_repeats = args.ref_repeats if L > 4096 else args.repeats
    with torch.no_grad():
        forward = time_round_robin(
            {
                "reference": lambda: selective_scan_ref(u, delta, A, B, C, D),
                "torch": lambda: selective_scan_torch(u, delta, A, B, C, D),
                "mambapy": lambda: mambapy_fn(x_m, delta_m, A, B_m, C_m, D).transpose(1, 2),
            },
            {"reference": ref_repeats, "torch": args.repeats, "mambapy": args.repeats},
        )

    leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D)]
    leaves_m = [t.clone().requires_grad_() for t in (x_m, delta_m, A, B_m, C_m, D)]
    backward_calls = {
        "reference": lambda: torch.autograd.grad(selective_scan_ref(*leaves), leaves, grad_y),
        "torch": lambda: torch.autograd.grad(selective_scan_torch(*leaves), leaves, grad_y),
        "mambapy": lambda: torch.autograd.grad(mambapy_fn(*leaves_m), leaves_m, grad_y_m),
    }
    backward_repeats = {"reference": args.ref_repeats, "torch": args.repeats, "mambapy": args.repeats}
    backward = time_round_robin(backward_calls, backward_repeats)

    row = {"L": L}
    for name in ("reference", "torch", "mambapy"):
        row[f"{name} fwd"] = forward[name][0]
        row[f"{name} fwd+bwd"] = backward[name][0]
    outputs = {name: result for name, (_, result) in forward.items()}
    grads = {name: result for name, (_, result) in backward.items()}
    errors = [rel_err(outputs["torch"], outputs["reference"])]
    errors += [rel_err(a, b) for a, b in zip(grads["torch"], grads["reference"])]
    row["err torch"] = max(errors)
    row["err mambapy"] = rel_err(outputs["mambapy"], outputs["reference"])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--ref-repeats", type=int, default=3, help="timed runs of the reference where it is slow: forward at L > 4096, and its backward")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mambapy_fn = mambapy_scan()

    print(f"# CPU: {cpu_model_name()} ({torch.get_num_threads()} torch threads); torch {torch.__version__}")
    print(f"# batch {args.batch}, dim {args.dim}, N {args.d_state}; B, C (batch, N, L); D; ms = median")
    header = (
        f"| {'L':>6} | {'ref fwd':>9} | {'torch fwd':>9} | {'mambapy fwd':>11} | {'ref/torch':>9} | {'mambapy/torch':>13} "
        f"| {'ref f+b':>9} | {'torch f+b':>9} | {'mambapy f+b':>11} | {'ref/torch':>9} | {'mambapy/torch':>13} "
        f"| {'max rel err torch':>17} | {'rel err mambapy fwd':>19} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for L in args.lengths:
        r = bench_length(L, args, mambapy_fn)
        f_ref, f_t, f_m = r["reference fwd"], r["torch fwd"], r["mambapy fwd"]
        b_ref, b_t, b_m = r["reference fwd+bwd"], r["torch fwd+bwd"], r["mambapy fwd+bwd"]
        print(
            f"| {L:>6} | {f_ref:>9.1f} | {f_t:>9.1f} | {f_m:>11.1f} | {f_ref / f_t:>8.1f}x | {f_m / f_t:>12.1f}x "
            f"| {b_ref:>9.1f} | {b_t:>9.1f} | {b_m:>11.1f} | {b_ref / b_t:>8.1f}x | {b_m / b_t:>12.1f}x "
            f"| {r['err torch']:>17.1e} | {r['err mambapy']:>19.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

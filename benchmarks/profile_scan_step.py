"""Where the scan's forward + backward spends its GPU time, kernel by kernel, ours beside mamba_ssm's: torch.profiler
over a few forward + backward calls at each shape (the inputs and gradients of bench_selective_scan.py), the CUDA
time of every kernel per call, largest first, and each implementation's total.

    PYTHONPATH=.:.anchor/src:.anchor/build python benchmarks/profile_scan_step.py --shapes 8x1536x4096 8x1536x16384

Issue 9's fwd+bwd rows differ in how far they are from mamba_ssm (1.20x at (8, 1536, 4096), 1.36x at 16384, the
same run): the per-kernel split says whether the gap is in the scan kernels or in what runs around them (the dout
copy, the gradients' reductions and casts). On the H200 (thirty-second session) the two scan kernels were 99.7% of
it, and the training forward only 1.05x mamba_ssm's at (8, 1536, 4096)."""
from __future__ import annotations

import argparse
import importlib.util

import torch

from bench_selective_scan import make_inputs, scan_fns
from profile_decode import profile_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["8x1536x4096", "8x1536x16384"], help="BATCHxDIMxL")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--width", type=int, default=70, help="kernel names are cut to this many characters")
    parser.add_argument("--impls", nargs="+", default=["triton", "mamba_ssm"], choices=["triton", "mamba_ssm"],
                        help="mamba_ssm only where its build is importable")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_scan_step.py: needs a CUDA GPU (it profiles the scan's kernels on one)")
    have_mamba = importlib.util.find_spec("selective_scan_cuda") is not None
    impls = [impl for impl in args.impls if impl != "mamba_ssm" or have_mamba]
    for shape in args.shapes:
        batch, dim, L = (int(v) for v in shape.split("x"))
        inputs = make_inputs(batch, dim, L)
        for impl in impls:
            _, fwd_bwd = scan_fns(inputs, impl)
            total_us, rows = profile_step(fwd_bwd, args.calls, grad=True)
            print(f"\n{impl} fwd+bwd at {shape}: {total_us / 1e3:.3f} ms of kernels per call")
            for name, us, _calls in rows:
                if us >= 2:
                    print(f"  {us / 1e3:8.3f} ms {100 * us / total_us:5.1f}%  {name[:args.width]}")
            del fwd_bwd
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

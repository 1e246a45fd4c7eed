"""Drive the selective scan for Nsight Compute: a few forward (no grad) and forward + backward calls at one
shape, bf16, the inputs of bench_selective_scan.py. Profile one launch of a kernel, e.g.

    ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        --section InstructionStats -k regex:_selective_scan_fwd --launch-skip 2 --launch-count 1 \\
        python benchmarks/ncu_scan.py --shape 8x1536x4096

``--impl mamba_ssm`` drives mamba_ssm's CUDA kernel instead (kernel names selective_scan_fwd_kernel /
selective_scan_bwd_kernel), with a build on PYTHONPATH (benchmarks/build_mamba_ssm.py). ``--impl gluon`` runs our
forward as the Gluon kernel (FWD_CONFIG gluon; kernel _selective_scan_fwd_gluon), to set its stall reasons beside
the Triton forward's (``gpu_check.sh ncugluon``)."""
import argparse

import torch

from bench_selective_scan import make_inputs, scan_fns

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="8x1536x4096")
parser.add_argument("--impl", default="triton", choices=["triton", "gluon", "mamba_ssm"])
parser.add_argument("--calls", type=int, default=4)
args = parser.parse_args()
batch, dim, L = (int(v) for v in args.shape.split("x"))
if args.impl == "gluon":
    from seqmamba.ops.selective_scan import triton_launch

    triton_launch.FWD_CONFIG["gluon"] = True
fwd, fwd_bwd = scan_fns(make_inputs(batch, dim, L), "triton" if args.impl == "gluon" else args.impl)
for _ in range(args.calls):
    fwd()
for _ in range(args.calls):
    fwd_bwd()
torch.cuda.synchronize()

"""One Mamba layer, forward and forward+backward, with the scan fed channels-first vs time-major.

`Mamba.channels_first` picks the layout the block hands the selective scan (see seqmamba/modules/mamba.py),
`PROJECT_CHANNELS` how the channels-first projections are formed (one folded GEMM or a batched one),
`CHANNELS_FIRST_LINEAR_GRAD` whether x_proj / out_proj hand their input's gradient back L-contiguous (the
"batched matmul's autograd" row: off, their gradients time-major, as before the twelfth session), and
`PROJECT_CHANNELS_INPUT_GRAD` whether in_proj / dt_proj hand theirs back time-major ("project grad").
All variants share weights and inputs and are timed in the same run; the script also prints how far their
outputs differ. GPU (bf16, do_bench medians):

    python benchmarks/bench_mamba_layer_layout.py
"""
from __future__ import annotations

import argparse

import torch

import seqmamba.modules.mamba as mamba_module
from seqmamba.modules import Mamba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--shapes", default="64x2048,8x4096", help="comma-separated batch x L")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_mamba_layer_layout.py needs a CUDA GPU")
    import triton.testing as tt

    saved = {k: getattr(mamba_module, k) for k in ("PROJECT_CHANNELS", "CHANNELS_FIRST_LINEAR_GRAD",
                                                   "PROJECT_CHANNELS_INPUT_GRAD")}
    torch.manual_seed(0)
    layer = Mamba(args.d_model).cuda().to(torch.bfloat16)
    print(f"device: {torch.cuda.get_device_name()}; Mamba d_model {args.d_model}, bf16")
    for shape in args.shapes.split(","):
        batch, L = (int(v) for v in shape.split("x"))
        h = torch.randn(batch, L, args.d_model, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn_like(h)
        outs = {}
        for name, flag, project, cf_grad, in_grad in (("channels-first mm", True, "mm", True, False),
                                                      ("channels-first bmm", True, "bmm", True, False),
                                                      ("cf bmm, bmm autograd", True, "bmm", False, False),
                                                      ("cf bmm, project grad", True, "bmm", True, True),
                                                      ("time-major", False, "mm", True, False)):
            layer.channels_first = flag
            mamba_module.PROJECT_CHANNELS = project
            mamba_module.CHANNELS_FIRST_LINEAR_GRAD = cf_grad
            mamba_module.PROJECT_CHANNELS_INPUT_GRAD = in_grad
            outs[name] = layer(h).float()
            with torch.no_grad():
                fwd = tt.do_bench(lambda: layer(h), warmup=25, rep=100)
            fwd_bwd = tt.do_bench(lambda: layer(h).backward(g), warmup=25, rep=100)
            print(f"({batch}, {L}) {name:20s} fwd {fwd:8.3f} ms   fwd+bwd {fwd_bwd:8.3f} ms")
        a, b = outs["channels-first mm"], outs["time-major"]
        print(f"({batch}, {L}) relative difference of the outputs: {((a - b).norm() / b.norm()).item():.2e}")
    layer.channels_first = None
    for name, value in saved.items():
        setattr(mamba_module, name, value)


if __name__ == "__main__":
    main()
